"""A stage's data-source settings: which source, which file or folder, which window length.

Kept apart from the loaders (:mod:`training.data.sources`) so that a stage's config, and
with it every ``--help``, imports no pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from training.cli import require

if TYPE_CHECKING:
    from training.data.synthetic_config import SyntheticShopConfig
    from training.data.window_set import WindowSet

Source = Literal["synthetic", "online_retail", "ulb", "windows"]
SOURCES: tuple[str, ...] = ("synthetic", "online_retail", "ulb", "windows")
# Window lengths a real source can be split into (training.data.windows.split_windows).
FREQS: tuple[str, ...] = ("hour", "day", "week", "month")


class SourceError(ValueError):
    """A data source setting (source, path, freq) cannot be used; the message names it."""


def check_source(source: str, freq: str) -> None:
    """The one check of a stage's ``source`` and ``freq`` settings (each stage's config calls
    it in ``__post_init__``; ``path`` is checked when the source is loaded)."""
    require(source in SOURCES, "source", f"must be one of {SOURCES}, got {source!r}")
    require(freq in FREQS, "freq", f"must be one of {FREQS}, got {freq!r}")


@dataclass(frozen=True)
class SourceConfig:
    """Which data the windows come from (one config, composed into each stage's)."""

    name: str = field(default="synthetic", metadata={
        "flag": "source", "help": f"data source: {SOURCES}"})
    path: str | None = field(default=None, metadata={
        "help": "file or folder of the source (a folder of windows for source=windows; "
                "not needed for synthetic)"})
    freq: str = field(default="week", metadata={
        "help": "window length when splitting a real source: hour, day, week or month"})

    def __post_init__(self) -> None:
        check_source(self.name, self.freq)

    def load(self, synthetic: SyntheticShopConfig | None = None) -> WindowSet:
        """All windows of this source, oldest first
        (:func:`training.data.sources.load_windows`)."""
        from training.data.sources import load_windows

        return load_windows(self.name, self.path, self.freq, synthetic)
