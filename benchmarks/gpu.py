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
    # (name, input shape, kernel, stride, padding, layout)
    ("resnet stem max 3/2", (64, 64, 112, 112), 3, 2, 1, "nchw"),
    ("resnet stem max 3/2, channels_last", (64, 64, 112, 112), 3, 2, 1, "channels_last"),
    ("avg 2/2", (64, 256, 56, 56), 2, 2, 0, "nchw"),
    ("avg 3/1 pad 1", (64, 256, 28, 28), 3, 1, 1, "nchw"),
    ("avg 7/1 pad 3", (32, 256, 28, 28), 7, 1, 3, "nchw"),
    ("avg 3/1, channels_last", (64, 256, 28, 28), 3, 1, 1, "channels_last"),
]
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


def run(rate: float) -> list[dict]:
    rows = []
    for name, shape, k, s, p, layout in CASES:
        for dtype in DTYPES:
            x = torch.randn(*shape, device="cuda", dtype=dtype)
            if layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            for op in ("avg", "max"):
                ours_op = apt.avg_pool2d if op == "avg" else apt.max_pool2d
                theirs_op = F.avg_pool2d if op == "avg" else F.max_pool2d
                ours_f = functools.partial(ours_op, x, k, s, p)
                theirs_f = functools.partial(theirs_op, x, k, s, p)
                torch.testing.assert_close(ours_f().float(), theirs_f().float(), rtol=2e-2, atol=2e-2)
                y = theirs_f()
                floor = (x.numel() + y.numel()) * x.element_size() / rate
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
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    rate = copy_rate()
    rows = run(rate)
    print(markdown(rows, rate))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": torch.cuda.get_device_name(), "copy_bytes_per_s": rate, "rows": rows}, f, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
