"""A child process that runs one fuzzed call at a time, so a hang or a crash fails one example.

Numba kernels hold the GIL and cannot be interrupted from another thread, so each call runs
here, in a process the test can kill; the child lives across examples, so kernels compile
once per process (and load from Numba's cache after that).
"""

from __future__ import annotations

import multiprocessing
import traceback
from typing import Any

import numpy as np

#: Seconds one call may take, a first call's kernel compilation included (the slowest kernel
#: compiles in about 35 s here); a call still running after it is a hang.
DEADLINE_S = 240

TOLERANCE = {"float16": 2e-2, "float32": 2e-5, "float64": 1e-10}


def build_array(spec: dict[str, Any]) -> Any:
    """The input an example describes: shape, dtype, memory layout and special values."""
    rng = np.random.default_rng(spec["seed"])
    shape, dtype, layout = tuple(spec["shape"]), spec["dtype"], spec["layout"]
    full = tuple(2 * n if layout == "strided" else n for n in shape)
    if dtype == "object":
        x = np.empty(full, dtype=object)
        x[...] = 1.0
    elif dtype == "datetime64[s]":
        x = np.zeros(full, dtype=dtype)
    elif np.dtype(dtype).kind in "iub":
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        lo, hi = (0, 2) if info is None else (max(info.min, -100), min(info.max, 100))
        x = rng.integers(lo, hi, size=full, endpoint=True).astype(dtype)
    else:
        x = rng.standard_normal(full).astype(dtype)
        if spec.get("specials") and x.size:
            flat = x.reshape(-1)
            picks = rng.integers(0, flat.size, size=min(3, flat.size))
            flat[picks] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype=dtype), size=picks.size)
    if layout == "strided":
        x = x[tuple(slice(None, None, 2) for _ in shape)]
    elif layout == "reversed":
        x = x[..., ::-1] if x.ndim else x
    elif layout == "transposed" and x.ndim >= 2:
        x = np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    if spec.get("readonly"):
        x.flags.writeable = False
    return x


def _call(op: str, args: tuple, kwargs: dict) -> Any:
    import avgpool

    return getattr(avgpool, op)(*args, **kwargs)


def _args(spec: dict[str, Any]) -> tuple[tuple, dict]:
    x = build_array(spec["array"])
    args = [x if a == "<x>" else a for a in spec["args"]]
    kwargs = dict(spec["kwargs"])
    if spec.get("grad"):  # backward ops: a gradient of the forward output's shape
        args[0] = np.ones(spec["grad"], dtype=x.dtype if x.dtype.kind == "f" else "float64")
    if spec.get("out") == "input":
        kwargs["out"] = x
    return tuple(args), kwargs


def _compare(got: Any, expected: Any, dtype: str) -> str | None:
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for g, e in zip(got, expected):
        g, e = np.asarray(g), np.asarray(e)
        if g.shape != e.shape or g.dtype != e.dtype:
            return f"shape/dtype {g.shape} {g.dtype} vs reference {e.shape} {e.dtype}"
        if g.dtype.kind in "iub":
            if not np.array_equal(g, e):
                return "integer values differ from the reference"
            continue
        g64, e64 = g.astype(np.float64), e.astype(np.float64)
        if not np.array_equal(np.isnan(g64), np.isnan(e64)):
            return "NaN positions differ from the reference"
        finite = np.isfinite(e64) & np.isfinite(g64)
        if not np.array_equal(g64[~finite & ~np.isnan(e64)], e64[~finite & ~np.isnan(e64)]):
            return "infinities differ from the reference"
        scale = 1.0 + (np.abs(e64[finite]).max() if finite.any() else 0.0)
        err = np.abs(g64[finite] - e64[finite]).max() if finite.any() else 0.0
        if err > TOLERANCE.get(str(g.dtype), 1e-10) * scale:
            return f"values differ from the reference by {err:.3g} (scale {scale:.3g})"
    return None


def run(spec: dict[str, Any]) -> tuple[str, str]:
    """("ok", "") / ("error", "Class: message") / ("wrong", why), for the parent to judge."""
    import avgpool

    try:
        args, kwargs = _args(spec)
        got = _call(spec["op"], args, kwargs)
    except Exception as exc:  # the class is what the test judges
        return "error", f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]}"
    try:
        args, kwargs = _args(spec)
        with avgpool.use_backend("reference"):
            expected = _call(spec["op"], args, kwargs)
    except avgpool.AvgPoolError:
        return "ok", "the reference refuses this size; not compared"
    except Exception:
        return "wrong", "the kernels answered where the reference raised:\n" + traceback.format_exc()[-600:]
    why = _compare(got, expected, spec["array"]["dtype"])
    return ("wrong", why) if why else ("ok", "")


def _serve(conn: Any) -> None:
    while True:
        spec = conn.recv()
        if spec is None:
            return
        conn.send(run_torch(spec) if spec.get("torch") else run(spec))


class Worker:
    """The child process: `call` runs one spec with the deadline, restarting after a hang."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child,), daemon=True)
        self._proc.start()
        self._conn = parent

    def call(self, spec: dict[str, Any], deadline: float = DEADLINE_S) -> tuple[str, str]:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send(spec)
        if not self._conn.poll(deadline):
            self.stop(kill=True)
            return "hang", f"no answer within {deadline} s"
        try:
            return self._conn.recv()
        except EOFError:
            code = self._proc.exitcode
            self.stop(kill=True)
            return "crash", f"the worker died (exit code {code})"

    def stop(self, kill: bool = False) -> None:
        if self._proc is None:
            return
        if kill:
            self._proc.kill()
        else:
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                self._proc.kill()
        self._proc.join(30)
        self._proc = self._conn = None


def _torch_input(spec: dict[str, Any]) -> Any:
    import torch

    x = build_array({**spec, "layout": "contiguous", "readonly": False})
    t = torch.from_numpy(np.ascontiguousarray(x))
    layout = spec["layout"]
    if layout == "channels_last" and t.dim() in (4, 5):
        fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        t = t.contiguous(memory_format=fmt)
    elif layout == "channels_last_sliced" and t.dim() in (4, 5):
        fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        t = t.repeat_interleave(2, dim=1).contiguous(memory_format=fmt)[:, ::2]
    elif layout == "strided" and t.dim():
        t = t.repeat_interleave(2, dim=-1)[..., ::2]
    return t


def layout_of(t: Any) -> tuple:
    """The strides that matter: those of axes longer than 1 (a length-1 axis's is arbitrary)."""
    return tuple(st for n, st in zip(t.shape, t.stride()) if n > 1)


def run_torch(spec: dict[str, Any]) -> tuple[str, str]:
    """avgpool.torch's function against torch.nn.functional's on the same call: the same
    values and strides, or errors of the same built-in class."""
    import torch
    import torch.nn.functional as F

    import avgpool.torch as apt

    outcomes = []
    for module in (F, apt):
        x = _torch_input(spec["array"])
        try:
            outcomes.append(("ok", getattr(module, spec["op"])(x, *spec["args"], **spec["kwargs"])))
        except Exception as exc:
            outcomes.append(("error", exc))
    (theirs, expected), (ours, got) = outcomes
    if theirs == "error" and ours == "error":
        for base in (TypeError, IndexError, RuntimeError, ValueError):
            if isinstance(expected, base) and not isinstance(got, base):
                return "wrong", f"torch raised {type(expected).__name__}, avgpool {type(got).__name__}: {got}"
        return "ok", ""
    if theirs != ours:
        if ours == "error":
            return "mismatch", f"avgpool refused a call torch answers: {got}"
        return "mismatch", f"avgpool answered a call torch refuses: {expected}"
    pairs = zip(expected, got) if isinstance(expected, tuple) else [(expected, got)]
    for e, g in pairs:
        if e.shape != g.shape or e.dtype != g.dtype:
            return "wrong", f"shape/dtype {tuple(g.shape)} {g.dtype} vs torch {tuple(e.shape)} {e.dtype}"
        if e.is_floating_point():
            scale = 1 + (e[e.isfinite()].abs().max().item() if e.isfinite().any() else 0)
            tol = (2e-5 if e.dtype == torch.float32 else 1e-10) * scale
            if not torch.allclose(e, g, rtol=0, atol=tol, equal_nan=True):
                return "wrong", "values differ from torch's"
        elif not torch.equal(e, g):
            return "wrong", "values differ from torch's"
        if e.numel() > 1 and layout_of(e) != layout_of(g):
            return "wrong", f"strides {g.stride()} vs torch's {e.stride()}"
    return "ok", ""
