"""NSD whole-volume view (Neuro-Vision to Language): trilinear resizing, 14^3 patches, mask union, loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.data import load_nsd_volumes, nsd_patch_grid, patches_to_volume, resample_volume, volume_patches
from neurodecode.io.nifti import load_nifti
from neurodecode.testing import make_nsd_fixture, nsd_path

B3 = "betas_fithrf_GLMdenoise_RR"


def _torch_resize(vol, shape, align_corners):
    """Reference: torch's trilinear interpolate on (X, Y, Z, n) volumes."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(vol, -1, 0)))[:, None].float()
    out = torch.nn.functional.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=align_corners)
    return np.moveaxis(out[:, 0].numpy(), 0, -1)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape", [(11, 5, 13), (7, 8, 9), (3, 16, 4)])
def test_resample_is_torch_trilinear(shape, align_corners):
    vol = np.random.default_rng(0).normal(size=(7, 8, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(resample_volume(vol, shape, align_corners=align_corners),
                               _torch_resize(vol, shape, align_corners), atol=1e-5)


def test_corner_aligned_resample_is_scipy_zoom_order_1():
    from scipy.ndimage import zoom

    vol = np.random.default_rng(1).normal(size=(6, 9, 5)).astype(np.float32)
    target = (10, 4, 8)
    ref = zoom(vol.astype(np.float64), [t / s for t, s in zip(target, vol.shape)], order=1, grid_mode=False)
    assert ref.shape == target
    np.testing.assert_allclose(resample_volume(vol, target, align_corners=True), ref, atol=1e-5)


def test_patches_are_the_padded_blocks_in_c_order():
    rng = np.random.default_rng(2)
    vol = rng.normal(size=(7, 9, 5, 2)).astype(np.float32)
    p = 4
    patches = volume_patches(vol, p)
    assert patches.shape == (2, 2 * 3 * 2, 64)
    padded = np.zeros((8, 12, 8, 2), np.float32)
    padded[:7, :9, :5] = vol
    k = 0
    for i in range(2):
        for j in range(3):
            for m in range(2):
                block = padded[i * p:(i + 1) * p, j * p:(j + 1) * p, m * p:(m + 1) * p]
                for n in range(2):
                    np.testing.assert_array_equal(patches[n, k], block[..., n].ravel())
                k += 1
    np.testing.assert_array_equal(volume_patches(vol, p, keep=np.array([3, 0]))[:, 0], patches[:, 3])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_nsd_fixture(tmp_path_factory.mktemp("vol") / "nsd", subjects=(1, 2), n_sessions=1, n_shared=40,
                            volume_shape=(7, 8, 9), formats=("nifti",))


def _mask(tree, s):
    return load_nifti(nsd_path(tree, "nsdgeneral", subject=s)).data == 1


def test_patch_grid_keeps_the_patches_touching_the_mask_union(tree):
    target, p = (9, 10, 11), 4
    grid = nsd_patch_grid(tree, (1, 2), target_shape=target, patch_size=p)
    resized = [_torch_resize(_mask(tree, s).astype(np.float32)[..., None], target, False)[..., 0] for s in (1, 2)]
    union = (resized[0] >= 0.5) | (resized[1] >= 0.5)
    clear = np.all([np.abs(r - 0.5) > 1e-4 for r in resized], axis=0)  # not a float tie at the threshold
    np.testing.assert_array_equal(grid.union[clear], union[clear])
    union = grid.union
    expected = [(i, j, k) for i in range(3) for j in range(3) for k in range(3)
                if union[i * p:(i + 1) * p, j * p:(j + 1) * p, k * p:(k + 1) * p].any()]
    np.testing.assert_array_equal(grid.coords, np.array(expected) * p)
    assert grid.grid == (3, 3, 3) and grid.n_patches == len(expected) < 27
    alone = nsd_patch_grid(tree, 1, target_shape=target, patch_size=p)
    assert alone.n_patches <= grid.n_patches and set(alone.keep) <= set(grid.keep)
    # NVL's real grid: subject 1's 81 x 104 x 83 cut in 14^3 patches gives at most 6 x 8 x 6 = 288
    big = nsd_patch_grid(tree, 1)
    assert big.target_shape == (81, 104, 83) and big.grid == (6, 8, 6) and big.patch_size == 14
    # patches_to_volume puts one value per kept patch back on its voxels, 0 elsewhere
    vol = patches_to_volume(np.arange(1, grid.n_patches + 1, dtype=np.float32), grid)
    i, j, k = grid.coords[2]
    assert vol.shape == target and np.all(vol[i:i + p, j:j + p, k:k + p][: target[0] - i] == 3)
    back = volume_patches(vol, p, grid.keep)
    np.testing.assert_array_equal(back[:, 0], np.arange(1, grid.n_patches + 1))


def test_loader_without_resizing_returns_the_volume_patches(tree):
    shape = (7, 8, 9)
    trials = load_nsd_volumes(tree, 1, target_shape=shape, patch_size=4, zscore=None, average_test_repeats=False)
    raw = load_nifti(nsd_path(tree, "betas_nifti", subject=1, session=1, beta_dir=B3)).data / 300.0
    grid = nsd_patch_grid(tree, 1, target_shape=shape, patch_size=4)
    assert trials.X.shape == (750, grid.n_patches, 64) and trials.X.dtype == np.float32
    want = volume_patches(raw.astype(np.float32), 4, grid.keep)
    np.testing.assert_allclose(trials.X, want, atol=1e-6)
    prov = trials.provenance
    assert prov["patches"]["coords"] == grid.coords.tolist() and prov["patches"]["n_values_per_patch"] == 64
    assert prov["loader"] == "neurodecode.data.load_nsd_volumes" and prov["native_shape"] == [7, 8, 9]


def test_loader_zscores_then_resizes_then_averages(tree):
    target = (9, 10, 11)
    trials = load_nsd_volumes(tree, 2, mask_subjects=(1, 2), target_shape=target, patch_size=4, zscore="all")
    raw = load_nifti(nsd_path(tree, "betas_nifti", subject=2, session=1, beta_dir=B3)).data.astype(np.float64) / 300
    mean, std = raw.mean(-1, keepdims=True), raw.std(-1, keepdims=True)
    z = np.where(std > 0, (raw - mean) / np.where(std > 0, std, 1), 0.0).astype(np.float32)
    grid = nsd_patch_grid(tree, (1, 2), target_shape=target, patch_size=4)
    single = volume_patches(_torch_resize(z, target, False), 4, grid.keep)
    from neurodecode.data import nsd_trial_table

    table = nsd_trial_table(tree, 2, 1)
    test_ids = np.unique(table["stimulus_id"][table["split"] == "test"])
    assert trials.X.shape == (750 - 2 * len(test_ids), grid.n_patches, 64)
    # a training trial is the single trial; a test image is the mean of its 3 repeats
    row = np.flatnonzero(trials.split == "train")[5]
    src = np.flatnonzero((table["stimulus_id"] == trials.stimulus_ids[row]) & (table["split"] == "train"))
    np.testing.assert_allclose(trials.X[row], single[src[0]], atol=1e-4)
    row = np.flatnonzero(trials.split == "test")[3]
    src = np.flatnonzero(table["stimulus_id"] == trials.stimulus_ids[row])
    assert len(src) == 3 and trials.metadata["n_repeats"][row] == 3
    np.testing.assert_allclose(trials.X[row], single[src].mean(0), atol=1e-4)


def test_loader_writes_a_memory_mapped_npy(tree, tmp_path):
    kw = dict(target_shape=(9, 10, 11), patch_size=4, zscore="train")
    mem = load_nsd_volumes(tree, 1, **kw)
    disk = load_nsd_volumes(tree, 1, out=tmp_path / "x.npy", **kw)
    assert isinstance(disk.X, np.memmap) and (tmp_path / "x.npy").is_file()
    np.testing.assert_array_equal(np.asarray(disk.X), mem.X)
    assert not list(tmp_path.glob(".x.npy*"))  # no temporary left behind


def test_bad_volume_options_teach(tree):
    with pytest.raises(ValidationError, match="target_shape"):
        nsd_patch_grid(tree, 1, target_shape=(9, 10))
    with pytest.raises(ValidationError, match="mask_threshold"):
        nsd_patch_grid(tree, 1, mask_threshold=0)
    with pytest.raises(ShapeMismatchError, match="patches"):
        patches_to_volume(np.zeros(3), nsd_patch_grid(tree, 1, target_shape=(9, 10, 11), patch_size=4))
    with pytest.raises(ValidationError, match="zscore"):
        load_nsd_volumes(tree, 1, zscore="session")


def test_simulated_volumes_of_different_grids_are_resized_to_one(tmp_path):
    import json

    from neurodecode.simulate import load_truth, simulate_nsd

    sim = simulate_nsd(tmp_path / "sim", subjects=(1, 5), seed=2, n_stimuli=560, n_voxels=120, n_shared=60,
                       volume_shape=(16, 18, 15), formats=("nifti",), volume_shapes="nsd")
    shapes = json.loads((sim.out / "truth" / "model.json").read_text())["subject_volume_shapes"]
    # subject 5's func1pt8mm grid is 79 x 97 x 78 against subject 1's 81 x 104 x 83
    assert shapes == {"subj01": [16, 18, 15], "subj05": [16, 17, 14]}
    target = (16, 18, 15)
    trials = load_nsd_volumes(sim.root, 5, mask_subjects=(1, 5), target_shape=target, patch_size=7,
                              zscore=None, average_test_repeats=False)
    truth = load_truth(sim.out, "subj05")
    vol = np.zeros((16 * 17 * 14, trials.X.shape[0]), np.float32)
    vol[np.flatnonzero(truth["mask"].ravel() == 1)] = sim.data[5]["betas"].T
    grid = nsd_patch_grid(sim.root, (1, 5), target_shape=target, patch_size=7)
    want = volume_patches(_torch_resize(vol.reshape(16, 17, 14, -1), target, False), 7, grid.keep)
    np.testing.assert_allclose(trials.X, want, atol=1e-4)
    assert trials.provenance["native_shape"] == [16, 17, 14]


def test_hdf5_and_nifti_betas_give_the_same_patches(tmp_path):
    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1,), n_sessions=1, n_shared=40, volume_shape=(6, 7, 5))
    kw = dict(target_shape=(8, 8, 8), patch_size=4, zscore="train")
    h5 = load_nsd_volumes(root, 1, source="hdf5", **kw)
    nii = load_nsd_volumes(root, 1, source="nifti", **kw)
    assert h5.provenance["files"][0].endswith(".hdf5") and nii.provenance["files"][0].endswith(".nii.gz")
    np.testing.assert_array_equal(h5.X, nii.X)
