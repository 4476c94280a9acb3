"""training.fit.start_state: what every Ray Train worker starts from, written and read back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.unit.tiny_shop import CFG, TINY, tiny_window
from training.features.examples import WindowExamples
from training.features.history import PurchaseHistory
from training.fit.local import fit_local
from training.fit.loop import init_model
from training.fit.start_state import TEACHER_DIR, read_start_state, write_start_state
from training.fit.worker import WorkerSettings
from training.model import ShopStreamModel

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]


def same_weights(a: ShopStreamModel, b: ShopStreamModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_start_state_comes_back_whole_without_pickle(tmp_path: Path) -> None:
    window = tiny_window()
    model = init_model(TINY, window)
    examples = WindowExamples.build(model, window, PurchaseHistory(3))
    fit = fit_local(CFG, WorkerSettings(), model, None, None, examples, "w0")
    teacher = model
    titles = ["red mug", "blue mug \u2603 / ../x"]  # any character a title may hold
    cache = {t: torch.randn(4, 3) for t in titles}
    files = write_start_state(tmp_path, fit.model, teacher, fit.optimizer, cache)
    assert {p.suffix for p in files} == {".safetensors", ".json"}

    state = read_start_state(tmp_path)
    assert same_weights(state.model, fit.model) and state.model.training
    assert state.teacher is not None and same_weights(state.teacher, teacher)
    assert not state.teacher.training
    assert state.model.items.ids == fit.model.items.ids
    assert state.optimizer is not None and state.optimizer[1] == fit.optimizer[1]
    assert state.optimizer[0].keys() == fit.optimizer[0].keys()
    assert all(torch.equal(state.optimizer[0][k], v) for k, v in fit.optimizer[0].items())
    assert list(state.text_cache) == titles
    assert all(torch.equal(state.text_cache[t], cache[t]) for t in titles)


def test_a_fresh_start_has_no_teacher_and_no_moments(tmp_path: Path) -> None:
    model = init_model(TINY, tiny_window())
    write_start_state(tmp_path, model, None, None, {})
    state = read_start_state(tmp_path)
    assert not (tmp_path / TEACHER_DIR).exists()
    assert state.teacher is None and state.optimizer is None and state.text_cache == {}
    assert same_weights(state.model, model)
