"""Write ``src/avgpool/bench/layers.toml``: every pooling layer of real CNNs, as data.

    python benchmarks/real_layers.py                 # rebuild the table from the models
    python benchmarks/real_layers.py --check         # exit 1 if the committed table differs
    python benchmarks/real_layers.py --models resnet50 --out -   # one model, to stdout

Each model is built with random weights (no download) in eval mode and run once on a zero
image of its input size (batch 1). Two recorders watch that forward:

- a ``TorchFunctionMode`` sees every pooling *function* call with its arguments, which covers
  the torch.nn pooling modules (their ``forward`` calls ``F.avg_pool2d`` / ``F.max_pool2d`` /
  ``F.adaptive_*``) and the functional pools written into a model's ``forward`` (Inception's
  ``F.avg_pool2d(x, 3, 1, 1)`` and ``F.max_pool2d(x, 3, 2)``, DenseNet's and MobileNetV2's
  ``F.adaptive_avg_pool2d(out, (1, 1))`` heads);
- forward pre-hooks on every module keep the stack of module names (the row's ``used_by`` says
  where a call happened), and mark antialiased-cnns' ``BlurPool`` modules: a blur pool is
  recorded from the module's attributes (filt_size, stride, pad_type, pad_off) and the
  reflection pad and depthwise conv inside it are not pooling rows.

Rows with the same op, geometry and per-sample input shape are one row; ``used_by`` lists every
model and module that runs it. An adaptive average to 1x1 is recorded as ``global_avg``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parents[1] / "src" / "avgpool" / "bench" / "layers.toml"

#: name -> (what it is, builder, per-sample input shape). Builders import lazily.
MODELS: dict[str, tuple[str, Callable[[], Any], tuple[int, int, int]]] = {}


def _model(name: str, about: str, size: int):
    def register(build: Callable[[], Any]) -> Callable[[], Any]:
        MODELS[name] = (about, build, (3, size, size))
        return build

    return register


def _import_torchvision() -> Any:
    """torchvision's models. A torchvision whose compiled ops do not load (a CUDA wheel beside a
    CPU torch) fails at import when it registers fake kernels for ops that do not exist; the
    models need none of those ops, so those registrations are skipped."""
    import torch
    import torch.library

    real = torch.library.register_fake

    def lenient(op: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(op, str) and "::" in op:
            ns, name = op.split("::", 1)
            if not hasattr(getattr(torch.ops, ns), name.split(".")[0]):
                return lambda fn: fn
        return real(op, *args, **kwargs)

    torch.library.register_fake = lenient
    try:
        import torchvision.models as tvm
    finally:
        torch.library.register_fake = real
    return tvm


@_model("resnet50", "torchvision ResNet-50", 224)
def _resnet50() -> Any:
    return _import_torchvision().resnet50(weights=None)


@_model("vgg16", "torchvision VGG-16", 224)
def _vgg16() -> Any:
    return _import_torchvision().vgg16(weights=None)


@_model("inception_v3", "torchvision Inception-v3 (its avg 3x3/1 p1 counts the padding)", 299)
def _inception_v3() -> Any:
    return _import_torchvision().inception_v3(weights=None, aux_logits=False, init_weights=False)


@_model(
    "inception_v4",
    "timm Inception-v4 (35/17/8 planes, avg 3x3/1 p1 with count_include_pad=False, as TensorFlow's SAME)",
    299,
)
def _inception_v4() -> Any:
    _import_torchvision()  # timm imports torchvision
    import timm

    return timm.create_model("inception_v4", pretrained=False)


@_model("densenet121", "torchvision DenseNet-121", 224)
def _densenet121() -> Any:
    return _import_torchvision().densenet121(weights=None)


@_model("mobilenet_v2", "torchvision MobileNetV2", 224)
def _mobilenet_v2() -> Any:
    return _import_torchvision().mobilenet_v2(weights=None)


@_model("resnet50_aa", "antialiased-cnns ResNet-50 (BlurPool filt_size 4, reflect padding)", 224)
def _resnet50_aa() -> Any:
    _import_torchvision()  # antialiased_cnns imports torchvision
    import antialiased_cnns

    return antialiased_cnns.resnet50(pretrained=False, filter_size=4)


# positional parameters of the pooling functions, after the input
_PARAMS = {
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "adaptive_avg_pool2d": ("output_size",),
    "adaptive_max_pool2d": ("output_size", "return_indices"),
}
_DEFAULTS = {
    "stride": None,
    "padding": 0,
    "ceil_mode": False,
    "count_include_pad": True,
    "divisor_override": None,
    "dilation": 1,
    "return_indices": False,
}


def _pair(value: Any, name: str) -> list[int]:
    if isinstance(value, int):
        return [value, value]
    value = [int(v) for v in value]
    if len(value) == 1:
        value = value * 2
    if len(value) != 2:
        raise ValueError(f"{name}: expected 2 values, got {value}")
    return value


def _function_name(func: Any) -> str | None:
    name = getattr(func, "__name__", "").lstrip("_")
    name = name.replace("max_pool2d_with_indices", "max_pool2d")
    return name if name in _PARAMS else None


def _pool_row(name: str, args: tuple, kwargs: dict, out_shape: tuple[int, ...]) -> dict[str, Any]:
    x, *rest = args
    given = dict(zip(_PARAMS[name], rest), **kwargs)
    get = {**_DEFAULTS, **given}
    shape = list(x.shape[1:])
    row: dict[str, Any] = {"shape": shape}
    if name.startswith("adaptive"):
        size = _pair(get["output_size"], "output_size")
        size = [shape[1 + i] if s is None else s for i, s in enumerate(size)]
        if name == "adaptive_avg_pool2d" and size == [1, 1]:
            row["op"] = "global_avg"
        else:
            row.update(op=f"adaptive_{name.split('_')[1]}", output_size=size)
    else:
        kernel = _pair(get["kernel_size"], "kernel_size")
        stride = _pair(get["stride"], "stride") if get["stride"] not in (None, [], ()) else kernel
        padding = _pair(get["padding"], "padding")
        if padding[0] != padding[1]:
            raise ValueError(f"{name}: unequal padding {padding} is not in the table's form")
        row.update(
            op="avg" if name == "avg_pool2d" else "max", kernel=kernel, stride=stride, padding=padding[0]
        )
        if get["ceil_mode"]:
            row["ceil_mode"] = True
        if name == "avg_pool2d":
            if get["divisor_override"] is not None:
                raise ValueError("divisor_override is not in the table's form")
            row["count_include_pad"] = bool(get["count_include_pad"])
        elif _pair(get["dilation"], "dilation") != [1, 1]:
            raise ValueError("dilated max pooling is not in the table's form")
    row["out"] = list(out_shape[1:])
    return row


def record_layers(name: str) -> list[dict[str, Any]]:
    """The pooling calls of one model's forward, in order: one row per call, ``used_by`` set."""
    import torch
    from torch.overrides import TorchFunctionMode

    _, build, sample = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    stack: list[str] = []
    rows: list[dict[str, Any]] = []
    blur_depth = [0]

    def is_blur(module: Any) -> bool:
        return type(module).__name__ in ("BlurPool", "BlurPool2d") and hasattr(module, "filt_size")

    def pre(module_name: str, module: Any):
        def hook(mod: Any, inputs: tuple) -> None:
            stack.append(module_name)
            if is_blur(mod):
                blur_depth[0] += 1

        return hook

    def post(module_name: str, module: Any):
        def hook(mod: Any, inputs: tuple, output: Any) -> None:
            stack.pop()
            if is_blur(mod):
                blur_depth[0] -= 1
                x = inputs[0]
                rows.append(
                    {
                        "op": "blur",
                        "shape": list(x.shape[1:]),
                        "filt_size": int(mod.filt_size),
                        "stride": int(mod.stride),
                        "pad_type": str(getattr(mod, "pad_type", None) or _pad_type(mod)),
                        "pad_off": int(getattr(mod, "pad_off", 0)),
                        "out": list(output.shape[1:]),
                        "used_by": [f"{name}: {module_name}"],
                    }
                )

        return hook

    handles = []
    for module_name, module in model.named_modules():
        if module_name:
            handles.append(module.register_forward_pre_hook(pre(module_name, module)))
            handles.append(module.register_forward_hook(post(module_name, module)))

    class Pools(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            fname = _function_name(func)
            if fname is not None and blur_depth[0] == 0:
                y = out[0] if isinstance(out, tuple) else out
                row = _pool_row(fname, args, kwargs, tuple(y.shape))
                where = stack[-1] if stack else "forward"
                row["used_by"] = [f"{name}: {where}" + ("" if _is_module_call(stack, model) else " (F.)")]
                rows.append(row)
            return out

    try:
        with torch.no_grad(), Pools():
            model(torch.zeros(1, *sample))
    finally:
        for h in handles:
            h.remove()
    return rows


def _pad_type(module: Any) -> str:
    pad = type(getattr(module, "pad", None)).__name__
    return {"ReflectionPad2d": "reflect", "ReplicationPad2d": "replicate", "ZeroPad2d": "zero"}.get(pad, pad)


def _is_module_call(stack: list[str], model: Any) -> bool:
    """Whether the innermost running module is itself a pooling module (so the call is its own)."""
    if not stack:
        return False
    module = model.get_submodule(stack[-1])
    return "Pool" in type(module).__name__


_GEOMETRY = (
    "kernel",
    "stride",
    "padding",
    "ceil_mode",
    "count_include_pad",
    "output_size",
    "filt_size",
    "pad_type",
    "pad_off",
)


def _identity(row: dict[str, Any]) -> tuple:
    return (row["op"], tuple(row["shape"]), *(repr(row.get(k)) for k in _GEOMETRY))


def _key(row: dict[str, Any]) -> str:
    c, h, w = row["shape"]
    op = row["op"]
    if op == "global_avg":
        geo = "global"
    elif op == "blur":
        geo = f"blur{row['filt_size']}s{row['stride']}{row['pad_type'][:4]}"
        geo += f"o{row['pad_off']}" if row["pad_off"] else ""
    elif op.startswith("adaptive"):
        geo = f"{op}{'x'.join(map(str, row['output_size']))}"
    else:
        k, s = row["kernel"], row["stride"]
        geo = f"{op}{k[0]}x{k[1]}s{s[0]}" + (f"x{s[1]}" if s[1] != s[0] else "")
        geo += f"p{row['padding']}" if row["padding"] else ""
        geo += "ex" if row.get("count_include_pad") is False else ""
        geo += "ceil" if row.get("ceil_mode") else ""
    return f"{geo}_{c}x{h}x{w}"


def _title(row: dict[str, Any]) -> str:
    op = row["op"]
    if op == "global_avg":
        return "global avg"
    if op == "blur":
        return f"blur {row['filt_size']}/{row['stride']} {row['pad_type']}"
    if op.startswith("adaptive"):
        return f"{op.replace('_', ' ')} to {'x'.join(map(str, row['output_size']))}"
    k, s = row["kernel"], row["stride"]
    text = f"{op} {k[0]}x{k[1]}/{s[0]}" + (f"x{s[1]}" if s[1] != s[0] else "")
    text += f" p{row['padding']}" if row["padding"] else ""
    text += ", pad not counted" if row.get("count_include_pad") is False else ""
    return text + (", ceil" if row.get("ceil_mode") else "")


def collect(names: list[str]) -> list[dict[str, Any]]:
    """Every model's rows, deduplicated (first appearance keeps its place), keys and titles set."""
    table: dict[tuple, dict[str, Any]] = {}
    for name in names:
        for row in record_layers(name):
            ident = _identity(row)
            if ident in table:
                for where in row["used_by"]:
                    if where not in table[ident]["used_by"]:
                        table[ident]["used_by"].append(where)
            else:
                table[ident] = row
    rows = list(table.values())
    for row in rows:
        row["key"], row["title"] = _key(row), _title(row)
    keys = [r["key"] for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two rows share a key: {sorted(k for k in keys if keys.count(k) > 1)}")
    return rows


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


_ORDER = ("key", "title", "op", "shape", *_GEOMETRY, "out", "used_by")

_HEADER = """\
# Every pooling layer of real CNNs, with its exact geometry and per-sample input shape (C, H, W).
# GENERATED by benchmarks/real_layers.py from the models themselves (random weights, one forward
# at batch 1, pooling calls recorded); edit the script, not this file. `make bench`'s "real
# layers" suite runs each row at the batches cases.toml's [layers] names, channels-first and
# channels-last.
#
# op: "avg", "max", "global_avg" (an adaptive average to 1x1), "adaptive_avg" / "adaptive_max"
# (output_size), "blur" (antialiased-cnns' BlurPool: binomial filt_size, stride, pad_type, pad_off).
# stride defaults to the kernel; padding is the same on every side; out is the output (C, H, W).
# used_by: "model: module" where the layer runs ("(F.)": a functional call in that module's forward).
"""


def render(names: list[str], rows: list[dict[str, Any]]) -> str:
    lines = [_HEADER]
    lines.append("# The models the rows come from (name: what it is, input (C, H, W)).")
    lines.append("[models]")
    for name in names:
        about, _, sample = MODELS[name]
        lines.append(f"{name} = {{ about = {_toml_value(about)}, input = {_toml_value(list(sample))} }}")
    lines.append("")
    for row in rows:
        lines.append("[[layer]]")
        for k in _ORDER:
            if k in row and row[k] is not None:
                lines.append(f"{k} = {_toml_value(row[k])}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma-separated, default all: {','.join(MODELS)}")
    p.add_argument("--out", default=str(TABLE), help="where to write ('-': stdout)")
    p.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = p.parse_args(argv)
    names = args.models.split(",") if args.models else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    text = render(names, collect(names))
    if args.check:
        same = Path(args.out).read_text() == text
        print(f"{args.out}: {'up to date' if same else 'differs from the models; rerun without --check'}")
        return 0 if same else 1
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: {len(collect_count(text))} layers from {len(names)} models")
    return 0


def collect_count(text: str) -> list[str]:
    return [line for line in text.splitlines() if line == "[[layer]]"]


if __name__ == "__main__":
    sys.exit(main())
