"""Write golden pooling outputs from the real TensorFlow, Keras and Flax.

Run by hand (not by CI), from the repository root, with a Python that has the
frameworks installed -- never the project venv, which must stay free of them::

    python3 -m venv /tmp/goldenvenv
    /tmp/goldenvenv/bin/pip install tensorflow-cpu keras jax jaxlib flax numpy
    /tmp/goldenvenv/bin/python scripts/make_golden.py [--out tests/golden]

Last generated with tensorflow-cpu 2.21.0, keras 3.15.1 (TensorFlow backend),
jax/jaxlib 0.10.2, flax 0.12.8, numpy 2.4.6 on CPU.  The exact versions are
also stored in every file (see ``meta`` below).  Seeds are fixed, so a rerun
with the same versions writes the same arrays.

Files: ``tensorflow.npz``, ``keras.npz``, ``flax.npz`` (``np.savez_compressed``).

Schema of each file:

* ``x_{i}``: the input of case ``i``, in the framework's own layout
  (TF: ``data_format``; Keras: ``data_format`` of the layer; Flax: channels
  last, ``(N, *spatial, C)`` or unbatched ``(*spatial, C)``).
* ``y_{i}``: what the framework returned for it (same dtype as ``x_{i}``).
* ``cases``: a 0-d string array holding ``json.dumps(list_of_dicts)``, one dict
  per case with at least ``id`` (== ``i``), ``op`` (``"avg"``, ``"max"``,
  ``"global_avg"`` or ``"global_max"``), ``fn`` (the framework callable), and the
  exact arguments given to the framework:

  - TensorFlow: ``ksize``, ``strides``, ``padding`` (``"SAME"``, ``"VALID"`` or
    explicit ``[[before, after], ...]`` over all dims, max only),
    ``data_format``.
  - Keras: ``class_name``, ``kwargs`` (what the constructor got, without
    ``dtype``), and ``config`` (``layer.get_config()``, made JSON-safe).
    ``Window.from_keras({"class_name": ..., "config": ...})`` reads it.
  - Flax: ``window_shape``, ``strides`` (``null`` = framework default),
    ``padding`` (``"SAME"``, ``"VALID"`` or ``[[low, high], ...]`` per spatial
    dim), ``count_include_pad`` (avg only), ``batched``.

  Also ``dtype`` (``"float64"``, or ``"float32"`` where the framework refuses
  float64), ``x_shape``, ``y_shape``, ``ndim`` (spatial dims) and an optional
  ``note`` (e.g. ``"nan/inf input"``, ``"all-padding windows"``).
* ``meta``: a 0-d string array holding JSON: framework versions, the Keras
  backend, the seed, and ``refused``: argument sets the framework raised on
  (e.g. TF ``NCHW`` pooling on CPU), with the error's first line.

Inputs are mostly multiples of 1/64 (exact sums, compress well); some cases use
standard-normal values and some contain NaN / +inf / -inf.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np

SEED = 20240611


# --------------------------------------------------------------------------- helpers
def make_input(rng: np.random.Generator, shape, kind: str = "dyadic") -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(shape)
    x = rng.integers(-512, 513, size=shape) / 64.0
    if kind == "special":
        flat = x.reshape(-1)
        n = flat.size
        picks = rng.choice(n, size=min(n, max(1, n // 8)), replace=False)
        for j, p in enumerate(picks):
            flat[p] = (np.nan, np.inf, -np.inf)[j % 3]
    return x


def nan_windows() -> np.ndarray:
    """(1, 10, 2): pairs (nan, 1), (1, nan), (nan, nan), (nan, -inf), (-inf, -inf) in channel 0."""
    ch0 = [np.nan, 1, 1, np.nan, np.nan, np.nan, np.nan, -np.inf, -np.inf, -np.inf]
    ch1 = [-np.inf, 2, np.inf, -np.inf, 0.5, np.nan, -3, -4, np.inf, np.nan]
    return np.stack([ch0, ch1], axis=-1)[None].astype(np.float64)


def jsonable(obj):
    """Tuples -> lists, numpy scalars -> Python, recursively."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:300] if msg else ''}"


class Writer:
    def __init__(self, framework: str):
        self.framework = framework
        self.arrays: dict[str, np.ndarray] = {}
        self.cases: list[dict] = []
        self.refused: list[dict] = []
        self._refused_keys: set[str] = set()

    def add(self, x: np.ndarray, y: np.ndarray, case: dict) -> None:
        i = len(self.cases)
        y = np.asarray(y)
        assert y.dtype == x.dtype, (case, x.dtype, y.dtype)
        self.arrays[f"x_{i}"] = x
        self.arrays[f"y_{i}"] = y
        case = {"id": i, **case, "dtype": str(x.dtype)}
        case["x_shape"] = list(x.shape)
        case["y_shape"] = list(y.shape)
        self.cases.append(jsonable(case))

    def refuse(self, key: str, args: dict, exc: BaseException) -> None:
        if key in self._refused_keys:
            return
        self._refused_keys.add(key)
        self.refused.append(jsonable({"what": key, "args": args, "error": first_line(exc)}))

    def save(self, path: str, meta: dict) -> None:
        meta = {**meta, "framework": self.framework, "refused": self.refused}
        np.savez_compressed(
            path,
            cases=np.array(json.dumps(self.cases)),
            meta=np.array(json.dumps(jsonable(meta))),
            **self.arrays,
        )
        print(f"{path}: {len(self.cases)} cases, {len(self.refused)} refused kinds")


def rand_geometry(rng, nd, *, valid: bool, max_size: int):
    """Kernel, stride and spatial sizes; for VALID every size >= kernel."""
    k = [int(rng.integers(1, 5)) for _ in range(nd)]
    s = [int(rng.integers(1, 5)) for _ in range(nd)]
    sizes = []
    for d in range(nd):
        lo = k[d] if valid else 1
        sizes.append(int(rng.integers(lo, max(lo, max_size) + 1)))
    mode = rng.random()
    if mode < 0.15:  # kernel == input size
        k = list(sizes)
        k = [min(v, 5) for v in k]
        sizes = list(k)
    elif mode < 0.3:  # stride == kernel
        s = list(k)
    return k, s, sizes


MAX_SIZE = {1: 9, 2: 9, 3: 5}
SPATIAL_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


# --------------------------------------------------------------------------- TensorFlow
def tensorflow_cases(rng) -> Writer:
    import tensorflow as tf

    w = Writer("tensorflow")

    def run(op, x, ksize, strides, padding, data_format, note=None):
        fn = tf.nn.avg_pool if op == "avg" else tf.nn.max_pool
        fname = "tf.nn.avg_pool" if op == "avg" else "tf.nn.max_pool"
        nd = x.ndim - 2
        args = {"ksize": ksize, "strides": strides, "padding": padding, "data_format": data_format}
        pad_kind = padding if isinstance(padding, str) else "EXPLICIT"
        xs = [x]
        if x.dtype == np.float64:
            xs.append(x.astype(np.float32))
        for xi in xs:
            key = f"{fname} {nd}-D {data_format} {pad_kind} {xi.dtype}"
            try:
                t = tf.constant(xi, dtype=tf.as_dtype(xi.dtype))
                y = fn(t, ksize, strides, padding, data_format=data_format).numpy()
            except Exception as exc:
                w.refuse(key, args, exc)
                continue
            if y.dtype != xi.dtype:
                w.refuse(key, args, TypeError(f"output dtype {y.dtype} != input {xi.dtype}"))
                continue
            case = {"op": op, "fn": fname, "ndim": nd, **args}
            if note:
                case["note"] = note
            w.add(xi, y, case)
            return True
        return False

    def layout(nd, n, c, sizes, channels_first):
        if channels_first:
            return (n, c, *sizes), "NC" + SPATIAL_LETTERS[nd]
        return (n, *sizes, c), "N" + SPATIAL_LETTERS[nd] + "C"

    def ksize_form(vals, nd, channels_first, form):
        if form == "int" and len(set(vals)) == 1:
            return vals[0]
        if form == "full":
            return [1, 1, *vals] if channels_first else [1, *vals, 1]
        return list(vals)

    # pinned cases: the classic 5x5, 3x3 stride 2 SAME (TF excludes the padding)
    for op in ("avg", "max"):
        for shape in ((1, 5, 5, 1), (2, 5, 5, 3)):
            run(op, make_input(rng, shape), 3, 2, "SAME", "NHWC", note="5x5 k3 s2 SAME")
        run(op, make_input(rng, (1, 5, 5, 2)), [3, 3], [2, 2], "VALID", "NHWC")
        run(op, make_input(rng, (1, 6, 6, 1)), [1, 3, 3, 1], [1, 2, 2, 1], "SAME", "NHWC")
        for df, shape in (("NCHW", (1, 2, 5, 5)), ("NCW", (1, 2, 7)), ("NCDHW", (1, 1, 4, 5, 5))):
            run(op, make_input(rng, shape), 3, 2, "SAME", df, note="channels-first")
    run("max", make_input(rng, (1, 5, 5, 1)), 3, 2, [[0, 0], [1, 1], [1, 1], [0, 0]], "NHWC")
    run("max", make_input(rng, (1, 5, 5, 1)), 3, 2, [[0, 0], [0, 0], [1, 1], [1, 1]], "NCHW")
    # TF wants every explicit pad < ksize, so pad = ksize - 1 is the widest
    run("max", make_input(rng, (1, 2, 3, 1)), 3, 1, [[0, 0], [2, 2], [0, 2], [0, 0]], "NHWC")
    run("max", make_input(rng, (1, 6, 2)), [4], [3], [[0, 0], [3, 1], [0, 0]], "NWC")
    # nan / inf
    for op in ("avg", "max"):
        for nd, shape in ((1, (1, 9, 2)), (2, (1, 6, 7, 2)), (3, (1, 4, 4, 4, 1))):
            run(
                op,
                make_input(rng, shape, "special"),
                2,
                2,
                "SAME",
                layout(nd, 1, 1, [1] * nd, 0)[1],
                note="nan/inf input",
            )
            run(
                op,
                make_input(rng, shape, "special"),
                3,
                1,
                "VALID",
                layout(nd, 1, 1, [1] * nd, 0)[1],
                note="nan/inf input",
            )

    # TF max pooling skips NaN and starts from the lowest finite value, not -inf
    note = "nan/-inf-only windows"
    for op in ("max", "avg"):
        run(op, nan_windows(), 2, 2, "VALID", "NWC", note=note)
        run(op, nan_windows()[:, :, None, None, :], [2, 1, 1], [2, 1, 1], "VALID", "NDHWC", note=note)

    target = 110
    attempts = 0
    while len(w.cases) < target and attempts < 2000:
        attempts += 1
        op = "avg" if rng.random() < 0.5 else "max"
        nd = int(rng.choice([1, 2, 2, 3]))
        channels_first = rng.random() < 0.15
        r = rng.random()
        if op == "max" and nd < 3 and r < 0.45:
            padding = "EXPLICIT"
        else:
            padding = "SAME" if r < 0.65 else "VALID"
        k, s, sizes = rand_geometry(rng, nd, valid=(padding == "VALID"), max_size=MAX_SIZE[nd])
        n = int(rng.integers(1, 3))
        c = int(rng.integers(1, 4)) if nd < 3 else int(rng.integers(1, 3))
        shape, df = layout(nd, n, c, sizes, channels_first)
        if padding == "EXPLICIT":
            pads = [[int(rng.integers(0, kk)), int(rng.integers(0, kk))] for kk in k]
            padding = [[0, 0], [0, 0], *pads] if channels_first else [[0, 0], *pads, [0, 0]]
        form = str(rng.choice(["int", "spatial", "full"]))
        kind = "normal" if rng.random() < 0.2 else "dyadic"
        run(
            op,
            make_input(rng, shape, kind),
            ksize_form(k, nd, channels_first, form),
            ksize_form(s, nd, channels_first, form),
            padding,
            df,
        )
    return w


# --------------------------------------------------------------------------- Keras
KERAS_POOL = {
    ("avg", 1): "AveragePooling1D",
    ("avg", 2): "AveragePooling2D",
    ("avg", 3): "AveragePooling3D",
    ("max", 1): "MaxPooling1D",
    ("max", 2): "MaxPooling2D",
    ("max", 3): "MaxPooling3D",
    ("global_avg", 1): "GlobalAveragePooling1D",
    ("global_avg", 2): "GlobalAveragePooling2D",
    ("global_avg", 3): "GlobalAveragePooling3D",
    ("global_max", 1): "GlobalMaxPooling1D",
    ("global_max", 2): "GlobalMaxPooling2D",
    ("global_max", 3): "GlobalMaxPooling3D",
}


def keras_cases(rng) -> Writer:
    import keras

    w = Writer("keras")

    def run(op, nd, x, kwargs, note=None):
        cls_name = KERAS_POOL[(op, nd)]
        cls = getattr(keras.layers, cls_name)
        xs = [x]
        if x.dtype == np.float64:
            xs.append(x.astype(np.float32))
        for xi in xs:
            key = f"{cls_name} {kwargs.get('data_format')} {kwargs.get('padding')} {xi.dtype}"
            try:
                layer = cls(**kwargs, dtype=str(xi.dtype))
                y = keras.ops.convert_to_numpy(layer(xi))
            except Exception as exc:
                w.refuse(key, kwargs, exc)
                continue
            if y.dtype != xi.dtype:
                w.refuse(key, kwargs, TypeError(f"output dtype {y.dtype} != input {xi.dtype}"))
                continue
            case = {
                "op": op,
                "fn": f"keras.layers.{cls_name}",
                "ndim": nd,
                "class_name": cls_name,
                "kwargs": kwargs,
                "config": jsonable(layer.get_config()),
            }
            if note:
                case["note"] = note
            w.add(xi, y, case)
            return True
        return False

    def shape_for(nd, n, c, sizes, data_format):
        return (n, c, *sizes) if data_format == "channels_first" else (n, *sizes, c)

    # pinned
    for op in ("avg", "max"):
        for df in ("channels_last", "channels_first"):
            run(
                op,
                2,
                make_input(rng, shape_for(2, 1, 2, (5, 5), df)),
                {"pool_size": 3, "strides": 2, "padding": "same", "data_format": df},
                note="5x5 k3 s2 same",
            )
        run(op, 2, make_input(rng, (1, 5, 5, 1)), {"pool_size": (3, 3), "strides": 2, "padding": "valid"})
        run(op, 1, make_input(rng, (2, 7, 3)), {"pool_size": 2})  # strides=None -> pool_size
        run(
            op,
            1,
            make_input(rng, (2, 3, 8)),
            {"pool_size": 3, "strides": 2, "padding": "same", "data_format": "channels_first"},
        )
        run(op, 2, make_input(rng, (1, 6, 5, 1)), {"pool_size": (2, 3), "strides": None, "padding": "same"})
    # nan / inf
    for op in ("avg", "max", "global_avg", "global_max"):
        for nd in (1, 2, 3):
            sizes = (7, 6, 4)[:nd] if nd < 3 else (4, 3, 4)
            kw = {} if op.startswith("global") else {"pool_size": 2, "padding": "same"}
            run(op, nd, make_input(rng, (1, *sizes, 2), "special"), kw, note="nan/inf input")

    for op in ("max", "avg", "global_max", "global_avg"):
        kw = {} if op.startswith("global") else {"pool_size": 2, "padding": "valid"}
        run(op, 1, nan_windows(), kw, note="nan/-inf-only windows")
        if not op.startswith("global"):
            kw["pool_size"] = (2, 1, 1)
        x3 = nan_windows()[:, :, None, None, :].astype(np.float32)
        run(op, 3, x3, kw, note="nan/-inf-only windows")

    # globals: every class x data_format x keepdims
    for op in ("global_avg", "global_max"):
        for nd in (1, 2, 3):
            for df in ("channels_last", "channels_first"):
                for keepdims in (False, True):
                    sizes = [int(rng.integers(1, MAX_SIZE[nd] + 1)) for _ in range(nd)]
                    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
                    kind = "normal" if rng.random() < 0.3 else "dyadic"
                    run(
                        op,
                        nd,
                        make_input(rng, shape_for(nd, n, c, sizes, df), kind),
                        {"data_format": df, "keepdims": keepdims},
                    )

    target = 120
    attempts = 0
    while len(w.cases) < target and attempts < 2000:
        attempts += 1
        op = "avg" if rng.random() < 0.55 else "max"
        nd = int(rng.choice([1, 2, 2, 3]))
        padding = "same" if rng.random() < 0.55 else "valid"
        df = "channels_first" if rng.random() < 0.3 else "channels_last"
        k, s, sizes = rand_geometry(rng, nd, valid=(padding == "valid"), max_size=MAX_SIZE[nd])
        n = int(rng.integers(1, 3))
        c = int(rng.integers(1, 4)) if nd < 3 else int(rng.integers(1, 3))
        kw: dict = {"pool_size": k[0] if len(set(k)) == 1 and rng.random() < 0.5 else tuple(k)}
        r = rng.random()
        if r < 0.15:
            kw["strides"] = None
        elif r < 0.35 and len(set(s)) == 1:
            kw["strides"] = s[0]
        else:
            kw["strides"] = tuple(s)
        kw["padding"] = padding
        if rng.random() < 0.8:
            kw["data_format"] = df
        else:
            df = "channels_last"
        kind = "normal" if rng.random() < 0.2 else "dyadic"
        run(op, nd, make_input(rng, shape_for(nd, n, c, sizes, df), kind), kw)
    return w


# --------------------------------------------------------------------------- Flax
def flax_cases(rng) -> Writer:
    import jax

    jax.config.update("jax_enable_x64", True)
    import flax.linen as nn
    import jax.numpy as jnp

    w = Writer("flax")

    def run(op, x, window_shape, strides, padding, count_include_pad=None, note=None):
        nd = len(window_shape)
        batched = x.ndim == nd + 2
        args: dict = {"window_shape": list(window_shape), "strides": strides, "padding": padding}
        ws = tuple(window_shape)
        st = None if strides is None else tuple(strides)
        pd = padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)
        try:
            if op == "avg":
                args["count_include_pad"] = count_include_pad
                y = nn.avg_pool(jnp.asarray(x), ws, st, pd, count_include_pad=count_include_pad)
            else:
                y = nn.max_pool(jnp.asarray(x), ws, st, pd)
            y = np.asarray(y)
        except Exception as exc:
            w.refuse(f"flax.linen.{op}_pool {nd}-D", args, exc)
            return False
        case = {"op": op, "fn": f"flax.linen.{op}_pool", "ndim": nd, **args, "batched": batched}
        if note:
            case["note"] = note
        w.add(x, y, case)
        return True

    # pinned: 5x5, 3x3 stride 2 SAME, both count_include_pad settings
    for cip in (True, False):
        run("avg", make_input(rng, (1, 5, 5, 1)), (3, 3), (2, 2), "SAME", cip, "5x5 k3 s2 SAME")
        run("avg", make_input(rng, (5, 5, 2)), (3, 3), (2, 2), "SAME", cip, "5x5 k3 s2 SAME")
        run("avg", make_input(rng, (1, 5, 5, 1)), (3, 3), (2, 2), [[1, 1], [1, 1]], cip)
    run("max", make_input(rng, (1, 5, 5, 1)), (3, 3), (2, 2), "SAME", note="5x5 k3 s2 SAME")
    run("max", make_input(rng, (2, 5, 5, 3)), (3, 3), None, "VALID")  # default strides = 1
    run("avg", make_input(rng, (2, 8, 2)), (3,), None, "VALID", True)
    # windows wholly inside the padding (pad >= window)
    for cip in (True, False):
        run("avg", make_input(rng, (1, 3, 1)), (2,), (1,), [[2, 3]], cip, "all-padding windows")
    run("max", make_input(rng, (1, 3, 1)), (2,), (1,), [[2, 3]], note="all-padding windows")
    for op, cip in (("avg", True), ("avg", False), ("max", None)):
        run(op, nan_windows(), (2,), (2,), "VALID", cip, "nan/-inf-only windows")
    # nan / inf
    for op, cip in (("avg", True), ("avg", False), ("max", None)):
        for nd, shape in ((1, (1, 9, 2)), (2, (1, 6, 7, 2)), (3, (4, 4, 4, 1))):
            run(op, make_input(rng, shape, "special"), (2,) * nd, (2,) * nd, "SAME", cip, "nan/inf input")
            run(
                op,
                make_input(rng, shape, "special"),
                (3,) * nd,
                (1,) * nd,
                [[1, 0]] * nd,
                cip,
                "nan/inf input",
            )

    target = 130
    attempts = 0
    while len(w.cases) < target and attempts < 2000:
        attempts += 1
        op = "avg" if rng.random() < 0.6 else "max"
        cip = bool(rng.random() < 0.5) if op == "avg" else None
        nd = int(rng.choice([1, 2, 2, 3]))
        r = rng.random()
        padding = "SAME" if r < 0.35 else ("VALID" if r < 0.65 else "EXPLICIT")
        k, s, sizes = rand_geometry(rng, nd, valid=(padding == "VALID"), max_size=MAX_SIZE[nd])
        if padding == "EXPLICIT":
            padding = [[int(rng.integers(0, kk)), int(rng.integers(0, kk))] for kk in k]
            if nd == 1 and rng.random() < 0.3:
                padding = [[k[0], 0]]  # a leading window entirely in padding
            # at least one window: lax.reduce_window would return an empty axis otherwise
            sizes = [max(n, kk - lo - hi) for n, kk, (lo, hi) in zip(sizes, k, padding)]
        strides = None if rng.random() < 0.1 else s
        c = int(rng.integers(1, 4)) if nd < 3 else int(rng.integers(1, 3))
        batched = rng.random() < 0.75
        shape = (int(rng.integers(1, 3)), *sizes, c) if batched else (*sizes, c)
        kind = "normal" if rng.random() < 0.2 else "dyadic"
        run(op, make_input(rng, shape, kind), k, strides, padding, cip)
    return w


# --------------------------------------------------------------------------- main
def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "machine": platform.machine()}
    for name in ("numpy", "tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "flax"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "tests", "golden")))
    ap.add_argument("--only", choices=("tensorflow", "keras", "flax"), action="append")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    meta = {"versions": versions(), "keras_backend": os.environ["KERAS_BACKEND"], "seed": SEED}
    makers = {"tensorflow": tensorflow_cases, "keras": keras_cases, "flax": flax_cases}
    for offset, (name, maker) in enumerate(makers.items()):
        if args.only and name not in args.only:
            continue
        writer = maker(np.random.default_rng([SEED, offset]))
        writer.save(os.path.join(args.out, f"{name}.npz"), meta)


if __name__ == "__main__":
    main()
