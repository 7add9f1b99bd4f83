"""Network ablation analysis: masks, paired drops with bootstrap CIs, errors."""

import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.metrics import YEO7_NETWORKS, ablation_masks, network_ablation

NETS = ["Vis", "Default", "SomMot", "Default", "Cont", "DorsAttn", "Limbic", "SalVentAttn"]


def test_drop_per_network_is_the_known_contribution():
    X = np.ones((9, 8, 7))
    w = {"Vis": 1.0, "Default": 2.0}
    weights = np.array([w.get(n, 0.0) for n in NETS])

    def score(x):  # per item: weighted sum over parcels of the mean over TRs
        return x.mean(axis=2) @ weights

    res = network_ablation(X, NETS, score, n_boot=200)
    assert res["baseline"]["score"] == pytest.approx(1 + 2 + 2)
    assert res["networks"]["Default"]["score"]["drop"] == pytest.approx(4.0)
    assert res["networks"]["Default"]["n_parcels"] == 2
    assert res["networks"]["Vis"]["score"]["drop"] == pytest.approx(1.0)
    assert res["networks"]["Limbic"]["score"]["drop"] == 0.0
    assert res["networks"]["Limbic"]["score"]["drop_ci"] == [0.0, 0.0]
    assert res["ranking"]["score"][:2] == ["Default", "Vis"]
    assert list(res["networks"]) == list(YEO7_NETWORKS)  # Yeo-7 order


def test_only_the_network_parcels_are_masked_on_the_given_axis():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3, 8)) + 10.0  # parcels on axis 2
    seen = []

    def score(x):
        seen.append(x.copy())
        return {"a": x.sum(axis=(1, 2)), "b": -x[:, :, 0].sum(axis=1)}

    res = network_ablation(X, NETS, score, axis=-1, fill=0.0, n_boot=50)
    default = seen[1 + list(res["networks"]).index("Default")]
    mask = np.array([n == "Default" for n in NETS])
    assert (default[:, :, mask] == 0).all()
    np.testing.assert_array_equal(default[:, :, ~mask], X[:, :, ~mask])
    np.testing.assert_array_equal(seen[0], X)  # the intact input first, unchanged
    assert set(res["ranking"]) == {"a", "b"}


def test_ci_covers_the_mean_paired_drop():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 8))
    noise = rng.standard_normal(40)
    res = network_ablation(X, NETS, lambda x: x[:, 1] + x[:, 3] + noise, n_boot=500, random_state=3)
    d = res["networks"]["Default"]["score"]
    expect = float(np.mean(X[:, 1] + X[:, 3]))  # the paired drop cancels the noise
    assert d["drop"] == pytest.approx(expect)
    low, high = d["drop_ci"]
    assert low < expect < high and high - low > 0.1


def test_errors_teach():
    with pytest.raises(ShapeMismatchError, match="axis"):
        network_ablation(np.zeros((3, 5, 2)), NETS, lambda x: x.sum(axis=(1, 2)))
    with pytest.raises(ShapeMismatchError, match="3 per-item"):
        network_ablation(np.ones((3, 8)), NETS, lambda x: x.sum(axis=1) if x.all() else np.zeros(2))
    with pytest.raises(ValidationError, match="Frontal"):
        ablation_masks(NETS, order=["Vis", "Frontal"])
