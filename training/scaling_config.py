"""Where and how an update's training runs: Ray's address, the trainer, workers, fault
tolerance. One frozen config, composed into each stage's config (training.incremental,
the pipeline, a sweep) and validated here, once."""

from __future__ import annotations

from dataclasses import dataclass, field

from training.cli import require

TRAINERS = ("auto", "ray", "local")


@dataclass(frozen=True)
class ScalingConfig:
    """The trainer and the Ray Train workers of an update."""

    ray_address: str | None = field(default=None, metadata={
        "help": "Ray cluster address (default: RAY_ADDRESS, else a Ray started by `ray start` "
                "on this machine, else a local instance, which training.incremental starts "
                "only when the update takes Ray Train; 'local' starts one at once)"})
    trainer: str = field(default="auto", metadata={
        "help": "auto: ray when the update is big enough to repay Ray Train's start-up "
                "(see ray_min_steps), needs GPUs or mid-run checkpoints, else local; ray: "
                "Ray Train TorchTrainer across num_workers; local: this process, one worker, "
                "no Ray Train start-up"})
    ray_min_steps: int = field(default=400, metadata={
        "help": "trainer=auto: the fewest one-process optimizer steps (all epochs) for which "
                "the update runs on Ray Train (see docs/trainer.md)"})
    num_workers: int = field(default=2, metadata={"help": "Ray Train workers (DDP ranks)"})
    use_gpu: str = field(default="auto", metadata={
        "help": "auto (GPUs when Ray sees them), true or false"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs reserved per worker"})
    storage_path: str = field(default="runs/ray", metadata={
        "help": "Ray Train run storage for mid-run checkpoints: a directory or s3://bucket/path"})
    max_failures: int = field(default=2, metadata={
        "help": "worker-group failures survived by resuming from the last checkpoint"})
    start_retries: int = field(default=5, metadata={
        "help": "failed starts of the Ray Train worker group (each waits "
                "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s by default, for its CPUs/GPUs) "
                "before the update fails; -1: wait forever (an autoscaling cluster)"})
    examples_memory_mib: int = field(default=1024, metadata={
        "help": "a Ray Train worker holds its shard of the examples in memory up to this "
                "many MiB; a larger shard goes to mapped files on the worker's local disk "
                "(same batches; its resident memory stays bounded, docs/trainer.md)"})
    checkpoint_every: int = field(default=0, metadata={
        "help": "also checkpoint every N steps (0: only at the end)"})
    inject_failure_at_step: int | None = field(default=None, metadata={
        "help": "testing: a worker raises once at this step (needs the marker path)"})
    inject_failure_marker: str | None = field(default=None, metadata={
        "help": "testing: file that records the injected failure so it happens once"})

    def __post_init__(self) -> None:
        require(self.trainer in TRAINERS, "trainer",
                f"must be one of {TRAINERS}, got {self.trainer!r}")
        require(self.ray_min_steps >= 0, "ray_min_steps",
                f"must be >= 0, got {self.ray_min_steps}")
        require(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        require(self.use_gpu in ("auto", "true", "false"), "use_gpu",
                f"must be auto, true or false, got {self.use_gpu!r}")
        require(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        require(self.max_failures >= -1, "max_failures", "must be >= -1")
        require(self.start_retries >= -1, "start_retries", "must be >= -1")
        require(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        require(self.examples_memory_mib >= 0, "examples_memory_mib",
                f"must be >= 0, got {self.examples_memory_mib}")
        require((self.inject_failure_at_step is None) == (self.inject_failure_marker is None),
                "inject_failure_at_step", "needs inject_failure_marker too (and vice versa)")
