"""python benchmarks/version_size.py [--source online_retail --path P --freq month] [--rounds 5]

What leaving the frozen encoder weights to the package saves: a model fitted to the first
window of the source (the real MiniLM, 0 and 1 encoder layers trained) is saved both ways,
``save_model`` as it is (format 2: the package's frozen weights recorded by hash) and with
``leave_to_package=False`` (every tensor, as format 1 stored it). Per layout: bytes of
``model.safetensors``, median seconds to save, to publish the saved files into a local store
(copy + sha256 read-back) and to ``load_model``, over ``--rounds`` rounds whose order
alternates; and whether the loaded weights equal the saved model's, bit for bit.

Results: ``benchmarks/results/version_size.{json,md}``; recorded: ``benchmarks/recorded/``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import repo_path  # noqa: F401  (the repository root on sys.path)
import torch
from recording import first_window_parser, record_parts

from training.data.sources import load_windows
from training.fit.loop import init_model
from training.model import ModelConfig, ShopStreamModel, load_model, save_model
from training.store import open_store

LAYOUTS: dict[str, bool] = {"package": True, "whole": False}  # name -> leave_to_package


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    out = action()
    return time.perf_counter() - began, out


def one_round(model: ShopStreamModel, layout: str, work: Path) -> dict[str, Any]:
    folder = work / layout
    shutil.rmtree(folder, ignore_errors=True)
    save_s, paths = timed(lambda: save_model(model, folder, leave_to_package=LAYOUTS[layout]))
    store = open_store(work / f"store-{layout}")
    publish_s, _ = timed(lambda: store.publish({p.name: p for p in paths}, {}, parent=None))
    load_s, loaded = timed(lambda: load_model(folder))
    want = model.state_dict()
    same = all(torch.equal(loaded.state_dict()[k], v) for k, v in want.items())
    return {"bytes": (folder / "model.safetensors").stat().st_size, "save_s": save_s,
            "publish_s": publish_s, "load_s": load_s, "identical": same}


def encoder_part(args: argparse.Namespace, finetune_layers: int) -> dict[str, Any]:
    window = load_windows(args.source, args.path, args.freq)[0]
    model = init_model(ModelConfig(finetune_layers=finetune_layers), window).eval()
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in LAYOUTS}
    with tempfile.TemporaryDirectory(prefix="shopstream-version-size-") as tmp:
        for round_ in range(args.rounds):
            for layout in (LAYOUTS if round_ % 2 == 0 else list(LAYOUTS)[::-1]):
                rounds[layout].append(one_round(model, layout, Path(tmp)))
    out: dict[str, Any] = {"window": window.window_id, "finetune_layers": finetune_layers,
                           "users": len(model.users) - 1, "items": len(model.items) - 1}
    for layout, done in rounds.items():
        out[layout] = {"bytes": done[0]["bytes"],
                       "identical": all(r["identical"] for r in done),
                       **{key: statistics.median(r[key] for r in done)
                          for key in ("save_s", "publish_s", "load_s")}}
    out["whole_over_package"] = {key: out["whole"][key] / out["package"][key]
                                 for key in ("bytes", "save_s", "publish_s", "load_s")}
    logging.info("finetune_layers=%d: %s", finetune_layers, out)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Version size: frozen encoder weights left to the package ({result['finished']})",
             "", f"Source `{result['args']['source']}` ({result['args']['freq']}), a model "
             f"fitted to the first window's vocabulary; median of {result['args']['rounds']} "
             f"rounds; torch {result['torch']}, {result['threads']} threads; load average "
             f"{result['loadavg_start'][0]:.2f} at the start, {result['loadavg_end'][0]:.2f} "
             "at the end.", "",
             "| encoder layers trained | layout | model.safetensors MB | save s | publish s "
             "(local store) | load s | loads bit for bit |", "|---|---|---|---|---|---|---|"]
    for part in result["parts"]:
        for layout in LAYOUTS:
            row = part[layout]
            lines.append(f"| {part['finetune_layers']} | {layout} | {row['bytes'] / 1e6:.1f} | "
                         f"{row['save_s']:.3f} | {row['publish_s']:.3f} | {row['load_s']:.3f} | "
                         f"{'yes' if row['identical'] else '**no**'} |")
    ratios = "; ".join(f"{p['finetune_layers']} layers trained: " + ", ".join(
        f"{k.removesuffix('_s')} {v:.1f}x" for k, v in p["whole_over_package"].items())
        for p in result["parts"])
    lines += ["", f"Whole / package (above 1: the package layout is smaller or faster): "
              f"{ratios}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = first_window_parser(__doc__, 5, "benchmarks/results/version_size")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    record_parts("version_size", args, lambda layers: encoder_part(args, layers),
                 args.finetune_layers, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
