"""BOLD5000 loader: presentation order, ROI betas, whole-brain parcel samples, Yeo-7 labels, check-data."""

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from neurodecode.cli import app
from neurodecode.data import load_bold5000, load_bold5000_stimuli, read_atlas_labels, schaefer_networks
from neurodecode.testing import make_bold5000_fixture
from neurodecode.testing._bold5000 import bold5000_path


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("bold5000")
    info = make_bold5000_fixture(root, subjects=(1, 2), seed=3)
    return root, info


def test_presentation_order_and_test_split(tree):
    root, info = tree
    t = load_bold5000(root, "CSI1", average_test_repeats=False)
    lines = []
    for sess in (1, 2):
        for run in (1, 2):
            p = bold5000_path(root, "presentation_run", subject=1, session=sess, run=run)
            lines += [ln.removeprefix("rep_") for ln in p.read_text().split()]
    assert t.stimulus_ids.tolist() == lines
    assert t.metadata["session"].tolist() == [1] * 8 + [2] * 8
    assert set(t.stimulus_ids[t.split == "test"]) == set(info["repeated"])
    # every repeated image is shown once per session: 2 presentations each
    assert (t.split == "test").sum() == 2 * len(info["repeated"])


def test_roi_betas_concatenated_in_roi_order_and_repeats_averaged(tree):
    root, info = tree
    single = load_bold5000(root, 1, rois=["RHPPA", "LHLOC"], average_test_repeats=False)
    ppa = np.load(bold5000_path(root, "roi_betas", subject=1, roi="RHPPA"))
    loc = np.load(bold5000_path(root, "roi_betas", subject=1, roi="LHLOC"))
    np.testing.assert_array_equal(single.X, np.concatenate([ppa, loc], axis=1))
    assert single.provenance["roi_columns"] == {"RHPPA": [0, ppa.shape[1]],
                                                "LHLOC": [ppa.shape[1], ppa.shape[1] + loc.shape[1]]}
    avg = load_bold5000(root, 1, rois=["RHPPA", "LHLOC"])
    name = info["repeated"][1]
    rows = np.flatnonzero(single.stimulus_ids == name)
    (i,) = np.flatnonzero(avg.stimulus_ids == name)
    np.testing.assert_allclose(avg.X[i], single.X[rows].mean(axis=0), rtol=1e-6)
    assert avg.metadata["n_repeats"][i] == 2 and len(avg.X) == len(single.X) - len(info["repeated"])
    assert avg.subject == "bold5000/CSI1"


def test_parcel_samples_are_the_atlas_means_from_each_onset(tree):
    root, info = tree
    t = load_bold5000(root, 2, data="parcels", atlas=info["atlas"], atlas_labels=info["atlas_labels"],
                      average_test_repeats=False, n_trs=3, standardize=False)
    assert t.X.shape == (16, 7, 3) and t.sfreq == 0.5 and t.ch_names == info["names"]
    # independent: mean of the voxels of parcel k in session 1 run 2, TRs from onset / 2 s
    bold = np.asarray(nib.load(bold5000_path(root, "bold", subject=2, session=1, run=2)).dataobj)
    labels = np.asarray(nib.load(info["atlas"]).dataobj)
    row = 5  # second trial of run 2 (4 trials per run): onset 16 s -> TR 8
    assert t.metadata["run"][row] == 2 and t.metadata["trial"][row] == 1
    for k in (1, 4, 7):
        expect = bold[labels == k][:, 8:11].mean(axis=0)
        np.testing.assert_allclose(t.X[row, k - 1], expect, rtol=1e-5)
    assert t.provenance["parcel_networks"] == ["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont",
                                               "Default"]


def test_parcels_standardized_per_run_by_default(tree):
    root, info = tree
    t = load_bold5000(root, 1, data="parcels", atlas=info["atlas"], atlas_labels=info["atlas_labels"])
    assert t.provenance["standardize"] == "zscore_sample"
    assert abs(float(t.X.mean())) < 0.5  # the raw BOLD is ~100


def test_schaefer_names_and_lookup_table(tmp_path):
    names = ["7Networks_LH_Vis_1", "7Networks_RH_Default_PFCm_3", "7Networks_LH_SalVentAttn_Med_2"]
    assert schaefer_networks(names).tolist() == ["Vis", "Default", "SalVentAttn"]
    assert schaefer_networks([n.encode() for n in names] and names).tolist()[1] == "Default"
    with pytest.raises(ValidationError, match="7Networks"):
        schaefer_networks(["17Networks_LH_VisCent_ExStr_1"])
    lut = tmp_path / "lut.txt"
    lut.write_text("1\t7Networks_LH_Vis_1\t120\t18\t131\t0\n2\t7Networks_RH_Cont_Par_1\t1\t2\t3\t0\n")
    assert read_atlas_labels(lut) == ["7Networks_LH_Vis_1", "7Networks_RH_Cont_Par_1"]
    assert read_atlas_labels([b"Background", b"7Networks_LH_Vis_1"]) == ["7Networks_LH_Vis_1"]


def test_errors_teach(tree, tmp_path):
    root, info = tree
    with pytest.raises(ValidationError, match="atlas"):
        load_bold5000(root, 1, data="parcels")
    with pytest.raises(ValidationError, match="subject"):
        load_bold5000(root, "CSI5")
    events = bold5000_path(root, "events", subject=1, session=2, run=1)
    text = events.read_text()
    try:
        events.write_text("\n".join(text.splitlines()[:-1]) + "\n")
        with pytest.raises(MetadataMismatchError, match="4 events"):
            load_bold5000(root, 1, data="parcels", atlas=info["atlas"], atlas_labels=info["atlas_labels"])
    finally:
        events.write_text(text)
    with pytest.raises(ShapeMismatchError, match="networks"):
        load_bold5000(root, 1, data="parcels", atlas=info["atlas"], atlas_labels=info["atlas_labels"],
                      networks=["Vis"])


def test_stimuli_read_from_their_source_folders(tree):
    root, info = tree
    t = load_bold5000(root, 1)
    imgs = load_bold5000_stimuli(root, t.stimulus_ids[:4], size=6)
    assert imgs.shape == (4, 6, 6, 3) and imgs.dtype == np.uint8
    assert set(t.metadata["source"]) <= {"COCO", "ImageNet", "Scene"} and "" not in set(t.metadata["source"])
    with pytest.raises(ShapeMismatchError, match="size"):
        load_bold5000_stimuli(root, info["images"][:2])  # 9x8 and 10x8 images


def test_check_data_cli(tree, tmp_path):
    root, _ = tree
    res = CliRunner().invoke(app, ["check-data", "bold5000", str(root), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["subjects"]["CSI1"] == {"presentations": 16, "sessions": 2, "test_images": 2, "roi_files": 10,
                                       "bold_runs": 4}
    bad = tmp_path / "bad"
    make_bold5000_fixture(bad, subjects=(1,))
    np.save(bold5000_path(bad, "roi_betas", subject=1, roi="LHOPA"), np.zeros((15, 2), np.float32))
    arr = np.load(bold5000_path(bad, "roi_betas", subject=1, roi="RHRSC"))
    arr[2, 1] = np.nan
    np.save(bold5000_path(bad, "roi_betas", subject=1, roi="RHRSC"), arr)
    res = CliRunner().invoke(app, ["check-data", "bold5000", str(bad), "--subjects", "CSI1"])
    assert res.exit_code == 1
    assert "LHOPA" in res.output and "(16, n_voxels)" in res.output and "RHRSC" in res.output
    assert "2 problem(s)" in res.output
