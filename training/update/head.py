"""The training head: the version the next update resumes from, and the rejection streak.

Serving follows the store's ``latest`` (the live, promoted version). Training follows the
*head*: the newest state that has seen every window so far. After a promotion the head is
``latest``; after a rejection (``on_reject=advance``) it is the rejected candidate, whose
weights, optimizer moments, replay buffer and purchase history already include the
rejected window, so a gate that keeps failing no longer freezes training at one window.

The head lives in the store as ``configs/training_head.json`` (local and S3 alike), so it
survives restarts::

    {"version": "<id>", "window": "<window id>", "live_version": "<latest when written>",
     "consecutive_rejections": 2, "rejections_since_fallback": 2}

A head written for another ``latest`` (a manual rollback, a crash between publishing and
writing this file) is ignored: the next update starts from ``latest`` again.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from training.incremental_config import IncrementalConfig
from training.store import CheckpointMissingError, CheckpointStore, StoreError, VersionInfo

logger = logging.getLogger(__name__)

HEAD_CONFIG = "training_head"
INCREMENTAL = "incremental"
FALLBACK = "fallback_retrain"
# Where an update's weights came from.
START_LIVE, START_HEAD, START_PRETRAINED = "live", "rejected_head", "pretrained"


class TrainingHeadError(StoreError):
    """``configs/training_head.json`` is malformed; the message names the field."""


@dataclass(frozen=True)
class TrainingHead:
    version: str | None = None
    window: str | None = None
    live_version: str | None = None
    consecutive_rejections: int = 0
    rejections_since_fallback: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TrainingHead:
        for name in ("version", "window", "live_version"):
            if doc.get(name) is not None and not isinstance(doc[name], str):
                raise TrainingHeadError(f"{HEAD_CONFIG}.{name}: expected a string or null, "
                                        f"got {doc[name]!r}")
        for name in ("consecutive_rejections", "rejections_since_fallback"):
            value = doc.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TrainingHeadError(f"{HEAD_CONFIG}.{name}: expected an integer >= 0, "
                                        f"got {value!r}")
        return cls(doc.get("version"), doc.get("window"), doc.get("live_version"),
                   doc.get("consecutive_rejections", 0), doc.get("rejections_since_fallback", 0))


@dataclass(frozen=True)
class StartPoint:
    """What one update starts from, decided before anything is loaded."""

    kind: str  # INCREMENTAL or FALLBACK
    version: str | None  # the version whose state is resumed (None: pretrained encoder)
    source: str  # START_LIVE, START_HEAD or START_PRETRAINED
    live: VersionInfo | None  # the incumbent the gate compares against
    head: TrainingHead
    after: str | None  # the window the next one is chosen after

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "kind": self.source}


def read_head(store: CheckpointStore, live: VersionInfo | None) -> TrainingHead:
    """The recorded head if it belongs to the current ``latest``, else ``latest`` itself."""
    here = TrainingHead(live.version if live else None,
                        _window(live.user_meta) if live else None,
                        live.version if live else None)
    doc = store.get_config(HEAD_CONFIG)
    if not doc:
        return here
    head = TrainingHead.from_json(doc)
    if head.live_version != here.live_version:
        logger.warning("%s was written for live version %s, but latest is %s (rolled back, "
                       "or a crash after publishing): starting from latest",
                       HEAD_CONFIG, head.live_version, here.live_version)
        return here
    if head.version is not None and head.version != here.version:
        try:
            store.read_meta(head.version)
        except CheckpointMissingError:
            logger.warning("training head %s is gone from %s: starting from latest %s",
                           head.version, store.uri, here.version)
            return TrainingHead(here.version, here.window, here.live_version,
                                head.consecutive_rejections, head.rejections_since_fallback)
    return head


def plan_start(store: CheckpointStore, inc: IncrementalConfig) -> StartPoint:
    """Incremental from the head (or latest, with ``on_reject=hold``), or a fallback retrain
    after ``fallback_after`` incremental candidates in a row were rejected, or every time
    with ``full_retrain``."""
    live = store.latest()
    head = read_head(store, live)
    if live is None:
        kind = FALLBACK if inc.continual.full_retrain else INCREMENTAL
        return StartPoint(kind, None, START_PRETRAINED, None, head, None)
    advance = inc.continual.on_reject == "advance" and head.version not in (None, live.version)
    after = head.window if advance else _window(live.user_meta)
    if inc.continual.full_retrain:
        return StartPoint(FALLBACK, None, START_PRETRAINED, live, head, after)
    after_n = inc.continual.fallback_after
    if after_n and head.rejections_since_fallback >= after_n:
        logger.info("%d consecutive rejection(s): falling back to a full retrain",
                    head.consecutive_rejections)
        return StartPoint(FALLBACK, None, START_PRETRAINED, live, head, after)
    if advance:
        return StartPoint(INCREMENTAL, head.version, START_HEAD, live, head, after)
    return StartPoint(INCREMENTAL, live.version, START_LIVE, live, head, after)


def after_update(start: StartPoint, info: VersionInfo, window: str, promoted: bool
                 ) -> TrainingHead:
    """The head once ``info`` (the candidate just published or rejected) is recorded."""
    if promoted:
        return TrainingHead(info.version, window, info.version, 0, 0)
    live = start.live.version if start.live else None
    since = 0 if start.kind == FALLBACK else start.head.rejections_since_fallback + 1
    return TrainingHead(info.version, window, live, start.head.consecutive_rejections + 1,
                        since)


def write_head(store: CheckpointStore, head: TrainingHead) -> None:
    store.put_config(HEAD_CONFIG, head.to_json())


def _window(meta: dict[str, Any]) -> str | None:
    window = meta.get("window")
    return None if window is None else str(window)
