"""THINGS-MEG loader: BIDS runs through MNE, epochs, channels, splits, repeats, check-data and bad inputs."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from neurodecode.data import load_things_meg
from neurodecode.testing import make_things_meg_fixture, things_meg_path, write_things_meg_subject

SF = 100.0
NAMES = ["MLC11-1609", "MLO22-1609", "MRO11-1609", "MZC01-1609", "EOG001"]  # MRO11 is the spec's known-bad sensor
TYPES = ["mag", "mag", "mag", "mag", "eog"]


def _ramp(n_ch, n_s, offset=0):
    # values exact in float32 (FIF stores single precision): channel c, sample t -> offset + 1000 c + t
    return (offset + 1000.0 * np.arange(n_ch)[:, None] + np.arange(n_s)[None, :]).astype(np.float64)


def _write_run(root, *, session=1, run=1, n_s=300, ids=None, test=None, catch=None, names=NAMES, types=TYPES,
               sfreq=SF, onsets=None, bads=(), offset=0):
    ids = ids or ["aardvark_01b", "air_conditioner_01b", "abacus_13s", "catch_01"]
    test = [False, False, True, False] if test is None else test
    catch = [False, False, False, True] if catch is None else catch
    onsets = np.array([0.5, 1.0, 1.5, 2.0])[: len(ids)] if onsets is None else onsets
    data = _ramp(len(names), n_s, offset)
    write_things_meg_subject(root, 1, data=data, sfreq=sfreq, ch_names=names, ch_types=types, onsets=onsets,
                             image_ids=ids, is_test=test, is_catch=catch, session=session, run=run, bads=bads)
    return data


def test_known_answer_epochs_channels_and_splits(tmp_path):
    d1 = _write_run(tmp_path, session=1)
    d2 = _write_run(tmp_path, session=2, ids=["aardvark_02b", "abacus_13s"], test=[False, True], catch=[False, False],
                    offset=0.5)
    t = load_things_meg(tmp_path, "sub-BIGMEG1", tmin=-0.05, tmax=0.1, raw_sfreq=SF)
    assert t.subject == "things-meg/sub-BIGMEG1" and t.sfreq == SF
    # EOG, trigger and the known-bad MRO11 are dropped; order as in the file
    assert t.ch_names == ["MLC11-1609", "MLO22-1609", "MZC01-1609"]
    assert t.X.shape == (5, 3, 16) and t.X.dtype == np.float32
    np.testing.assert_allclose(t.times, np.arange(-5, 11) / SF)
    keep = [0, 1, 3]
    np.testing.assert_array_equal(t.X[1], d1[keep, 100 - 5:100 + 11])  # second event at 1.0 s = sample 100
    np.testing.assert_array_equal(t.X[4], d2[keep, 100 - 5:100 + 11])  # session 2: [0.5, 1.0] s
    assert t.stimulus_ids.tolist() == ["aardvark_01b", "air_conditioner_01b", "abacus_13s", "aardvark_02b",
                                       "abacus_13s"]
    assert t.split.tolist() == ["train", "train", "test", "train", "test"]
    assert t.metadata["concept"].tolist() == ["aardvark", "air_conditioner", "abacus", "aardvark", "abacus"]
    assert t.metadata["session"].tolist() == [1, 1, 1, 2, 2] and t.metadata["repetition"].tolist() == [0, 0, 0, 0, 1]
    p = t.provenance
    assert p["n_catch_dropped"] == 1 and p["n_runs"] == 2 and p["tmin"] == -0.05 and p["raw_sfreq"] == SF
    assert set(p["dropped_channels"]) == {"EOG001", "MRO11-1609", "UPPT001"}
    assert "known bad" in p["dropped_channels"]["MRO11-1609"] and "eog" in p["dropped_channels"]["EOG001"]
    a = load_things_meg(tmp_path, "BIGMEG1", tmin=-0.05, tmax=0.1, raw_sfreq=SF, average_test_repeats=True)
    assert a.X.shape == (4, 3, 16) and a.metadata["n_repeats"].tolist() == [1, 1, 1, 2]
    np.testing.assert_allclose(a.X[-1], (t.X[2] + t.X[4]) / 2)
    z = load_things_meg(tmp_path, 1, tmin=-0.05, tmax=0.1, raw_sfreq=SF, exclude_test_concepts=True,
                        sessions=[1])
    assert z.stimulus_ids.tolist() == ["aardvark_01b", "air_conditioner_01b", "abacus_13s"]  # abacus not trained
    b = load_things_meg(tmp_path, "sub-01", tmin=-0.05, tmax=0.1, raw_sfreq=SF, baseline=(None, 0), sessions=[1])
    np.testing.assert_allclose(b.X[:, :, :6].mean(-1), 0, atol=1e-3)
    np.testing.assert_allclose(b.X[0, 1, 10] - b.X[0, 1, 0], 10.0, atol=1e-3)  # ramp slope kept


def test_channel_order_picks_bads_and_channel_set_mismatch(tmp_path):
    _write_run(tmp_path, bads=["MLO22-1609"])
    t = load_things_meg(tmp_path, 1, tmin=0, tmax=0.05, raw_sfreq=SF, ch_names=["MZC01-1609", "MLC11-1609"])
    assert t.ch_names == ["MZC01-1609", "MLC11-1609"]
    np.testing.assert_array_equal(t.X[0, 0, :2], [3050, 3051])  # channel 3 (MZC01), sample 50
    assert t.provenance["dropped_channels"]["MLO22-1609"] == "marked bad in the recording"
    with pytest.raises(MetadataMismatchError, match=r"missing \['MRF11-1609'\].*extra \['MZC01-1609'\]"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF, tmax=0.05, ch_names=["MLC11-1609", "MRF11-1609"])
    e = load_things_meg(tmp_path, 1, tmin=0, tmax=0.05, raw_sfreq=SF, picks=["EOG001"])
    np.testing.assert_array_equal(e.X[0, 0, :2], [4050, 4051])
    with pytest.raises(MetadataMismatchError, match="MXX"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF, picks=["MXX"])
    # a second run with another sensor: named in the error
    _write_run(tmp_path, run=2, names=["MLC11-1609", "MRF11-1609", "EOG001"], types=["mag", "mag", "eog"])
    with pytest.raises(MetadataMismatchError, match=r"same channel set.*missing \['MZC01-1609'\].*MRF11-1609"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF, tmax=0.05)


def test_fixture_counts_resampling_and_design(tmp_path):
    make_things_meg_fixture(tmp_path, n_sessions=3, runs_per_session=2, n_train_concepts=4, n_test_images=2,
                            n_channels=9)
    assert things_meg_path(tmp_path, "raw_fif", subject=1, session=3, run=2).is_file()
    t = load_things_meg(tmp_path, 1, sfreq=200.0)
    assert t.X.shape == (3 * 4 + 3 * 2, 8, 200) and t.sfreq == 200.0 and len(t.ch_names) == 8
    np.testing.assert_allclose(t.times, np.arange(200) / 200.0)
    train, test = t.split == "train", t.split == "test"
    assert train.sum() == 12 and len(set(t.stimulus_ids[train])) == 12  # training images shown once
    assert len(set(t.stimulus_ids[test])) == 2 and (np.unique(t.stimulus_ids[test], return_counts=True)[1] == 3).all()
    assert t.provenance["n_catch_dropped"] == 3 and t.provenance["resampled"].startswith("mne")
    z = load_things_meg(tmp_path, 1, sfreq=200.0, exclude_test_concepts=True, average_test_repeats=True)
    assert (z.split == "train").sum() == 12 - 2 * 3 and (z.split == "test").sum() == 2
    assert not set(z.metadata["concept"][z.split == "train"]) & set(z.metadata["concept"][z.split == "test"])


def test_resampling_keeps_a_slow_signal(tmp_path):
    sf = 1200.0
    tt = np.arange(int(6 * sf)) / sf
    sig = np.sin(2 * np.pi * 2.0 * tt)
    data = np.vstack([sig, 2 * sig]) * 1e-12
    write_things_meg_subject(tmp_path, 2, data=data, sfreq=sf, ch_names=["MLC11-1609", "MZC01-1609"], onsets=[1.0, 2.5],
                             image_ids=["ant_01b", "ant_13s"], is_test=[False, True])
    t = load_things_meg(tmp_path, 2, sfreq=200.0, tmin=0.0, tmax=0.5)
    assert t.X.shape == (2, 2, 101)
    want = np.sin(2 * np.pi * 2.0 * (1.0 + t.times)) * 1e-12
    np.testing.assert_allclose(t.X[0, 0], want, atol=2e-14)
    np.testing.assert_allclose(t.X[1, 1], 2 * np.sin(2 * np.pi * 2.0 * (2.5 + t.times)) * 1e-12, atol=4e-14)


def test_sampling_rate_mismatches(tmp_path):
    _write_run(tmp_path)
    with pytest.raises(MetadataMismatchError, match=r"1200 Hz.*100 Hz.*raw_sfreq=100"):
        load_things_meg(tmp_path, 1)  # spec: recorded at 1200 Hz
    ev = things_meg_path(tmp_path, "events", subject=1)
    lines = ev.read_text().splitlines()
    # events written for a 200 Hz recording: sample = 2 x onset x 100
    rows = [r.split("\t") for r in lines[1:]]
    for r in rows:
        r[4] = str(int(round(float(r[0]) * 200)))
    ev.write_text("\n".join([lines[0]] + ["\t".join(r) for r in rows]) + "\n")
    with pytest.raises(MetadataMismatchError, match="implying 200 Hz"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF)
    _write_run(tmp_path)
    side = things_meg_path(tmp_path, "sidecar", subject=1)
    side.write_text(json.dumps({**json.loads(side.read_text()), "SamplingFrequency": 1200}))
    with pytest.raises(MetadataMismatchError, match="declared"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF)


def test_missing_files_and_bad_trees(tmp_path):
    with pytest.raises(MissingFileError, match="sub-BIGMEG3/ses-01/meg/sub-BIGMEG3_ses-01_task-main_run-01_meg.fif"):
        load_things_meg(tmp_path, 3)
    _write_run(tmp_path)
    with pytest.raises(MissingFileError, match="ses-05/meg/sub-BIGMEG1_ses-05_task-main_run-01_meg.fif"):
        load_things_meg(tmp_path, 1, sessions=[5], raw_sfreq=SF)
    with pytest.raises(ValidationError, match="empty selection"):
        load_things_meg(tmp_path, 1, sessions=[], raw_sfreq=SF)
    with pytest.raises(ValidationError, match="between 1 and 4"):
        load_things_meg(tmp_path, "sub-BIGMEG5")
    with pytest.raises(ValidationError, match="things-meg"):
        load_things_meg(tmp_path, "things-eeg2/sub-01")
    ev = things_meg_path(tmp_path, "events", subject=1)
    text = ev.read_text()
    ev.write_text(text.replace("image_path", "stim_file"))
    with pytest.raises(DataIntegrityError, match=r"missing \['image_path'\]"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF)
    ev.unlink()
    with pytest.raises(MissingFileError, match="_events.tsv"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF)
    # an onset past the end of the (truncated) recording
    _write_run(tmp_path, n_s=300)
    with pytest.raises(DataIntegrityError, match=r"1 event\(s\) outside.*events.tsv rows \[3\]"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF, tmax=1.5)
    fif = things_meg_path(tmp_path, "raw_fif", subject=1)
    fif.write_bytes(fif.read_bytes()[:2000])
    with pytest.raises(DataIntegrityError, match="truncated or corrupted"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF)


def test_empty_selection_and_train_test_leak(tmp_path):
    _write_run(tmp_path, ids=["catch_01", "catch_02"], test=[False, False], catch=[True, True])
    with pytest.raises(ValidationError, match="training or test image events"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF)
    _write_run(tmp_path, ids=["ant_01b", "ant_01b"], test=[False, True], catch=[False, False])
    with pytest.raises(DataIntegrityError, match="disjoint"):
        load_things_meg(tmp_path, 1, raw_sfreq=SF, tmax=0.05)


def test_check_data_things_meg(tmp_path):
    from neurodecode.cli import app

    make_things_meg_fixture(tmp_path, subjects=(1, 2), n_sessions=2, n_train_concepts=3, n_test_images=2)
    res = CliRunner().invoke(app, ["check-data", "things-meg", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    s1 = json.loads(res.stdout)["subjects"]["1"]
    assert s1 == {"sessions": 2, "runs": 2, "n_channels": 7, "sfreq": 1200.0, "train_epochs": 6, "test_epochs": 4,
                  "train_images": 6, "test_images": 2, "catch_events": 2}
    things_meg_path(tmp_path, "events", subject=2, session=2).unlink()
    fif = things_meg_path(tmp_path, "raw_fif", subject=1, session=1)
    fif.write_bytes(fif.read_bytes()[:3000])
    res = CliRunner().invoke(app, ["check-data", "things-meg", str(tmp_path), "--subject", "sub-BIGMEG1",
                                   "--subject", "2", "--subject", "4"])
    assert res.exit_code == 1
    assert "sub-BIGMEG1 ses-01 run-01" in res.stderr and "truncated" in res.stderr
    assert "sub-BIGMEG2 ses-02 run-01" in res.stderr and "_events.tsv" in res.stderr
    assert "sub-BIGMEG4" in res.stderr and "Traceback" not in res.stderr
