"""The probe protocol: what ``PriorEvaluationModule`` runs on each image (no Lightning here).

A probe is given a prior, one image, its id and the keys of the rows still missing for it (``todo``), and
yields one row per key as each is finished. The module does the rest for every probe: it skips images
whose rows are all present (resume), appends each yielded row to ``results.jsonl`` at once, and turns a
failure of the input (a non-finite score, a floating-point error) into an ``error`` row for each key still
missing, so one bad image never ends a long run. ``summarize(rows)`` turns all rows into the headline
numbers and ``figures(rows)`` into matplotlib figures. Adding a probe = one file here + one config.
"""

from __future__ import annotations

import json
import os
import platform
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from lit_blind.priors import Prior


def json_settings(obj, skip: set[str] = frozenset()) -> dict:
    """``obj``'s public attributes that JSON can represent as they are (numbers, strings, lists, dicts), for
    comparing the settings of two runs; others (tensors, networks, paths) are left out."""
    out = {}
    for name, value in vars(obj).items():
        if name.startswith("_") or name in skip:
            continue
        try:
            out[name] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            continue
    return out


class Probe:
    """Base of every probe (see the module docstring).

    ``key`` names the fields that identify a row; ``row_keys(image_id)`` lists the keys one image produces
    (the module runs an image only while one of them has no row; a multi-process run deals out only those
    images); ``item`` carries the other fields of the dataset item (e.g. a ground-truth kernel);
    ``output_dir`` is the run's folder, set by the module before the first ``run`` (for files beside the
    rows); ``image_grid`` returns the inputs worth showing for one image; ``scalars`` the TensorBoard
    scalars of one row. ``selects`` names the attributes that only choose which rows exist (families, θ grid,
    initialisations): a resumed run may change them, while any other setting (``settings()``) must match the
    run that wrote the folder.
    """

    key: tuple[str, ...] = ("image_id",)
    selects: tuple[str, ...] = ()
    output_dir: Path | None = None

    def settings(self) -> dict:
        """The probe's JSON-representable settings that decide its rows' values: every public attribute but
        ``output_dir`` and those in ``selects`` (what a resumed run must share with the run it continues)."""
        return json_settings(self, skip={"output_dir", *self.selects})

    def row_keys(self, image_id: str) -> list[dict]:
        return [{"image_id": image_id}]

    def run(self, prior: Prior, x: Tensor, image_id: str, todo: list[dict], item: dict | None = None) -> Iterator[dict]:
        raise NotImplementedError

    def summarize(self, rows: list[dict]) -> dict:
        raise NotImplementedError

    def figures(self, rows: list[dict]) -> dict:
        return {}

    def image_grid(self, x: Tensor) -> Tensor | None:
        return None

    def scalars(self, row: dict) -> list[tuple[str, float, int]]:
        return []


def image_generator(seed: int, image_id: str) -> torch.Generator:
    """A generator that depends only on (seed, image id): probes are reproducible per image, whatever
    the batch, the process or the order of evaluation."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(image_id.encode())) % 2**63)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock interval read next covers it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hardware(device: torch.device) -> str:
    """A short description of where the computation ran."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )
