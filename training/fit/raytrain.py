"""Run one window's training as a Ray Train ``TorchTrainer`` and collect the result.

The start state (model, teacher, optimizer moments: :mod:`training.fit.start_state`) goes to
the workers as a checkpoint beside the run's own in Ray Train storage, and the examples as one
Arrow file per rank beside it (:mod:`training.fit.example_shards`: a worker reads only its
shard); both are deleted when the run ends. Nothing of the window crosses the object store.
Ray Train storage is a local directory or S3: for ``s3://bucket/path`` with a custom endpoint
(MinIO, moto) we hand Ray a ``pyarrow.fs.S3FileSystem(endpoint_override=...)``; without one,
Ray resolves the URI itself through the standard AWS credential chain.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from safetensors.torch import load_file

from training.config import TrainConfig
from training.features.examples import WindowExamples
from training.fit.engine import PEAK_LR_KEY, WorkerSettings, total_steps
from training.fit.example_shards import write_example_shards
from training.fit.local import fit_local
from training.fit.optim_state import OPTIMIZER_FILE
from training.fit.ray_session import ensure_ray, gpus_for_auto
from training.fit.result import FitResult, OptimizerState
from training.fit.start_state import write_start_state
from training.fit.worker import STATE_FILE, train_loop_per_worker
from training.incremental_config import IncrementalConfig
from training.memory import release_memory
from training.model import ShopStreamModel, load_model

logger = logging.getLogger(__name__)


class TrainerStartError(RuntimeError):
    """Ray Train's controller gave up (most often: the worker group never got its
    resources), rather than waiting forever for a cluster that cannot place it."""


def resolve_use_gpu(setting: str) -> bool:
    if setting == "auto":
        return gpus_for_auto()
    return setting == "true"


def storage(path: str, endpoint_url: str | None) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """(storage_path, storage_filesystem) for Ray Train's RunConfig."""
    parsed = urlparse(path)
    if parsed.scheme != "s3":
        return str(Path(path).resolve()), None
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return path, None
    fs = pyarrow.fs.S3FileSystem(
        endpoint_override=endpoint, scheme=urlparse(endpoint).scheme or "https",
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    return f"{parsed.netloc}{parsed.path}".rstrip("/"), fs


def worker_settings(inc: IncrementalConfig, has_teacher: bool) -> WorkerSettings:
    return WorkerSettings(
        distill_weight=inc.continual.distill_weight if has_teacher else 0.0,
        distill_temperature=inc.continual.distill_temperature,
        adv_epsilon=inc.continual.adv_epsilon, adv_steps=inc.continual.adv_steps,
        checkpoint_every=inc.scaling.checkpoint_every,
        inject_failure_at_step=inc.scaling.inject_failure_at_step,
        inject_failure_marker=inc.scaling.inject_failure_marker,
        examples_memory_mib=inc.scaling.examples_memory_mib)


def choose_trainer(inc: IncrementalConfig, train_cfg: TrainConfig,
                   examples: WindowExamples) -> tuple[str, str]:
    """(ray or local, why) for this fit: ``inc.trainer`` unless it is ``auto``.

    Auto takes Ray Train whenever only it can do what was asked (GPUs, which the driver
    may not have; mid-run checkpoints; an injected worker failure), and otherwise when the
    update is long enough to repay Ray Train's fixed start-up: ``ray_min_steps`` one-process
    optimizer steps (docs/trainer.md)."""
    if inc.scaling.trainer != "auto":
        return inc.scaling.trainer, f"trainer={inc.scaling.trainer}"
    if resolve_use_gpu(inc.scaling.use_gpu):
        return "ray", "auto: GPUs requested or in the Ray cluster"
    if inc.scaling.checkpoint_every > 0 or inc.scaling.inject_failure_at_step is not None:
        return "ray", "auto: mid-run checkpoints need Ray Train"
    steps = total_steps(examples, 1, train_cfg)[1]
    if steps >= inc.scaling.ray_min_steps:
        return "ray", f"auto: {steps} steps >= ray_min_steps {inc.scaling.ray_min_steps}"
    return "local", f"auto: {steps} steps < ray_min_steps {inc.scaling.ray_min_steps}"


def fit_window(inc: IncrementalConfig, train_cfg: TrainConfig, model: ShopStreamModel,
               teacher: ShopStreamModel | None,
               optimizer: OptimizerState | None,
               examples: WindowExamples, window_id: str) -> FitResult:
    """Train ``model`` on ``examples`` across ``inc.num_workers`` Ray Train workers, or in
    this process (:func:`choose_trainer`); the result says which ran and why."""
    trainer, reason = choose_trainer(inc, train_cfg, examples)
    logger.info("window %s trains on the %s trainer (%s)", window_id, trainer, reason)
    if trainer == "local":
        fit = fit_local(train_cfg, worker_settings(inc, teacher is not None), model, teacher,
                        optimizer, examples, window_id)
    else:
        fit = fit_ray(inc, train_cfg, model, teacher, optimizer, examples, window_id)
    return replace(fit, trainer=trainer, trainer_reason=reason)


def fit_ray(inc: IncrementalConfig, train_cfg: TrainConfig, model: ShopStreamModel,
            teacher: ShopStreamModel | None, optimizer: OptimizerState | None,
            examples: WindowExamples, window_id: str) -> FitResult:
    """Train ``model`` on ``examples`` across ``inc.num_workers`` Ray Train workers."""
    ensure_ray(inc.scaling.ray_address)
    use_gpu = resolve_use_gpu(inc.scaling.use_gpu)
    # Titles are encoded once here (and kept for the gate's evaluation), not once per
    # worker and again for the teacher: the frozen outputs travel with the start state.
    model.text.use_shared_cache()
    model.text.warm(model.item_titles[1:])
    storage_path, fs = storage(inc.scaling.storage_path, inc.store.endpoint_url)
    name = f"incremental-{window_id.replace('/', '_')}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        write_start_state(Path(tmp), model, teacher, optimizer,
                          model.text.export_cache(model.item_titles[1:]))
        start = upload_start(Path(tmp), storage_path, fs, name)
    shards = write_shards(examples, inc.scaling.num_workers, storage_path, fs, name)
    # Building the rank files' repeat features is the driver's largest transient; without
    # this the fit's own start-up (~0.3 GB) stacked on its freed but kept pages.
    release_memory()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": asdict(train_cfg),
                           "worker": asdict(worker_settings(inc, teacher is not None)),
                           "start": start, "examples": shards},
        scaling_config=ScalingConfig(num_workers=inc.scaling.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": inc.scaling.cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=fs,
                             # Train V2's FailureConfig at run time; mypy reads ray.train's
                             # V1 import branch, which lacks the controller's limit.
                             failure_config=FailureConfig(  # type: ignore[call-arg]
                                 max_failures=inc.scaling.max_failures,
                                 controller_failure_limit=inc.scaling.start_retries),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    began = time.perf_counter()
    try:
        result = trainer.fit()
    except ray.train.ControllerError as err:
        raise TrainerStartError(
            f"Ray Train gave up on window {window_id} after "
            f"start_retries={inc.scaling.start_retries} "
            f"failed starts of num_workers={inc.scaling.num_workers} x cpus_per_worker="
            f"{inc.scaling.cpus_per_worker}{' + 1 GPU' if use_gpu else ''}: {err}") from err
    finally:
        delete_run_input(start)
        delete_run_input(shards)
    seconds = time.perf_counter() - began
    return fit_result(result, seconds, inc, train_cfg, examples, use_gpu)


def resolved_fs(storage_path: str, fs: pyarrow.fs.FileSystem | None
                ) -> tuple[pyarrow.fs.FileSystem, str]:
    """(filesystem, path on it) of Ray Train storage, as :func:`storage` gave them."""
    if fs is None:
        return pyarrow.fs.FileSystem.from_uri(storage_path)
    return fs, storage_path


def write_shards(examples: WindowExamples, world: int, storage_path: str,
                 fs: pyarrow.fs.FileSystem | None, name: str) -> ray.train.Checkpoint:
    """Each rank's examples beside the run's checkpoints (:mod:`training.fit.example_shards`);
    the handle (a path and its filesystem) every worker reads its own files through."""
    fs, storage_path = resolved_fs(storage_path, fs)
    dest = f"{storage_path.rstrip('/')}/{name}-examples"
    write_example_shards(examples, world, dest, fs)
    return ray.train.Checkpoint(dest, filesystem=fs)


def upload_start(local: Path, storage_path: str, fs: pyarrow.fs.FileSystem | None,
                 name: str) -> ray.train.Checkpoint:
    """Copy the start state beside the run's checkpoints, where every node can read it."""
    fs, storage_path = resolved_fs(storage_path, fs)
    dest = f"{storage_path.rstrip('/')}/{name}-start"
    fs.create_dir(dest, recursive=True)
    pyarrow.fs.copy_files(str(local), dest, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=fs)
    return ray.train.Checkpoint(dest, filesystem=fs)


def delete_run_input(run_input: ray.train.Checkpoint) -> None:
    """The start state and the examples are the run's input only: the published version is
    what outlives them. A failed delete leaves a directory behind, never a failed update."""
    try:
        (run_input.filesystem or pyarrow.fs.LocalFileSystem()).delete_dir(run_input.path)
    except OSError as err:
        logger.warning("could not delete the run input at %s: %s", run_input.path, err)


def fit_result(result: ray.train.Result, seconds: float, inc: IncrementalConfig,
               train_cfg: TrainConfig, examples: WindowExamples, use_gpu: bool) -> FitResult:
    """The trained model and moments of a finished run's last checkpoint, and its figures."""
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run at {result.path} finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        path = Path(directory)
        trained = load_model(path)
        state = json.loads((path / STATE_FILE).read_text())
        opt = (load_file(str(path / OPTIMIZER_FILE)), state["optimizer"])
    metrics = result.metrics or {}
    steps = total_steps(examples, inc.scaling.num_workers, train_cfg)[1]
    # benchmarks/train_throughput.py reads this line (FitLog): keep its three arguments.
    logger.info("Ray Train run %s: %.1f s wall, metrics %s", Path(result.path).name, seconds,
                metrics)
    return FitResult(trained, opt, int(metrics.get("step", steps)), seconds,
                     float(metrics.get("samples_per_s", 0.0)) * inc.scaling.num_workers, use_gpu,
                     state.get("resumed_from"),
                     loop_seconds=float(metrics.get("train_s", float("nan"))),
                     epoch_peak_lrs=peak_lrs(metrics))


def peak_lrs(metrics: dict[str, Any]) -> tuple[float, ...]:
    """The per-epoch peak learning rates a worker reported (``EngineRun.metrics``)."""
    found = {int(k[len(PEAK_LR_KEY):]): float(v) for k, v in metrics.items()
             if k.startswith(PEAK_LR_KEY)}
    return tuple(found[e] for e in sorted(found))
