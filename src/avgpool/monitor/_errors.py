"""The monitor's error, below every module that raises it."""

from avgpool._errors import AvgPoolError

__all__ = ["ProfileError"]


class ProfileError(AvgPoolError):
    """A profile that cannot be built, merged, read or compared as asked."""
