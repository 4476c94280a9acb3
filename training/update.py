"""Everything one incremental update starts from, prepared the same way for every caller.

``training.incremental`` (Ray Train) and ``tuning.sweep`` (one trial per config) both
begin with :func:`prepare_update`, so a sweep tunes exactly the update it will feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.bundle import Parent, load_parent
from training.config import TrainConfig
from training.data.schema import WindowData
from training.data.synthetic import SyntheticShopConfig
from training.examples import WindowExamples
from training.history import PurchaseHistory
from training.incremental_config import IncrementalConfig
from training.loop import prepare_window
from training.model import ModelConfig, ShopStreamModel, model_from_state, model_state
from training.replay import ReplayBuffer
from training.sources import load_windows, merge_windows
from training.split import choose_window, split_holdout
from training.store import CheckpointStore
from training.train import init_model


@dataclass
class Update:
    """The parent version, the new window split for training/gate, and the start model."""

    parent: Parent | None
    windows: list[WindowData]
    window: WindowData
    train_part: WindowData
    holdout: WindowData
    replay: ReplayBuffer
    history: PurchaseHistory
    model: ShopStreamModel
    teacher: ShopStreamModel | None
    mixed: WindowData
    vocab: dict[str, int]
    examples: WindowExamples

    def next_window(self) -> WindowData | None:
        """The window after the one being trained (validation for sweeps), if any."""
        ids = [w.window_id for w in self.windows]
        pos = ids.index(self.window.window_id)
        return self.windows[pos + 1] if pos + 1 < len(self.windows) else None


def start_model(parent: Parent | None, model_cfg: ModelConfig, train_part: WindowData
                ) -> tuple[ShopStreamModel, ShopStreamModel | None]:
    """(student to train, frozen teacher = previous version or None)."""
    if parent is None:
        return init_model(model_cfg, train_part), None
    teacher = parent.model.eval()
    return model_from_state(*model_state(teacher)).train(), teacher


def carried_tail(windows: list[WindowData], parent: Parent | None, window: WindowData,
                 holdout_frac: float) -> WindowData | None:
    """The parent window's held-out tail, if the source still has it.

    The previous update only scored its gate on that tail; training on it now means no
    row is wasted, and the most recent rows before the new window are the ones that
    predict it best.
    """
    if parent is None or parent.window is None or parent.window == window.window_id:
        return None
    by_id = {w.window_id: w for w in windows}
    if parent.window not in by_id:
        return None
    return split_holdout(by_id[parent.window], holdout_frac)[1]


def with_rows(window: WindowData, extra: WindowData | None) -> WindowData:
    """``window`` (its id kept) plus the rows of ``extra``."""
    if extra is None:
        return window
    merged = merge_windows([extra, window])
    return WindowData(window.window_id, merged.items, merged.interactions,
                      merged.transactions)


def prepare_update(store: CheckpointStore, inc: IncrementalConfig, train_cfg: TrainConfig,
                   model_cfg: ModelConfig, synthetic: SyntheticShopConfig | None,
                   directory: Path) -> Update:
    """Load latest (or start fresh), pick and split the window, mix replay, build examples."""
    windows = load_windows(inc.source, inc.path, inc.freq, synthetic)
    parent = load_parent(store, directory / "parent", model_cfg.history_len,
                         inc.replay_capacity, train_cfg.seed)
    window = choose_window(windows, inc.window, parent.window if parent else None)
    train_part, holdout = split_holdout(window, inc.holdout_frac)
    replay = parent.replay if parent else ReplayBuffer(inc.replay_capacity, train_cfg.seed)
    history = parent.history if parent else PurchaseHistory(model_cfg.history_len)
    model, teacher = start_model(parent, model_cfg, train_part)
    mixed = replay.mix(train_part, inc.replay_ratio, train_cfg.seed)
    if inc.carry_holdout:
        mixed = with_rows(mixed, carried_tail(windows, parent, window, inc.holdout_frac))
    vocab = prepare_window(model, mixed)
    examples = WindowExamples.build(model, mixed, history)
    return Update(parent, windows, window, train_part, holdout, replay, history, model,
                  teacher, mixed, vocab, examples)
