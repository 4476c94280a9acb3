"""See and steer the versions of a checkpoint store: list, show, diff, promote, rollback, gc.

    python -m training.store.versions list --store runs/store        # or: shopstream-versions
    shopstream-versions show v20261202T... --store s3://bucket/shopstream --json
    shopstream-versions diff V1 V2 --store runs/store                # metrics side by side
    shopstream-versions promote V --store runs/store                 # verify, then make latest
    shopstream-versions rollback --store runs/store [--to V]         # to latest's parent
    shopstream-versions gc --keep 5 --store runs/store
    shopstream-versions canary V --fraction 0.1 --store runs/store   # or --shadow; --off

``promote`` and ``rollback`` read every file of the target back and check its sha256 first
(a version that fails is refused, exit 1), then move ``latest.json`` only if nobody moved
it meanwhile (see :mod:`training.store.base`). Serving picks the change up at its next poll;
the next incremental update starts from the new ``latest`` (a training head written for
another latest is ignored, see :mod:`training.update.head`). ``canary`` serves a published
version beside latest to a share of users (or shadowed), see :mod:`training.store.canary`;
promoting the canary ends it. ``--json`` prints one JSON document
for scripts. Exit codes: 0 done, 1 store error (named), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from training.cli import ConfigError, setup_logging
from training.store.base import CheckpointStore
from training.store.canary import CanarySpec, read_canary, write_canary
from training.store.config import open_store
from training.store.errors import StoreError

logger = logging.getLogger(__name__)

LIST_COLUMNS = ("version", "status", "parent", "window", "kind", "created_at", "rec",
                "fraud", "gate", "size_mib")


def _obj(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """``doc[key]`` if it is a JSON object, else {} (versions written by other tools)."""
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _main_metrics(meta: dict[str, Any]) -> dict[str, Any]:
    """The task metrics the gate compared (rec, fraud), where the version records them."""
    found = _obj(_obj(meta, "gate"), "candidate") or \
        _obj(_obj(_obj(meta, "metrics"), "candidate"), "main")
    return {"rec": found.get("rec"), "fraud": found.get("fraud")}


def version_row(meta: dict[str, Any], latest: str | None,
                canary: CanarySpec | None = None) -> dict[str, Any]:
    """One line of ``list``: identity, lineage, status, main metrics and size."""
    version = str(meta.get("version"))
    status = "latest" if version == latest else str(meta.get("status"))
    if canary is not None and version == canary.version and version != latest:
        status = f"{canary.mode} {canary.fraction:g}"
    size = sum(int(f.get("size", 0)) for f in _obj(meta, "files").values()
               if isinstance(f, dict))
    return {"version": version, "status": status, "parent": meta.get("parent"),
            "window": meta.get("window"), "kind": meta.get("kind") or meta.get("method"),
            "created_at": meta.get("created_at"), **_main_metrics(meta),
            "gate": _obj(meta, "rejection").get("reason") or _obj(meta, "gate").get("reason"),
            "size_mib": round(size / 2**20, 2)}


def list_versions(store: CheckpointStore, rejected: bool = True) -> list[dict[str, Any]]:
    """Every published (and rejected) version, oldest first."""
    latest, canary = store.latest(), read_canary(store)
    ids = store.list_versions() + (store.list_rejected() if rejected else [])
    return [version_row(store.read_meta(v), latest.version if latest else None, canary)
            for v in sorted(ids)]


def show_version(store: CheckpointStore, version: str) -> dict[str, Any]:
    """What an operator asks of one version: its row, gate decision, config and files.
    The ranking-time terms' per-pair grids and the optimizer state are left out."""
    meta = store.read_meta(version)
    latest = store.latest()
    terms = _obj(meta, "ranking_terms")
    return {**version_row(meta, latest.version if latest else None),
            "gate": meta.get("gate"), "rejection": meta.get("rejection"),
            "config_used": meta.get("config_used"), "start_from": meta.get("start_from"),
            "fraud_thresholds": meta.get("fraud_thresholds"),
            "ranking_terms": {k: v for k, v in terms.items()
                              if k not in ("warm_ndcg", "cold_ndcg")},
            "train_config": meta.get("train_config"),
            "incremental_config": meta.get("incremental_config"),
            "files": {n: f.get("size") for n, f in _obj(meta, "files").items()
                      if isinstance(f, dict)}}


def flat_numbers(doc: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a nested JSON document, by dotted path."""
    if isinstance(doc, bool):
        return {}
    if isinstance(doc, (int, float)):
        return {prefix: float(doc)}
    if isinstance(doc, dict):
        out: dict[str, float] = {}
        for key, value in doc.items():
            out.update(flat_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {}


def diff_versions(store: CheckpointStore, a: str, b: str) -> list[dict[str, Any]]:
    """The two versions' recorded metrics side by side (``metrics`` and the gate's
    comparison), with b - a where both have the number."""
    left, right = (flat_numbers({"metrics": m.get("metrics"), "gate": m.get("gate")})
                   for m in (store.read_meta(a), store.read_meta(b)))
    rows = []
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key), right.get(key)
        rows.append({"metric": key, a: x, b: y,
                     "delta": None if x is None or y is None else round(y - x, 6)})
    return rows


def promote_version(store: CheckpointStore, version: str) -> dict[str, Any]:
    """Verify every file of ``version``, then make it latest if latest did not move."""
    before = store.latest()
    store.verify(version)
    info = store.promote(version, expect_latest=before.version if before else None)
    logger.info("latest: %s -> %s", before.version if before else None, info.version)
    canary = read_canary(store)
    if canary is not None and canary.version == info.version:
        write_canary(store, None)  # the canary became latest: nothing left beside it
        logger.info("canary %s ended: it is latest now", info.version)
    return {"previous": before.version if before else None, "latest": info.version}


def rollback(store: CheckpointStore, to: str | None = None) -> dict[str, Any]:
    """Promote ``to``, or latest's parent."""
    if to is None:
        current = store.latest()
        if current is None:
            raise StoreError(f"{store.uri}: empty store, nothing to roll back")
        if current.parent is None:
            raise StoreError(f"{store.uri}: latest {current.version} has no parent; "
                             "name a version with --to")
        to = current.parent
    return promote_version(store, to)


def set_canary(store: CheckpointStore, version: str | None, fraction: float,
               shadow: bool) -> dict[str, Any]:
    """Start (or change) the canary, or end it (``version`` None); returns the old and new."""
    before = read_canary(store)
    spec = None if version is None else CanarySpec(version, fraction,
                                                   "shadow" if shadow else "canary")
    write_canary(store, spec)
    return {"previous": before.to_json() if before else None,
            "canary": spec.to_json() if spec else None}


def gc(store: CheckpointStore, keep: int) -> dict[str, Any]:
    """Delete versions beyond the newest ``keep`` (never latest or its parent)."""
    return {"deleted": store.retain(keep)}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as aligned text columns."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopstream-versions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True,
                        help="the store: a directory, file:// or s3://bucket/prefix")
    parser.add_argument("--endpoint-url", default=None,
                        help="S3 endpoint (MinIO, moto); unset uses AWS_ENDPOINT_URL or AWS")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="every version, oldest first")
    listing.add_argument("--published-only", action="store_true",
                         help="leave out rejected candidates")
    sub.add_parser("show", help="one version: gate decision, config, files").add_argument(
        "version")
    diff = sub.add_parser("diff", help="two versions' metrics side by side")
    diff.add_argument("a")
    diff.add_argument("b")
    sub.add_parser("promote", help="verify a published version, make it latest").add_argument(
        "version")
    back = sub.add_parser("rollback", help="make latest's parent (or --to V) latest")
    back.add_argument("--to", default=None, help="the version to roll back to")
    canary = sub.add_parser("canary", help="serve a published version beside latest")
    canary.add_argument("version", nargs="?", help="the candidate (omit with --off)")
    canary.add_argument("--fraction", type=float, default=0.05,
                        help="share of users it answers (default 0.05)")
    canary.add_argument("--shadow", action="store_true",
                        help="answer nobody with it: compare and log beside latest")
    canary.add_argument("--off", action="store_true", help="end the canary")
    collect = sub.add_parser("gc", help="delete all but the newest N versions")
    collect.add_argument("--keep", type=int, required=True, help="versions to keep (>= 1)")
    return parser


def run_command(store: CheckpointStore, args: argparse.Namespace) -> tuple[Any, str]:
    """(the JSON result, its text rendering) of one parsed command."""
    if args.command == "list":
        rows = list_versions(store, rejected=not args.published_only)
        return rows, table(rows, LIST_COLUMNS) if rows else f"{store.uri}: no versions"
    if args.command == "show":
        doc = show_version(store, args.version)
        return doc, json.dumps(doc, indent=2)
    if args.command == "diff":
        rows = diff_versions(store, args.a, args.b)
        return rows, table(rows, ("metric", args.a, args.b, "delta"))
    if args.command == "canary" and (args.version is None) != args.off:
        raise ConfigError("canary: name a version, or --off (not both)")
    commands: dict[str, Callable[[], dict[str, Any]]] = {
        "promote": lambda: promote_version(store, args.version),
        "rollback": lambda: rollback(store, args.to),
        "canary": lambda: set_canary(store, None if args.off else args.version,
                                     args.fraction, args.shadow),
        "gc": lambda: gc(store, args.keep)}
    doc = commands[args.command]()
    if args.command == "gc":
        return doc, f"deleted {len(doc['deleted'])}: {' '.join(doc['deleted'])}"
    if args.command == "canary":
        return doc, f"canary: {doc['previous']} -> {doc['canary']}"
    return doc, f"latest: {doc['previous']} -> {doc['latest']}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        with open_store(args.store, endpoint_url=args.endpoint_url) as store:
            doc, text = run_command(store, args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StoreError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
