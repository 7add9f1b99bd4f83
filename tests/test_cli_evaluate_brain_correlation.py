"""`neurodecode evaluate --brain-correlation ENCODER_RUN`: MindEye2's brain correlation with a tiny trained
brain-encoder run on simulated NSD. Reconstructions that are the seen images score the encoder's ceiling and beat
reconstructions of the wrong images; per-ROI rows with bootstrap CIs land in metrics.json and the report; the CI
is the percentile bootstrap of the per-image correlations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "brain_encoder_nsd.toml"
runner = CliRunner()


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    from neurodecode.recipes import load_recipe, train_from_recipe
    from neurodecode.simulate import simulate_nsd

    root = tmp_path_factory.mktemp("bc")
    simulate_nsd(root / "sim", subjects=(1,), n_sessions=1, n_shared=40, n_voxels=60, seed=0, n_stimuli=300)
    train_from_recipe(load_recipe(PIPELINE, preset="tiny"), root / "sim" / "nsd", root / "run", device="cpu")
    return root / "sim" / "nsd", root / "run"


def _derivative(folder: Path, sim: Path, labels: np.ndarray, shown: np.ndarray) -> Path:
    """Reconstructions labelled by the test ids ``labels`` whose pixels are the images ``shown``."""
    from neurodecode.data import load_nsd_stimuli
    from neurodecode.recipes._derivative import _png, output_paths

    for i, img in zip(labels, load_nsd_stimuli(sim, shown)):
        _png(output_paths(folder, "nsd/subj01", int(i), "x")["image"], img)
    return folder


def _evaluate(recons: Path, run: Path, *extra: str) -> dict:
    res = runner.invoke(app, ["evaluate", "--recons", str(recons), "--brain-correlation", str(run), "--metrics",
                              "pixcorr", "--weights", "random", "--n-boot", "200", "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_true_images_score_the_ceiling_and_beat_wrong_images(encoder_run, tmp_path):
    from neurodecode.data import load_nsd
    from neurodecode.metrics._stats import derangement

    sim, run = encoder_run
    ids = load_nsd(sim, 1, sessions=1, average_test_repeats=True).test.stimulus_ids[:12]
    wrong = ids[derangement(len(ids), np.random.default_rng(3))]
    true_dir = _derivative(tmp_path / "true", sim, ids, ids)
    wrong_dir = _derivative(tmp_path / "wrong", sim, ids, wrong)

    good = _evaluate(true_dir, run, "--brain-model", "ridge")
    bad = _evaluate(wrong_dir, run, "--brain-model", "ridge")
    # --truth defaulted to the encoder run's NSD stimuli: the true images have PixCorr 1
    assert good["pixcorr"]["value"] == pytest.approx(1.0)
    bc = good["brain_correlation"]
    assert bc["n_items"] == 12 and bc["model"] == "ridge" and bc["protocol"]["name"] == "mindeye2"
    assert "GNet" in bc["protocol"]["description"]
    row = bc["rois"]["all"]
    assert row["value"] == pytest.approx(row["seen"], abs=1e-9)  # the reconstructions are the seen images
    assert row["ci"][0] <= row["value"] <= row["ci"][1]
    assert row["value"] > row["shuffled"] + 0.05  # beats its shuffled control
    assert row["value"] > bad["brain_correlation"]["rois"]["all"]["value"] + 0.05  # and the wrong images
    assert good["brain_corr/all"]["value"] == pytest.approx(row["value"])  # the report row
    assert set(bc["rois"]) >= {"all"} and len(bc["rois"]) >= 2  # every ROI group of the encoder

    written = json.loads((true_dir / "metrics.json").read_text())
    per_item = written["brain_correlation"]["subjects"]["nsd/subj01"]["per_item"]["all"]
    assert len(per_item) == 12
    assert np.mean(per_item) == pytest.approx(row["value"])
    assert "brain_corr/all" in (true_dir / "report.html").read_text()


def test_the_transformer_encoder_is_the_default(encoder_run, tmp_path):
    from neurodecode.data import load_nsd

    sim, run = encoder_run
    ids = load_nsd(sim, 1, sessions=1, average_test_repeats=True).test.stimulus_ids[:6]
    out = _evaluate(_derivative(tmp_path / "d", sim, ids, ids), run, "--subject", "1", "--data", str(sim))
    row = out["brain_correlation"]["rois"]["all"]
    assert out["brain_correlation"]["model"] == "encoder"
    assert np.isfinite(row["value"]) and row["value"] == pytest.approx(row["seen"], abs=1e-9)


def test_ci_is_the_bootstrap_of_the_per_image_correlations():
    from neurodecode.metrics import brain_correlation
    from neurodecode.metrics._stats import bootstrap_ci

    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 9))
    feats = rng.standard_normal((11, 5))
    measured = feats @ W + rng.standard_normal((11, 9))
    res = brain_correlation(feats, measured, lambda x: x @ W, n_boot=300, seed=4)
    per = res["per_item"]["all"]
    assert res["rois"]["all"]["ci"] == pytest.approx(list(bootstrap_ci(per, 300, 4)))
    assert res["ci_over"] == "images"
    assert "ci" not in brain_correlation(feats, measured, lambda x: x @ W, n_boot=0)["rois"]["all"]


def test_misuse_is_refused(encoder_run, tmp_path):
    sim, run = encoder_run
    res = runner.invoke(app, ["evaluate", "--recons", str(tmp_path), "--truth", str(tmp_path), "--subject", "1"])
    assert res.exit_code != 0 and "--subject" in res.output
    res = runner.invoke(app, ["evaluate", "--recons", str(tmp_path), "--brain-correlation", str(tmp_path),
                              "--metrics", "pixcorr", "--truth", str(tmp_path)])
    assert res.exit_code != 0 and "brain-encoder run" in res.output
