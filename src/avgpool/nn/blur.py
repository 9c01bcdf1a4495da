"""Anti-aliased downsampling modules: antialiased-cnns' BlurPool (1-3d) computed by avgpool."""

import math

import torch
from torch import Tensor

import avgpool.torch  # noqa: F401  (registers torch.ops.avgpool)
from avgpool import _args
from avgpool._errors import AvgPoolError, TorchPoolError
from avgpool.torch import _foreign
from avgpool.torch._library import blur_ready, call

__all__ = ["BlurPool1d", "BlurPool2d", "BlurPool3d"]


def _binomial_filter(filt_size: int, ndim: int, channels: int) -> Tensor:
    """antialiased-cnns' ``filt`` buffer: the normalised binomial filter, one copy per channel,
    shaped (channels, 1, *[filt_size] * ndim)."""
    row = torch.tensor([float(math.comb(filt_size - 1, k)) for k in range(filt_size)])
    filt = row if ndim == 1 else row[:, None] * row[None, :]
    filt = filt / filt.sum()
    return filt.expand(channels, 1, *filt.shape).clone()


def _blur_class(ndim: int) -> type:
    class BlurPool(torch.nn.Module):
        op = "blur"
        __constants__ = ("pad_type", "filt_size", "stride", "pad_off", "ndim")
        channels: int | None

        def __init__(
            self,
            channels: int | None = None,
            pad_type: str = "reflect",
            filt_size: int = 4,
            stride: int = 2,
            pad_off: int = 0,
        ) -> None:
            """antialiased-cnns' ``BlurPool`` arguments, in its order; ``channels`` is only checked."""
            super().__init__()
            _args.blur_args(filt_size, stride, pad_type, pad_off, ())
            self.channels = channels
            self.pad_type = _args.BLUR_PAD_TYPES[pad_type]
            self.filt_size, self.stride, self.pad_off = int(filt_size), int(stride), int(pad_off)
            self.ndim = ndim
            if channels is not None and ndim <= 2:
                # antialiased-cnns keeps its filter as a buffer: the same buffer here, so its
                # checkpoints load with strict=True (the kernels compute the binomial blur; a
                # loaded filter must be that one, see _load_from_state_dict)
                self.register_buffer("filt", _binomial_filter(self.filt_size, ndim, int(channels)))

        def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
            # the kernels compute the binomial blur whatever the buffer holds, so a checkpoint
            # carrying another filter is refused rather than silently ignored; each binomial tap
            # is an integer over a power of two, exact in any float dtype, so equality is exact
            loaded = state_dict.get(prefix + "filt")
            if loaded is not None and loaded.dim() == self.ndim + 2:
                want = _binomial_filter(self.filt_size, self.ndim, loaded.shape[0]).to(loaded)
                if loaded.shape != want.shape or not torch.equal(loaded, want):
                    raise AvgPoolError(
                        f"{prefix}filt must be the {self.filt_size}-tap binomial filter of shape "
                        f"{tuple(want.shape)} that BlurPool computes, got another filter of shape "
                        f"{tuple(loaded.shape)}; avgpool's BlurPool runs the binomial blur only"
                    )
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

        @classmethod
        def from_antialiased(cls, module: torch.nn.Module):
            """The twin of an antialiased-cnns ``BlurPool`` (``BlurPool1D`` for BlurPool1d): same
            arguments, its ``filt`` buffer loaded (refused unless binomial), same outputs."""
            return _foreign.from_antialiased(cls, module)

        def extra_repr(self) -> str:
            return (
                f"channels={self.channels}, pad_type={self.pad_type}, filt_size={self.filt_size}, "
                f"stride={self.stride}, pad_off={self.pad_off}"
            )

        def forward(self, input: Tensor) -> Tensor:
            channels = self.channels
            if channels is not None and input.shape[input.dim() - self.ndim - 1] != channels:
                raise TorchPoolError(f"expected {channels} channels, got input of shape {input.shape}")
            if not torch.jit.is_scripting():
                if torch.compiler.is_compiling():  # traced as the op, no cached lookups
                    return call.blur_pool(
                        input, self.filt_size, self.stride, self.pad_type, self.pad_off, self.ndim, False
                    )
                # the ready call of the attributes as they are now (kept per value)
                ready = blur_ready(self.filt_size, self.stride, self.pad_type, self.pad_off, self.ndim, False)
                return ready(input)
            return torch.ops.avgpool.blur_pool(
                input, self.filt_size, self.stride, self.pad_type, self.pad_off, self.ndim, False
            )

    BlurPool.__name__ = BlurPool.__qualname__ = f"BlurPool{ndim}d"
    BlurPool.__module__ = __name__
    BlurPool.__doc__ = (
        f"{ndim}-d anti-aliased downsampling (antialiased-cnns' BlurPool): a binomial blur, "
        "then subsampling; see `avgpool.blur_pool`."
    )
    return BlurPool


BlurPool1d = _blur_class(1)
BlurPool2d = _blur_class(2)
BlurPool3d = _blur_class(3)
