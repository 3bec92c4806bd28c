"""The probe report's unit-write histograms drawn from the probe's numbers."""

import re

from ssah.report.probe import write_histograms


def _writes():
    edges = [-0.2, -0.1, 0.0, 0.1, 0.2]
    classes = {
        "SCU": {"units": 5, "histogram": [0, 1, 1, 3], "write_share": 0.25},
        "UCU": {"units": 6, "histogram": [2, 2, 2, 0], "write_share": 0.05},
        "CU": {"units": 10, "histogram": [1, 4, 4, 1], "write_share": 0.6},
        "RU": {"units": 4, "histogram": [0, 4, 0, 0], "write_share": 0.1},
    }
    random = {"SCU": {"histogram": [1, 2, 2, 0]}, "RU": {"histogram": [1, 1, 1, 1]}}
    return {"edges": edges, "classes": classes, "random": random}


def test_each_class_panel_draws_its_counts_and_its_control():
    svg = write_histograms(_writes())
    panels = re.findall(r'<g class="panel" data-class="(\w+)" data-units="(\d+)">(.*?)</g>', svg)
    assert [(name, int(units)) for name, units, _ in panels] == [("SCU", 5), ("UCU", 6), ("CU", 10), ("RU", 4)]
    for name, _units, body in panels:
        counts = [int(count) for count in re.findall(r'class="bin" data-count="(\d+)"', body)]
        assert counts == [count for count in _writes()["classes"][name]["histogram"] if count]
        assert ('class="control"' in body) == (name in ("SCU", "RU"))
    assert "25.0 % of the write" in svg


def test_a_taller_bar_holds_a_larger_share():
    svg = write_histograms(_writes())
    scu = re.search(r'data-class="SCU".*?</g>', svg).group(0)
    heights = {int(c): float(h) for c, h in re.findall(r'data-count="(\d+)".*?height="([\d.]+)"', scu)}
    assert heights[3] > heights[1] > 0


def test_no_classes_no_picture():
    assert write_histograms({"edges": [0, 1], "classes": {}}) == ""
