"""The one exception type that validation raises everywhere, and its PyTorch-compatible twin."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class AvgPoolError(ValueError):
    """A pooling argument is out of range: the message names it, the value and what is allowed.

    A subclass of ValueError, so callers can catch avgpool's errors precisely or as ValueError.
    Unsupported dtypes and non-integer sizes raise TypeError instead.
    """


class TorchPoolError(AvgPoolError, RuntimeError):
    """An AvgPoolError raised by the PyTorch front end (``avgpool.torch``, ``avgpool.nn``).

    Also a RuntimeError, the class PyTorch's own pooling raises, so code written for
    ``torch.nn.functional`` (``except RuntimeError``) catches it, as does ``except ValueError``
    or ``except AvgPoolError``. Where PyTorch's message has a fixed wording, this one starts
    with it.
    """


def torch_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every AvgPoolError it raises re-raised as a `TorchPoolError` (same message)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TorchPoolError:
            raise
        except AvgPoolError as exc:
            raise TorchPoolError(str(exc)) from None

    return wrapped
