import pytest
import torch

from ssah_engine.classes import LABEL, Cuts, canonical_class
from ssah_engine.classify import classify, select_by_weight


def test_both_spellings_are_accepted():
    assert canonical_class("esu") == "SCU"
    assert canonical_class("EUU") == "UCU"
    assert canonical_class(" ru ") == "RU"
    with pytest.raises(ValueError, match="SCU/ESU"):
        canonical_class("XYZ")


def test_cuts_parse_and_validate():
    assert Cuts.parse("0.2, 0.05,0.1") == Cuts(ru=0.2, scu=0.05, ucu=0.1)
    with pytest.raises(ValueError, match="three fractions"):
        Cuts.parse("0.1,0.2")
    with pytest.raises(ValueError, match="SCU must be a fraction"):
        Cuts(scu=1.5)


def test_select_by_weight_stops_at_the_budget():
    weights = torch.tensor([1.0, 1.0, 3.0, 5.0], dtype=torch.float64)
    order = torch.tensor([3, 0, 1, 2])
    assert select_by_weight(order, weights, 0.6).tolist() == [3, 0]  # 5 + 1 = 6 of 10
    assert select_by_weight(order, weights, 0.4).tolist() == []  # the first unit alone is over budget


def test_global_parameter_weighted_cuts_in_order():
    n = 100
    weights = torch.ones(n, dtype=torch.float64)
    z_s = torch.linspace(-1, 1, n, dtype=torch.float64)
    z_u = torch.zeros(n, dtype=torch.float64)
    z_s[:10], z_u[:10] = -5, -5  # lowest sum (and a middling diff of 0) -> redundant
    labels = classify(z_s, z_u, weights, Cuts(ru=0.10, scu=0.05, ucu=0.03))
    assert (labels[:10] == LABEL["RU"]).all()
    assert (labels[95:] == LABEL["SCU"]).all()  # highest z_S - z_U
    # Lowest diff = z_S - z_U: units 10..12 (the RU units sit at diff 0).
    assert (labels[10:13] == LABEL["UCU"]).all()
    assert int((labels == LABEL["CU"]).sum()) == n - 10 - 5 - 3


def test_later_cuts_overwrite_earlier_ones():
    weights = torch.ones(4, dtype=torch.float64)
    z_s = torch.tensor([5.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    z_u = torch.tensor([-9.0, 0.0, 0.1, 0.2], dtype=torch.float64)  # unit 0: lowest sum AND highest diff
    labels = classify(z_s, z_u, weights, Cuts(ru=0.25, scu=0.25, ucu=0.0))
    assert labels.tolist() == [LABEL["SCU"], LABEL["CU"], LABEL["CU"], LABEL["CU"]]


def test_utility_only_budget_finds_redundant_units():
    weights = torch.ones(10, dtype=torch.float64)
    z_u = torch.arange(10, dtype=torch.float64)
    labels = classify(None, z_u, weights, Cuts(ru=0.2))
    assert labels.tolist() == [LABEL["RU"]] * 2 + [LABEL["CU"]] * 8
