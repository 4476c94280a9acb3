"""What a benchmark made of parts records around its measurements: the machine, the load
average before and after (the machines are shared), and ``<out>.json`` + ``<out>.md``."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch


def record_parts(name: str, args: argparse.Namespace, measure: Callable[[Any], dict[str, Any]],
                 parts: Iterable[Any], markdown: Callable[[dict[str, Any]], str]
                 ) -> dict[str, Any]:
    """Run ``measure`` on each of ``parts``, write the result as JSON and its ``markdown``
    beside it at ``args.out`` (a path without suffix), print the Markdown; the result."""
    result: dict[str, Any] = {"benchmark": name, "args": vars(args),
                              "torch": torch.__version__, "threads": torch.get_num_threads(),
                              "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    result["parts"] = [measure(part) for part in parts]
    result.update(loadavg_end=os.getloadavg(), finished=time.strftime("%Y-%m-%d %H:%M"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)
    return result


def first_window_parser(doc: str, rounds: int, out: str) -> argparse.ArgumentParser:
    """The flags of a benchmark over a source's first window, per encoder setting:
    ``--source --path --freq --rounds --finetune-layers --out``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="online_retail")
    parser.add_argument("--path", default="../shared/data/online_retail")
    parser.add_argument("--freq", default="month")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--finetune-layers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=out)
    return parser
