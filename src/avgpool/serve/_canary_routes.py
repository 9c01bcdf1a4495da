"""The HTTP side of the canaries of ``avgpool serve`` (``--admin`` servers): ``POST
/admin/canary``, ``GET``/``DELETE /admin/canary/{model}``, ``POST /admin/canary/{model}/reset``
(loopback clients only) and the Flagger webhook ``POST /admin/flagger/{model}``, which asks the
judge `avgpool.serve._canary.register_judge` installed.

Flagger calls its webhooks from its own pod, never over loopback; the webhook only reads the
records and judges them, so it answers any client of an ``--admin`` server.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from avgpool.serve._canary import MODES, Canaries, Canary, registered_judge

__all__ = ["FAIL_ON", "add_routes", "call_judge", "parse_open", "verdict_body"]

log = logging.getLogger("avgpool.serve")


def call_judge(fn: Callable[..., Any], state: dict[str, Any], profiles: dict[str, Any], payload: Any) -> Any:
    """``fn(state, profiles, payload)``, or ``fn(state, profiles)`` where it takes two."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it everything
        return fn(state, profiles, payload)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return fn(state, profiles, payload)
    return fn(state, profiles)


#: ``?fail_on=`` of the Flagger webhook: which verdicts answer 503.
FAIL_ON = {"not-pass": "every verdict but pass", "fail": "fail only"}


def verdict_body(result: Any, fail_on: str = "not-pass") -> tuple[int, dict[str, Any]]:
    """The webhook's status and JSON body for a judge's ``result``: 503 for every verdict but
    pass (``fail_on="not-pass"``: a gate that holds while the judge is unsure), or for fail
    only (``fail_on="fail"``: a check whose failures roll back, so marginal and not enough
    data must not count as failures)."""
    if isinstance(result, Mapping):
        body = dict(result)
    elif hasattr(result, "to_dict"):
        body = dict(result.to_dict())
    else:
        raise TypeError(f"the judge returned {type(result).__name__}; expected a verdict or a dict")
    verdict = body.get("verdict", getattr(result, "verdict", None))
    body["verdict"] = verdict
    if "reasons" not in body:
        checks = body.get("checks") or []
        body["reasons"] = [
            f"{c.get('name')}: {c.get('verdict')}: {c.get('reason')}"
            for c in checks
            if isinstance(c, Mapping) and c.get("verdict") != "pass"
        ]
    failed = verdict == "fail" if fail_on == "fail" else verdict != "pass"
    return (503 if failed else 200), body


def _json_safe(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers and non-finite floats as None (JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _version(value: Any, what: str) -> str:
    from avgpool.serve._protocol import V2Error

    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise V2Error(400, f"{what} must be a version (a string), got {value!r}")
    return str(value)


def parse_open(doc: Any, canaries: Canaries, repository: Any) -> tuple[str, str, str, float, str]:
    """(model, baseline, candidate, share, mode) of a ``POST /admin/canary`` body, or V2Error."""
    from avgpool.serve._protocol import V2Error

    shape = '{"model": m, "baseline": v1, "candidate": v2, "share": 0.05, "mode": "split" or "shadow"}'
    if not isinstance(doc, dict):
        raise V2Error(400, f"the body must be a JSON object {shape}")
    unknown = sorted(set(doc) - {"model", "baseline", "candidate", "share", "mode"})
    if unknown:
        raise V2Error(400, f"unknown field(s) {unknown} in the body; it is {shape}")
    model = doc.get("model")
    if not isinstance(model, str):
        raise V2Error(400, f"model must be a model name (a string), got {model!r}")
    baseline = _version(doc.get("baseline"), "baseline")
    candidate = _version(doc.get("candidate"), "candidate")
    mode = doc.get("mode", "split")
    if mode not in MODES:
        raise V2Error(400, f"mode must be 'split' or 'shadow', got {mode!r}")
    current = canaries.get(model)
    same = current is not None and (current.baseline, current.candidate) == (baseline, candidate)
    share = doc.get("share", current.share if same else 0.0)  # type: ignore[union-attr]
    if (
        isinstance(share, bool)
        or not isinstance(share, (int, float))
        or not math.isfinite(share)
        or not 0 <= share <= 1
    ):
        raise V2Error(400, f"share must be a number from 0 to 1, got {share!r}")
    if baseline == candidate:
        raise V2Error(400, f"candidate must differ from baseline, both are {baseline!r}")
    for version in (baseline, candidate):
        repository.resolve(model, version)  # 404 naming the model's versions
    return model, baseline, candidate, float(share), mode


def add_routes(
    app: Any, state: Any, in_thread: Callable[..., Any], is_loopback: Callable[[str | None], bool]
) -> None:
    """The canary admin routes and the Flagger webhook on ``app`` (``--admin`` servers)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from avgpool.serve._protocol import V2Error

    canaries: Canaries = state.canaries

    def refuse(status: int, message: str) -> Any:
        return JSONResponse({"error": message}, status_code=status)

    def local(request: Request) -> bool:
        return is_loopback(request.client.host if request.client else None)

    def forbidden() -> Any:
        return refuse(403, "admin endpoints answer loopback clients only")

    def find(model: str) -> Canary:
        state.repository.resolve(model, None)  # 404 for a model not served
        canary = canaries.get(model)
        if canary is None:
            raise V2Error(404, f"no canary is open on model {model!r}; POST /admin/canary opens one")
        return canary

    async def body_json(request: Request, empty: Any = ...) -> Any:
        raw = await request.body()
        if not raw.strip() and empty is not ...:
            return empty
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise V2Error(400, f"malformed JSON in the request body: {exc}") from None

    def json_response(doc: Any, status: int = 200) -> Any:
        content = json.dumps(_json_safe(doc), separators=(",", ":")).encode()
        return Response(content, status_code=status, media_type="application/json")

    # plain Starlette routes: FastAPI would read a parameter annotated with a Request imported
    # here (not at module level, to keep this module light) as a query parameter
    async def canary_open(request: Request) -> Any:
        if not local(request):
            return forbidden()
        try:
            args = parse_open(await body_json(request), canaries, state.repository)
        except V2Error as exc:
            return refuse(exc.status, exc.message)
        canary = canaries.open(*args)
        log.info("canary on %s: %s", canary.model, canary.summary())
        return json_response(canary.summary())

    async def canary_state(request: Request) -> Any:
        if not local(request):
            return forbidden()
        try:
            canary = find(request.path_params["model_name"])
        except V2Error as exc:
            return refuse(exc.status, exc.message)
        return await in_thread(lambda: json_response(canary.to_dict()))

    async def canary_reset(request: Request) -> Any:
        if not local(request):
            return forbidden()
        try:
            canary = find(request.path_params["model_name"])
        except V2Error as exc:
            return refuse(exc.status, exc.message)
        canary.reset()
        return json_response(canary.summary())

    async def canary_close(request: Request) -> Any:
        if not local(request):
            return forbidden()
        model_name = request.path_params["model_name"]
        try:
            find(model_name)
        except V2Error as exc:
            return refuse(exc.status, exc.message)
        canary = canaries.close(model_name)
        return json_response({**canary.summary(), "closed": True} if canary else {"closed": False})

    # any client: see the module's docstring
    async def flagger(request: Request) -> Any:
        model_name = request.path_params["model_name"]
        judge = registered_judge()
        if judge is None:
            return refuse(
                501,
                "no canary judge is installed: importing avgpool.canary installs it (avgpool serve "
                "--admin imports it when it is installed)",
            )
        fail_on = request.query_params.get("fail_on", "not-pass")
        if fail_on not in FAIL_ON:
            return refuse(400, f"fail_on must be one of {sorted(FAIL_ON)}, got {fail_on!r}")
        try:
            canary = find(model_name)
            payload = await body_json(request, empty={})
        except V2Error as exc:
            return refuse(exc.status, exc.message)
        with canary.lock:
            canary.looks += 1
            look = canary.looks
        doc = {**canary.to_dict(), "look": look}

        def run() -> Any:
            profiles = {
                v: state.telemetry.model(model_name, v).live_profile()
                for v in (canary.baseline, canary.candidate)
            }
            status, body = verdict_body(call_judge(judge, doc, profiles, payload), fail_on)
            return json_response(body, status)

        try:
            return await in_thread(run)
        except Exception as exc:
            log.exception("the canary judge failed on model %s", model_name)
            return refuse(500, f"the canary judge failed: {type(exc).__name__}: {exc}")

    app.add_route("/admin/canary", canary_open, methods=["POST"])
    app.add_route("/admin/canary/{model_name}", canary_state, methods=["GET"])
    app.add_route("/admin/canary/{model_name}", canary_close, methods=["DELETE"])
    app.add_route("/admin/canary/{model_name}/reset", canary_reset, methods=["POST"])
    app.add_route("/admin/flagger/{model_name}", flagger, methods=["POST"])
