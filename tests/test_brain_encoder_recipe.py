"""The brain-encoder recipe end to end at tiny size on simulated NSD: trains, reports per-ROI r^2 / NC in
metrics.json, saves the encoder (loadable), the ridge baseline and nilearn voxel maps; the StepLR schedule is the
reference's (lr x 0.1 every lr_drop epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "brain_encoder_nsd.toml"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from neurodecode.simulate import simulate_nsd

    out = tmp_path_factory.mktemp("sim-enc")
    simulate_nsd(out, subjects=(1,), n_sessions=1, n_shared=40, n_voxels=60, seed=0, n_stimuli=300)
    return out / "nsd"


@pytest.fixture(scope="module")
def run(tmp_path_factory, sim):
    from neurodecode.recipes import load_recipe, train_from_recipe

    out = tmp_path_factory.mktemp("run-enc")
    recipe = load_recipe(PIPELINE, preset="tiny")
    result = train_from_recipe(recipe, sim, out, device="cpu")
    return out, result


def test_recipe_trains_and_reports_per_roi_scores(run, sim):
    out, result = run
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics == pytest.approx(result.metrics, nan_ok=True)
    assert metrics["test/nsd/subj01/n_test"] >= 3
    for model in ("transformer", "ridge"):
        assert np.isfinite(metrics[f"test/nsd/subj01/{model}/all/r_mean"])
        assert np.isfinite(metrics[f"test/nsd/subj01/{model}/all/shuffled_r_mean"])
    prov = json.loads((out / "provenance.json").read_text())
    groups = prov["rois"]["nsd/subj01"]["groups"]
    assert len(groups) >= 1
    # every ROI group of the encoder has its scores (nc_r2 when the simulated tree has ncsnr files)
    key = "nc_r2_mean" if any(k.endswith("nc_r2_mean") for k in metrics) else "r_mean"
    for g in groups:
        assert f"test/nsd/subj01/transformer/{g}/{key}" in metrics
    voxel = np.load(out / "sub-01" / "voxel_scores.npz")
    assert voxel["transformer_r"].shape == voxel["ridge_r"].shape
    assert any((out / "sub-01").glob("*_transformer.png"))


def test_trained_encoder_loads_and_predicts_the_simulated_responses_better_than_chance(run, sim):
    from neurodecode.data import load_nsd, load_nsd_stimuli
    from neurodecode.latents import get_space
    from neurodecode.recipes._encoder import load_encoder

    out, _ = run
    enc, space_name, weights = load_encoder(out)
    assert space_name == "dinov2-base-q-tokens-tiny" and bool(enc.fitted)
    ridge, _, _ = load_encoder(out, model="ridge")
    trials = load_nsd(sim, 1, sessions=1, average_test_repeats=True)
    test = trials.test
    feats = get_space(space_name).encode_images(load_nsd_stimuli(sim, test.stimulus_ids))
    pred = ridge.predict(feats)
    r = [np.corrcoef(pred[:, v], test.X[:, v])[0, 1] for v in range(test.X.shape[1])]
    assert np.nanmean(r) > 0.05  # the ridge encoder explains held-out simulated responses
    assert enc.predict(feats).shape == test.X.shape


def test_step_lr_is_the_references_schedule():
    import torch

    from neurodecode.models.brain_encoder import TransformerBrainEncoder
    from neurodecode.recipes._encoder import train_encoder
    from neurodecode.train import TrainConfig

    model = TransformerBrainEncoder.tiny()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 9, 28)).astype(np.float32)
    Y = rng.standard_normal((32, 7)).astype(np.float32)
    cfg = TrainConfig(epochs=5, batch_size=8, lr=5e-4, weight_decay=1e-4, grad_clip=0.1, device="cpu",
                      log_every=1, checkpoint_every=None)
    res = train_encoder(model, X, Y, cfg, None, lr_drop=2, gamma=0.1)
    lrs = {round(h["epoch"], 6): h["lr"] for h in res.history if "lr" in h}
    spe = 4
    for step_epoch, lr in lrs.items():
        step = int(round(step_epoch * spe))
        assert lr == pytest.approx(5e-4 * 0.1 ** (step // (2 * spe)), rel=1e-6)
    assert bool(model.fitted) and torch.isfinite(model.readout.weight).all()


def test_reconstruct_identifies_among_training_images_only(run, sim, tmp_path):
    from PIL import Image

    from neurodecode.data import load_nsd, load_nsd_stimuli
    from neurodecode.recipes import load_recipe, reconstruct

    out, _ = run
    summary = reconstruct(load_recipe(PIPELINE, preset="tiny"), sim, 1, out, tmp_path / "recons", limit=3)
    assert summary["n_done"] == 3
    prov = json.loads((tmp_path / "recons" / "provenance.json").read_text())["runs"][-1]
    chosen = prov["generator"]["chosen_nsd_ids"]
    trials = load_nsd(sim, 1, sessions=1)
    assert set(chosen) <= set(trials.train.stimulus_ids.tolist())
    assert not set(chosen) & set(trials.test.stimulus_ids.tolist())  # never a test image
    pngs = sorted((tmp_path / "recons").rglob("*_recon.png"))
    written = {p.name.split("_stim-")[1].split("_")[0]: p for p in pngs}
    for label, item in prov["written"].items():
        img = np.asarray(Image.open(written[label]))
        np.testing.assert_array_equal(img, load_nsd_stimuli(sim, [item["nsd_id"]])[0])


def test_brain_correlation_of_a_derivative_ranks_true_images_above_shuffled(run, sim, tmp_path):
    """Reconstructions that ARE the seen images score their ceiling; the shuffled pairing scores less."""
    from neurodecode.data import load_nsd, load_nsd_stimuli
    from neurodecode.recipes._derivative import _png, output_paths
    from neurodecode.recipes._encoder import brain_correlation_of_reconstructions

    out, _ = run
    test = load_nsd(sim, 1, sessions=1, average_test_repeats=True).test
    ids = test.stimulus_ids[:12]
    for i, img in zip(ids, load_nsd_stimuli(sim, ids)):
        _png(output_paths(tmp_path / "perfect", "nsd/subj01", int(i), "x")["image"], img)
    res = brain_correlation_of_reconstructions(tmp_path / "perfect", out, sim, 1, model="ridge")
    assert res["n_items"] == 12 and res["protocol"] == "mindeye2"
    row = res["rois"]["all"]
    assert row["brain_corr"] == pytest.approx(row["seen"], abs=1e-6)  # the reconstructions are the seen images
    assert row["brain_corr"] > row["shuffled"]
    assert set(res["rois"]) >= {"all"} and len(res["per_item"]["all"]) == 12
