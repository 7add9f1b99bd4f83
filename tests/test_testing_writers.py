"""Fixture writers of every dataset, read back with the format libraries (not our loaders).

Files must land at the spec paths with the real keys, shapes, dtypes and index bases, and the
same seed must give the same bytes (MATLAB v5 files: past their 128-byte header, which holds
the creation date).
"""

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode._core.specs import load_spec
from neurodecode.testing import (
    ctf_channel_names,
    make_nsd_fixture,
    make_things_eeg2_fixture,
    make_things_meg_fixture,
    make_zuco_fixture,
    nsd_path,
    things_meg_path,
    write_nsd_tree,
    write_things_eeg2_subject,
    write_things_meg_subject,
    write_zuco_subject,
    zuco_path,
)

B3 = "betas_fithrf_GLMdenoise_RR"


def _tree_bytes(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            out[str(p.relative_to(root))] = data[128:] if data.startswith(b"MATLAB 5.0") else data
    return out


def _assert_same_seed_same_bytes(tmp_path, make, **kw):
    a, b, c = make(tmp_path / "a", seed=3, **kw), make(tmp_path / "b", seed=3, **kw), make(tmp_path / "c", seed=4, **kw)
    ba, bb, bc = _tree_bytes(Path(a)), _tree_bytes(Path(b)), _tree_bytes(Path(c))
    assert ba and ba.keys() == bb.keys() == bc.keys()
    for k in ba:
        assert ba[k] == bb[k], k
    assert any(ba[k] != bc[k] for k in ba)  # the seed matters


# ---------------------------------------------------------------------------------------------- NSD
def test_nsd_fixture_layout(tmp_path):
    root = make_nsd_fixture(tmp_path, subjects=(2,), n_sessions=1, volume_shape=(7, 8, 9), n_shared=20,
                            image_size=8)
    design = scipy.io.loadmat(nsd_path(root, "expdesign"))
    mo, sim, shared = design["masterordering"], design["subjectim"], design["sharedix"]
    assert mo.shape == (1, 750) and sim.shape == (8, 250) and shared.shape == (1, 20)
    assert mo.min() == 1 and mo.max() == 250 and sim.min() >= 1  # 1-based, as in the release
    np.testing.assert_array_equal(sim[:, :20], np.broadcast_to(shared, (8, 20)))
    assert (np.bincount(mo.ravel().astype(int))[1:] == 3).all()  # every image three times
    with h5py.File(nsd_path(root, "stimuli"), "r") as f:
        stim = f["imgBrick"]
        assert stim.dtype == np.uint8 and stim.shape == (20 + 8 * 230, 8, 8, 3)
    mask_img = nib.load(nsd_path(root, "nsdgeneral", subject=2))
    mask = np.asarray(mask_img.dataobj)
    assert mask.shape == (7, 8, 9) and set(np.unique(mask)) == {-1, 0, 1} and (mask[0] == -1).all()
    img = nib.load(nsd_path(root, "betas_nifti", subject=2, session=1, beta_dir=B3))
    assert img.shape == (7, 8, 9, 750) and img.get_data_dtype() == np.int16
    vol = np.asarray(img.dataobj)
    assert (vol[mask != 1] == 0).all() and (vol[mask == 1] != 0).mean() > 0.9
    with h5py.File(nsd_path(root, "betas_hdf5", subject=2, session=1, beta_dir=B3), "r") as f:
        b = f["betas"]
        assert b.shape == (750, 9, 8, 7) and b.dtype == np.int16 and b.chunks == (750, 1, 1, 1)
        np.testing.assert_array_equal(b[()], vol.transpose(3, 2, 1, 0))
    resp = nsd_path(root, "responses", subject=2).read_text().splitlines()
    assert resp[0].split("\t") == ["SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID"] and len(resp) == 751
    first = resp[1].split("\t")
    m0 = int(mo[0, 0])
    assert int(first[5]) == m0 and int(first[4]) == sim[1, m0 - 1]  # subject 2's row, 1-based ids
    assert not nsd_path(root, "betas_nifti", subject=1, session=1, beta_dir=B3).exists()


def test_nsd_writer_scaling_known_answer(tmp_path):
    mask = -np.ones((3, 4, 5), np.int16)
    mask[1, 1:3, 1:4] = 1  # 6 voxels
    psc = np.tile(np.array([0.5, -1.0, 2.001, 0.0, 3.0, -0.25]), (750, 1))
    sim = np.tile(np.arange(1, 4), (8, 1))
    write_nsd_tree(tmp_path, stimuli=np.zeros((3, 2, 2, 3), np.uint8), subjectim=sim,
                   masterordering=np.tile([1, 2, 3], 250), sharedix=np.array([1, 2, 3]), betas={1: psc}, masks={1: mask},
                   formats=("hdf5",), responses=False)
    with h5py.File(nsd_path(tmp_path, "betas_hdf5", subject=1, session=1, beta_dir=B3), "r") as f:
        vol = f["betas"][()].transpose(3, 2, 1, 0)
    np.testing.assert_array_equal(vol[mask == 1][:, 0], [150, -300, 600, 0, 900, -75])  # round(psc x 300)
    assert not nsd_path(tmp_path, "betas_nifti", subject=1, session=1, beta_dir=B3).exists()
    with pytest.raises(ShapeMismatchError, match="6 columns"):
        write_nsd_tree(tmp_path, stimuli=np.zeros((3, 2, 2, 3), np.uint8), subjectim=sim,
                       masterordering=np.tile([1, 2, 3], 250), sharedix=np.array([1, 2, 3]),
                       betas={1: psc[:, :5]}, masks={1: mask})


def test_nsd_same_seed_same_bytes(tmp_path):
    _assert_same_seed_same_bytes(tmp_path, make_nsd_fixture, subjects=(1,), n_sessions=1, volume_shape=(4, 5, 6),
                                 n_shared=10, image_size=4)


# --------------------------------------------------------------------------------------- THINGS-EEG2
def test_things_eeg2_writer_layout(tmp_path, rng):
    train = rng.normal(size=(4, 2, 17, 5)).astype(np.float32)
    test = rng.normal(size=(3, 6, 17, 5)).astype(np.float32)
    times = np.round(-0.2 + np.arange(5) / 100.0, 6)
    folder = write_things_eeg2_subject(tmp_path, 7, train=train, test=test, ch_names=[f"C{i}" for i in range(17)],
                                       times=times, images_per_concept=2, variant="official",
                                       train_concepts=["00001_aardvark", "00002_abacus"])
    spec = load_spec("things_eeg2")
    assert folder == tmp_path / "preprocessed_data" / "sub-07"
    obj = np.load(tmp_path / spec["paths"]["training"].format(variant_dir="preprocessed_data", subject=7),
                  allow_pickle=True).item()  # a pickled dict, as published
    assert sorted(obj) == sorted(spec["keys"]["eeg"])
    assert obj["preprocessed_eeg_data"].dtype == np.float32 and obj["preprocessed_eeg_data"].shape == (4, 2, 17, 5)
    np.testing.assert_array_equal(obj["preprocessed_eeg_data"], train)
    np.testing.assert_array_equal(obj["times"], times)
    te = np.load(folder / "preprocessed_eeg_test.npy", allow_pickle=True).item()
    assert te["preprocessed_eeg_data"].shape == (3, 6, 17, 5) and te["ch_names"][16] == "C16"
    meta = np.load(tmp_path / spec["paths"]["image_metadata"], allow_pickle=True).item()
    assert sorted(meta) == sorted(spec["keys"]["image_metadata"])
    assert meta["train_img_files"] == ["aardvark_01s.jpg", "aardvark_02s.jpg", "abacus_01s.jpg", "abacus_02s.jpg"]
    assert meta["train_img_concepts"][2] == "00002_abacus" and len(meta["test_img_files"]) == 3
    assert not set(meta["test_img_concepts"]) & set(meta["train_img_concepts"])


def test_things_eeg2_fixture_matches_the_variant_and_is_deterministic(tmp_path):
    make_things_eeg2_fixture(tmp_path / "v", variant="atm", n_train_concepts=1, images_per_concept=2, n_test=2,
                             train_repetitions=2, test_repetitions=3)
    obj = np.load(tmp_path / "v/Preprocessed_data_250Hz/sub-01/preprocessed_eeg_training.npy", allow_pickle=True).item()
    v = load_spec("things_eeg2")["variants"]["atm"]
    assert obj["preprocessed_eeg_data"].shape == (2, 2, v["n_channels"], v["n_times"])
    np.testing.assert_allclose(np.diff(obj["times"]), 1 / v["sfreq"], atol=1e-6)
    _assert_same_seed_same_bytes(tmp_path, make_things_eeg2_fixture, variant="official", n_train_concepts=1,
                                 images_per_concept=2, n_test=2, train_repetitions=1, test_repetitions=2, n_times=4)


# ---------------------------------------------------------------------------------------------- ZuCo
@pytest.mark.parametrize("version", [1, 2])
def test_zuco_writer_layout(tmp_path, version):
    eeg = [np.arange(21.0).reshape(3, 7), np.array([]), np.ones((3, 4))]
    path = write_zuco_subject(tmp_path, "ZAB" if version == 1 else "YAC", task="NR", sentences=["A b.", "C.", "D e f."],
                              eeg=eeg, version=version, ch_names=["E1", "E2", "E3"])
    spec = load_spec("zuco")["versions"][str(version)]
    assert path == zuco_path(tmp_path, "ZAB" if version == 1 else "YAC", "NR", version)
    assert path.parent.parent.name == spec["task_dirs"]["NR"] and path.parent.name == "Matlab files"
    head = path.read_bytes()[:20]
    if version == 1:
        assert head.startswith(b"MATLAB 5.0")
        m = scipy.io.loadmat(path)
        rec = m["sentenceData"]
        assert rec.shape == (1, 3) and set(rec.dtype.names) == {"content", "rawData"}
        assert str(rec[0, 2]["content"][0]) == "D e f." and rec[0, 0]["rawData"].shape == (3, 7)
        np.testing.assert_array_equal(rec[0, 0]["rawData"], eeg[0])
        assert float(m["sfreq"].ravel()[0]) == 500.0
    else:
        assert head.startswith(b"MATLAB 7.3")
        with h5py.File(path, "r") as f:  # v7.3 = HDF5 with a 512-byte header
            g = f["sentenceData"]
            assert g.attrs["MATLAB_class"] == b"struct" and set(g) == {"content", "rawData"}
            assert g["rawData"].shape == (3, 1) and g["rawData"].dtype == h5py.ref_dtype
            raw0 = f[g["rawData"][0, 0]][()]
            np.testing.assert_array_equal(raw0.T, eeg[0])  # stored transposed, as MATLAB does
            assert f[g["rawData"][1, 0]].attrs["MATLAB_empty"] == 1
            text = f[g["content"][2, 0]][()].ravel()
            assert "".join(map(chr, text)) == "D e f."
    with pytest.raises(ShapeMismatchError, match="one array per sentence"):
        write_zuco_subject(tmp_path, "ZAB", task="NR", sentences=["a"], eeg=[], version=version)


@pytest.mark.parametrize("version", [1, 2])
def test_zuco_same_seed_same_bytes(tmp_path, version):
    _assert_same_seed_same_bytes(tmp_path, make_zuco_fixture, version=version, n_sentences=3, n_channels=2)


# ---------------------------------------------------------------------------------------- THINGS-MEG
def test_things_meg_writer_layout(tmp_path):
    import mne

    names = ["MLC11-1609", "MRO11-1609", "MZC01-1609", "UADC001"]
    data = np.arange(4 * 60, dtype=np.float64).reshape(4, 60) * 1e-15
    path = write_things_meg_subject(tmp_path, "sub-BIGMEG3", data=data, sfreq=20.0, ch_names=names,
                                    ch_types=["mag", "mag", "mag", "misc"], onsets=[0.5, 1.25, 2.0],
                                    image_ids=["air_conditioner_03b", "ant_13s", "catch_01"],
                                    is_test=[False, True, False], is_catch=[False, False, True], session=3, run=7,
                                    bads=["MRO11-1609"])
    rel = "sub-BIGMEG3/ses-03/meg/sub-BIGMEG3_ses-03_task-main_run-07_meg.fif"
    assert path == tmp_path / rel == things_meg_path(tmp_path, "raw_fif", subject=3, session=3, run=7)
    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    assert raw.ch_names == names + ["UPPT001"] and raw.info["sfreq"] == 20.0 and raw.info["bads"] == ["MRO11-1609"]
    assert raw.get_channel_types() == ["mag", "mag", "mag", "misc", "stim"]
    assert raw.info["chs"][0]["coil_type"] == mne.io.constants.FIFF.FIFFV_COIL_CTF_GRAD
    assert np.linalg.norm(raw.info["chs"][0]["loc"][:3]) == pytest.approx(0.12)
    np.testing.assert_allclose(raw.get_data(picks=names), data, rtol=1e-6)  # FIF stores float32
    stim = raw.get_data(picks="UPPT001")[0]
    assert np.flatnonzero(np.diff(stim) > 0).tolist() == [9, 24, 39] and stim.max() == 64  # onsets 10, 25, 40
    ev = (path.parent / "sub-BIGMEG3_ses-03_task-main_run-07_events.tsv").read_text().splitlines()
    assert ev[0].split("\t") == ["onset", "duration", "trial_type", "value", "sample", "image_path"]
    assert ev[1].split("\t") == ["0.5", "0.5", "exp", "64", "10", "images_meg/air_conditioner/air_conditioner_03b.jpg"]
    assert ev[2].split("\t")[2:] == ["test", "64", "25", "images_test_meg/ant/ant_13s.jpg"]
    assert ev[3].split("\t")[2] == "catch"
    ch = [r.split("\t") for r in things_meg_path(tmp_path, "channels", subject=3, session=3, run=7).read_text()
          .splitlines()]
    assert ch[0] == ["name", "type", "units", "sampling_frequency", "status"]
    assert ch[1] == ["MLC11-1609", "MEGGRADAXIAL", "T", "20", "good"] and ch[2][4] == "bad"
    assert ch[4][1] == "MISC" and ch[5][:2] == ["UPPT001", "TRIG"]
    side = json.loads(things_meg_path(tmp_path, "sidecar", subject=3, session=3, run=7).read_text())
    assert side["SamplingFrequency"] == 20.0 and side["MEGChannelCount"] == 3 and side["RecordingDuration"] == 3.0
    assert json.loads((tmp_path / "dataset_description.json").read_text())["Name"] == "THINGS-MEG"
    write_things_meg_subject(tmp_path, 1, data=data[:1], sfreq=20.0, ch_names=names[:1], onsets=[0.5],
                             image_ids=["ant_01b"])
    assert (tmp_path / "participants.tsv").read_text() == "participant_id\nsub-BIGMEG1\nsub-BIGMEG3\n"


def test_things_meg_writer_refuses_bad_arguments(tmp_path):
    kw = dict(data=np.zeros((2, 40)), sfreq=20.0, ch_names=["A", "B"], image_ids=["x_01b"])
    with pytest.raises(ValidationError, match="within the recording"):
        write_things_meg_subject(tmp_path, 1, onsets=[2.5], **kw)
    with pytest.raises(ShapeMismatchError, match="one flag per onset"):
        write_things_meg_subject(tmp_path, 1, onsets=[0.5], is_test=[True, False], **kw)
    with pytest.raises(ShapeMismatchError, match="2 names"):
        write_things_meg_subject(tmp_path, 1, onsets=[0.5], **{**kw, "ch_names": ["A"]})
    with pytest.raises(ValidationError, match="sub-BIGMEG1"):
        write_things_meg_subject(tmp_path, 9, onsets=[0.5], **kw)
    assert not (tmp_path / "sub-BIGMEG1").exists()


def test_ctf_channel_names():
    full = ctf_channel_names()
    assert len(full) == 272 == len(set(full)) and "MRO11-1609" in full and all(n.endswith("-1609") for n in full)
    few = ctf_channel_names(7)
    assert len(few) == 7 and "MRO11-1609" in few and {n[:2] for n in few} >= {"ML", "MR"}


def test_things_meg_fixture_design_and_determinism(tmp_path):
    root = make_things_meg_fixture(tmp_path / "m", n_sessions=2, runs_per_session=2, n_train_concepts=3,
                                   n_test_images=2, n_channels=5)
    rows = []
    for ses in (1, 2):
        for run in (1, 2):
            lines = things_meg_path(root, "events", subject=1, session=ses, run=run).read_text().splitlines()[1:]
            rows += [(ses, *r.split("\t")) for r in lines]
    types = [r[3] for r in rows]
    assert types.count("exp") == 6 and types.count("test") == 4 and types.count("catch") == 2
    assert sorted(r[6].rsplit("/", 1)[1] for r in rows if r[0] == 2 and r[3] == "exp") == [
        "aardvark_02b.jpg", "abacus_02b.jpg", "accordion_02b.jpg"]  # session k shows exemplar k
    raw_sfreq = json.loads(things_meg_path(root, "sidecar", subject=1).read_text())["SamplingFrequency"]
    assert raw_sfreq == load_spec("things_meg")["dataset"]["sfreq"]
    _assert_same_seed_same_bytes(tmp_path, make_things_meg_fixture, n_sessions=1, n_train_concepts=2,
                                 n_test_images=1, n_channels=3)
