"""NSD ROI selection, per-voxel labels and noise ceilings, on trees with hand-written atlases and betas."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import MissingFileError, ValidationError
from neurodecode.data import (
    load_nsd,
    noise_ceiling,
    nsd_atlases,
    nsd_voxel_labels,
    prepare_nsd,
    read_nsd_ncsnr,
    select_nsd_rois,
)
from neurodecode.data._nsd_rois import read_nsd_ctab
from neurodecode.io.nifti import save_nifti
from neurodecode.testing import nsd_path, write_nsd_tree

SHAPE = (7, 8, 9)
TPS = 750
B3 = "betas_fithrf_GLMdenoise_RR"
AFFINE = np.array([[-1.8, 0, 0, 72.0], [0, 1.8, 0, -92.0], [0, 0, 1.8, -70.0], [0, 0, 0, 1]])  # the writer's default


def _design(rng, n_shared=40):
    n_img = TPS // 3
    n_unique = n_img - n_shared
    sharedix = np.arange(1, n_shared + 1)
    subjectim = np.empty((8, n_img), dtype=np.int64)
    for s in range(8):
        subjectim[s, :n_shared] = sharedix
        subjectim[s, n_shared:] = n_shared + 1 + s * n_unique + np.arange(n_unique)
    mo = rng.permutation(np.repeat(np.arange(1, n_img + 1), 3))
    stimuli = rng.integers(0, 256, size=(n_shared + 8 * n_unique, 4, 4, 3), dtype=np.uint8)
    return stimuli, subjectim, mo, sharedix


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """One subject, one session; atlases drawn at random over the brain; betas in EVERY brain voxel."""
    rng = np.random.default_rng(7)
    stimuli, subjectim, mo, sharedix = _design(rng)
    mask = np.full(SHAPE, -1, dtype=np.int16)
    mask[1:-1, 1:-1, 1:-1] = (rng.random((5, 6, 7)) < 0.4).astype(np.int16)
    brain = mask >= 0
    streams = np.where(brain, rng.integers(0, 8, SHAPE), -1)
    prf = np.where(brain, rng.integers(0, 8, SHAPE), -1)
    kastner = np.where(brain, rng.integers(0, 3, SHAPE), -1)  # V1v (1) again: a name in two atlases
    hemi = np.where(brain, np.where(np.arange(SHAPE[0])[:, None, None] < 3, 1, 2), 0)
    n_vox = int((mask == 1).sum())
    root = write_nsd_tree(tmp_path_factory.mktemp("nsd"), stimuli=stimuli, subjectim=subjectim, masterordering=mo,
                          sharedix=sharedix, betas={1: np.zeros((TPS, n_vox))}, masks={1: mask}, formats=("nifti",),
                          rois={1: {"streams": streams, "prf-visualrois": prf, "Kastner2015": kastner}},
                          hemispheres={1: hemi}, roi_tables={"Kastner2015": ["Unknown", "V1v", "hV4"]},
                          ncsnr={1: rng.uniform(0.1, 2.0, n_vox)})
    # overwrite the betas with values in every voxel of the volume (ROIs reach beyond nsdgeneral)
    vol = rng.integers(-900, 900, size=SHAPE + (TPS,)).astype(np.int16)
    save_nifti(nsd_path(root, "betas_nifti", subject=1, session=1, beta_dir=B3), vol, AFFINE)
    return dict(root=root, mask=mask, streams=streams, prf=prf, kastner=kastner, hemi=hemi, vol=vol)


def _expected(tree, selector):
    """X (zscore None, single trials) of the voxels where ``selector`` is true, computed from the written volume."""
    flat = np.flatnonzero(selector.ravel())
    return tree["vol"].reshape(-1, TPS)[flat].T / 300.0, flat


def _load(tree, **kw):
    return load_nsd(tree["root"], 1, zscore=None, average_test_repeats=False, **kw)


def test_ctab_files_are_nsds_two_columns_and_freesurfer_colour_tables(tmp_path):
    (tmp_path / "a.mgz.ctab").write_text("0 Unknown\n1 early\n2 midventral\n")
    (tmp_path / "b.mgz.ctab").write_text("# comment\n  0  Unknown  0 0 0 0\n  5  V1v  255 0 0 0\n\n")
    assert read_nsd_ctab(tmp_path / "a.mgz.ctab") == {0: "Unknown", 1: "early", 2: "midventral"}
    assert read_nsd_ctab(tmp_path / "b.mgz.ctab") == {0: "Unknown", 5: "V1v"}
    (tmp_path / "c.mgz.ctab").write_text("early 1\n")
    with pytest.raises(ValidationError, match="line 1"):
        read_nsd_ctab(tmp_path / "c.mgz.ctab")
    (tmp_path / "d.mgz.ctab").write_text("1 a\n1 b\n")
    with pytest.raises(ValidationError, match="value 1 again"):
        read_nsd_ctab(tmp_path / "d.mgz.ctab")


def test_written_tree_has_the_published_roi_layout(tree):
    root = tree["root"]
    for rel in ("nsddata/ppdata/subj01/func1pt8mm/roi/streams.nii.gz",
                "nsddata/ppdata/subj01/func1pt8mm/roi/lh.streams.nii.gz",
                "nsddata/ppdata/subj01/func1pt8mm/roi/rh.prf-visualrois.nii.gz",
                "nsddata/freesurfer/subj01/label/streams.mgz.ctab",
                f"nsddata_betas/ppdata/subj01/func1pt8mm/{B3}/ncsnr.nii.gz"):
        assert (root / rel).is_file(), rel
    assert (root / "nsddata/freesurfer/subj01/label/streams.mgz.ctab").read_text().splitlines()[:3] == \
        ["0 Unknown", "1 early", "2 midventral"]
    # nsdgeneral.nii.gz has no ctab in this tree, so it is not listed as an atlas
    assert nsd_atlases(root, 1) == ["Kastner2015", "prf-visualrois", "streams"]


@pytest.mark.parametrize("rois", ["early", "streams:early", ["early"], {"streams": ["early"]}, {"streams": 1},
                                  ("streams:early",)])
def test_every_spelling_selects_the_atlas_voxels_anywhere_in_the_volume(tree, rois):
    trials = _load(tree, rois=rois)
    want, flat = _expected(tree, tree["streams"] == 1)
    assert trials.X.shape == (TPS, len(flat))
    np.testing.assert_allclose(trials.X, want, atol=1e-6)
    # ROI voxels outside nsdgeneral are in (the default is "instead of nsdgeneral", as Takagi)
    assert (tree["mask"].ravel()[flat] != 1).any()
    prov = trials.provenance["rois"]
    assert prov["rois"] == ["streams:early"] and prov["within_nsdgeneral"] is False
    assert prov["atlases"]["streams"]["labels"] == {"early": 1}
    assert prov["atlases"]["streams"]["n_voxels"] == {"early": len(flat)}
    assert prov["atlases"]["streams"]["file"].endswith("func1pt8mm/roi/streams.nii.gz")
    assert prov["atlases"]["streams"]["ctab"].endswith("label/streams.mgz.ctab")
    assert trials.provenance["n_voxels"] == len(flat) and "instead of nsdgeneral" in trials.provenance["mask"]


def test_several_rois_and_atlases_give_the_union_in_volume_order(tree):
    trials = _load(tree, rois=["early", "streams:ventral", "prf-visualrois:V1d"])
    sel = np.isin(tree["streams"], [1, 5]) | (tree["prf"] == 2)
    want, flat = _expected(tree, sel)
    np.testing.assert_allclose(trials.X, want, atol=1e-6)
    every = _load(tree, rois="streams")
    assert every.X.shape[1] == int((tree["streams"] >= 1).sum())
    assert sorted(every.provenance["rois"]["rois"]) == sorted(
        f"streams:{n}" for n in ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"))


def test_within_nsdgeneral_keeps_the_roi_voxels_of_the_default_columns(tree):
    inside = _load(tree, rois="early", within_nsdgeneral=True)
    general = _load(tree)
    want, flat = _expected(tree, (tree["streams"] == 1) & (tree["mask"] == 1))
    np.testing.assert_allclose(inside.X, want, atol=1e-6)
    cols = np.searchsorted(np.flatnonzero(tree["mask"].ravel() == 1), flat)
    np.testing.assert_array_equal(inside.X, general.X[:, cols])
    assert "within nsdgeneral" in inside.provenance["mask"] and general.provenance["rois"] is None


def test_unknown_names_list_the_valid_ones_read_from_the_ctab(tree):
    with pytest.raises(ValidationError) as err:
        _load(tree, rois="streams:earl")
    assert "early, midventral, midlateral" in str(err.value)
    with pytest.raises(ValidationError) as err:  # names come from the ctab on disk, not from the spec
        _load(tree, rois="Kastner2015:V2v")
    assert "V1v, hV4" in str(err.value) and "V3d" not in str(err.value)
    with pytest.raises(ValidationError) as err:
        _load(tree, rois="FFA-1")
    assert "streams: early" in str(err.value) and "prf-visualrois: V1v" in str(err.value)
    with pytest.raises(ValidationError, match="Kastner2015, prf-visualrois, streams"):
        _load(tree, rois="floc-faces:FFA-1")
    with pytest.raises(ValidationError, match="'Kastner2015:V1v' or 'prf-visualrois:V1v'"):
        _load(tree, rois="V1v")
    with pytest.raises(ValidationError, match="rois"):
        _load(tree, rois=3.5)
    with pytest.raises(ValidationError, match=r"label values of streams.mgz.ctab \(\[1, 2, 3, 4, 5, 6, 7\]\)"):
        _load(tree, rois={"streams": 9})


def test_an_empty_selection_is_refused(tree, tmp_path):
    streams = np.where(tree["mask"] >= 0, 0, -1)
    streams[tree["mask"] == 0] = 1  # "early" only outside nsdgeneral
    rng = np.random.default_rng(0)
    stimuli, subjectim, mo, sharedix = _design(rng)
    n_vox = int((tree["mask"] == 1).sum())
    root = write_nsd_tree(tmp_path, stimuli=stimuli, subjectim=subjectim, masterordering=mo, sharedix=sharedix,
                          betas={1: rng.normal(size=(TPS, n_vox))}, masks={1: tree["mask"]}, formats=("nifti",),
                          rois={1: {"streams": streams}})
    with pytest.raises(ValidationError, match="within_nsdgeneral=False"):
        select_nsd_rois(root, 1, "early", within_nsdgeneral=True)
    assert select_nsd_rois(root, 1, "early").n_voxels == int((tree["mask"] == 0).sum())


def test_missing_atlas_files_teach(tree, tmp_path):
    rng = np.random.default_rng(0)
    stimuli, subjectim, mo, sharedix = _design(rng)
    n_vox = int((tree["mask"] == 1).sum())
    root = write_nsd_tree(tmp_path, stimuli=stimuli, subjectim=subjectim, masterordering=mo, sharedix=sharedix,
                          betas={1: rng.normal(size=(TPS, n_vox))}, masks={1: tree["mask"]}, formats=("nifti",))
    with pytest.raises(ValidationError, match="No atlas found"):
        load_nsd(root, 1, rois="early")
    with pytest.raises(MissingFileError, match="ncsnr.nii.gz"):
        read_nsd_ncsnr(root, 1)


def test_voxel_labels_follow_the_columns_of_x(tree):
    trials = _load(tree, rois=["early", "ventral"])
    labels = nsd_voxel_labels(tree["root"], trials, "streams")
    flat = np.flatnonzero(np.isin(tree["streams"], [1, 5]).ravel())
    np.testing.assert_array_equal(labels.values, tree["streams"].ravel()[flat])
    assert set(labels.names) == {"early", "ventral"}
    np.testing.assert_allclose(trials.X[:, labels.columns("early")], _expected(tree, tree["streams"] == 1)[0], atol=1e-6)
    # another atlas over the same columns; hemispheres from the lh./rh. volumes
    prf = nsd_voxel_labels(tree["root"], trials, "prf-visualrois")
    np.testing.assert_array_equal(prf.values, tree["prf"].ravel()[flat])
    unlabelled = tree["prf"].ravel()[flat] == 0
    assert np.all(prf.names[unlabelled] == "Unknown")
    x = np.unravel_index(flat, SHAPE)[0]
    np.testing.assert_array_equal(labels.hemisphere, np.where(x < 3, "lh", "rh"))
    left_early = labels.columns("early", hemi="lh")
    assert np.all(x[left_early] < 3) and np.all(labels.names[left_early] == "early")
    # default columns: nsdgeneral
    general = nsd_voxel_labels(tree["root"], 1, "streams")
    assert len(general.values) == int((tree["mask"] == 1).sum())
    np.testing.assert_array_equal(general.values, tree["streams"].ravel()[tree["mask"].ravel() == 1])
    with pytest.raises(ValidationError, match="a label of streams"):
        labels.columns("V1v")


def test_ncsnr_follows_the_columns_and_the_beta_version(tree):
    import nibabel as nib

    vol = np.asarray(nib.load(nsd_path(tree["root"], "ncsnr", subject=1, beta_dir=B3)).get_fdata())
    np.testing.assert_allclose(read_nsd_ncsnr(tree["root"], 1), vol[tree["mask"] == 1], rtol=1e-6)
    trials = _load(tree, rois="early", within_nsdgeneral=True)
    np.testing.assert_allclose(read_nsd_ncsnr(tree["root"], trials),
                               vol[(tree["streams"] == 1) & (tree["mask"] == 1)], rtol=1e-6)
    with pytest.raises(MissingFileError, match="betas_fithrf/ncsnr.nii.gz"):
        read_nsd_ncsnr(tree["root"], 1, "b2")


def test_the_cache_serves_rois_inside_nsdgeneral_only(tree, tmp_path):
    prepare_nsd(tree["root"], 1, tmp_path / "cache")
    direct = _load(tree, rois="early", within_nsdgeneral=True)
    cached = _load(tree, rois="early", within_nsdgeneral=True, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(cached.X, direct.X)
    assert cached.provenance["rois"] == direct.provenance["rois"]
    with pytest.raises(ValidationError, match="within_nsdgeneral=True"):
        _load(tree, rois="early", cache_dir=tmp_path / "cache")


def test_recipe_data_table_takes_rois(tree):
    from neurodecode.recipes._data import load_nsd_for_recipe
    from neurodecode.recipes._schema import NSDData, RecipeProblems, check_table

    problems = RecipeProblems()
    for rois in ("early", ["early", "ventral"], {"streams": ["early"]}):
        table = check_table(NSDData, {"rois": rois, "within_nsdgeneral": True, "zscore": "none",
                                      "average_test_repeats": False}, "data", problems)
        assert problems.items == []
        got = load_nsd_for_recipe(tree["root"], table, 1)
        want = _load(tree, rois=rois, within_nsdgeneral=True)
        np.testing.assert_array_equal(got.X, want.X)
    bad = RecipeProblems()
    check_table(NSDData, {"rois": 3}, "data", bad)
    assert len(bad.items) == 1 and bad.items[0].startswith("data.rois: expected")


# ----------------------------------------------------------------------------- noise ceiling
def test_noise_ceiling_is_the_nsd_manual_formula():
    # NC = 100 * ncsnr^2 / (ncsnr^2 + 1/n): ncsnr 1 -> 50 % single trial, 75 % for 3-trial averages
    np.testing.assert_allclose(noise_ceiling([0.0, 1.0, 0.5], 1), [0.0, 50.0, 20.0])
    np.testing.assert_allclose(noise_ceiling([1.0, 0.5], 3), [75.0, 100 * 0.25 / (0.25 + 1 / 3)])
    # unequal repeats: A images with 3 trials, B with 2, C with 1 -> 1/n = (A/3 + B/2 + C/1) / (A + B + C)
    # the manual's counts of shared images seen by every subject: 515 three times, 766 at least twice, 907 at least
    # once (NSD data manual, "Technical notes") -> A = 515, B = 766 - 515, C = 907 - 766
    A, B, C = 515, 766 - 515, 907 - 766
    reps = np.repeat([3, 2, 1], [A, B, C])
    inv = (A / 3 + B / 2 + C / 1) / (A + B + C)
    np.testing.assert_allclose(noise_ceiling(0.7, reps), 100 * 0.49 / (0.49 + inv))
    with pytest.raises(ValidationError, match="n"):
        noise_ceiling(1.0, 0)
    with pytest.raises(ValidationError, match="ncsnr"):
        noise_ceiling([-0.1], 1)


def test_noise_ceiling_is_the_explainable_variance_of_averaged_responses():
    """Monte Carlo truth: the variance of n-trial averages explained by the true responses is NC / 100."""
    rng = np.random.default_rng(3)
    n_img, n_vox = 6000, 9
    ncsnr = np.linspace(0.2, 1.6, n_vox)
    signal = rng.normal(size=(n_img, n_vox))  # signal sd 1, noise sd 1 / ncsnr
    for n in (1, 3):
        trials = signal[None] + rng.normal(size=(n, n_img, n_vox)) / ncsnr
        avg = trials.mean(0)
        r2 = np.array([np.corrcoef(avg[:, v], signal[:, v])[0, 1] ** 2 for v in range(n_vox)])
        np.testing.assert_allclose(100 * r2, noise_ceiling(ncsnr, n), atol=2.5)
