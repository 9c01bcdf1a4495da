"""Per-call cost of avgpool.nn's modules beside their torch.nn twins, on small and medium tensors.

    python benchmarks/overhead.py                       # every module, every shape (about 2 minutes)
    python benchmarks/overhead.py --shapes 1x16x8x8 --modules AvgPool2d,MaxPool2d
    python benchmarks/overhead.py --threads 2 --budget 0.5

Not part of the tests. One thread for both libraries unless ``--threads`` says otherwise. Each
cell is the median over rounds of a block of calls (µs per call); the two libraries alternate
round by round, so a busy machine slows both alike. ``fwd`` is ``module(x)`` under
``torch.no_grad()``; ``fwd+bwd`` is ``module(x)`` on an ``x`` that requires grad, then
``torch.autograd.grad`` of the output against a fixed gradient. BlurPool2d's twin is
antialiased-cnns' own: reflection padding, then a depthwise conv2d with the binomial filter.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import avgpool
import avgpool.nn as apnn

SHAPES = ((1, 16, 8, 8), (64, 16, 8, 8), (32, 64, 56, 56))


class TorchBlurPool2d(torch.nn.Module):
    """antialiased-cnns' BlurPool (filt_size 4, stride 2, reflect padding), in torch alone."""

    def __init__(self, channels: int, filt_size: int = 4, stride: int = 2) -> None:
        super().__init__()
        row = torch.tensor([1.0, 3.0, 3.0, 1.0])[:filt_size]
        filt = row[:, None] * row[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1), False)
        self.pad = torch.nn.ReflectionPad2d(((filt_size - 1) // 2, filt_size // 2) * 2)
        self.stride, self.channels = stride, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(self.pad(x), self.filt, stride=self.stride, groups=self.channels)


def pairs(channels: int) -> dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], torch.nn.Module]]]:
    """Module name -> (avgpool's, torch's) constructors."""
    return {
        "AvgPool2d(2)": (lambda: apnn.AvgPool2d(2), lambda: torch.nn.AvgPool2d(2)),
        "AvgPool2d(3,2,1)": (lambda: apnn.AvgPool2d(3, 2, 1), lambda: torch.nn.AvgPool2d(3, 2, 1)),
        "MaxPool2d(2)": (lambda: apnn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2)),
        "MaxPool2d(2,indices)": (
            lambda: apnn.MaxPool2d(2, return_indices=True),
            lambda: torch.nn.MaxPool2d(2, return_indices=True),
        ),
        "AdaptiveAvgPool2d(2)": (lambda: apnn.AdaptiveAvgPool2d(2), lambda: torch.nn.AdaptiveAvgPool2d(2)),
        "GlobalAvgPool": (lambda: apnn.GlobalAvgPool(), lambda: torch.nn.AdaptiveAvgPool2d(1)),
        "LPPool2d(2,2)": (lambda: apnn.LPPool2d(2, 2), lambda: torch.nn.LPPool2d(2, 2)),
        "BlurPool2d": (lambda: apnn.BlurPool2d(channels), lambda: TorchBlurPool2d(channels)),
    }


def _first(y):
    return y[0] if isinstance(y, tuple) else y


def caller(module: torch.nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    if not backward:

        def call() -> None:
            with torch.no_grad():
                module(x)

        return call
    xg = x.clone().requires_grad_(True)
    grad = torch.randn_like(_first(module(xg)))

    def call_bwd() -> None:
        torch.autograd.grad(_first(module(xg)), xg, grad)

    return call_bwd


def block_size(fn: Callable[[], None], target_s: float) -> int:
    """Calls per timed block so that one block takes about ``target_s``."""
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    one = max(time.perf_counter() - start, 1e-7)
    return max(1, min(1000, int(target_s / one)))


def compare(ours: Callable[[], None], theirs: Callable[[], None], budget_s: float) -> tuple[float, float]:
    """Median µs per call of each, over interleaved rounds of blocks (at least 5 rounds)."""
    n_ours, n_theirs = block_size(ours, 2e-3), block_size(theirs, 2e-3)
    times: tuple[list[float], list[float]] = ([], [])
    deadline = time.perf_counter() + budget_s
    rounds = 0
    while rounds < 5 or (time.perf_counter() < deadline and rounds < 200):
        for fn, n, out in ((ours, n_ours, times[0]), (theirs, n_theirs, times[1])):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - start) / n * 1e6)
        rounds += 1
    return statistics.median(times[0]), statistics.median(times[1])


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", help="comma-separated NxCxHxW (default: 1x16x8x8,64x16x8x8,32x64x56x56)")
    p.add_argument("--modules", help="comma-separated name prefixes (default: every module)")
    p.add_argument("--threads", type=int, default=1, help="threads for both libraries (default 1)")
    p.add_argument("--budget", type=float, default=0.6, help="seconds of timing per cell (default 0.6)")
    p.add_argument("--forward-only", action="store_true", help="skip the fwd+bwd rows")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    avgpool.set_num_threads(args.threads)
    shapes = SHAPES
    if args.shapes:
        shapes = tuple(tuple(int(n) for n in s.split("x")) for s in args.shapes.split(","))
    wanted = args.modules.split(",") if args.modules else None
    print(f"torch {torch.__version__}, avgpool {avgpool.__version__}, {args.threads} thread(s), float32")
    print()
    print("| module | shape | pass | avgpool.nn µs | torch.nn µs | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for shape in shapes:
        torch.manual_seed(0)
        x = torch.randn(shape)
        for name, (make_ours, make_theirs) in pairs(shape[1]).items():
            if wanted and not any(name.startswith(w) for w in wanted):
                continue
            ours, theirs = make_ours(), make_theirs()
            passes = (False,) if args.forward_only else (False, True)
            for backward in passes:
                a, b = compare(caller(ours, x, backward), caller(theirs, x, backward), args.budget)
                label = "fwd+bwd" if backward else "fwd"
                dims = "x".join(map(str, shape))
                print(f"| {name} | {dims} | {label} | {a:.1f} | {b:.1f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
