"""Append-only, resumable experiment outputs (DESIGN.md §4).

``results.jsonl`` holds one JSON row per unit of work, appended and flushed as soon as it is done; a rerun
reads the keys already present and skips them, so a killed run loses nothing finished. A failed unit is
recorded with an ``error`` field instead of a number; NaN or infinite numbers are never written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"results rows must not hold non-finite numbers, got {value!r}")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class ResultsFile:
    """``results.jsonl`` under ``directory``, keyed by the fields in ``key``.

    Example::

        res = ResultsFile("out", key=("image_id", "family", "theta"))
        if not res.done(row_key): res.append({...})
    """

    def __init__(self, directory: str | Path, key: Sequence[str], name: str = "results.jsonl") -> None:
        self.path = Path(directory) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.key = tuple(key)
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb+") as f:  # a run killed mid-write leaves a torn last line: end it
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        self._done = {self._key_of(r) for r in self.rows()}

    def _key_of(self, row: dict) -> tuple:
        return tuple(round(v, 10) if isinstance(v, float) else v for v in (row.get(k) for k in self.key))

    def rows(self) -> list[dict]:
        """Every complete row in the file (a torn last line from a killed run is ignored)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def done(self, row: dict) -> bool:
        return self._key_of(row) in self._done

    def append(self, row: dict) -> None:
        """Write one row and flush it to disk before returning."""
        missing = [k for k in self.key if k not in row]
        if missing:
            raise ValueError(f"row must hold the key fields {self.key}, missing {missing}")
        line = json.dumps(_finite(row), sort_keys=True)
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._done.add(self._key_of(row))

    def extend(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.append(row)


def write_json(path: str | Path, obj) -> None:
    """Write a JSON file atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_finite(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
