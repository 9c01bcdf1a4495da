"""`run_study`: train every variant with every seed, measure them, write the report folder."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.study.data import Dataset, load_digits_split
from avgpool.study.variants import VARIANTS, Variant

__all__ = ["SETTINGS", "Setting", "StudyResult", "VariantResult", "run_study"]

Progress = Callable[[Iterable[Any]], Iterable[Any]]

#: Most seeds and epochs a run accepts (beyond them a typo is likelier than a wish).
MAX_SEEDS = 100
MAX_EPOCHS = 1000


@dataclass(frozen=True)
class Setting:
    """How much work a study does: seeds, epochs, optimiser, latency sampling, histogram bins.

    Examples
    --------
    >>> SETTINGS["fast"].seeds, SETTINGS["fast"].epochs, SETTINGS["full"].seeds
    (3, 15, 5)
    """

    name: str
    seeds: int
    epochs: int
    batch_size: int = 64
    lr: float = 1e-2
    #: the larger latency batch (capped to the test set's size)
    latency_batch: int = 256
    latency_rounds: int = 3
    #: timed calls per variant and round: single images, and batches
    latency_repeats: int = 60
    latency_repeats_batch: int = 10
    latency_budget_s: float = 1.0
    bins: int = 64


SETTINGS: dict[str, Setting] = {
    "fast": Setting("fast", seeds=3, epochs=15),
    "full": Setting(
        "full", seeds=5, epochs=40, latency_rounds=5, latency_repeats=200, latency_repeats_batch=30
    ),
}


@dataclass
class VariantResult:
    """One variant's numbers: accuracy per seed, latency, parameters, activations, curves."""

    variant: Variant
    seeds: list[int]
    accuracy: list[float]
    params: int
    latency: dict[str, dict[str, Any]]
    activations: list[dict[str, Any]]
    train_loss: list[list[float]]
    test_accuracy: list[list[float]]
    train_seconds: list[float]
    #: the same model's latency with torch.nn pooling in place of avgpool.nn's (None: no
    #: avgpool.nn module to replace), see `avgpool.study.twins`
    latency_torch_nn: dict[str, dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def accuracy_mean(self) -> float:
        return statistics.fmean(self.accuracy)

    @property
    def accuracy_std(self) -> float:
        """Sample standard deviation over seeds (n - 1); NaN with one seed."""
        return statistics.stdev(self.accuracy) if len(self.accuracy) > 1 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.variant.describe(),
            "params": self.params,
            "accuracy": {
                "mean": self.accuracy_mean,
                "std": self.accuracy_std,
                "per_seed": dict(zip(map(str, self.seeds), self.accuracy)),
            },
            "latency": self.latency,
            "latency_torch_nn": self.latency_torch_nn,
            "activations": self.activations,
            "curves": {
                "train_loss": dict(zip(map(str, self.seeds), self.train_loss)),
                "test_accuracy": dict(zip(map(str, self.seeds), self.test_accuracy)),
            },
            "train_seconds": dict(zip(map(str, self.seeds), self.train_seconds)),
        }


@dataclass
class StudyResult:
    """A finished study: its setting, data, machine, per-variant results and written files;
    ``wall_s`` is the time to train and measure (writing the report excluded)."""

    setting: Setting
    seeds: list[int]
    threads: int
    data: dict[str, Any]
    environment: dict[str, Any]
    variants: list[VariantResult]
    wall_s: float
    out_dir: str | None = None
    files: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant {name!r} in the study (it has {[v.name for v in self.variants]})")

    def to_dict(self) -> dict[str, Any]:
        """The content of ``results.json`` (NaN written as null)."""
        from avgpool.monitor._json import clean

        return clean(
            {
                "study": "pooling trade-off",
                "setting": asdict(self.setting),
                "seeds": self.seeds,
                "threads": self.threads,
                "data": self.data,
                "environment": self.environment,
                "wall_s": self.wall_s,
                "variants": [v.to_dict() for v in self.variants],
            }
        )


def _int_in(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise AvgPoolError(f"{what} must be an int between {lo} and {hi}, got {value!r}")
    return value


def _resolve_setting(setting: str | Setting) -> Setting:
    if isinstance(setting, Setting):
        return setting
    if setting not in SETTINGS:
        raise AvgPoolError(f"setting must be one of {sorted(SETTINGS)} or a Setting, got {setting!r}")
    return SETTINGS[setting]


def _resolve_seeds(seeds: int | Sequence[int] | None, default: int) -> list[int]:
    if seeds is None:
        seeds = default
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return list(range(_int_in(seeds, "seeds", 1, MAX_SEEDS)))
    seeds = list(seeds)
    if not 1 <= len(seeds) <= MAX_SEEDS or len(set(seeds)) != len(seeds):
        raise AvgPoolError(f"seeds must be 1 to {MAX_SEEDS} distinct ints, got {seeds!r}")
    for s in seeds:
        _int_in(s, "every seed", 0, 2**63 - 1)
    return seeds


def _resolve_variants(variants: Sequence[str | Variant] | None) -> list[Variant]:
    if variants is None:
        return list(VARIANTS.values())
    if isinstance(variants, (str, Variant)):
        variants = [variants]
    out: list[Variant] = []
    for v in variants:
        if isinstance(v, Variant):
            out.append(v)
        elif isinstance(v, str) and v in VARIANTS:
            out.append(VARIANTS[v])
        else:
            raise AvgPoolError(f"variants must be among {list(VARIANTS)} (or Variant objects), got {v!r}")
    names = [v.name for v in out]
    if not out or len(set(names)) != len(names):
        raise AvgPoolError(f"variants must be one or more distinct names, got {names}")
    return out


def _environment(threads: int) -> dict[str, Any]:
    from importlib import metadata

    from avgpool.bench.report import machine_facts

    facts = machine_facts(threads)
    versions = {}
    for name in ("avgpool", "numpy", "numba", "torch", "scikit-learn", "matplotlib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover
            versions[name] = None
    facts["versions"] = versions
    return facts


def run_study(
    out_dir: str | os.PathLike[str] | None = "avgpool-study",
    setting: str | Setting = "fast",
    *,
    seeds: int | Sequence[int] | None = None,
    epochs: int | None = None,
    variants: Sequence[str | Variant] | None = None,
    threads: int = 1,
    subset: int | None = None,
    data: Dataset | None = None,
    progress: Progress | None = None,
) -> StudyResult:
    """Train each variant with each seed, measure accuracy, latency, parameters and activations,
    and write the report folder.

    Parameters
    ----------
    out_dir : path or None
        The report folder (created; the study's files in it are replaced): ``report.md``,
        ``results.json``, ``accuracy_vs_latency.png``, ``activations.png``,
        ``training_curves.png``. None writes nothing.
    setting : {"fast", "full"} or Setting
        "fast": 3 seeds x 15 epochs, about a minute on two cores; "full": 5 seeds x 40 epochs
        and five times the latency samples, several minutes.
    seeds : int or sequence of int, optional
        How many seeds (0, 1, ...) or which; default the setting's.
    epochs : int, optional
        Default the setting's.
    variants : sequence of str or Variant, optional
        Names from `VARIANTS` (default: all of them, in that order) or variants of your own.
    threads : int
        Threads for torch and avgpool's kernels while training and timing (default 1).
    subset : int, optional
        Train on the first ``subset`` training images only (a quick look; the test set is whole).
    data : Dataset, optional
        Your own data; default scikit-learn's digits (`load_digits_split`).
    progress : callable, optional
        Wraps the iterable of (variant, seed) training runs, e.g. to draw a progress bar.

    Raises
    ------
    AvgPoolError
        An argument out of range (the message names it and what is allowed).
    """
    started = time.perf_counter()
    chosen = _resolve_setting(setting)
    seed_list = _resolve_seeds(seeds, chosen.seeds)
    chosen = replace(
        chosen,
        seeds=len(seed_list),
        epochs=_int_in(chosen.epochs if epochs is None else epochs, "epochs", 1, MAX_EPOCHS),
    )
    variant_list = _resolve_variants(variants)
    _int_in(threads, "threads", 1, os.cpu_count() or 1)
    if data is not None and not isinstance(data, Dataset):
        raise AvgPoolError(f"data must be a Dataset, got {type(data).__name__}")
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise AvgPoolError(f"out_dir must be a folder, got the file {os.fspath(out)!r}")
    if data is None:
        data = load_digits_split()
    if subset is not None:
        data = data.subset(subset)
    builtin = [v.name for v in variant_list if VARIANTS.get(v.name) is v]
    if builtin and (data.image_shape != (1, 8, 8) or data.classes != 10):
        raise AvgPoolError(
            f"the built-in variants {builtin} take 1x8x8 images in 10 classes, the data has "
            f"{'x'.join(map(str, data.image_shape))} images in {data.classes}: give Variants of your "
            "own (e.g. built with digits_cnn(in_channels=, classes=, image_size=))"
        )
    for v in variant_list:
        modules = dict(v.build().named_modules())
        missing = [p for p in v.probes if p not in modules]
        if missing or not v.probes:
            raise AvgPoolError(
                f"variant {v.name!r}: probes must name modules of its model, got {list(v.probes)} "
                f"(modules: {', '.join(n for n in modules if n)})"
            )

    from avgpool.study.measure import activation_stats, count_parameters, measure_latency
    from avgpool.study.train import threads as use_threads
    from avgpool.study.train import train_variant
    from avgpool.study.twins import torch_twin

    jobs = [(v, s) for v in variant_list for s in seed_list]
    trained: dict[str, list[Any]] = {v.name: [] for v in variant_list}
    with use_threads(threads):
        for variant, seed in progress(jobs) if progress else jobs:
            run = train_variant(
                variant, data, seed=seed, epochs=chosen.epochs, batch_size=chosen.batch_size, lr=chosen.lr
            )
            trained[variant.name].append(run)
        timed = {name: runs[0].model for name, runs in trained.items()}
        for name, runs in trained.items():
            try:
                twin, swapped = torch_twin(runs[0].model)
            except AvgPoolError:  # a pooling layer torch.nn has no twin for: no comparison
                swapped = 0
            if swapped:
                timed[f"{name} (torch.nn)"] = twin
        latency = measure_latency(
            timed,
            data.x_test,
            batch=chosen.latency_batch,
            rounds=chosen.latency_rounds,
            repeats=chosen.latency_repeats,
            repeats_batch=chosen.latency_repeats_batch,
            budget_s=chosen.latency_budget_s,
        )
        activations = activation_stats(
            {v.name: (v.probes, [r.model for r in trained[v.name]]) for v in variant_list},
            data.x_test,
            bins=chosen.bins,
        )
    results = [
        VariantResult(
            variant=v,
            seeds=seed_list,
            accuracy=[r.accuracy for r in trained[v.name]],
            params=count_parameters(trained[v.name][0].model),
            latency=latency[v.name],
            activations=activations[v.name],
            train_loss=[r.train_loss for r in trained[v.name]],
            test_accuracy=[r.test_accuracy for r in trained[v.name]],
            train_seconds=[r.seconds for r in trained[v.name]],
            latency_torch_nn=latency.get(f"{v.name} (torch.nn)"),
        )
        for v in variant_list
    ]
    result = StudyResult(
        setting=chosen,
        seeds=seed_list,
        threads=threads,
        data=data.describe(),
        environment=_environment(threads),
        variants=results,
        wall_s=time.perf_counter() - started,
    )
    if out_dir is not None:
        from avgpool.study.report import write_report

        result.out_dir = os.fspath(out_dir)
        result.files = write_report(result.to_dict(), out_dir)
    return result
