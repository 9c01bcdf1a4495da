"""deploy/argo/ and deploy/flagger/: each manifest validates against its project's published CRD
schema (vendored in schemas/, with its source and licence), made strict so a misspelled field
fails; and what the manifests say agrees with avgpool: the judge's command line parses, its exit
codes map onto the Job as the comments say, every template argument is declared and given.

A CRD schema lets the API server drop unknown fields silently (it prunes them), so the vendored
schemas accept any key; `strict` closes every object that lists its properties and does not
declare itself open (``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields``).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
MANIFESTS = {
    "analysis-template": (
        ROOT / "deploy" / "argo" / "analysis-template.yaml",
        "argo-rollouts-analysistemplate.json",
    ),
    "rollout": (ROOT / "deploy" / "argo" / "rollout.yaml", "argo-rollouts-rollout.json"),
    "flagger": (ROOT / "deploy" / "flagger" / "canary.yaml", "flagger-canary.json"),
}
#: The fields of ObjectMeta a manifest may set (the CRDs leave metadata as a bare object).
OBJECT_META = {"name", "namespace", "labels", "annotations", "generateName", "finalizers", "ownerReferences"}


def strict(schema):
    """``schema`` with every object that lists its properties closed to other keys."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_schema(name):
    document = json.loads((SCHEMAS / name).read_text())
    return document, strict(document["openAPIV3Schema"])


def errors(manifest, schema):
    validator = jsonschema.Draft7Validator(schema)
    found = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
    found += [f"metadata: unknown field {k!r}" for k in set(manifest.get("metadata", {})) - OBJECT_META]
    return found


@pytest.fixture(scope="module", params=sorted(MANIFESTS))
def case(request):
    path, schema_name = MANIFESTS[request.param]
    document, schema = load_schema(schema_name)
    return request.param, yaml.safe_load(path.read_text()), document, schema


def manifest(name):
    return yaml.safe_load(MANIFESTS[name][0].read_text())


def test_each_vendored_schema_names_its_source_and_licence():
    assert (SCHEMAS / "LICENSE-APACHE-2.0").read_text().lstrip().startswith("Apache License")
    for _, schema_name in MANIFESTS.values():
        document = json.loads((SCHEMAS / schema_name).read_text())
        header = " ".join(document["$comment"])
        assert document["source"]["license"] == "Apache-2.0"
        assert re.fullmatch(r"[0-9a-f]{40}", document["source"]["commit"])
        assert document["source"]["tag"] in header and "Apache License, Version 2.0" in header
        assert "Copyright" in header


def test_each_manifest_validates_against_its_crd_schema(case):
    _, doc, document, schema = case
    assert (doc["apiVersion"], doc["kind"]) == (document["apiVersion"], document["kind"])
    assert errors(doc, schema) == []


# one misspelling per depth: top of spec, a list item, deep in a Job's pod template, metadata
MISSPELLINGS = {
    "analysis-template": [
        (("spec", "metrics", 0), "failureLimit", "failurLimit"),
        (("spec", "metrics", 0, "provider", "job", "spec"), "backoffLimit", "backofLimit"),
        (
            ("spec", "metrics", 0, "provider", "job", "spec", "template", "spec", "containers", 0),
            "args",
            "arg",
        ),
        (("metadata",), "name", "nmae"),
    ],
    "rollout": [
        (("spec", "strategy", "canary", "steps", 0), "setWeight", "setweight"),
        (("spec", "strategy", "canary", "steps", 1, "analysis", "templates", 0), "templateName", "template"),
        (("spec", "template", "spec", "containers", 0, "readinessProbe"), "httpGet", "httpget"),
    ],
    "flagger": [
        (("spec", "analysis"), "stepWeights", "stepWeight_s"),
        (("spec", "analysis", "webhooks", 0), "timeout", "timout"),
        (("spec", "analysis", "metrics", 0), "thresholdRange", "thresholdrange"),
        (("spec",), "targetRef", "target"),
    ],
}


@pytest.mark.parametrize(
    ("name", "where", "key", "typo"),
    [(name, *typo) for name, typos in MISSPELLINGS.items() for typo in typos],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_misspelled_field_fails(name, where, key, typo):
    doc = copy.deepcopy(manifest(name))
    node = doc
    for step in where:
        node = node[step]
    node[typo] = node.pop(key)
    found = errors(doc, load_schema(MANIFESTS[name][1])[1])
    assert any(repr(typo) in e for e in found), found


def test_a_wrong_value_fails():
    doc = manifest("flagger")
    doc["spec"]["analysis"]["webhooks"][0]["type"] = "pre-rolout"
    assert any(
        "'pre-rolout' is not one of" in e for e in errors(doc, load_schema(MANIFESTS["flagger"][1])[1])
    )


def _judge_container(doc):
    (metric,) = doc["spec"]["metrics"]
    job = metric["provider"]["job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return metric, job, container


def test_the_template_arguments_are_declared_and_the_rollout_gives_them():
    template = manifest("analysis-template")
    declared = {a["name"]: a.get("value") for a in template["spec"]["args"]}
    used = set(re.findall(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}", json.dumps(template)))
    assert used == set(declared)
    needed = {name for name, value in declared.items() if value is None}
    assert needed == {"model", "baseline", "candidate"}
    rollout = manifest("rollout")
    analyses = [s["analysis"] for s in rollout["spec"]["strategy"]["canary"]["steps"] if "analysis" in s]
    weights = [s["setWeight"] for s in rollout["spec"]["strategy"]["canary"]["steps"] if "setWeight" in s]
    assert weights == [5, 25, 50]
    assert len(analyses) == len(weights)  # every step is judged before the next
    for analysis in analyses:
        assert [t["templateName"] for t in analysis["templates"]] == [template["metadata"]["name"]]
        assert {a["name"] for a in analysis["args"]} == needed
    # the pods serve the candidate version the analyses name
    args = rollout["spec"]["template"]["spec"]["containers"][0]["args"]
    candidate = {a["name"]: a["value"] for a in analyses[0]["args"]}
    assert args[1].startswith(f"{candidate['model']}:{candidate['candidate']}=")


def test_the_job_maps_the_judges_exit_codes_as_documented():
    _, job, container = _judge_container(manifest("analysis-template"))
    spec = job["spec"]
    assert container["command"] == ["avgpool"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    rules = {r["action"]: r["onExitCodes"] for r in spec["podFailurePolicy"]["rules"]}
    assert rules["FailJob"]["values"] == [2, 3] and rules["Count"]["values"] == [1]
    assert {r["containerName"] for r in rules.values()} == {container["name"]}
    # Bonferroni holds while the looks (pods) stay within the alpha budget's --max-looks
    max_looks = int(container["args"][container["args"].index("--max-looks") + 1])
    assert spec["backoffLimit"] + 1 <= max_looks
    judge = pytest.importorskip("avgpool.canary.judge")
    codes = judge.EXIT_CODES
    assert codes["pass"] == 0 and codes["fail"] in rules["FailJob"]["values"]
    assert {codes["marginal"], codes["not enough data"]} == set(rules["Count"]["values"])


def test_the_judge_command_parses():
    from avgpool.cli import _parser

    _, _, container = _judge_container(manifest("analysis-template"))
    argv = [re.sub(r"\{\{\s*args\.([a-z]+)\s*\}\}", r"ARG-\1", str(a)) for a in container["args"]]
    parser = _parser()
    if "canary" not in parser._subparsers._group_actions[0].choices:
        pytest.skip("avgpool has no canary command in this tree")
    args = parser.parse_args(argv)
    assert (args.command, args.prometheus, args.model) == ("canary", "ARG-prometheus", "ARG-model")
    assert (args.baseline, args.candidate, args.window) == ("ARG-baseline", "ARG-candidate", "ARG-window")
    assert args.max_looks == 6


def test_the_rollout_pods_serve_where_their_probes_look():
    from avgpool.cli import _parser

    (container,) = manifest("rollout")["spec"]["template"]["spec"]["containers"]
    args = _parser().parse_args([str(a) for a in container["args"]])
    assert (args.command, args.host, args.port) == (
        "serve",
        "0.0.0.0",
        container["ports"][0]["containerPort"],
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_the_flagger_webhooks_ask_the_servers_judge_route():
    doc = manifest("flagger")
    analysis = doc["spec"]["analysis"]
    assert analysis["stepWeights"] == [5, 25, 50]
    hooks = {h["type"]: h["url"] for h in analysis["webhooks"]}
    assert set(hooks) == {"confirm-traffic-increase", "rollout"}
    port = doc["spec"]["service"]["port"]
    name, namespace = doc["spec"]["targetRef"]["name"], doc["metadata"]["namespace"]
    # Flagger's canary service is NAME-canary: the webhook reaches the pods under test
    route = f"http://{name}-canary.{namespace}:{port}/admin/flagger/{name}"
    # the gate holds on anything but pass; the rollout check counts only the judge's fail
    assert hooks == {"confirm-traffic-increase": route, "rollout": f"{route}?fail_on=fail"}
    assert analysis["threshold"] == 1


def test_the_webhook_path_is_a_route_of_an_admin_server():
    pytest.importorskip("fastapi")
    from avgpool.serve import Telemetry
    from avgpool.serve._app import AppState, ModelRepository, create_app

    app = create_app(AppState(ModelRepository([]), Telemetry(), admin=True))
    paths = {route.path for route in app.routes}
    if not any(p.startswith("/admin/canary") for p in paths):
        pytest.skip("this tree's server has no canary routes")
    hooks = manifest("flagger")["spec"]["analysis"]["webhooks"]
    (name,) = {h["url"].split("?")[0].rsplit("/", 1)[1] for h in hooks}
    assert "/admin/flagger/{model_name}" in paths and name == "tinynet"
