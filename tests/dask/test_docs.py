"""docs/dask.md stays true: its Python blocks run, in order, in one namespace, and every
``expression  # literal`` line gives what its comment shows (the README's rules,
`tests.test_readme`). The page's cluster is a LocalCluster on 127.0.0.1; it is closed
even when a block fails. About 15 s: the page pools a 1 GiB scene and a 968 MiB array."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("dask.array")
pytest.importorskip("distributed")

from tests.test_readme import _agrees, _blocks, _claims

PAGE = Path(__file__).resolve().parents[2] / "docs" / "dask.md"


def _close(namespace: dict) -> None:
    for name in ("client", "cluster"):
        thing = namespace.get(name)
        if thing is not None:
            thing.close()


def test_the_dask_page_runs_and_shows_what_it_says(tmp_path, monkeypatch):
    import dask

    monkeypatch.chdir(tmp_path)  # the page writes pooled/ and pooled-cluster/ where it runs
    blocks = _blocks("python", PAGE)
    assert len(blocks) >= 4
    namespace: dict = {}
    checked = 0
    # the page's local examples use Dask's default (threaded) scheduler, not this folder's
    # synchronous one
    with dask.config.set(scheduler="threads"):
        try:
            for block in blocks:
                claims = {number: (code, value, comment) for number, code, value, comment in _claims(block)}
                lines = block.splitlines()
                start = 0
                for number in [*sorted(claims), len(lines)]:
                    exec(compile("\n".join(lines[start:number]), str(PAGE), "exec"), namespace)
                    if number < len(lines):
                        code, shown, comment = claims[number]
                        got = eval(compile(code, str(PAGE), "eval"), namespace)
                        assert _agrees(got, shown, comment), (
                            f"{code} gives {got!r}, the page says {comment!r}"
                        )
                        checked += 1
                    start = number + 1
        finally:
            _close(namespace)
    assert checked >= 4
    # what the page wrote: the pooled scene and the cluster's result, block row by block row
    assert sorted(p.name for p in (tmp_path / "pooled").iterdir()) == [
        "0.npy",
        "1.npy",
        "2.npy",
        "3.npy",
        "info",
    ]
    assert namespace["small"].shape == (8191, 8191)
    assert len(list((tmp_path / "pooled-cluster").glob("*.npy"))) == 11
