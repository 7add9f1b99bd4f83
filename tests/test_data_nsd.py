"""NSD loader: known answers on trees written by neurodecode.testing, and every bad input."""

import shutil

import numpy as np
import pytest
import scipy.io

from neurodecode._core.errors import (
    DataIntegrityError,
    MetadataMismatchError,
    MissingFileError,
    ShapeMismatchError,
    ValidationError,
)
from neurodecode.data import load_nsd, load_nsd_stimuli, nsd_trial_table
from neurodecode.testing import make_nsd_fixture, nsd_path, write_nsd_tree

SHAPE = (7, 8, 9)
TPS = 750
B3 = "betas_fithrf_GLMdenoise_RR"


def _design(rng, n_sessions=2, n_shared=50):
    n_img = n_sessions * TPS // 3
    n_unique = n_img - n_shared
    n_stim = n_shared + 8 * n_unique
    sharedix = np.arange(1, n_shared + 1) * 3  # 1-based ids, spread out
    others = np.setdiff1d(np.arange(1, n_stim + 1), sharedix)
    subjectim = np.empty((8, n_img), dtype=np.int64)
    for s in range(8):
        subjectim[s, :n_shared] = sharedix
        subjectim[s, n_shared:] = others[s * n_unique:(s + 1) * n_unique]
    mo = rng.permutation(np.repeat(np.arange(1, n_img + 1), 3))
    stimuli = rng.integers(0, 256, size=(n_stim, 6, 5, 3), dtype=np.uint8)
    return stimuli, subjectim, mo, sharedix


def _mask(rng):
    mask = np.full(SHAPE, -1, dtype=np.int16)
    mask[1:-1, 1:-1, 1:-1] = (rng.random((5, 6, 7)) < 0.3).astype(np.int16)
    return mask


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    rng = np.random.default_rng(1)
    stimuli, subjectim, mo, sharedix = _design(rng)
    mask = _mask(rng)
    n_vox = int((mask == 1).sum())
    betas = rng.normal(1.0, 2.0, size=(2 * TPS, n_vox))
    root = write_nsd_tree(tmp_path_factory.mktemp("nsd"), stimuli=stimuli, subjectim=subjectim, masterordering=mo,
                          sharedix=sharedix, betas={1: betas}, masks={1: mask})
    return dict(root=root, stimuli=stimuli, subjectim=subjectim, mo=mo, sharedix=sharedix, mask=mask, betas=betas)


@pytest.fixture
def tree(tmp_path):
    return make_nsd_fixture(tmp_path / "nsd", subjects=(1,), n_sessions=2, n_shared=40)


def test_fixture_tree_is_the_published_layout(known):
    root = known["root"]
    for rel in ["nsddata/experiments/nsd/nsd_expdesign.mat", "nsddata/experiments/nsd/nsd_stim_info_merged.csv",
                "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz",
                "nsddata/ppdata/subj01/behav/responses.tsv",
                f"nsddata_betas/ppdata/subj01/func1pt8mm/{B3}/betas_session01.nii.gz",
                f"nsddata_betas/ppdata/subj01/func1pt8mm/{B3}/betas_session02.hdf5"]:
        assert (root / rel).is_file(), rel
    import h5py
    import nibabel as nib

    img = nib.load(root / f"nsddata_betas/ppdata/subj01/func1pt8mm/{B3}/betas_session01.nii.gz")
    assert img.shape == SHAPE + (TPS,) and img.get_data_dtype() == np.int16
    with h5py.File(root / f"nsddata_betas/ppdata/subj01/func1pt8mm/{B3}/betas_session01.hdf5") as f:
        assert f["betas"].shape == (TPS, 9, 8, 7) and f["betas"].chunks == (TPS, 1, 1, 1)
        assert f["betas"].dtype == np.int16
    m = scipy.io.loadmat(root / "nsddata/experiments/nsd/nsd_expdesign.mat")
    assert m["masterordering"].shape == (1, 2 * TPS) and m["subjectim"].shape == (8, 500)
    assert m["masterordering"].min() == 1  # 1-based, as in NSD


@pytest.mark.parametrize("source", ["nifti", "hdf5"])
def test_known_answer_single_trials(known, source):
    t = load_nsd(known["root"], 1, zscore=None, average_test_repeats=False, source=source)
    expected = np.round(known["betas"] * 300) / 300
    np.testing.assert_allclose(t.X, expected, atol=1e-5)
    assert t.X.dtype == np.float32 and t.subject == "nsd/subj01"
    mo = known["mo"]
    np.testing.assert_array_equal(t.stimulus_ids, known["subjectim"][0, mo - 1] - 1)
    np.testing.assert_array_equal(t.split == "test", mo <= 50)
    assert t.metadata["session"].tolist() == [1] * TPS + [2] * TPS
    assert t.metadata["trial_in_session"][[0, 749, 750]].tolist() == [1, 750, 1]
    np.testing.assert_array_equal(t.metadata["masterordering"], mo)
    assert t.provenance["source"] == source and t.provenance["n_voxels"] == int((known["mask"] == 1).sum())
    assert t.provenance["counts"] == {"train_trials": int((mo > 50).sum()), "test_trials": int((mo <= 50).sum()),
                                      "train_images": 450, "test_images": 50}


def test_subject_spellings_agree(known):
    a = load_nsd(known["root"], "nsd/subj01", zscore=None, sessions=[2])
    b = load_nsd(known["root"], "subj01", zscore=None, sessions=[2])
    np.testing.assert_array_equal(a.X, b.X)
    for bad in (0, 9, "things-eeg2/sub-01", "subjX"):
        with pytest.raises(ValidationError, match="subject"):
            load_nsd(known["root"], bad)


def test_zscore_train_statistics_exclude_shared(known):
    t = load_nsd(known["root"], 1, zscore="train", average_test_repeats=False)
    for s in (1, 2):
        rows = t.metadata["session"] == s
        train = t.X[rows & (t.split == "train")]
        np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    # known answer for one voxel of session 1's test trials
    x = np.round(known["betas"][:TPS, 3] * 300) / 300
    tr = known["mo"][:TPS] > 50
    z = (x - x[tr].mean()) / x[tr].std()
    np.testing.assert_allclose(t.X[:TPS, 3], z, atol=1e-5)
    a = load_nsd(known["root"], 1, zscore="all", average_test_repeats=False)
    np.testing.assert_allclose(a.X[:TPS].mean(0), 0, atol=1e-5)
    assert not np.allclose(a.X, t.X)
    assert a.provenance["zscore_option"] == "all" and "train trials only" in t.provenance["zscore"]


def test_repeat_averaging_known_answer(known):
    raw = load_nsd(known["root"], 1, zscore=None, average_test_repeats=False)
    t = load_nsd(known["root"], 1, zscore=None)
    test = t.split == "test"
    assert test.sum() == 50 and (t.split == "train").sum() == (raw.split == "train").sum()
    sid = t.stimulus_ids[test][0]
    np.testing.assert_allclose(t.X[test][0], raw.X[(raw.stimulus_ids == sid)].mean(0), atol=1e-5)
    assert set(t.metadata["n_repeats"][test]) <= {1, 2, 3}
    both = load_nsd(known["root"], 1, zscore=None, average_train_repeats=True)
    assert len(both) == 500 and len(np.unique(both.stimulus_ids)) == 500
    assert both.provenance["repeats"] == "averaged: test, train"


def test_sessions_subset_and_bad_sessions(known):
    t = load_nsd(known["root"], 1, sessions=[2], zscore=None, average_test_repeats=False)
    assert len(t) == TPS and set(t.metadata["session"]) == {2}
    np.testing.assert_allclose(t.X, np.round(known["betas"][TPS:] * 300) / 300, atol=1e-5)
    with pytest.raises(ValidationError, match="look 0-based"):
        load_nsd(known["root"], 1, sessions=[0, 1])
    with pytest.raises(ValidationError, match="empty selection"):
        load_nsd(known["root"], 1, sessions=[])
    with pytest.raises(ValidationError, match="sessions"):
        load_nsd(known["root"], 1, sessions=[3])
    with pytest.raises(ValidationError, match="zscore"):
        load_nsd(known["root"], 1, zscore="global")


def test_stimuli_by_0_based_id(known):
    ids = np.array([7, 2, 7, 0])
    im = load_nsd_stimuli(known["root"], ids)
    np.testing.assert_array_equal(im, known["stimuli"][ids])
    assert load_nsd_stimuli(known["root"], [1], size=(4, 3)).shape == (1, 4, 3, 3)
    n = len(known["stimuli"])
    with pytest.raises(ValidationError, match="look 1-based"):
        load_nsd_stimuli(known["root"], [n])
    with pytest.raises(ValidationError, match="out-of-range"):
        load_nsd_stimuli(known["root"], [-1])
    with pytest.raises(ValidationError, match="empty"):
        load_nsd_stimuli(known["root"], [])
    t = load_nsd(known["root"], 1, sessions=[1], zscore=None)
    np.testing.assert_array_equal(load_nsd_stimuli(known["root"], t.stimulus_ids[:3]),
                                  known["stimuli"][t.stimulus_ids[:3]])


def test_trial_table(known):
    tab = nsd_trial_table(known["root"], 1, sessions=2)
    assert len(tab["session"]) == 2 * TPS
    np.testing.assert_array_equal(tab["stimulus_id"], known["subjectim"][0, known["mo"] - 1] - 1)
    assert tab["shared"].sum() == (known["mo"] <= 50).sum()


def test_zero_variance_voxels_warn_and_become_zero(tmp_path):
    rng = np.random.default_rng(2)
    stimuli, subjectim, mo, sharedix = _design(rng, n_sessions=1)
    mask = _mask(rng)
    betas = rng.normal(size=(TPS, int((mask == 1).sum())))
    betas[:, 2] = 1.5
    root = write_nsd_tree(tmp_path, stimuli=stimuli, subjectim=subjectim, masterordering=mo, sharedix=sharedix,
                          betas={1: betas}, masks={1: mask}, formats=("nifti",), responses=False)
    with pytest.warns(RuntimeWarning, match="zero-variance"):
        t = load_nsd(root, 1)
    assert np.all(t.X[:, 2] == 0) and t.provenance["zero_variance_voxels"] == {"1": 1}
    assert np.all(np.isfinite(t.X))


def test_nan_voxels_raise_or_zero(tmp_path):
    rng = np.random.default_rng(3)
    stimuli, subjectim, mo, sharedix = _design(rng, n_sessions=1)
    mask = _mask(rng)
    betas = rng.normal(size=(TPS, int((mask == 1).sum())))
    betas[4, 1] = np.nan
    betas[9, 0] = np.inf
    root = write_nsd_tree(tmp_path, stimuli=stimuli, subjectim=subjectim, masterordering=mo, sharedix=sharedix,
                          betas={1: betas}, masks={1: mask}, beta_dtype="float32", responses=False)
    with pytest.raises(ValidationError, match=r"2 NaN/inf value\(s\).*trial 4, voxel 1"):
        load_nsd(root, 1)
    t = load_nsd(root, 1, nan_policy="zero", zscore=None, average_test_repeats=False)
    assert t.X[4, 1] == 0 and t.X[9, 0] == 0 and t.provenance["n_nonfinite_set_to_zero"] == 2


def test_missing_files_name_the_nsd_relative_path(tree):
    beta = tree / f"nsddata_betas/ppdata/subj01/func1pt8mm/{B3}"
    shutil.rmtree(beta)
    with pytest.raises(MissingFileError, match=f"nsddata_betas/ppdata/subj01/func1pt8mm/{B3}/betas_session01"):
        load_nsd(tree, 1)
    with pytest.raises(MissingFileError, match="betas_fithrf/betas_session01"):
        load_nsd(tree, 2 - 1, beta_version="b2")


def test_missing_session_and_design(tree):
    (tree / f"nsddata_betas/ppdata/subj01/func1pt8mm/{B3}/betas_session02.nii.gz").unlink()
    with pytest.raises(MissingFileError, match="betas_session02.nii.gz"):
        load_nsd(tree, 1, sessions=2, source="nifti")
    assert load_nsd(tree, 1, source="nifti").provenance["sessions"] == [1]  # None: sessions on disk
    (tree / "nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz").unlink()
    with pytest.raises(MissingFileError, match="nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz"):
        load_nsd(tree, 1)
    (tree / "nsddata/experiments/nsd/nsd_expdesign.mat").unlink()
    with pytest.raises(MissingFileError, match="nsddata/experiments/nsd/nsd_expdesign.mat"):
        load_nsd(tree, 1)


def test_truncated_and_html_files(tree):
    nii = nsd_path(tree, "betas_nifti", subject=1, session=1, beta_dir=B3)
    h5 = nsd_path(tree, "betas_hdf5", subject=1, session=1, beta_dir=B3)
    data = nii.read_bytes()
    nii.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataIntegrityError, match="truncated"):
        load_nsd(tree, 1, source="nifti")
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataIntegrityError, match="truncated or corrupted"):
        load_nsd(tree, 1, source="hdf5")
    h5.write_bytes(b"<!DOCTYPE html><html><body>Access denied</body></html>")
    with pytest.raises(DataIntegrityError, match="HTML page"):
        load_nsd(tree, 1, source="hdf5")
    stim = nsd_path(tree, "stimuli")
    stim.write_bytes(b"<html>login</html>")
    with pytest.raises(DataIntegrityError, match="HTML page"):
        load_nsd_stimuli(tree, [0])


def test_missing_key_lists_keys_present(tree):
    import h5py

    h5 = nsd_path(tree, "betas_hdf5", subject=1, session=1, beta_dir=B3)
    with h5py.File(h5, "a") as f:
        f.move("betas", "data")
    with pytest.raises(DataIntegrityError, match="'betas'.*keys: data"):
        load_nsd(tree, 1, source="hdf5")
    scipy.io.savemat(nsd_path(tree, "expdesign"), {"masterordering": np.ones((1, 1500)), "sharedix": np.ones((1, 2))})
    with pytest.raises(DataIntegrityError, match=r"subjectim.*variables: masterordering, sharedix"):
        nsd_trial_table(tree, 1)


def test_wrong_dimensionality_and_shape_mismatch(tree):
    from neurodecode.io.nifti import save_nifti

    mask_path = nsd_path(tree, "nsdgeneral", subject=1)
    save_nifti(mask_path, np.ones((7, 8, 9, 2), np.int16))
    with pytest.raises(ShapeMismatchError, match="3 dimensions"):
        load_nsd(tree, 1)
    save_nifti(mask_path, np.ones((9, 8, 7), np.int16))
    with pytest.raises(ShapeMismatchError, match=r"shape \(9, 8, 7\)"):
        load_nsd(tree, 1, source="nifti")
    with pytest.raises(ShapeMismatchError, match=r"matching nsdgeneral \(9, 8, 7\)"):
        load_nsd(tree, 1, source="hdf5")


def test_affine_mismatch(tree):
    import nibabel as nib

    from neurodecode.io.nifti import save_nifti

    mask_path = nsd_path(tree, "nsdgeneral", subject=1)
    img = nib.load(mask_path)
    aff = img.affine.copy()
    aff[0, 3] += 5
    save_nifti(mask_path, np.asarray(img.dataobj), aff)
    with pytest.raises(MetadataMismatchError, match="affine"):
        load_nsd(tree, 1, source="nifti")


def test_design_with_0_based_indices_is_refused(tree):
    m = scipy.io.loadmat(nsd_path(tree, "expdesign"))
    scipy.io.savemat(nsd_path(tree, "expdesign"), {"masterordering": m["masterordering"] - 1,
                                                    "subjectim": m["subjectim"], "sharedix": m["sharedix"]})
    with pytest.raises(ValidationError, match="look 0-based"):
        nsd_trial_table(tree, 1)
