"""Settings of the main job (``python -m cluster.pipeline``) beyond one incremental update's."""

from __future__ import annotations

from dataclasses import dataclass, field

from training.cli import require
from training.scaling_config import TRAINERS

METHODS: tuple[str, ...] = ("incremental", "incremental_no_replay", "full_retrain", "frozen",
                            "popularity", "repeat_then_popular", "hist_gradient_boosting")


@dataclass(frozen=True)
class PipelineConfig:
    """Which windows, which methods are compared, the report, sweeps and serving."""

    report_dir: str = field(default="runs/report", metadata={
        "help": "folder the report goes to (metrics.json, summary.md, PNG plots)"})
    work_dir: str = field(default="runs/pipeline", metadata={
        "help": "local scratch: the source's windows written as a folder of windows"})
    methods: tuple[str, ...] = field(default=METHODS, metadata={
        "help": f"comma-separated methods to compare, from {','.join(METHODS)} "
                "(incremental, ours, always runs)"})
    max_windows: int | None = field(default=None, metadata={
        "help": "use only the first N windows of the source (default: all)"})
    arms_trainer: str = field(default="same", metadata={
        "help": "trainer of the comparison arms (no-replay, full retrain): same (as "
                "--trainer), auto, ray or local (in-process: no Ray Train start-up)"})
    arms_gate_tolerance: float = field(default=1.0, metadata={
        "help": "gate tolerance of the comparison arms (no-replay, full retrain), which "
                "publish into <store>/arms/<name> and are never served: 1.0 passes every "
                "candidate, so each arm is measured on its own newest model every window; "
                "ours' gate is --gate-tolerance. The report states the value"})
    investigated_share: float = field(default=0.0, metadata={
        "help": "simulate an analyst queue under --label-delay: after ours' live model scores "
                "a window, the labels of its top share of transactions arrive at once "
                "(investigated alerts; label_ts = payment time); 0: none"})
    forgetting: bool = field(default=True, metadata={
        "help": "after each update re-score every neural method on all earlier windows"})
    sweep_every: int = field(default=0, metadata={
        "help": "run a Ray Tune sweep every K windows (0: never); its best config feeds "
                "ours' next updates"})
    sweep_samples: int = field(default=4, metadata={"help": "trials of each sweep"})
    serve: bool = field(default=True, metadata={
        "help": "finish by starting (or updating) the Serve app and querying it"})
    port: int = field(default=8000, metadata={"help": "HTTP port of Serve (127.0.0.1)"})
    once: bool = field(default=False, metadata={
        "cli": False,
        "help": "(flag --once) exit after the sample queries instead of serving until Ctrl-C"})
    serve_timeout_s: float = field(default=180.0, metadata={
        "help": "longest wait for Serve to answer with the last published version"})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        require(not unknown, "methods", f"unknown {unknown}; choose from {METHODS}")
        require(self.max_windows is None or self.max_windows >= 2, "max_windows",
                "must be >= 2 (one to start from, one to evaluate)")
        require(self.arms_trainer in ("same", *TRAINERS), "arms_trainer",
                f"must be same or one of {TRAINERS}, got {self.arms_trainer!r}")
        require(self.arms_gate_tolerance >= 0, "arms_gate_tolerance",
                f"must be >= 0, got {self.arms_gate_tolerance}")
        require(0.0 <= self.investigated_share <= 1.0, "investigated_share",
                f"must be in [0, 1], got {self.investigated_share}")
        require(self.sweep_every >= 0, "sweep_every", "must be >= 0")
        require(self.sweep_samples >= 1, "sweep_samples", "must be >= 1")
        require(1 <= self.port <= 65535, "port", f"must be a TCP port, got {self.port}")
        require(self.serve_timeout_s > 0, "serve_timeout_s", "must be > 0")
