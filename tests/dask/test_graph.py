"""The task graphs: lazy, one task per output block, each reading a bounded set of chunks."""

import pytest

pytest.importorskip("dask")


import math
import subprocess
import sys

import numpy as np
import pytest
from dask.core import get_dependencies

import avgpool
import avgpool.dask as apd
from avgpool.window import Window
from tests.dask._cases import da


def _inputs_per_task(y, source):
    """For each task of ``y``'s own layer, how many chunks of ``source`` it reads."""
    graph = dict(y.__dask_graph__())
    counts = []
    for key in y.__dask_graph__().layers[y.name]:
        deps = get_dependencies(graph, key)
        counts.append(sum(1 for d in deps if isinstance(d, tuple) and d[0] == source.name))
    return counts


def _boom(block):
    raise AssertionError("computed")


@pytest.mark.parametrize(
    "op",
    [
        lambda x: apd.avg_pool(x, 3, 2, 1),
        lambda x: apd.max_pool(x, 3, 2, 1, return_indices=True)[1],
        lambda x: apd.lp_pool(x, 2.0, 3, 2),
        lambda x: apd.blur_pool(x, 4, 2),
        lambda x: apd.adaptive_avg_pool(x, 7),
        lambda x: apd.adaptive_max_pool(x, 7),
        lambda x: apd.global_avg_pool(x),
        lambda x: apd.global_max_pool(x),
        lambda x: apd.max_pool_backward(apd.max_pool(x, 2), x, 2),
        lambda x: apd.avg_pool_backward(apd.avg_pool(x, 3, 2, 1), x.shape, 3, 2, 1),
    ],
)
def test_ops_are_lazy(op):
    x = da.zeros((1, 2, 16, 16), chunks=4).map_blocks(_boom, dtype=np.float64)
    y = op(x)  # builds the graph only
    assert isinstance(y, da.Array)
    with pytest.raises(AssertionError, match="computed"):
        y.compute()


def test_one_task_per_output_block_and_a_halo_each():
    x = da.from_array(np.random.default_rng(0).standard_normal((1, 1, 64, 64)), chunks=(1, 1, 8, 8))
    y = apd.avg_pool(x, 3, 2, 1)
    # output o's window starts at 2 o - 1: each block takes the windows that start in one chunk
    assert y.chunks[2:] == ((5, 4, 4, 4, 4, 4, 4, 3),) * 2
    layer = y.__dask_graph__().layers[y.name]
    assert len(layer) == math.prod(len(c) for c in y.chunks)
    counts = _inputs_per_task(y, x)
    # its chunk, and a halo from the next one along each axis where the last windows cross
    assert sorted(set(counts)) == [1, 2, 4]
    assert sum(counts) == (7 * 2 + 1) ** 2


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunks_smaller_than_the_window_read_only_what_the_windows_cover(chunk):
    x = da.from_array(np.arange(60.0).reshape(1, 1, 60), chunks=(1, 1, chunk))
    y = apd.avg_pool(x, 5, 3, 2, ceil_mode=True)
    counts = _inputs_per_task(y, x)
    outputs_per_block = y.chunks[2]
    for count, outs in zip(counts, outputs_per_block):
        assert count <= -(-((outs - 1) * 3 + 5) // chunk) + 1
    assert max(counts) < len(x.chunks[2])
    np.testing.assert_allclose(y.compute(), avgpool.avg_pool(x.compute(), 5, 3, 2, ceil_mode=True))


def test_gradient_blocks_gather_from_touching_outputs_only():
    x = da.from_array(np.ones((1, 1, 32, 32)), chunks=(1, 1, 8, 8))
    g = apd.max_pool(x, 3, 2, 1)
    grad = apd.max_pool_backward(g, x, 3, 2, 1)
    assert grad.chunks == x.chunks
    # windows reaching a block start in the chunk before it and end in the one after it
    assert max(_inputs_per_task(grad, x)) == 9 < 16
    assert max(_inputs_per_task(grad, g)) <= 4


def test_global_reductions_read_chunk_by_chunk():
    x = da.from_array(np.ones((1, 1, 32, 32)), chunks=(1, 1, 8, 8))
    _, index = apd.max_pool(x, window=Window(None, ndim=2), return_indices=True)
    graph = dict(index.__dask_graph__())
    for key, _ in graph.items():
        deps = get_dependencies(graph, key)
        assert sum(1 for d in deps if isinstance(d, tuple) and d[0] == x.name) <= 1


def test_import_avgpool_does_not_import_dask():
    code = "import sys, avgpool; avgpool.avg_pool([[[1.0, 2.0]]], 2); print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_dask_api_is_the_ops_api():
    import inspect

    assert sorted(apd.__all__) == sorted(avgpool.ops.__all__)
    for name in avgpool.ops.__all__:
        assert inspect.signature(getattr(apd, name)) == inspect.signature(getattr(avgpool.ops, name)), name


def test_max_gradient_from_the_forward_indices_never_reads_the_input():
    x = np.random.default_rng(2).standard_normal((1, 2, 20, 20))
    dx = da.from_array(x, chunks=(1, 1, 6, 7))
    y, index = apd.max_pool(dx, 3, 2, 1, return_indices=True)
    unreadable = dx.map_blocks(_boom, dtype=x.dtype)
    grad = apd.max_pool_backward(y, unreadable, 3, 2, 1, indices=index)
    expected = avgpool.max_pool_backward(y.compute(), x, 3, 2, 1)
    np.testing.assert_array_equal(grad.compute(), expected)
