"""Tools that show what pooling does: shape reports now; model inventory, lint, diff, verify next."""

from avgpool.inspect.shape import ConventionCheck, ShapeReport, shape_report, window_for

__all__ = ["ConventionCheck", "ShapeReport", "shape_report", "window_for"]
