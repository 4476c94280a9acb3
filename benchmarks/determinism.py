"""python benchmarks/determinism.py [--source online_retail --path P --freq month] [--rounds 3]

Is one update's training bit-reproducible, and what do torch's deterministic kernels cost?
The engine every trainer runs (``training.fit.engine.fit``) trains the same model on the same
examples (the first window of the source, the real MiniLM) several times with
``TrainConfig.deterministic`` off and on, on this process's torch threads (2 on the
development machine). Rounds alternate the order of the two modes, so drifting machine load
hits both alike. Per mode and encoder setting:

* reproducibility: how many weight tensors of each later run differ from the mode's first
  run, and the largest absolute difference;
* cost: the engine's steady-state samples per second (median over rounds) and on / off.

Results: ``benchmarks/results/determinism.{json,md}``; recorded: ``benchmarks/recorded/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
from typing import Any

import repo_path  # noqa: F401  (the repository root on sys.path)
import torch
from recording import first_window_parser, record_parts

from training.config import Determinism, TrainConfig
from training.data.sources import load_windows
from training.features.examples import WindowExamples
from training.features.history import PurchaseHistory
from training.fit.engine import WorkerSettings, fit
from training.fit.loop import init_model
from training.model import ModelConfig, ShopStreamModel

MODES: tuple[Determinism, ...] = ("off", "on")


def train_once(model: ShopStreamModel, examples: WindowExamples, train: TrainConfig
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One engine run; (the trained weights, its clock's figures)."""
    fitted = fit(model, examples, train, WorkerSettings())
    clock = fitted.run.clock
    return ({k: v.detach().clone() for k, v in fitted.model.state_dict().items()},
            {"steps": clock.steps, **clock.metrics()})


def differences(first: dict[str, torch.Tensor], other: dict[str, torch.Tensor]
                ) -> dict[str, Any]:
    diffs = {k: float((first[k].double() - other[k].double()).abs().max()) for k in first
             if first[k].is_floating_point()}
    differing = [k for k, v in diffs.items() if v > 0]
    return {"tensors": len(diffs), "differing": len(differing),
            "max_abs": max(diffs.values(), default=0.0), "examples": differing[:5]}


def encoder_part(args: argparse.Namespace, finetune_layers: int) -> dict[str, Any]:
    windows = load_windows(args.source, args.path, args.freq)
    window = windows[0]
    model_cfg = ModelConfig(finetune_layers=finetune_layers)
    model = init_model(model_cfg, window)
    examples = WindowExamples.build(model, window, PurchaseHistory(model_cfg.history_len))
    base = TrainConfig(device="cpu", max_steps=args.max_steps if finetune_layers else None)
    runs: dict[str, list[tuple[dict[str, torch.Tensor], dict[str, Any]]]] = {m: [] for m in MODES}
    for round_ in range(args.rounds):
        order = MODES if round_ % 2 == 0 else MODES[::-1]
        for mode in order:
            runs[mode].append(train_once(model, examples,
                                         dataclasses.replace(base, deterministic=mode)))
            logging.info("finetune_layers=%d round %d %s: %s", finetune_layers, round_, mode,
                         runs[mode][-1][1])
    out: dict[str, Any] = {"window": window.window_id, "finetune_layers": finetune_layers}
    for name, done in runs.items():
        out[name] = {"runs": [r[1] for r in done],
                     "median_samples_per_s": statistics.median(
                         r[1]["steady_samples_per_s"] for r in done),
                     "vs_first": [differences(done[0][0], r[0]) for r in done[1:]]}
    out["on_over_off"] = (out["on"]["median_samples_per_s"]
                          / out["off"]["median_samples_per_s"])
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Deterministic kernels: reproducibility and cost ({result['finished']})", "",
             f"Source `{result['args']['source']}` ({result['args']['freq']}), first window; "
             f"torch {result['torch']}, {result['threads']} threads; load average "
             f"{result['loadavg_start'][0]:.2f} at the start, {result['loadavg_end'][0]:.2f} "
             "at the end.", "",
             "| encoder layers trained | mode | steps a run | median samples/s | later runs "
             "differing from the first (tensors) | largest weight difference |",
             "|---|---|---|---|---|---|"]
    for part in result["parts"]:
        for mode in MODES:
            row = part[mode]
            differing = ", ".join(str(d["differing"]) for d in row["vs_first"])
            largest = max((d["max_abs"] for d in row["vs_first"]), default=0.0)
            lines.append(f"| {part['finetune_layers']} | {mode} | {row['runs'][0]['steps']} | "
                         f"{row['median_samples_per_s']:.0f} | {differing} of "
                         f"{row['vs_first'][0]['tensors']} | {largest:.2e} |")
    lines += ["", "On / off, median steady samples/s (above 1: on is faster): " + ", ".join(
        f"{p['on_over_off']:.3f} ({p['finetune_layers']} layers trained)"
        for p in result["parts"]) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = first_window_parser(__doc__, 3, "benchmarks/results/determinism")
    parser.add_argument("--max-steps", type=int, default=40,
                        help="steps a run when encoder layers train (~1 s each on 2 cores)")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds: at least 2 runs per mode are needed to compare")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    record_parts("determinism", args, lambda layers: encoder_part(args, layers),
                 args.finetune_layers, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
