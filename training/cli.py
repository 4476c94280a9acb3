"""Turn a frozen config dataclass into argparse flags and back.

Each stage declares one frozen dataclass whose fields carry ``metadata={"help": ...}``;
this module makes ``--field-name`` flags from it, so ``--help`` documents every setting
and the dataclass's ``__post_init__`` stays the single place values are validated.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Read by Ray at ray.init and by the text encoder's loaders: a single-node Ray that one of
# our entry points starts binds to 127.0.0.1 and reports no usage, and nothing is downloaded.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                 "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 "TOKENIZERS_PARALLELISM": "false"}


class ConfigError(ValueError):
    """A setting has a value the stage cannot use; the message names the setting."""


def require(condition: bool, setting: str, message: str) -> None:
    """Raise :class:`ConfigError` naming ``setting`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{setting}: {message}")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_optional) for ``X`` / ``X | None`` / ``Optional[X]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(annotation: Any) -> Any:
    base, optional = _base_type(annotation)
    origin = typing.get_origin(base)
    if base is bool:
        conv: Any = _parse_bool
    elif base in (int, float, str):
        conv = base
    elif origin is tuple:
        inner = typing.get_args(base)[0]

        def conv(text: str) -> tuple[Any, ...]:
            return tuple(inner(x) for x in text.split(",") if x.strip())

    elif origin is typing.Literal:
        conv = str
    else:
        conv = str
    if not optional:
        return conv

    def opt(text: str) -> Any:
        return None if text.strip().lower() in ("none", "") else conv(text)

    return opt


def _nested(hint: Any) -> type | None:
    """The dataclass a field holds, if it holds one (a composed config)."""
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def flag_name(f: dataclasses.Field[Any]) -> str:
    """A leaf field's flag and ``args`` key: the field name, or its ``flag`` metadata."""
    return str(f.metadata.get("flag", f.name))


def leaf_settings(cls: type) -> frozenset[str]:
    """Every flag name of ``cls``, through its composed configs (flags are flat)."""
    hints = typing.get_type_hints(cls)
    names: set[str] = set()
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = _nested(hints[f.name])
        names |= leaf_settings(sub) if sub else {flag_name(f)}
    return frozenset(names)


def with_settings(config: T, **settings: Any) -> T:
    """A copy of ``config`` with settings changed by their flag names, flat, as the command
    line names them (``store=``, ``trainer=``), into whichever composed config holds each;
    every changed part is rebuilt, so validated again. An unknown name raises ConfigError."""
    hints = typing.get_type_hints(type(config))
    left = dict(settings)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        sub = _nested(hints[f.name])
        if sub is not None:
            names = leaf_settings(sub)
            mine = {k: left.pop(k) for k in list(left) if k in names}
            if mine:
                changes[f.name] = with_settings(getattr(config, f.name), **mine)
        elif flag_name(f) in left:
            changes[f.name] = left.pop(flag_name(f))
    if left:
        raise ConfigError(f"{type(config).__name__}: unknown setting(s) {sorted(left)}")
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one ``--<prefix><flag-name>`` flag per field of the dataclass ``cls``; a field
    holding a composed config adds that config's flags, flat (its own group)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.metadata.get("cli") is False:
            continue
        sub = _nested(hints[f.name])
        if sub is not None:
            add_dataclass_args(parser, sub, prefix)
            continue
        name = flag_name(f)
        annotation = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        base, _ = _base_type(annotation)
        choices = None
        if typing.get_origin(base) is typing.Literal:
            choices = list(typing.get_args(base))
        group.add_argument(
            "--" + prefix + name.replace("_", "-"),
            dest=prefix.replace("-", "_") + name,
            type=_converter(annotation),
            default=argparse.SUPPRESS,
            choices=choices,
            help=f"{f.metadata.get('help', '')} (default: {default!r})",
        )


def dataclass_from_args(cls: type[T], args: argparse.Namespace, prefix: str = "",
                        base: T | None = None) -> T:
    """Build ``cls`` from the flags given on the command line, over ``base`` if set
    (composed configs are built from their own flags, over ``base``'s)."""
    given = vars(args)
    key_prefix = prefix.replace("-", "_")
    hints = typing.get_type_hints(cls)
    overrides: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = _nested(hints[f.name])
        if sub is not None:
            inner = getattr(base, f.name) if base is not None else None
            overrides[f.name] = dataclass_from_args(sub, args, prefix, inner)
        elif key_prefix + flag_name(f) in given:
            overrides[f.name] = given[key_prefix + flag_name(f)]
    if base is not None:
        return dataclasses.replace(base, **overrides)  # type: ignore[type-var]
    return cls(**overrides)


def config_from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Rebuild a config from ``asdict`` output (e.g. after crossing Ray), naming unknown keys;
    composed configs are rebuilt from their nested dicts."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown setting(s) {unknown}")
    hints = typing.get_type_hints(cls)
    fixed: dict[str, Any] = {}
    for key, value in values.items():
        sub = _nested(hints[key])
        if sub is not None and isinstance(value, dict):
            fixed[key] = config_from_dict(sub, value)
            continue
        base, _ = _base_type(hints[key])
        # JSON turns tuples into lists; the frozen configs hold tuples.
        fixed[key] = tuple(value) if typing.get_origin(base) is tuple and isinstance(
            value, list) else value
    return cls(**fixed)


def setup_logging(level: str | None = None) -> None:
    """Configure root logging once, from a stage's ``main()`` (never at import)."""
    logging.basicConfig(level=(level or os.environ.get("SHOPSTREAM_LOG_LEVEL", "INFO")).upper(),
                        format=LOG_FORMAT)


def default_env(*envs: dict[str, str]) -> None:
    """Set :data:`LOCAL_RAY_ENV` and ``envs`` in this process, before ``ray.init``; a value
    the user already set wins."""
    for env in (LOCAL_RAY_ENV, *envs):
        for name, value in env.items():
            os.environ.setdefault(name, value)
