"""Training is bit-reproducible on CPU: ``TrainConfig.deterministic`` switches torch's
deterministic kernels on for every fit (``training.fit.engine.use_determinism``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from tests.unit.tiny_shop import CFG, TINY, tiny_window
from training.cli import ConfigError
from training.config import TrainConfig
from training.features.history import PurchaseHistory
from training.fit.engine import use_determinism
from training.fit.loop import init_model, train_window

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_torch() -> Iterator[None]:
    """The switch is process-wide: leave it, and the thread count, as they were."""
    was, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(was)
    torch.set_num_threads(threads)


def _index_backward(weights: torch.Tensor, index: torch.Tensor, grad: torch.Tensor
                    ) -> torch.Tensor:
    """The gradient of ``weights[index]``: on CPU an ``index_put_`` with accumulate, whose
    default kernel adds the rows in thread order."""
    leaf = weights.clone().requires_grad_()
    leaf[index].backward(grad)
    assert leaf.grad is not None
    return leaf.grad


def test_cpu_training_gets_bit_identical_index_gradients_on_two_threads() -> None:
    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(5_000, 64, generator=generator)
    index = torch.randint(0, 5_000, (200_000,), generator=generator)
    grad = torch.randn(200_000, 64, generator=generator)
    assert use_determinism(TrainConfig(device="cpu"), torch.device("cpu"))  # 'auto'
    assert torch.are_deterministic_algorithms_enabled()
    first = _index_backward(weights, index, grad)
    for _ in range(10):
        assert torch.equal(_index_backward(weights, index, grad), first)


def test_the_setting_decides_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cuda = torch.device("cuda")  # only the device's type is read: no GPU needed
    assert not use_determinism(TrainConfig(deterministic="off"), torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()
    assert not use_determinism(TrainConfig(), cuda)  # 'auto': off on CUDA
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert use_determinism(TrainConfig(deterministic="on"), cuda)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    with pytest.raises(ConfigError, match="deterministic"):
        TrainConfig(deterministic="sometimes")  # type: ignore[arg-type]


def test_every_fit_switches_them_on() -> None:
    torch.use_deterministic_algorithms(False)
    window = tiny_window()
    model = init_model(TINY, window)
    train_window(model, window, PurchaseHistory(TINY.history_len), CFG, progress=False)
    assert torch.are_deterministic_algorithms_enabled()
