"""The one exception type that validation raises everywhere."""


class AvgPoolError(ValueError):
    """A pooling argument is out of range: the message names it, the value and what is allowed.

    A subclass of ValueError, so callers can catch avgpool's errors precisely or as ValueError.
    Unsupported dtypes and non-integer sizes raise TypeError instead.
    """
