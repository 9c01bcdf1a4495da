"""A small CNN trained with avgpool's modules follows torch.nn's loss curve; it compiles
(fullgraph) and exports."""

import pytest
import torch
from torch import nn

import avgpool.nn as apnn


def _cnn(pool: type) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        pool.AvgPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        pool.MaxPool2d(3, 2, 1),
        nn.Conv2d(8, 8, 3, padding=1),
        pool.LPPool2d(2, 2),
        pool.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def _losses(model: nn.Module, steps: int = 5) -> list[float]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 16, 16, generator=gen)
    target = torch.randint(0, 3, (8,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_loss_curve_matches_torch_nn():
    ours, theirs = _losses(_cnn(apnn)), _losses(_cnn(nn))
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert theirs[-1] < theirs[0]  # it trained


def test_compile_fullgraph_trains_like_eager():
    eager = _losses(_cnn(apnn), steps=2)
    compiled = _losses(torch.compile(_cnn(apnn), fullgraph=True, backend="aot_eager"), steps=2)
    assert compiled == pytest.approx(eager, abs=1e-6)


def test_export_keeps_the_custom_ops_and_the_numbers():
    model = _cnn(apnn).eval()
    x = torch.randn(2, 1, 16, 16)
    program = torch.export.export(model, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"avgpool.avg_pool.default", "avgpool.max_pool.default", "avgpool.lp_pool.default"} <= targets
    torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)


def test_export_with_a_dynamic_batch():
    model = _cnn(apnn).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 1, 16, 16),), dynamic_shapes=({0: batch},))
    x = torch.randn(5, 1, 16, 16)
    torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)
