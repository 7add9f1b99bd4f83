"""Known-answer NSD: layout read back by the real loader, determinism, ridge vs ideal observer, controls."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from neurodecode.data import load_nsd
from neurodecode.simulate import load_truth, simulate_nsd
from neurodecode.simulate._ideal import correlation_scores, identification_scores

SMALL = {"n_stimuli": 560, "n_voxels": 120, "n_shared": 60, "volume_shape": (16, 18, 15), "formats": ("nifti",)}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_nsd(tmp_path_factory.mktemp("nsd") / "out", subjects=(1, 6), seed=3, **SMALL)


def _digest(folder):
    """sha256 of every file; MATLAB files by content (scipy.io.savemat stamps the creation time in the header)."""
    import scipy.io

    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.suffix == ".mat":
                mat = scipy.io.loadmat(p)
                data = b"".join(np.ascontiguousarray(mat[k]).tobytes() for k in sorted(mat) if not k.startswith("__"))
            out[str(p.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out


def test_layout_is_read_back_by_the_nsd_loader(sim):
    assert sim.root == sim.out / "nsd" and not (sim.root / "truth").exists()
    ceiling = json.loads((sim.out / "ceiling.json").read_text())
    assert {"two_way_identification", "top1_retrieval", "n_test", "per_subject"} <= set(ceiling)
    assert ceiling["n_test"] == 60
    counts = {}
    for s in (1, 6):
        trials = load_nsd(sim.root, s, zscore=None, average_test_repeats=False)
        truth = load_truth(sim.out, f"subj{s:02d}")
        counts[s] = trials.X.shape[1]
        assert trials.X.shape == (1500, int((truth["mask"] == 1).sum()))
        assert np.array_equal(trials.stimulus_ids, truth["trial_stimulus"])
        assert np.array_equal(trials.split == "test", truth["is_test"])
        # int16 x 300 on disk: the loader gives back exactly what was simulated (to 1/300 %)
        np.testing.assert_allclose(trials.X, sim.data[s]["betas"], atol=1e-4)
        assert np.allclose(np.round(trials.X * 300), trials.X * 300, atol=1e-2)
        # every shared test image shown 3 times
        assert np.all(np.bincount(trials.stimulus_ids[trials.split == "test"])[np.unique(
            trials.stimulus_ids[trials.split == "test"])] == 3)
    # different voxel counts, in NSD's proportion (subject 6 has the largest nsdgeneral)
    assert counts[1] == 120 and counts[6] == round(120 * 17907 / 15724)
    assert set(np.unique(load_truth(sim.out, "subj01")["mask"])) == {-1, 0, 1}


def test_layout_passes_check_data(sim):
    from typer.testing import CliRunner

    from neurodecode.cli import app

    result = CliRunner().invoke(app, ["check-data", "nsd", str(sim.root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["subjects"]["6"]["n_voxels"] == round(120 * 17907 / 15724)
    assert report["subjects"]["1"]["test_images"] == 60


def test_session_offsets_make_zscoring_matter(sim):
    betas, sess = sim.data[1]["betas"], sim.data[1]["trial_session"]
    means = np.stack([betas[sess == k].mean(0) for k in (1, 2)])
    clean_sd = load_truth(sim.out, "subj01")["signal_sd"]
    # session means differ by about the signal size (offsets ~ N(0, signal_sd))
    assert np.median(np.abs(means[0] - means[1]) / clean_sd) > 0.4


def test_same_seed_gives_identical_files(sim, tmp_path):
    again = simulate_nsd(tmp_path / "again", subjects=(1, 6), seed=3, **SMALL)
    first, second = _digest(sim.out), _digest(again.out)
    assert first.keys() == second.keys() and len(first) > 10
    assert first == second
    other = simulate_nsd(tmp_path / "other", subjects=(1, 6), seed=4, **SMALL)
    assert _digest(other.out)["truth/subj01.npz"] != first["truth/subj01.npz"]


@pytest.fixture(scope="module")
def decoding_data(sim):
    trials = load_nsd(sim.root, 1)  # per-session z-score (train statistics), test repeats averaged
    feats = load_truth(sim.out, "features")
    energy = feats["gabor_energy"].astype(np.float64)  # (n_stimuli, 12, 16, 16) -> 4 x 4 blocks
    coarse = energy.reshape(len(energy), 12, 4, 4, 4, 4).mean(axis=(3, 5)).reshape(len(energy), -1)
    target = np.concatenate([np.log1p(coarse), feats["semantic"]], axis=1)
    target = (target - target.mean(0)) / (target.std(0) + 1e-8)
    return trials, target


def _ridge_identification(trials, target, shuffle=None):
    train, test = trials.split == "train", trials.split == "test"
    y = target[trials.stimulus_ids[train]]
    if shuffle is not None:  # shuffled-brain control: trial labels permuted
        y = y[np.random.default_rng(shuffle).permutation(len(y))]
    model = Ridge(alpha=3e3).fit(trials.X[train], y)
    scores = correlation_scores(model.predict(trials.X[test]), target[trials.stimulus_ids[test]])
    return identification_scores(scores)


def test_ridge_is_far_above_chance_and_below_the_ideal_observer(sim, decoding_data):
    ridge = _ridge_identification(*decoding_data)
    ideal = sim.ceiling["per_subject"]["subj01"]
    assert ridge["two_way_identification"] > 0.75
    assert ridge["two_way_identification"] < ideal["two_way_identification"]
    assert ridge["top1_retrieval"] < ideal["top1_retrieval"]
    assert ideal["top1_retrieval"] > 10 * ideal["chance"]["top1_retrieval"]


def test_shuffled_brain_control_sits_at_chance(decoding_data):
    # one permutation scatters around 0.5 with sd ~0.06 here; the mean of 8 is within ~0.02
    control = [_ridge_identification(*decoding_data, shuffle=k)["two_way_identification"] for k in range(8)]
    assert abs(np.mean(control) - 0.5) < 0.06
    assert max(control) < _ridge_identification(*decoding_data)["two_way_identification"]


def test_more_noise_lowers_the_ceiling_monotonically(tmp_path):
    twoway, rank = [], []
    for snr in (0.5, 0.2, 0.1, 0.05):
        res = simulate_nsd(tmp_path / f"snr{snr}", subjects=(1,), seed=0, snr=snr,
                           **(SMALL | {"formats": (), "n_sessions": 1, "n_stimuli": 300}))
        twoway.append(res.ceiling["two_way_identification"])
        rank.append(res.ceiling["mean_rank"])
    assert all(a > b for a, b in zip(twoway, twoway[1:])), twoway
    assert all(a < b for a, b in zip(rank, rank[1:])), rank
    assert twoway[-1] > 0.5  # still above chance at the noisiest setting


def test_rejects_bad_arguments(tmp_path):
    from neurodecode._core.errors import ValidationError

    with pytest.raises(ValidationError, match="subjects"):
        simulate_nsd(tmp_path, subjects=(9,))
    with pytest.raises(ValidationError, match="snr"):
        simulate_nsd(tmp_path, snr=0)
    with pytest.raises(ValidationError, match="n_shared"):
        simulate_nsd(tmp_path, n_sessions=1, n_shared=250)
    with pytest.raises(ValidationError, match="stimuli"):
        simulate_nsd(tmp_path, n_stimuli=300)


def test_retinotopy_is_smooth_and_crossed(sim):
    truth = load_truth(sim.out, "subj01")
    early, coords = truth["early"], truth["voxel_coords"]
    assert 0.5 < early.mean() < 0.6
    # left hemisphere (x < 0) maps to the right visual field, and vice versa
    lh = early & (coords[:, 0] < -0.1)
    rh = early & (coords[:, 0] > 0.1)
    assert (truth["prf_x"][lh] > 0).mean() > 0.9 and (truth["prf_x"][rh] < 0).mean() > 0.9
    # eccentricity grows from the occipital pole forward; pRF size grows with eccentricity
    assert np.corrcoef(coords[early, 1], truth["eccentricity"][early])[0, 1] > 0.8
    assert np.corrcoef(truth["eccentricity"][early], truth["prf_sigma"][early])[0, 1] > 0.7
    # higher voxels: large pRFs, semantic tuning only
    assert truth["prf_sigma"][~early].min() > truth["prf_sigma"][early].mean()
    assert np.all(truth["channel_weights"][~early] == 0) and np.all(truth["semantic_weights"][:, early] == 0)
    # NSD-like noise ceilings (3-trial average): a spread from a few percent to well above 50 %
    nc = truth["noise_ceiling"]
    assert 15 < np.median(nc) < 40 and np.percentile(nc, 95) > 50
