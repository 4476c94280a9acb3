"""Everything one incremental update starts from, prepared the same way for every caller.

``training.incremental`` (Ray Train) and ``tuning.sweep`` (one trial per config) both
begin with :func:`prepare_update`, so a sweep tunes exactly the update it will feed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from training.config import TrainConfig
from training.data.labels import known_at, labels_arrived, split_arrived
from training.data.schema import WindowData
from training.data.source_config import SourceError
from training.data.sources import merge_windows
from training.data.split import choose_window
from training.data.synthetic import SyntheticShopConfig
from training.data.window_set import WindowSet, window_ids
from training.features.examples import WindowExamples, fraud_examples
from training.features.history import PurchaseHistory, purchases
from training.features.replay import ReplayBuffer
from training.fit.loop import init_model, prepare_window
from training.incremental_config import IncrementalConfig
from training.memory import release_arrow_pool, use_returning_pool
from training.model import ModelConfig, ShopStreamModel, copy_model, load_model
from training.store import CheckpointStore
from training.update.bundle import Parent, load_parent
from training.update.head import FALLBACK, START_HEAD, StartPoint, plan_start
from training.update.title_cache import TitleSeed, seed_titles


@dataclass
class WindowTables:
    """The new window as the update sees it (labels that have arrived), its training part
    and held-out tail, and what the fit trains on (the training part, replay and carried
    rows mixed in)."""

    window: WindowData
    train_part: WindowData
    holdout: WindowData
    mixed: WindowData


@dataclass
class Update:
    """The parent version, the new window split for training/gate, and the start model."""

    parent: Parent | None
    windows: WindowSet
    replay: ReplayBuffer
    history: PurchaseHistory
    model: ShopStreamModel
    teacher: ShopStreamModel | None
    vocab: dict[str, int]
    examples: WindowExamples
    # Where the state came from (the head, latest, or nothing: a fallback retrain) and the
    # live model the gate compares against (None for the very first version).
    start: StartPoint
    incumbent: ShopStreamModel | None
    window_id: str
    # The tables while held (None between a drop and the next use).
    held: WindowTables | None
    # Builds the same tables again after :meth:`drop_tables` (None: they are kept).
    rebuild: Callable[[], WindowTables] | None = None
    # The replay buffer's counts the tables were mixed from: a rebuild after the buffer
    # took the window would mix another sample.
    replay_seen: dict[str, int] = field(default_factory=dict)
    # The store's title vectors taken into this process (training.update.title_cache).
    titles: TitleSeed = field(default_factory=TitleSeed)

    @property
    def kind(self) -> str:
        return self.start.kind

    @property
    def tables(self) -> WindowTables:
        """The window's tables, read again if :meth:`drop_tables` let them go."""
        if self.held is None:
            if self.rebuild is None:
                raise RuntimeError("update: window tables dropped and nothing rebuilds them")
            if self.replay.seen != self.replay_seen:
                raise RuntimeError("update: the replay buffer changed since the tables were "
                                   "mixed; rebuilding them would mix another sample")
            self.held = self.rebuild()
        return self.held

    @property
    def window(self) -> WindowData:
        return self.tables.window

    @property
    def train_part(self) -> WindowData:
        return self.tables.train_part

    @property
    def holdout(self) -> WindowData:
        return self.tables.holdout

    @property
    def mixed(self) -> WindowData:
        return self.tables.mixed

    def drop_tables(self) -> None:
        """Let go of the window's tables again after something asked for them
        (:func:`prepare_update` returns without them): at millions of rows they are most of
        what the driver holds (issue #13). The next use reads them again (:attr:`tables`),
        from the same files and the same replay sample. A fallback retrain's merged windows
        are kept."""
        if self.rebuild is None or self.held is None:
            return
        self.held = None
        forget_tables(self.windows)

    def unlabelled_transactions(self) -> pd.DataFrame:
        """The new window's own transactions, labels removed: under a label delay the
        update learns fraud from an older window's, and these, scored but not labelled,
        show today's score distribution."""
        own = self.windows[self.windows.position(self.window.window_id)].transactions
        return own.assign(is_fraud=None)

    def next_window(self) -> WindowData | None:
        """The window after the one being trained (validation for sweeps), if any."""
        pos = self.windows.position(self.window.window_id)
        return self.windows[pos + 1] if pos + 1 < len(self.windows) else None


def start_model(parent: Parent | None, model_cfg: ModelConfig, train_part: WindowData
                ) -> tuple[ShopStreamModel, ShopStreamModel | None]:
    """(student to train, frozen teacher = previous version or None)."""
    if parent is None:
        return init_model(model_cfg, train_part), None
    teacher = parent.model.eval()
    return copy_model(teacher).train(), teacher


def carried_tail(windows: Sequence[WindowData], parent: Parent | None, window: WindowData,
                 holdout_frac: float, label_delay: int = 0) -> WindowData | None:
    """The parent window's held-out tail (as that update saw it: labels that had arrived),
    if the source still has it.

    The previous update only scored its gate on that tail; training on it now means no
    row is wasted, and the most recent rows before the new window are the ones that
    predict it best.
    """
    if parent is None or parent.window is None or parent.window == window.window_id:
        return None
    ids = window_ids(windows)
    if parent.window not in ids:
        return None
    arrived = labels_arrived(windows, windows[ids.index(parent.window)], label_delay,
                             tail_frac=holdout_frac)
    return split_arrived(windows, arrived, label_delay, holdout_frac)[1]


def with_rows(window: WindowData, extra: WindowData | None) -> WindowData:
    """``window`` (its id kept) plus the rows of ``extra``."""
    if extra is None:
        return window
    merged = merge_windows([extra, window])
    return WindowData(window.window_id, merged.items, merged.interactions,
                      merged.transactions)


def forget_tables(windows: WindowSet) -> None:
    """Drop the windows the set keeps and return Arrow's freed pages: once no update holds
    their tables, the window's memory goes back to the machine."""
    windows.forget()
    release_arrow_pool()


def window_tables(windows: WindowSet, window_id: str, inc: IncrementalConfig, seed: int,
                  parent: Parent | None, replay: ReplayBuffer) -> WindowTables:
    """Window ``window_id`` as an update at its end sees it, split, and mixed with the
    replay sample (and the parent's carried tail); the same tables every time it is called
    with the same buffer."""
    cont = inc.continual
    window = labels_arrived(windows, windows[windows.position(window_id)], cont.label_delay,
                            tail_frac=cont.holdout_frac)
    train_part, holdout = split_arrived(windows, window, cont.label_delay, cont.holdout_frac)
    mixed = replay.mix(train_part, cont.replay_ratio, seed)
    if cont.carry_holdout:
        mixed = with_rows(mixed, carried_tail(windows, parent, window, cont.holdout_frac,
                                              cont.label_delay))
    return WindowTables(window, train_part, holdout, mixed)


def prepare_update(store: CheckpointStore, inc: IncrementalConfig, train_cfg: TrainConfig,
                   model_cfg: ModelConfig, synthetic: SyntheticShopConfig | None,
                   directory: Path) -> Update:
    """Load the training head (or latest, or start fresh), pick and split the window after
    it, mix replay, build examples; a fallback retrain after too many rejections. The
    store's title vectors are in the encoder's cache before it returns (title_cache)."""
    up = _prepare(store, inc, train_cfg, model_cfg, synthetic, directory)
    up.titles = seed_titles(store, up.model, inc.store.title_cache)
    return up


def _prepare(store: CheckpointStore, inc: IncrementalConfig, train_cfg: TrainConfig,
             model_cfg: ModelConfig, synthetic: SyntheticShopConfig | None,
             directory: Path) -> Update:
    use_returning_pool()  # the driver reads the window and builds its examples here
    windows = inc.source.load(synthetic)
    if windows.freq is None and len(windows):
        # The fraud trees' purchase-history flags are read as of each row's own window
        # (judge); without the length every row would read today's history.
        raise SourceError(f"freq: the windows of {inc.source.path or inc.source.name} do not "
                          "say their length (hour, day, week or month)")
    start = plan_start(store, inc)
    window_id = choose_window(windows, inc.window, start.after).window_id
    if start.kind == FALLBACK:
        window = labels_arrived(windows, windows[windows.position(window_id)],
                                inc.continual.label_delay, tail_frac=inc.continual.holdout_frac)
        return prepare_fallback(store, inc, train_cfg, model_cfg, windows, window, start)
    parent = None if start.version is None else load_parent(
        store, directory / "parent", model_cfg.history_len, inc.continual.replay_capacity,
        train_cfg.seed, start.version)
    replay = parent.replay if parent else \
        ReplayBuffer(inc.continual.replay_capacity, train_cfg.seed)
    history = parent.history if parent else PurchaseHistory(model_cfg.history_len)

    def rebuild() -> WindowTables:
        return window_tables(windows, window_id, inc, train_cfg.seed, parent, replay)

    tables = rebuild()
    model, teacher = start_model(parent, model_cfg, tables.train_part)
    vocab = prepare_window(model, tables.mixed)
    fraud = fraud_examples(model, tables.mixed.transactions, history, bought=False)
    bought = purchases(tables.mixed.interactions)
    # The window's tables go before its rec rows are built, and are read again when the
    # gate needs them: at millions of interactions the tables and the examples would
    # otherwise be the driver's peak together (issue #13).
    del tables
    forget_tables(windows)
    # Repeat features are built when the fit needs them: whole for an in-process fit, a
    # group of users at a time while the Ray path writes each rank's file.
    examples = WindowExamples.from_purchases(model, bought, fraud, history, defer_repeat=True)
    del bought
    incumbent = load_incumbent(store, start) if start.source == START_HEAD else teacher
    return Update(parent, windows, replay, history, model, teacher, vocab, examples, start,
                  incumbent, window_id, None, rebuild, replay.seen)


def load_incumbent(store: CheckpointStore, start: StartPoint) -> ShopStreamModel | None:
    """The live model the candidate must not fall behind."""
    if start.live is None:
        return None
    with store.opened(start.live.version, prefix="shopstream-incumbent-") as (_, folder):
        return load_model(folder).eval()


def full_retrain_start(model_cfg: ModelConfig, windows: Sequence[WindowData]
                       ) -> tuple[WindowData, ShopStreamModel, WindowExamples]:
    """(the windows merged, a fresh pretrained-encoder model fitted to them, its examples):
    what a full retrain trains on. Each window's rows are built against the history as of
    that window's start (point-in-time repeat features), starting from an empty history."""
    windows = list(windows)
    merged = merge_windows(windows)
    model = init_model(model_cfg, merged)
    examples = WindowExamples.build_over(model, windows, PurchaseHistory(model_cfg.history_len),
                                         defer_repeat=True)
    return merged, model, examples


def prepare_fallback(store: CheckpointStore, inc: IncrementalConfig, train_cfg: TrainConfig,
                     model_cfg: ModelConfig, windows: WindowSet, window: WindowData,
                     start: StartPoint) -> Update:
    """A full retrain on every window before ``window`` plus its training part (the
    held-out tail stays for the gate); replay and history are rebuilt from those windows,
    as the chain of incremental updates would have built them."""
    train_part, holdout = split_arrived(windows, window, inc.continual.label_delay,
                                        inc.continual.holdout_frac)
    prior = known_at(windows[:windows.position(window.window_id) + 1],
                     inc.continual.label_delay, tail_frac=inc.continual.holdout_frac)[:-1]
    mixed, model, examples = full_retrain_start(model_cfg, [*prior, train_part])
    replay = ReplayBuffer(inc.continual.replay_capacity, train_cfg.seed)
    history = PurchaseHistory(model_cfg.history_len)
    for old in prior:
        replay.add_window(old)
        history = history.update(old.interactions)
    return Update(None, windows, replay, history, model, None, {}, examples, start,
                  load_incumbent(store, start), window.window_id,
                  WindowTables(window, train_part, holdout, mixed))
