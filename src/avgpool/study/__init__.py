"""The pooling trade-off study: a small CNN trained on a real data set with each downsampling
choice, measured for accuracy, latency, parameters and activations.

`run_study` trains every `Variant` (average 2x2, max 2x2, blur pool, strided convolution, and a
global-average head against the flatten head) with several seeds on scikit-learn's digits (shipped
inside scikit-learn: nothing is downloaded), then writes a report folder: ``report.md``,
``results.json`` and PNG plots. ``avgpool study`` runs it from the command line.

Importing this package loads NumPy only; torch, scikit-learn and matplotlib load inside the
functions that need them (``pip install 'avgpool[study]'``).
"""

from avgpool.study.data import Dataset, load_digits_split
from avgpool.study.report import reading, study_table, to_markdown, write_report
from avgpool.study.run import SETTINGS, Setting, StudyResult, VariantResult, run_study
from avgpool.study.variants import DOWNSAMPLING, HEADS, VARIANTS, Variant, digits_cnn

__all__ = [
    "DOWNSAMPLING",
    "HEADS",
    "SETTINGS",
    "VARIANTS",
    "Dataset",
    "Setting",
    "StudyResult",
    "Variant",
    "VariantResult",
    "digits_cnn",
    "load_digits_split",
    "reading",
    "run_study",
    "study_table",
    "to_markdown",
    "write_report",
]
