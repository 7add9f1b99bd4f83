"""`neurodecode simulate`: argument parsing, outputs, exit codes (the simulators themselves are tested elsewhere)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from neurodecode.cli import app

runner = CliRunner()


@pytest.fixture
def small_nsd(monkeypatch):
    """Keep the real simulator but at a test size (the CLI passes only subjects, snr and seed)."""
    import neurodecode.simulate as sim

    real = sim.simulate_nsd
    calls = []

    def small(out, **kwargs):
        calls.append(kwargs)
        return real(out, n_stimuli=300, n_sessions=1, n_shared=40, n_voxels=60, volume_shape=(12, 14, 12),
                    formats=("nifti",), **kwargs)

    monkeypatch.setattr(sim, "simulate_nsd", small)
    return calls


def test_simulate_nsd_json(tmp_path, small_nsd):
    result = runner.invoke(app, ["simulate", "nsd", str(tmp_path / "o"), "--subjects", "2,7", "--snr", "0.5",
                                 "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert small_nsd == [{"snr": 0.5, "seed": 3, "subjects": [2, 7]}]
    assert doc["dataset"] == "nsd" and doc["subjects"] == [2, 7]
    assert doc["ceiling"]["n_test"] == 40 and set(doc["ceiling"]["per_subject"]) == {"subj02", "subj07"}
    assert json.loads((tmp_path / "o" / "ceiling.json").read_text()) == doc["ceiling"]
    assert (tmp_path / "o" / "nsd" / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat").is_file()
    assert (tmp_path / "o" / "truth" / "subj07.npz").is_file()


def test_simulate_human_output_and_repeated_subjects(tmp_path, small_nsd):
    result = runner.invoke(app, ["simulate", "nsd", str(tmp_path / "o"), "-s", "1", "-s", "5"])
    assert result.exit_code == 0, result.output
    assert small_nsd[0]["subjects"] == [1, 5]
    assert "ideal observer on 40 test items" in result.stdout


def test_simulate_bad_dataset_is_usage_error(tmp_path):
    result = runner.invoke(app, ["simulate", "fmri", str(tmp_path)])
    assert result.exit_code == 2
    assert "nsd, things-eeg2, things-meg, zuco" in result.output


def test_simulate_bad_values_exit_1_with_a_teaching_message(tmp_path):
    result = runner.invoke(app, ["simulate", "nsd", str(tmp_path), "--subjects", "one"])
    assert result.exit_code == 1 and "--subjects" in result.output
    result = runner.invoke(app, ["simulate", "nsd", str(tmp_path), "--snr", "-1"])
    assert result.exit_code == 1 and "snr" in result.output
