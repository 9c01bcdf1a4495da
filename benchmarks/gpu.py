"""avgpool's Triton kernels beside PyTorch's CUDA pooling and the HBM bandwidth floor.

Run on a machine with an NVIDIA GPU, Triton and a CUDA build of PyTorch:

    python benchmarks/gpu.py                 # the table, as Markdown, on stdout
    python benchmarks/gpu.py --json out.json # also the raw numbers

Method. Each case is timed with CUDA events: 10 warm-up calls, then the median of 50 timed
calls (each call's own event pair; the sample count is printed). The bandwidth floor is the
time a case would take if it only moved its bytes: ``(input bytes + output bytes) / copy
rate``, where the copy rate is measured in the same run by ``torch.Tensor.copy_`` between two
1 GiB buffers (read + write bytes / seconds, best of 20). ``floor / time`` is the fraction
of the floor reached. Every avgpool result is checked against PyTorch's before it is timed.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys

import torch
import torch.nn.functional as F

import avgpool.torch as apt

CASES = [
    # (name, input shape, kernel, stride, padding, layout, ops); ops: avg, max (forward), avg-bwd
    ("resnet stem 3/2", (64, 64, 112, 112), 3, 2, 1, "nchw", ("avg", "max")),
    ("resnet stem 3/2, channels_last", (64, 64, 112, 112), 3, 2, 1, "channels_last", ("avg", "max")),
    ("2/2", (64, 256, 56, 56), 2, 2, 0, "nchw", ("avg", "max", "avg-bwd")),
    ("2/2, channels_last", (64, 256, 56, 56), 2, 2, 0, "channels_last", ("avg", "avg-bwd")),
    ("3/1 pad 1", (64, 256, 28, 28), 3, 1, 1, "nchw", ("avg", "max")),
    ("7/1 pad 3", (32, 256, 28, 28), 7, 1, 3, "nchw", ("avg", "max", "avg-bwd")),
    # a window above DIRECT_TAPS runs as one pass per axis: its cost should not grow with it
    ("15/1 pad 7", (8, 64, 112, 112), 15, 1, 7, "nchw", ("avg", "max", "avg-bwd")),
    ("15/1 pad 7, channels_last", (8, 64, 112, 112), 15, 1, 7, "channels_last", ("avg", "max")),
    ("3-D 2/2", (8, 64, 32, 56, 56), 2, 2, 0, "nchw", ("avg", "max", "avg-bwd")),
]
QUICK = ("2/2", "15/1 pad 7", "3-D 2/2")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _time(fn, warmup: int = 10, repeats: int = 50) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def copy_rate() -> float:
    """Bytes moved (read + write) per second by a device-to-device copy of 1 GiB."""
    a = torch.empty(2**28, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    best = _time(lambda: b.copy_(a), warmup=3, repeats=20)
    return 2 * a.numel() * a.element_size() / best


def _pair(op: str, x: torch.Tensor, k: int, s: int, p: int):
    """(avgpool's call, PyTorch's call, elements read + written) for one op on x."""
    nd = x.dim() - 2
    if op == "avg-bwd":
        g = torch.randn_like(F.avg_pool2d(x, k, s, p) if nd == 2 else F.avg_pool3d(x, k, s, p))
        aten = torch.ops.aten.avg_pool2d_backward if nd == 2 else torch.ops.aten.avg_pool3d_backward
        n = [k] * nd, [s] * nd, [p] * nd
        return (
            functools.partial(apt.avg_pool_backward, g, x.shape, k, s, p),
            functools.partial(aten, g, x, *n, False, True, None),
            g.numel() + x.numel(),
        )
    ours = getattr(apt, f"{op}_pool{nd}d")
    theirs = getattr(F, f"{op}_pool{nd}d")
    out = theirs(x, k, s, p).numel()
    return functools.partial(ours, x, k, s, p), functools.partial(theirs, x, k, s, p), x.numel() + out


def run(rate: float, quick: bool = False) -> list[dict]:
    rows = []
    for name, shape, k, s, p, layout, ops in CASES:
        if quick and name not in QUICK:
            continue
        for dtype in DTYPES[:1] if quick else DTYPES:
            x = torch.randn(*shape, device="cuda", dtype=dtype)
            if layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            for op in ops:
                ours_f, theirs_f, moved = _pair(op, x, k, s, p)
                torch.testing.assert_close(ours_f().float(), theirs_f().float(), rtol=2e-2, atol=2e-2)
                floor = moved * x.element_size() / rate
                ours, theirs = _time(ours_f), _time(theirs_f)
                rows.append(
                    {
                        "case": f"{op} {name}",
                        "dtype": str(dtype).replace("torch.", ""),
                        "avgpool_ms": ours * 1e3,
                        "torch_ms": theirs * 1e3,
                        "floor_ms": floor * 1e3,
                        "avgpool_of_floor": floor / ours,
                        "torch_of_floor": floor / theirs,
                        "samples": 50,
                    }
                )
    return rows


def markdown(rows: list[dict], rate: float) -> str:
    lines = [
        f"GPU: {torch.cuda.get_device_name()}; copy rate {rate / 1e9:.0f} GB/s (read + write); "
        "median of 50 timed calls",
        "",
        "| case | dtype | avgpool ms | torch ms | floor ms | avgpool / floor | torch / floor |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['avgpool_ms']:.3f} | {r['torch_ms']:.3f} | "
            f"{r['floor_ms']:.3f} | {r['avgpool_of_floor']:.0%} | {r['torch_of_floor']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--quick", action="store_true", help=f"float32 and {', '.join(QUICK)} only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    rate = copy_rate()
    rows = run(rate, args.quick)
    print(markdown(rows, rate))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": torch.cuda.get_device_name(), "copy_bytes_per_s": rate, "rows": rows}, f, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
