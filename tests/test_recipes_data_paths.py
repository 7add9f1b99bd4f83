"""One reading of ``[data]``: training and reconstruction load the same trials from the same recipe.

Both verbs run through the command line with the spellings that used to diverge (``zscore = "none"``,
``sessions = "all"``, the ``betas`` alias); every loader call is recorded, and the provenance of what
each path loaded for the test split must be identical.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import neurodecode.data as data_pkg
from neurodecode.cli import app
from neurodecode.testing import make_nsd_fixture

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
runner = CliRunner()


def _record(monkeypatch, name):
    calls = []
    original = getattr(data_pkg, name)

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((kwargs, out))
        return out

    monkeypatch.setattr(data_pkg, name, spy)
    return calls


def _ok(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output


def test_nsd_train_and_reconstruct_read_the_same_trials(tmp_path, monkeypatch):
    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1, 2), n_sessions=2, formats=("hdf5",))
    monkeypatch.setenv("NEURODECODE_CACHE", str(tmp_path / "cache"))
    sets = ["--set", 'data.zscore="none"', "--set", 'data.sessions="all"', "--set", 'data.betas="b3"']
    calls = _record(monkeypatch, "load_nsd")
    recipe = PIPELINES / "mindbridge_nsd.toml"
    _ok("train", recipe, "--data", root, "--out", tmp_path / "run", "--preset", "tiny", "--device", "cpu",
        "--max-steps", "1", *sets)
    trained = {c[1].subject: c for c in calls}
    calls.clear()
    _ok("reconstruct", "--pipeline", recipe, "--preset", "tiny", "--data", root, "--subject", "1", "--checkpoint",
        tmp_path / "run", "--out", tmp_path / "rec", "--device", "cpu", "--limit", "1", *sets)
    (kw_rec, rec), = [c for c in calls]
    kw_train, train = trained["nsd/subj01"]
    # the same call (zscore None, every session, b3 ...); only the progress-bar setting may differ
    assert {k: v for k, v in kw_rec.items() if k != "verbose"} == {k: v for k, v in kw_train.items() if k != "verbose"}
    assert kw_rec["zscore"] is None and kw_rec["sessions"] is None and kw_rec["beta_version"] == "b3"
    assert rec.provenance == train.provenance
    assert rec.provenance["sessions"] == [1, 2]


@pytest.mark.parametrize("override, field", [('data.zscore="nonne"', "data.zscore"),
                                             ('data.subjcts=["nsd/subj01"]', "data.subjcts")])
def test_both_verbs_refuse_the_same_bad_data_table(tmp_path, override, field):
    recipe = PIPELINES / "mindbridge_nsd.toml"
    for args in (["train", recipe, "--data", tmp_path, "--out", tmp_path / "o"],
                 ["reconstruct", "--pipeline", recipe, "--data", tmp_path, "--subject", "1", "--checkpoint", tmp_path,
                  "--out", tmp_path / "r"]):
        res = runner.invoke(app, [*map(str, args), "--preset", "tiny", "--set", override])
        assert res.exit_code == 1 and field in res.stderr and "Traceback" not in res.stderr
