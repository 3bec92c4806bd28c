"""The unit map's compact figure arrays: cut lines read back from the labels, per-class bins, the readers."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from ssah_engine.classes import CLASSES, LABEL, Cuts
from ssah_engine.classify import classify
from ssah_engine.unitmap import UnitMap
from ssah_engine.unitmap_arrays import figure_data, layer_neurons, read_arrays
from ssah_engine.units import UnitSpace

SPACE = UnitSpace(num_layers=5, num_heads=4, num_kv_heads=2, head_dim=8, hidden_size=32, intermediate_size=300)


def synthetic_map(seed: int = 0, *, utility_only: bool = False) -> UnitMap:
    """Heavy-tailed z-scores (as real ones are), labelled by the engine's own classifier."""
    generator = torch.Generator().manual_seed(seed)
    z_safety = torch.randn(SPACE.size, generator=generator, dtype=torch.float64)
    z_utility = 0.6 * z_safety + 0.8 * torch.randn(SPACE.size, generator=generator, dtype=torch.float64)
    z_safety = torch.sinh(1.5 * z_safety) / 1.5  # tails up to a few tens
    z_utility = torch.sinh(1.5 * z_utility) / 1.5
    if utility_only:
        z_safety = None
    labels = classify(z_safety, z_utility, SPACE.param_weights(), Cuts(ru=0.1, scu=0.05, ucu=0.1))
    means = torch.zeros(SPACE.num_layers, 1), torch.zeros(SPACE.num_layers, 1)
    return UnitMap(SPACE, labels, z_safety, z_utility, *means, versions={})


def region_labels(cuts: dict, z_safety: np.ndarray, z_utility: np.ndarray) -> np.ndarray:
    """The class of each point by the cut lines alone."""
    diff, total = z_safety - z_utility, z_safety + z_utility
    out = np.full(diff.shape, LABEL["CU"], dtype=np.int8)
    out[total <= cuts["ru"]] = LABEL["RU"]
    out[diff >= cuts["scu"]] = LABEL["SCU"]
    out[diff <= cuts["ucu"]] = LABEL["UCU"]
    return out


@pytest.fixture
def saved(tmp_path):
    unit_map = synthetic_map()
    directory = unit_map.save(tmp_path / "unit_map")
    return unit_map, directory


def test_the_cut_lines_put_every_unit_in_the_class_it_was_given(saved):
    unit_map, directory = saved
    arrays = read_arrays(directory)
    cuts = figure_data(arrays)["cuts"]
    labels = region_labels(cuts, arrays.z_safety, arrays.z_utility)
    assert np.array_equal(labels, unit_map.labels.numpy())
    assert all(np.any(labels == LABEL[name]) for name in CLASSES)


def test_bins_of_each_class_add_up_to_the_summary_and_sit_where_the_units_are(saved):
    unit_map, directory = saved
    payload = figure_data(read_arrays(directory), bins=40)
    summary = unit_map.summary()
    grid = payload["density"]
    for name in CLASSES:
        flat = grid["counts"][name]
        assert sum(flat[2::3]) + grid["missing"][name] == summary["classes"][name]["neurons"]
        assert payload["layer_counts"]["neurons"][name] == [layer["neurons"][name] for layer in summary["layers"]]
        assert payload["layer_counts"]["heads"][name] == [layer["heads"][name] for layer in summary["layers"]]
        assert sum(1 for code in payload["heads"]["labels"] if code == LABEL[name]) == summary["classes"][name]["heads"]
    # Each class's bins are numpy's own 2-D histogram on asinh-spaced edges (the last edge closed).
    neurons_s = unit_map.z_safety[SPACE.total_heads :].numpy()
    neurons_u = unit_map.z_utility[SPACE.total_heads :].numpy()
    neuron_labels = unit_map.labels[SPACE.total_heads :].numpy()
    lo, hi = grid["range"]
    assert lo == min(unit_map.z_safety.min().item(), unit_map.z_utility.min().item())
    edges = np.sinh(np.linspace(math.asinh(lo), math.asinh(hi), 41))
    edges[0], edges[-1] = lo, hi
    for name in CLASSES:
        chosen = neuron_labels == LABEL[name]
        expected, _, _ = np.histogram2d(neurons_s[chosen], neurons_u[chosen], bins=[edges, edges])
        dense = np.zeros((40, 40))
        cells = grid["counts"][name]
        for i in range(0, len(cells), 3):
            dense[cells[i], cells[i + 1]] = cells[i + 2]
        assert np.abs(dense - expected).sum() <= 2  # at most a unit on an edge rounded the other way
        assert dense.sum() == expected.sum()
    assert len(payload["heads"]["z_safety"]) == SPACE.total_heads


def test_a_non_finite_score_is_counted_as_missing_not_lost(tmp_path):
    unit_map = synthetic_map(1)
    unit_map.z_safety[SPACE.total_heads + 7] = float("nan")
    payload = figure_data(read_arrays(unit_map.save(tmp_path / "m")))
    name = CLASSES[int(unit_map.labels[SPACE.total_heads + 7])]
    assert payload["density"]["missing"][name] == 1
    assert sum(sum(c[2::3]) + payload["density"]["missing"][n] for n, c in payload["density"]["counts"].items()) == (
        SPACE.total_neurons
    )


def test_zip_file_and_directory_read_the_same_arrays(saved, tmp_path):
    unit_map, directory = saved
    archive = shutil.make_archive(str(tmp_path / "unit_map"), "zip", directory)  # as the worker publishes it
    for source in (directory, directory / "unit_map.safetensors", archive):
        arrays = read_arrays(source)
        assert np.array_equal(arrays.labels, unit_map.labels.numpy())
        assert np.array_equal(arrays.z_safety, unit_map.z_safety.numpy())
        assert np.array_equal(arrays.z_utility, unit_map.z_utility.numpy())
    (tmp_path / "junk.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    with pytest.raises(ValueError, match="holds no"):
        read_arrays(tmp_path / "junk.zip")


def test_the_zoom_gives_one_layers_neurons(saved):
    unit_map, directory = saved
    zoom = layer_neurons(read_arrays(directory), 3)
    neurons = unit_map.labels[SPACE.total_heads :].reshape(SPACE.num_layers, -1)[3]
    assert zoom["labels"] == neurons.tolist()
    z = unit_map.z_safety[SPACE.total_heads :].reshape(SPACE.num_layers, -1)[3]
    assert zoom["z_safety"] == pytest.approx(z.tolist(), abs=1e-4)
    with pytest.raises(IndexError):
        layer_neurons(read_arrays(directory), SPACE.num_layers)


def test_a_utility_only_map_has_no_density_and_its_ru_cut_on_z_u(tmp_path):
    unit_map = synthetic_map(2, utility_only=True)
    payload = figure_data(read_arrays(unit_map.save(tmp_path / "budget")))
    assert payload["density"] is None and payload["heads"]["z_safety"] is None
    cuts = payload["cuts"]
    assert cuts["scu"] is None and cuts["ucu"] is None
    ru = unit_map.z_utility.numpy() <= cuts["ru"]
    assert np.array_equal(ru, unit_map.labels.numpy() == LABEL["RU"])
