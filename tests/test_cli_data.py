"""`neurodecode check-data` and `neurodecode prepare` through the CLI runner."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.testing import make_nsd_fixture, make_things_eeg2_fixture, make_zuco_fixture, nsd_path


@pytest.fixture(scope="module")
def nsd_root(tmp_path_factory):
    return make_nsd_fixture(tmp_path_factory.mktemp("nsd"), subjects=(1, 2), n_sessions=2, n_shared=40,
                            formats=("nifti",))


def test_check_data_nsd_json(nsd_root):
    res = CliRunner().invoke(app, ["check-data", "nsd", str(nsd_root), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    s1 = out["subjects"]["1"]
    assert s1["sessions"] == 2 and s1["test_images"] == 40 and s1["train_images"] == 460
    assert s1["train_trials"] + s1["test_trials"] == 1500 and s1["test_trials"] == 120
    assert out["subjects"]["2"]["n_voxels"] != s1["n_voxels"]  # different masks per subject


def test_check_data_lists_every_problem(tmp_path):
    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1, 2), n_sessions=1, formats=("nifti",))
    nsd_path(root, "stimuli").unlink()
    p = nsd_path(root, "betas_nifti", subject=2, session=1, beta_dir="betas_fithrf_GLMdenoise_RR")
    p.write_bytes(p.read_bytes()[:100])
    res = CliRunner().invoke(app, ["check-data", "nsd", str(root)])
    assert res.exit_code == 1
    assert "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5" in res.stderr
    assert "subj02 session 01" in res.stderr and "Traceback" not in res.stderr


def test_prepare_then_load(nsd_root, tmp_path):
    res = CliRunner().invoke(app, ["prepare", "nsd", str(nsd_root), "--subject", "1", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    from neurodecode.data import load_nsd

    np.testing.assert_array_equal(load_nsd(nsd_root, 1, cache_dir=tmp_path).X, load_nsd(nsd_root, 1).X)
    res = CliRunner().invoke(app, ["prepare", "zuco", str(nsd_root), "--subject", "1", "--out", str(tmp_path)])
    assert res.exit_code == 2


def test_check_data_eeg_and_zuco(tmp_path):
    make_things_eeg2_fixture(tmp_path / "eeg", n_train_concepts=1, n_test=2)
    res = CliRunner().invoke(app, ["check-data", "things-eeg2", str(tmp_path / "eeg"), "--json"])
    assert res.exit_code == 1 and "allow_pickle" in res.stderr  # pickled originals need the conversion
    from neurodecode.data import convert_things_eeg2

    convert_things_eeg2(tmp_path / "eeg", 1, allow_pickle=True)
    res = CliRunner().invoke(app, ["check-data", "things-eeg2", str(tmp_path / "eeg"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["subjects"]["1"]["n_channels"] == 63
    make_zuco_fixture(tmp_path / "zuco", version=2, n_sentences=4)
    res = CliRunner().invoke(app, ["check-data", "zuco", str(tmp_path / "zuco"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["subjects"]["YAC"]["NR"]["sentences"] == 3
