"""The eager path: ``call.<op>(...)`` is ``torch.ops.avgpool.<op>(...)`` without the
dispatcher's ~50 µs where it would change nothing (a plain CPU tensor in eager mode)."""

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avgpool._backends import _kept, _plans
from avgpool._cpu_calls import Planned
from avgpool._errors import AvgPoolError, TorchPoolError, torch_errors
from avgpool._settings import get_backend

log = logging.getLogger("avgpool")


def _dispatch_checks() -> tuple | None:
    """The state queries `needs_dispatcher` makes; None (always dispatch) if this torch lacks one."""
    try:
        return (
            torch.compiler.is_compiling,
            torch.jit.is_tracing,
            torch._C._len_torch_dispatch_stack,
            torch._C._is_torch_function_mode_enabled,
            torch._C._are_functorch_transforms_active,
            torch._C._autograd._profiler_enabled,
        )
    except AttributeError:  # pragma: no cover (torch >= 2.3 has them all)
        return None


_CHECKS = _dispatch_checks()


def needs_dispatcher(x: Tensor) -> bool:
    """Whether a call on ``x`` must go through the dispatcher rather than straight to the kernel.

    A Python custom op costs about 50 µs a call in the dispatcher (Python -> C++ -> Python, for
    the autograd key and again for the CPU key), ten times the kernel on a small tensor. For
    a plain CPU tensor in eager mode the dispatcher would only pick the CPU kernel and the
    autograd formula registered here, so `call` runs those itself. Anything else goes through
    it: compiling (dynamo, export), jit tracing (the TorchScript ONNX exporter), tensor
    subclasses and fake tensors, other devices, dispatch and function modes (FakeTensorMode,
    make_fx, FlopCounterMode, ``with torch.device``), vmap and grad transforms, and the
    profiler, so that traces and profiles show the custom op.
    """
    checks = _CHECKS
    if checks is None:
        return True
    compiling, tracing, dispatch_modes, function_modes, transforms, profiling = checks
    return (
        compiling()
        or type(x) is not Tensor
        or not x.is_cpu
        or tracing()
        or dispatch_modes() > 0
        or function_modes()
        or transforms()
        or profiling()
    )


class _Calls:
    """``torch.ops.avgpool``'s ops, each run without the dispatcher where that changes nothing.

    ``call.avg_pool(x, ...)`` is ``torch.ops.avgpool.avg_pool(x, ...)``: the same kernel, the
    same result, the same autograd formula (through a ``torch.autograd.Function`` made of this
    module's setup_context and backward, whose backward calls these again, so double backward
    works as through the dispatcher). See `needs_dispatcher` for when the dispatcher runs.
    """

    def add(self, name: str, kernel, setup_context, backward, tensors: int = 1) -> None:
        op = getattr(torch.ops.avgpool, name)

        # ctx in forward, not a separate setup_context: Function.apply binds the arguments to
        # forward's signature (inspect.signature, ~10 µs) when setup_context is defined
        def forward(ctx, *args):
            output = kernel(*args)
            setup_context(ctx, args, output)
            return output

        function = type(
            f"EagerFor_avgpool_{name}",
            (torch.autograd.Function,),
            {"forward": staticmethod(forward), "backward": staticmethod(backward)},
        )

        def run(*args):
            if needs_dispatcher(args[0]):
                return op(*args)
            log.debug("avgpool.torch: %s without the dispatcher (a plain CPU tensor, eager)", name)
            if torch.is_grad_enabled() and (
                args[0].requires_grad or (tensors > 1 and any(t.requires_grad for t in args[1:tensors]))
            ):
                return function.apply(*args)
            return kernel(*args)

        run.__name__ = run.__qualname__ = name
        run.__doc__ = f"``torch.ops.avgpool.{name}``, without the dispatcher in plain eager calls."
        setattr(self, name, torch_errors(run))


#: The ops, called without the dispatcher where that changes nothing (each family module adds its own).
call = _Calls()


# -- ready calls: one op on one geometry, its arguments built once --------------------------------

#: Tensor dtypes the NumPy kernels read in place (the max family adds the integers).
FLOATS = frozenset((torch.float16, torch.float32, torch.float64))
MAX_DTYPES = FLOATS | {torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8}


def plain_array(x: Tensor, dtypes: frozenset):
    """A zero-copy NumPy view of a contiguous tensor of one of ``dtypes``, else None (the caller
    then goes through `to_numpy`, which copies or permutes as needed)."""
    if x.dtype in dtypes and x.is_contiguous():
        return (x.detach() if x.requires_grad else x).numpy()
    return None


class _ReadyFunction(torch.autograd.Function):
    """Autograd for a `Ready` call outside the dispatcher: its op's own setup_context and backward
    (which call the backward op through `call`, so double backward works as through the
    dispatcher), on the ready arguments."""

    @staticmethod
    def forward(ctx, x, ready, kept=None):
        output = ready.cpu(x) if kept is None else kept(x.detach().numpy())
        ready.setup_context(ctx, (x, *ready.args), output)
        ctx.ready = ready
        return output

    @staticmethod
    def backward(ctx, *grads):
        return ctx.ready.grad(ctx, *grads), None, None


def tensor_call(planned: Callable[[np.ndarray], Any], pair: bool = False) -> Callable[[np.ndarray], Any]:
    """A planned NumPy call (`avgpool._cpu_calls.Planned`, or another callable) as a call giving
    tensors: ``torch.from_numpy`` of its result, or of each of its ``pair`` of results."""
    if isinstance(planned, Planned):
        return planned.bare(torch.from_numpy)
    from_numpy = torch.from_numpy
    if pair:
        return lambda a: tuple(from_numpy(r) for r in planned(a))
    return lambda a: from_numpy(planned(a))


#: `Ready.__call__`'s state queries: `needs_dispatcher`'s (each True where this torch lacks one).
_PLAIN_CHECKS = _CHECKS or (lambda: True,) * 6
_DEBUG = logging.DEBUG


class Ready:
    """``torch.ops.avgpool.<name>(x, *args)`` with ``args`` fixed and its CPU kernel's inputs (a
    `Window`, a layout) built once: a module keeps one, so a repeated call builds nothing.

    Calling it is calling `call`'s op: through the dispatcher where `needs_dispatcher` says so,
    else the CPU kernel (`cpu`, the one the op registers) and the op's autograd formula.
    A plain contiguous CPU tensor goes further: once a call on its shape and dtype has
    succeeded, the NumPy call it made (`plan`) is kept beside the NumPy backend's plans (so
    `avgpool._backends.clear_plans` forgets it too), keyed by this Ready, the caller's check,
    the shape, the dtype and the backend, and a repeated call is that lookup, the kernel and
    `torch.from_numpy` (inside the autograd formula where a gradient is recorded).
    Subclasses set `name`, `ndim`, the op's autograd pieces, `cpu` and `plan`.
    """

    __slots__ = ("args",)
    name = ""
    #: The spatial rank of the op's window.
    ndim = 0
    setup_context = staticmethod(lambda ctx, inputs, output: None)
    backward = staticmethod(lambda ctx, *grads: (None,))

    def cpu(self, x: Tensor):
        raise NotImplementedError

    def plan(self, x: Tensor) -> Callable[[np.ndarray], Any] | None:
        """What `cpu` computes for a contiguous tensor of ``x``'s shape and dtype, as a call on
        the NumPy view of such a tensor, returning tensors; None: no such call."""
        return None

    #: The autograd.Function outside the dispatcher, named as `call`'s (one per op).
    function: type = _ReadyFunction

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls):
            cls.function = type(f"EagerFor_avgpool_{cls.name}", (_ReadyFunction,), {})

    def grad(self, ctx, *grads) -> Tensor:
        """The input's gradient (the op's backward formula, through `call`)."""
        return self.backward(ctx, *grads)[0]

    def op(self, x: Tensor):
        return getattr(torch.ops.avgpool, self.name)(x, *self.args)

    def __call__(self, x: Tensor, check: Callable[[Tensor], None] | None = None):
        """The op on ``x``; ``check``: a caller's check of ``x`` (torch.nn's input checks), run
        first, which a call that finds a plan kept under the same check has passed: it depends
        on nothing but the tensor's shape and dtype."""
        compiling, tracing, dispatch_modes, function_modes, transforms, profiling = _PLAIN_CHECKS
        # needs_dispatcher's tests inlined (a call here is a few µs), with a contiguous tensor
        # and no debug log (whose lines the full path writes)
        key = None
        if not (
            compiling()
            or type(x) is not Tensor
            or not x.is_cpu
            or tracing()
            or dispatch_modes()
            or function_modes()
            or transforms()
            or profiling()
            or not x.is_contiguous()
            or log.isEnabledFor(_DEBUG)
        ):
            key = (self, check, x.shape, x.dtype, get_backend())
            kept = _plans.get(key)
            if kept is not None:
                if not x.requires_grad:
                    return kept(x.numpy())
                if torch.is_grad_enabled():
                    return self.recorded(x, kept)
                return kept(x.detach().numpy())
        if check is not None:
            check(x)
        try:
            y = self.run(x)
            if key is not None and x.numel() and 1 <= x.dim() - self.ndim <= 2:
                # the call succeeded on a shape torch.nn's input check passes: keep its plan
                self.keep(key, x)
        except TorchPoolError:
            raise
        except AvgPoolError as exc:
            raise TorchPoolError(str(exc)) from None
        return y

    def recorded(self, x: Tensor, kept: Callable[[np.ndarray], Any]):
        """The op on ``x``, which requires grad, with its autograd formula; ``kept`` (the kept
        plan of ``x``'s shape and dtype) computes the outputs."""
        return self.function.apply(x, self, kept)

    def keep(self, key: tuple, x: Tensor) -> None:
        plan = self.plan(x)
        if plan is not None:
            _kept(key, lambda: plan)

    def run(self, x: Tensor):
        """The op on ``x`` without the kept plans (see `needs_dispatcher`)."""
        if needs_dispatcher(x):
            return self.op(x)
        log.debug("avgpool.torch: %s without the dispatcher (a plain CPU tensor, eager)", self.name)
        if torch.is_grad_enabled() and x.requires_grad:
            return self.function.apply(x, self)
        return self.cpu(x)
