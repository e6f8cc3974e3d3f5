"""Classification labels of loaded versions, read from their `label_filename` files once each."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from server.repository.labels import read_output_labels

if TYPE_CHECKING:
    from server.core.model_version import LoadedVersion
    from server.core.stats import ModelStats

log = logging.getLogger(__name__)


class OutputLabels:
    """Output name -> labels per loaded version (keyed by its ModelStats, one per LoadedVersion)."""

    def __init__(self) -> None:
        self._read: dict[ModelStats, tuple[Any, dict[str, list[str]]]] = {}

    def of(self, loaded: LoadedVersion) -> dict[str, list[str]]:
        known = self._read.get(loaded.stats)
        if known is not None and known[0] is loaded.config:
            return known[1]
        labels: dict[str, list[str]] = {}
        if any(output.label_filename for output in loaded.config.output):
            try:
                labels = read_output_labels(loaded.config, loaded.model_dir)
            except OSError as exc:  # removed since the load checked it: answer without labels
                log.warning("'%s' version %d: cannot read a label file: %s", loaded.name, loaded.version, exc)
        if len(self._read) > 4096:  # versions unloaded long ago
            self._read.clear()
        self._read[loaded.stats] = (loaded.config, labels)
        return labels
