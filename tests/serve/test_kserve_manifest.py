"""deploy/kserve/inferenceservice.yaml: the container runs a command `avgpool serve` accepts, and
its probes and scrape path are routes the server has."""

from __future__ import annotations

from pathlib import Path

import pytest

from avgpool.cli import _parser

yaml = pytest.importorskip("yaml")
MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kserve" / "inferenceservice.yaml"


@pytest.fixture(scope="module")
def manifest():
    return yaml.safe_load(MANIFEST.read_text())


def test_an_inferenceservice_with_one_predictor_container(manifest):
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["name"] == "avgpool-model"
    (container,) = manifest["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"


def test_the_container_command_parses_and_listens_where_the_probes_look(manifest):
    (container,) = manifest["spec"]["predictor"]["containers"]
    assert container["command"] == ["avgpool"]
    args = _parser().parse_args([str(a) for a in container["args"]])
    assert args.command == "serve"
    assert args.host == "0.0.0.0"  # inside a pod: the pod's network, not the node's
    port = container["ports"][0]["containerPort"]
    assert args.port == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    notes = manifest["metadata"]["annotations"]
    assert notes["prometheus.kserve.io/port"] == str(port)
    assert notes["prometheus.kserve.io/path"] == "/metrics"


def test_the_probed_paths_are_routes_of_the_app(manifest):
    pytest.importorskip("fastapi")
    from avgpool.serve import Telemetry
    from avgpool.serve._app import AppState, ModelRepository, create_app

    app = create_app(AppState(ModelRepository([]), Telemetry()))
    paths = {route.path for route in app.routes}
    (container,) = manifest["spec"]["predictor"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
    assert manifest["metadata"]["annotations"]["prometheus.kserve.io/path"] in paths
