"""The NSD simulator's ROI atlases and ncsnr: consistent with its retinotopy and its noise, read by the loader."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.data import load_nsd, noise_ceiling, nsd_atlases, nsd_voxel_labels, read_nsd_ncsnr
from neurodecode.simulate import load_truth, simulate_nsd

SMALL = {"n_stimuli": 560, "n_voxels": 160, "n_shared": 60, "volume_shape": (16, 18, 15), "formats": ("nifti",)}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_nsd(tmp_path_factory.mktemp("sim") / "out", subjects=(1,), seed=5, **SMALL)


def test_atlases_are_written_and_partition_the_simulated_roi(sim):
    assert nsd_atlases(sim.root, 1) == ["floc-bodies", "floc-faces", "floc-places", "floc-words", "prf-eccrois",
                                        "prf-visualrois", "streams"]
    truth = load_truth(sim.out, "subj01")
    streams = nsd_voxel_labels(sim.root, 1, "streams")
    assert "Unknown" not in set(streams.names)  # every nsdgeneral voxel has a stream
    np.testing.assert_array_equal(streams.names == "early", truth["early"])
    early = load_nsd(sim.root, 1, rois="early", zscore=None, average_test_repeats=False)
    np.testing.assert_allclose(early.X, sim.data[1]["betas"][:, truth["early"]], atol=1e-4)
    # the higher streams sit where their names say: ventral below parietal
    z = truth["voxel_coords"][:, 2]
    assert z[streams.names == "ventral"].mean() < z[streams.names == "lateral"].mean() < \
        z[streams.names == "parietal"].mean()


def test_retinotopic_rois_match_the_simulated_prfs(sim):
    truth = load_truth(sim.out, "subj01")
    prf = nsd_voxel_labels(sim.root, 1, "prf-visualrois")
    v = np.isin(prf.names, ["V1v", "V2v", "V3v"])
    d = np.isin(prf.names, ["V1d", "V2d", "V3d"])
    assert v.sum() > 10 and d.sum() > 10
    # ventral early cortex sees the upper visual field, dorsal the lower (pRF y is up)
    assert np.all(truth["polar_angle"][v] > 0) and np.all(truth["polar_angle"][d] <= 0)
    assert np.mean(truth["prf_y"][v] > 0) > 0.8 and np.mean(truth["prf_y"][d] < 0) > 0.8  # pRF centres are noisy
    # V1 -> V2 -> V3 bands run from the fovea outwards in this single-map simulator
    ecc = truth["eccentricity"]
    assert ecc[np.isin(prf.names, ["V1v", "V1d"])].mean() < ecc[np.isin(prf.names, ["V3v", "V3d"])].mean()
    # eccentricity ROIs bin the simulated pRF eccentricity (image half-width = 4.2 deg)
    eccroi = nsd_voxel_labels(sim.root, 1, "prf-eccrois")
    deg = ecc * 4.2
    assert np.all(deg[eccroi.names == "ecc0pt5"] < 0.5) and np.all(deg[eccroi.names == "ecc4+"] >= 4)
    assert np.all((deg[eccroi.names == "ecc2"] >= 1) & (deg[eccroi.names == "ecc2"] < 2))
    # hemispheres are contralateral to the pRFs
    assert np.mean(truth["prf_x"][truth["early"] & (prf.hemisphere == "lh")] > 0) > 0.9
    assert np.mean(truth["prf_x"][truth["early"] & (prf.hemisphere == "rh")] < 0) > 0.9


def test_written_ncsnr_is_the_truth_and_matches_the_data(sim):
    truth = load_truth(sim.out, "subj01")
    ncsnr = read_nsd_ncsnr(sim.root, 1)
    np.testing.assert_allclose(ncsnr, truth["ncsnr"], rtol=1e-6)
    np.testing.assert_allclose(noise_ceiling(ncsnr, 3), truth["noise_ceiling"], rtol=1e-5)
    # NSD's estimator on the betas (z-scored per session; the variance across the repeats of an image is the
    # noise variance) recovers the written ncsnr up to the session drifts it cannot remove
    trials = load_nsd(sim.root, 1, zscore="all", average_test_repeats=False)
    ids = trials.stimulus_ids
    groups = [np.flatnonzero(ids == i) for i in np.unique(ids)]
    groups = [g for g in groups if len(g) == 3]
    noise_var = np.mean([trials.X[g].var(0, ddof=1) for g in groups], axis=0)
    estimate = np.sqrt(np.clip(1 - noise_var, 0, None)) / np.sqrt(noise_var)
    from scipy.stats import spearmanr

    assert spearmanr(estimate, ncsnr).statistic > 0.8
    assert 0.6 < np.median(estimate / ncsnr) < 1.1
