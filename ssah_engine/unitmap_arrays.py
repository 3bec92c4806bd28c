"""A unit map's per-unit arrays in the compact form its figures are drawn from (numpy only, no torch).

Used by the API (``GET /v1/audits/{id}/unit-map/arrays``) and by ``ssah report``, so the dashboard and
the report draw the same numbers. Neurons are pre-binned into a 2-D histogram of (z_S, z_U) per class;
heads (few) are sent one by one. Both axes use asinh(z): linear within about one standard deviation,
logarithmic in the long tails the z-scores have (SmolLM2: the bulk in [-1, 4], single units up to 39).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import CLASSES

TENSORS_FILE = "unit_map.safetensors"  # as unitmap.py writes it
SUMMARY_FILE = "summary.json"
PAYLOAD_FORMAT = 1
DEFAULT_BINS = 96
_DTYPES = {"I8": np.int8, "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
_WANTED = ("labels", "z_safety", "z_utility")


@dataclass(frozen=True)
class MapArrays:
    """Labels and z-scores in the engine's flat order: all heads layer-major, then all neurons layer-major."""

    num_layers: int
    num_heads: int
    num_neurons: int  # per layer
    labels: np.ndarray  # [units] int8 codes of CLASSES
    z_safety: np.ndarray | None  # [units] float64; None for a utility-only (budget) map
    z_utility: np.ndarray  # [units] float64

    @property
    def total_heads(self) -> int:
        return self.num_layers * self.num_heads

    def heads(self, vector: np.ndarray) -> np.ndarray:
        return vector[: self.total_heads].reshape(self.num_layers, self.num_heads)

    def neurons(self, vector: np.ndarray) -> np.ndarray:
        return vector[self.total_heads :].reshape(self.num_layers, self.num_neurons)


def _safetensors(blob: bytes) -> dict[str, np.ndarray]:
    """The label and z-score tensors of a safetensors file (the input means are not read)."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    out = {}
    for name in _WANTED:
        if name in header:
            entry = header[name]
            start, end = entry["data_offsets"]
            dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
            out[name] = np.frombuffer(blob, dtype=dtype, count=(end - start) // dtype.itemsize, offset=8 + size + start)
    return out


def read_arrays(path: str | Path, space: dict | None = None) -> MapArrays:
    """Read a unit map from its directory, its ``.safetensors`` file or its zip.

    ``space`` (the summary's ``space``) is read from the summary.json beside the tensors when not given.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TENSORS_FILE
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            member = next((n for n in names if n.rsplit("/", 1)[-1] == TENSORS_FILE), None)
            summary = next((n for n in names if n.rsplit("/", 1)[-1] == SUMMARY_FILE), None)
            if member is None or (summary is None and space is None):
                raise ValueError(f"{path.name} holds no {TENSORS_FILE} and {SUMMARY_FILE}")
            blob = archive.read(member)
            space = space or json.loads(archive.read(summary or SUMMARY_FILE))["space"]
    else:
        blob = path.read_bytes()
        space = space or json.loads((path.parent / SUMMARY_FILE).read_text())["space"]
    try:
        tensors = _safetensors(blob)
    except (ValueError, KeyError, TypeError) as error:  # a truncated or foreign file
        raise ValueError(f"{path.name} is not a safetensors file: {error}") from None
    if "labels" not in tensors or "z_utility" not in tensors:
        raise ValueError(f"{path.name} is not a unit map: labels or z_utility missing")
    arrays = MapArrays(
        num_layers=int(space["num_layers"]),
        num_heads=int(space["num_heads"]),
        num_neurons=int(space["intermediate_size"]),
        labels=tensors["labels"].astype(np.int8),
        z_safety=tensors["z_safety"].astype(np.float64) if "z_safety" in tensors else None,
        z_utility=tensors["z_utility"].astype(np.float64),
    )
    if arrays.labels.shape[0] != arrays.total_heads + arrays.num_layers * arrays.num_neurons:
        raise ValueError(f"{path.name}: {arrays.labels.shape[0]} units do not fit the summary's space")
    return arrays


def cut_thresholds(labels: np.ndarray, z_safety: np.ndarray | None, z_utility: np.ndarray) -> dict:
    """Where the cuts fell, in z units, read back from the labels (each passes through the last unit taken).

    SCU: z_S - z_U >= scu; UCU: z_S - z_U <= ucu; RU: z_S + z_U <= ru among the rest (z_U <= ru for a
    utility-only map); CU: everything else. None where a class is empty. Units tied with the last one
    taken may lie on a line with another label: counts always come from the labels, never the lines.
    """

    def extreme(values: np.ndarray, code: int, pick) -> float | None:
        chosen = values[(labels == code) & np.isfinite(values)]
        return float(pick(chosen)) if chosen.size else None

    code = {name: i for i, name in enumerate(CLASSES)}
    if z_safety is None:
        return {"scu": None, "ucu": None, "ru": extreme(z_utility, code["RU"], np.max)}
    diff, total = z_safety - z_utility, z_safety + z_utility
    return {
        "scu": extreme(diff, code["SCU"], np.min),
        "ucu": extreme(diff, code["UCU"], np.max),
        "ru": extreme(total, code["RU"], np.max),
    }


def _rounded(values: np.ndarray, digits: int = 4) -> list:
    """JSON-ready floats; a non-finite score (a layer with no spread) becomes None."""
    finite = np.isfinite(values)
    return [round(float(v), digits) if ok else None for v, ok in zip(values, finite)]


def _layer_counts(labels: np.ndarray) -> dict[str, list[int]]:
    """[layers, units] codes -> per class, the count in each layer."""
    return {name: [int(n) for n in (labels == code).sum(axis=1)] for code, name in enumerate(CLASSES)}


def density(
    labels: np.ndarray, z_safety: np.ndarray, z_utility: np.ndarray, *, bins: int, lo: float, hi: float
) -> dict:
    """2-D histogram of (z_S, z_U) per class on asinh axes over [lo, hi] (z units), stored sparsely.

    ``counts[class]`` is flat ``[ix, iy, n, ix, iy, n, ...]`` (ix along z_S, iy along z_U, from 0 at ``lo``);
    ``missing[class]`` counts units with a non-finite score, so each class's bins plus its missing add up
    to the class's units.
    """
    a, b = math.asinh(lo), math.asinh(hi)
    width = (b - a) / bins if b > a else 1.0

    def index(values: np.ndarray) -> np.ndarray:
        return np.clip(((np.arcsinh(values) - a) / width).astype(np.int64), 0, bins - 1)

    finite = np.isfinite(z_safety) & np.isfinite(z_utility)
    counts, missing = {}, {}
    for code, name in enumerate(CLASSES):
        chosen = (labels == code) & finite
        missing[name] = int(((labels == code) & ~finite).sum())
        cells = index(z_safety[chosen]) * bins + index(z_utility[chosen])
        occupied, n = np.unique(cells, return_counts=True)
        flat = np.stack([occupied // bins, occupied % bins, n], axis=1).reshape(-1)
        counts[name] = [int(v) for v in flat]
    return {"bins": bins, "range": [lo, hi], "scale": "asinh", "counts": counts, "missing": missing}


def figure_data(arrays: MapArrays, *, bins: int = DEFAULT_BINS) -> dict:
    """Everything the unit-map figures draw, in one compact JSON-ready dict (no object per unit)."""
    if not 2 <= bins <= 1024:
        raise ValueError(f"bins must be in [2, 1024], got {bins}")
    labels, zs, zu = arrays.labels, arrays.z_safety, arrays.z_utility
    neuron_labels = arrays.neurons(labels).reshape(-1)
    payload: dict = {
        "format": PAYLOAD_FORMAT,
        "classes": list(CLASSES),
        "layers": arrays.num_layers,
        "heads_per_layer": arrays.num_heads,
        "neurons_per_layer": arrays.num_neurons,
        "cuts": cut_thresholds(labels, zs, zu),
        "layer_counts": {
            "heads": _layer_counts(arrays.heads(labels)),
            "neurons": _layer_counts(arrays.neurons(labels)),
        },
        "heads": {
            "labels": [int(v) for v in arrays.heads(labels).reshape(-1)],
            "z_safety": None if zs is None else _rounded(arrays.heads(zs).reshape(-1)),
            "z_utility": _rounded(arrays.heads(zu).reshape(-1)),
        },
        "density": None,
    }
    if zs is not None:
        both = np.concatenate([zs, zu])
        both = both[np.isfinite(both)]
        lo, hi = (float(both.min()), float(both.max())) if both.size else (-1.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 1.0, hi + 1.0
        payload["density"] = density(
            neuron_labels, arrays.neurons(zs).reshape(-1), arrays.neurons(zu).reshape(-1), bins=bins, lo=lo, hi=hi
        )
    return payload


def layer_neurons(arrays: MapArrays, layer: int) -> dict:
    """One layer's neurons, each with its label and both z-scores (the neuron-level zoom)."""
    if not 0 <= layer < arrays.num_layers:
        raise IndexError(f"layer {layer} is not in [0, {arrays.num_layers})")
    return {
        "layer": layer,
        "classes": list(CLASSES),
        "labels": [int(v) for v in arrays.neurons(arrays.labels)[layer]],
        "z_safety": None if arrays.z_safety is None else _rounded(arrays.neurons(arrays.z_safety)[layer]),
        "z_utility": _rounded(arrays.neurons(arrays.z_utility)[layer]),
    }
