"""The per-call overhead suite: what one call costs on inputs too small for the kernel to matter.

Three measurements, each a ratio or a time taken in one run (``cases.toml``'s ``[overhead]``
says what runs, ``[targets]`` what passes):

- **modules**: each ``avgpool.nn`` module beside its ``torch.nn`` twin on a tiny tensor, forward
  under ``torch.no_grad()`` and forward+backward (``torch.autograd.grad`` of the output against
  a fixed gradient), timed in interleaved pairs (`avgpool.bench.ab.time_pairs`); the ratio is
  avgpool's median / torch's, with its paired bootstrap interval;
- **numpy**: each NumPy op (``avgpool.avg_pool`` ...) on a tiny float32 array, the median
  microseconds per call (`avgpool.bench.timing.time_calls`);
- **models**: whole models at batch 1, under ``torch.no_grad()``, beside their torch.nn twins,
  in interleaved pairs like the modules. The models come from the caller (``models``): `make
  bench` and ``avgpool bench suite`` pass the study's (`avgpool.study.variants`, twins by
  `avgpool.study.twins.torch_twin`), which this layer does not import.

Every call is timed on its own (``time.perf_counter``, well under a microsecond of its own),
many per measurement: a call of a few microseconds needs thousands for a steady median.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from avgpool.bench.ab import ratio_of_medians, time_pairs
from avgpool.bench.cases import suite_table, targets
from avgpool.bench.timing import time_calls

__all__ = [
    "ModelPairs",
    "OverheadSettings",
    "module_pair",
    "run_overhead",
    "summarize_overhead",
    "torch_twin",
]


@dataclass(frozen=True)
class OverheadSettings:
    """How the suite measures: at most ``repeats`` calls (pairs) in ``budget_s`` seconds each."""

    threads: int = 1
    repeats: int = 20000
    budget_s: float = 1.0
    warmup: int = 50
    seed: int = 0


def module_pair(spec: dict[str, Any]) -> tuple[Any, Any]:
    """``(avgpool.nn module, its torch.nn twin)`` for one ``[[overhead.module]]`` entry: the
    twin is torch.nn's class of the same name and arguments, else `torch_twin`'s.

    Examples
    --------
    >>> ours, theirs = module_pair({"name": "AvgPool2d(3, 2, 1)", "args": [3, 2, 1]})
    >>> type(ours).__module__, type(theirs).__module__, theirs.padding
    ('avgpool.nn', 'torch.nn.modules.pooling', 1)
    """
    import torch

    import avgpool.nn as apnn

    cls = spec["name"].split("(")[0]
    args, kwargs = list(spec.get("args", [])), dict(spec.get("kwargs", {}))
    ours = getattr(apnn, cls)(*args, **kwargs)
    theirs = getattr(torch.nn, cls)(*args, **kwargs) if hasattr(torch.nn, cls) else torch_twin(ours)
    return ours.eval(), theirs.eval()


def torch_twin(module: Any) -> Any:
    """torch.nn layers computing what an avgpool.nn module without a torch.nn namesake computes:
    ``GlobalAvgPool`` (2-d) as ``AdaptiveAvgPool2d(1)``, ``BlurPool2d`` as antialiased-cnns
    computes it (a pad, then a depthwise ``Conv2d`` holding the binomial filter).

    Examples
    --------
    >>> import avgpool.nn as apnn
    >>> [type(m).__name__ for m in torch_twin(apnn.BlurPool2d(4))]
    ['ReflectionPad2d', 'Conv2d']
    """
    import numpy as np
    import torch
    from torch import nn

    from avgpool.reference import blur_filter, blur_pads

    name = type(module).__name__
    if name == "GlobalAvgPool" and module.ndim == 2:
        pool = nn.AdaptiveAvgPool2d(1)
        return pool if module.keepdims else nn.Sequential(pool, nn.Flatten(1))
    if name == "BlurPool2d" and module.channels is not None:
        before, after = blur_pads(module.filt_size, module.pad_off)
        pad = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d}
        c, f = module.channels, module.filt_size
        conv = nn.Conv2d(c, c, f, stride=module.stride, groups=c, bias=False)
        taps = blur_filter(f)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.outer(taps, taps).astype(np.float32)).expand(c, 1, f, f))
        conv.weight.requires_grad_(False)
        return nn.Sequential(pad[module.pad_type]((before, after, before, after)), conv)
    raise ValueError(f"no torch.nn twin here for {module!r}")


def _first(y: Any) -> Any:
    return y[0] if isinstance(y, tuple) else y


def _caller(module: Any, x: Any, backward: bool) -> Callable[[Any], Any]:
    import torch

    if not backward:

        def forward(_: Any) -> Any:
            with torch.no_grad():
                return module(x)

        return forward
    xg = x.clone().requires_grad_(True)
    grad = torch.randn_like(_first(module(xg)))

    def step(_: Any) -> Any:
        return torch.autograd.grad(_first(module(xg)), xg, grad)

    return step


def _pair_record(fa: Callable, fb: Callable, settings: OverheadSettings) -> dict[str, Any]:
    """torch's (A) and avgpool's (B) median µs per call, and B / A with its interval."""
    ta, tb = time_pairs(
        fa, fb, [None], [None], repeats=settings.repeats, warmup=settings.warmup, budget_s=settings.budget_s
    )
    ratio = ratio_of_medians(ta.samples, tb.samples, seed=settings.seed, resamples=500)
    return {
        "torch_us": ta.percentile(50) * 1e6,
        "avgpool_us": tb.percentile(50) * 1e6,
        "ratio": ratio.ratio,
        "low": ratio.low,
        "high": ratio.high,
        "n": ratio.n,
    }


def _modules(shape: tuple[int, ...], settings: OverheadSettings, log: Callable[[str], None]) -> list[dict]:
    import torch

    rows = []
    torch.manual_seed(settings.seed)
    x = torch.randn(shape)
    for spec in suite_table("overhead")["module"]:
        ours, theirs = module_pair(spec)
        for backward in (False, True):
            record = _pair_record(_caller(theirs, x, backward), _caller(ours, x, backward), settings)
            rows.append({"module": spec["name"], "pass": "fwd+bwd" if backward else "fwd", **record})
            log(f"  {spec['name']:<36} {rows[-1]['pass']:<8} {_brief(record)}")
    return rows


def _apply(op: Callable, args: list, kwargs: dict, x: Any) -> Any:
    return op(x, *args, **kwargs)


def _numpy_ops(shape: tuple[int, ...], settings: OverheadSettings, log: Callable[[str], None]) -> list[dict]:
    import numpy as np

    import avgpool

    rows = []
    x = np.random.default_rng(settings.seed).random(shape, dtype=np.float32)
    for spec in suite_table("overhead")["numpy"]:
        op, args, kwargs = getattr(avgpool, spec["op"]), spec.get("args", []), spec.get("kwargs", {})
        call = f"{spec['op']}(x{''.join(f', {a!r}' for a in args)}"
        call += "".join(f", {k}={v!r}" for k, v in kwargs.items()) + ")"
        timing = time_calls(
            functools.partial(_apply, op, args, kwargs),
            [x],
            repeats=settings.repeats,
            warmup=settings.warmup,
            budget_s=settings.budget_s / 2,
        )
        rows.append({"call": call, "us": timing.percentile(50) * 1e6, "p90_us": timing.percentile(90) * 1e6})
        rows[-1]["n"] = timing.n
        log(f"  {call:<48} {rows[-1]['us']:.1f} µs median of {timing.n}")
    return rows


#: What ``models`` returns: (name, avgpool.nn model, its torch.nn twin, pooling modules swapped,
#: the batch-1 input shape); a model with nothing swapped is listed and not timed.
ModelPairs = Callable[[], "list[tuple[str, Any, Any, int, tuple[int, ...]]]"]


def _models(settings: OverheadSettings, models: ModelPairs, log: Callable[[str], None]) -> list[dict]:
    import torch

    rows = []
    for name, model, twin, swapped, shape in models():
        if not swapped:
            rows.append({"model": name, "swapped": 0})
            continue
        torch.manual_seed(settings.seed)
        x = torch.randn(shape)

        def run(m: Any, x: Any = x) -> Callable[[Any], Any]:
            def call(_: Any) -> Any:
                with torch.no_grad():
                    return m(x)

            return call

        record = _pair_record(run(twin.eval()), run(model.eval()), settings)
        rows.append({"model": name, "swapped": swapped, "input": list(shape), **record})
        log(f"  {name:<36} {_brief(record)}")
    return rows


def _brief(record: dict[str, Any]) -> str:
    return (
        f"avgpool {record['avgpool_us']:.1f} µs, torch {record['torch_us']:.1f} µs: "
        f"{record['ratio']:.2f}x [{record['low']:.2f}, {record['high']:.2f}] of {record['n']} pairs"
    )


def run_overhead(
    settings: OverheadSettings,
    log: Callable[[str], None] = lambda _: None,
    models: ModelPairs | None = None,
) -> dict[str, Any]:
    """All three measurements and their summary (see the module docstring); without
    ``models``, the models' rows are empty and their target is not measured."""
    import torch

    import avgpool

    torch.set_num_threads(settings.threads)
    avgpool.set_num_threads(settings.threads)
    shape = tuple(suite_table("overhead")["shape"])
    log(f"per-call overhead on {'x'.join(map(str, shape))} float32, {settings.threads} thread(s)")
    result = {
        "settings": {**settings.__dict__, "shape": list(shape)},
        "modules": _modules(shape, settings, log),
        "numpy": _numpy_ops(shape, settings, log),
        "models": _models(settings, models, log) if models is not None else [],
    }
    result["summary"] = summarize_overhead(result)
    return result


def summarize_overhead(result: dict[str, Any]) -> dict[str, Any]:
    """Each target: the worst value, the limit and whether every row is within it.

    Examples
    --------
    >>> s = summarize_overhead({"modules": [{"pass": "fwd", "ratio": 1.2}, {"pass": "fwd+bwd",
    ...     "ratio": 3.0}], "numpy": [{"us": 9.0}, {"us": 16.0}], "models": [{"ratio": 1.1}]})
    >>> [(k, s[k]["worst"], s[k]["pass"]) for k in ("modules", "numpy", "models")]
    [('modules', 1.2, True), ('numpy', 16.0, False), ('models', 1.1, True)]
    """
    goals = targets()

    def check(values: list[float], limit: float) -> dict[str, Any]:
        worst = max(values) if values else None
        return {"worst": worst, "target": limit, "pass": worst is not None and worst <= limit}

    fwd = [r["ratio"] for r in result["modules"] if r["pass"] == "fwd"]
    bwd = [r["ratio"] for r in result["modules"] if r["pass"] == "fwd+bwd"]
    return {
        "modules": check(fwd, goals["module_ratio"]),
        "modules_fwd_bwd": {"worst": max(bwd) if bwd else None},
        "numpy": check([r["us"] for r in result["numpy"]], goals["numpy_call_us"]),
        "models": check([r["ratio"] for r in result["models"] if "ratio" in r], goals["model_ratio"]),
    }
