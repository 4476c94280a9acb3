"""training.fit.ray_session: a standalone update joins a running Ray and starts none for an
update that trains in this process. Ray's own ``init`` is replaced by a recorder (no Ray in
the unit tier): ``address="auto"`` finds no cluster, as on a laptop with nothing running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import training.fit.ray_session as ray_session
from training.incremental import main
from training.store import open_store

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]


class FakeRay:
    """``init`` calls, and whether one succeeded; ``auto`` finds a cluster only if told."""

    def __init__(self, running: bool = False) -> None:
        self.running = running
        self.calls: list[str | None] = []
        self.initialized = False

    def init(self, address: str | None = None, **kwargs: Any) -> None:
        self.calls.append(address)
        if address == "auto" and not self.running:
            raise ConnectionError("Could not find any running Ray instance.")
        self.initialized = True

    def is_initialized(self) -> bool:
        return self.initialized

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0, "GPU": 1.0}


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    fake = FakeRay()
    monkeypatch.setattr(ray_session, "ray", fake)
    return fake


def test_with_nothing_running_nothing_starts_until_ray_train_needs_it(fake_ray: FakeRay) -> None:
    assert ray_session.join_running_ray(None) is False
    assert fake_ray.calls == ["auto"] and not fake_ray.initialized
    import ray

    assert not ray.is_initialized()  # nor did anything else start one (ray.put, a remote)
    ray_session.ensure_ray(None)  # what fit_ray does first
    assert fake_ray.calls == ["auto", None] and fake_ray.initialized
    ray_session.ensure_ray(None)
    assert fake_ray.calls == ["auto", None]


def test_a_running_cluster_or_an_address_is_joined_at_once(
        fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ray.running = True
    assert ray_session.join_running_ray(None) is True and fake_ray.calls == ["auto"]
    other = FakeRay()
    monkeypatch.setattr(ray_session, "ray", other)
    assert ray_session.join_running_ray("10.0.0.5:6379") is True
    assert other.calls == ["10.0.0.5:6379"]


def test_auto_gpus_are_the_clusters_once_joined_else_this_machines(
        fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_session.torch.cuda, "is_available", lambda: False)
    assert ray_session.gpus_for_auto() is False  # not joined: this machine has none
    monkeypatch.setattr(ray_session.torch.cuda, "is_available", lambda: True)
    assert ray_session.gpus_for_auto() is True
    fake_ray.initialized = True
    monkeypatch.setattr(ray_session.torch.cuda, "is_available", lambda: False)
    assert ray_session.gpus_for_auto() is True  # the cluster's GPU


def test_training_incremental_publishes_an_in_process_update_without_starting_ray(
        fake_ray: FakeRay, tmp_path: Path) -> None:
    store = tmp_path / "store"
    code = main(["--source", "synthetic", "--store", str(store), "--trainer", "auto",
                 "--storage-path", str(tmp_path / "ray"), "--use-best-config", "false",
                 "--model-encoder-init", "tiny_random", "--model-dim", "16",
                 "--synth-n-windows", "2", "--synth-interactions-per-window", "300",
                 "--synth-transactions-per-window", "150", "--synth-n-users", "60",
                 "--synth-n-items", "40", "--epochs", "1"])
    assert code == 0
    assert open_store(str(store)).latest() is not None
    assert fake_ray.calls == ["auto"] and not fake_ray.initialized
    import ray

    assert not ray.is_initialized()  # nor did anything else start one (ray.put, a remote)
