"""Small JSON documents beside the versions: ``configs/<name>.json`` (the run config, a
sweep's ``best``). A mixin of :class:`training.store.base.CheckpointStore`, over its raw
object operations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from training.store.errors import CheckpointMissingError
from training.store.keys import CONFIG_AREA, validate_key
from training.store.meta import dump_json, load_json_object


class ConfigDocuments:
    """``put_config`` / ``get_config`` of a checkpoint store; the store provides the
    methods stubbed below."""

    if TYPE_CHECKING:
        def put_bytes(self, key: str, data: bytes) -> None: ...

        def _read_bytes(self, key: str) -> bytes: ...

        def _location(self, key: str) -> str: ...

    def put_config(self, name: str, data: Mapping[str, Any]) -> None:
        """Write ``configs/<name>.json``, keys in ``data``'s order: a document read back is
        the one written (the pipeline's saved run keeps its methods', phases' and metrics'
        order, which its report follows when the run is resumed)."""
        key = self._config_key(name)
        self.put_bytes(key, dump_json(dict(data), key, sort_keys=False))

    def get_config(self, name: str) -> dict[str, Any] | None:
        """Read ``configs/<name>.json``; None if it was never written."""
        key = self._config_key(name)
        try:
            raw = self._read_bytes(key)
        except CheckpointMissingError:
            return None
        return load_json_object(raw, self._location(key))

    @staticmethod
    def _config_key(name: str) -> str:
        return f"{CONFIG_AREA}/{validate_key(name, 'config name')}.json"
