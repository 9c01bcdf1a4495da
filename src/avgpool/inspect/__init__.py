"""Tools that show what pooling does: shape reports, and for whole models an inventory of the
pooling layers, lint rules, a diff between two versions and a check against ONNX Runtime.

Importing this package stays light: onnx, onnxruntime, torch and rich load only when a model
is read or a table drawn (``pip install 'avgpool[inspect]'``, ``'avgpool[torch]'``).
"""

from avgpool.inspect.diff import CATEGORIES, Change, DiffEntry, DiffReport, diff
from avgpool.inspect.layers import Inventory, ModelError, PadInfo, PoolLayer, parse_input_shapes
from avgpool.inspect.lint import RULES, SEVERITIES, TARGETS, Finding, Rule, lint
from avgpool.inspect.model import InspectReport, inspect_model, read_model
from avgpool.inspect.shape import ConventionCheck, ShapeReport, shape_report, window_for
from avgpool.inspect.verify import NodeCheck, VerifyReport, verify

__all__ = [
    "CATEGORIES",
    "RULES",
    "SEVERITIES",
    "TARGETS",
    "Change",
    "ConventionCheck",
    "DiffEntry",
    "DiffReport",
    "Finding",
    "InspectReport",
    "Inventory",
    "ModelError",
    "NodeCheck",
    "PadInfo",
    "PoolLayer",
    "Rule",
    "ShapeReport",
    "VerifyReport",
    "diff",
    "inspect_model",
    "lint",
    "parse_input_shapes",
    "read_model",
    "shape_report",
    "verify",
    "window_for",
]
