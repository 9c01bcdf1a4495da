"""The model family of the canary trials: the demo's TinyNet (examples/monitor_pooling.py) and
candidates that each differ from it in one way, exported to ONNX as the demo exports them.

=================  ===========================================================  ========
variant            candidate                                                    expected
=================  ===========================================================  ========
``identical``      the same weights, exported again to a separate file          pass
``avg-stem``       the stem 3x3/2 max pool swapped for an average pool           fail
``delay-3ms``      the identical file, with 3 ms injected through the server's   fail
                   ``POST /admin/faults`` (no change to the model)
``border-padding`` the second pool counts the padding out of its border windows  fail
                   (shadow mode; in split mode, without a mirror, the verdict is
                   reported, not required)
=================  ===========================================================  ========

The border-padding pair needs a pool that pads, which the demo's second pool (2x2, stride 2) does
not: both of its models are the demo's TinyNet, same weights, with that pool made a padded 3x3/2
average. The baseline counts the padding in its divisor (``count_include_pad=True``, PyTorch's
default); the candidate does not (TensorFlow's ``SAME`` does not either). On the 16x16 input
only the top row and the left column of windows reach into the padding (the last windows end on
the input's last row and column), so of the 8x8 output cells those 15 are multiplied by 9/6 on
the edges and 9/4 at the corner, and the other 49 are bit for bit the same.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The checks of ``avgpool.canary.judge`` the trials expect to fail, by name.
LATENCY, ACTIVATIONS, OUTPUTS = "latency", "activations", "outputs"
#: The expectation of a variant whose verdict is reported, not required.
MEASURED = "measured"


def demo():
    """examples/monitor_pooling.py, imported from its file (examples/ is no package)."""
    name = "avgpool_example_monitor_pooling"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "monitor_pooling.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass(frozen=True)
class Variant:
    """One canary trial's pair of models and what the judge must say about it.

    ``expected``: "pass", "fail" or `MEASURED` (reported, not required); ``fails_on``: checks
    that must all fail; ``fails_on_any``: checks of which at least one must fail;
    ``latency_ms``: a delay the trial injects on the candidate version through the server's
    faults; ``mode``: how the canary routes traffic (``split`` or ``shadow``).
    """

    name: str
    change: str
    base: str
    candidate: str
    expected: str
    mode: str
    fails_on: tuple[str, ...] = ()
    fails_on_any: tuple[str, ...] = ()
    latency_ms: float = 0.0


def tinynet(stem_pool=None):
    """The demo's TinyNet with its seeded weights (``torch.manual_seed(0)``, as the demo builds
    it), with ``stem_pool`` in place of its stem max pool when given."""
    import torch

    torch.manual_seed(0)
    weights = demo().TinyNet().state_dict()
    model = demo().TinyNet(stem_pool)
    model.load_state_dict(weights)
    return model.eval()


def padded_net(count_include_pad: bool):
    """The demo's TinyNet (same weights) with its second pool a padded 3x3/2 average pool."""
    from torch import nn

    model = tinynet()
    model.pool2 = nn.AvgPool2d(3, 2, 1, count_include_pad=count_include_pad)
    return model.eval()


def build(out: Path) -> dict[str, Variant]:
    """Export every model of the family into ``out``; the variants by name."""
    from torch import nn

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export = demo().export
    base = export(tinynet(), out / "base.onnx")
    identical = export(tinynet(), out / "identical.onnx")
    avg_stem = export(tinynet(nn.AvgPool2d(3, 2, 1)), out / "avg-stem.onnx")
    padded = export(padded_net(True), out / "padded-base.onnx")
    padded_cand = export(padded_net(False), out / "padded-exclude-pad.onnx")
    variants = [
        Variant("identical", "same weights, a separate file", base, identical, "pass", "split"),
        Variant("identical", "same weights, a separate file", base, identical, "pass", "shadow"),
        Variant(
            "avg-stem",
            "stem 3x3/2 max pool swapped for an average pool",
            base,
            avg_stem,
            "fail",
            "shadow",
            fails_on=(ACTIVATIONS, OUTPUTS),
        ),
        Variant(
            "delay-3ms",
            "identical model, 3 ms injected per request",
            base,
            identical,
            "fail",
            "split",
            fails_on=(LATENCY,),
            latency_ms=3.0,
        ),
        Variant(
            "border-padding",
            "second pool's padding counted out (border cells only)",
            padded,
            padded_cand,
            "fail",
            "shadow",
            fails_on_any=(OUTPUTS, ACTIVATIONS),
        ),
        # without a mirror only the activations can see it: what they see is measured, not required
        Variant(
            "border-padding",
            "second pool's padding counted out (border cells only)",
            padded,
            padded_cand,
            MEASURED,
            "split",
        ),
    ]
    return {f"{v.name}/{v.mode}": v for v in variants}


def images(n: int = 256, seed: int = 0):
    """The demo's sample images, (n, 3, 32, 32) float32."""
    return demo().sample_images(n, seed)
