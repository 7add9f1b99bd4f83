"""Brain-Diffuser ridge decoder: identification on a known linear problem, state round trip, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode._core.errors import MetadataMismatchError, NotFittedError, ShapeMismatchError, ValidationError
from neurodecode.models import LATENT_KEYS, decoder_class, load_decoder
from neurodecode.models.brain_diffuser import BrainDiffuser, BrainDiffuserConfig


def _linear_problem(config, n_train=70, n_test=20, k=6, noise=0.5, seed=0):
    """Stimuli with k hidden factors; every latent space and the voxels are linear in them (X = Z W + noise)."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((n_train + n_test, k))
    latents = {}
    for name, shape in config.target_shapes.items():
        t = int(np.prod(shape))
        z = s @ rng.standard_normal((k, t)) + 0.1 * rng.standard_normal((len(s), t))
        latents[name] = (z * rng.uniform(0.5, 3, t) + rng.uniform(-2, 2, t)).reshape((len(s), *shape))
    X = s @ rng.standard_normal((k, config.n_voxels)) + noise * rng.standard_normal((len(s), config.n_voxels))
    X = X * rng.uniform(0.5, 2.0, config.n_voxels) + 100.0  # raw-scale voxels: z-scoring matters
    train = {k_: v[:n_train] for k_, v in latents.items()}
    test = {k_: v[n_train:] for k_, v in latents.items()}
    return X[:n_train], train, X[n_train:], test


def _top1_identification(pred, true):
    """Fraction of test items whose prediction correlates best with their own latent (chance 1/n)."""
    p = pred.reshape(len(pred), -1)
    t = true.reshape(len(true), -1)
    p = (p - p.mean(1, keepdims=True)) / p.std(1, keepdims=True)
    t = (t - t.mean(1, keepdims=True)) / t.std(1, keepdims=True)
    corr = p @ t.T / p.shape[1]
    return float(np.mean(np.argmax(corr, 1) == np.arange(len(p))))


def test_identifies_test_items_above_shuffled_control():
    cfg = BrainDiffuserConfig.tiny()
    Xtr, Ytr, Xte, Yte = _linear_problem(cfg)
    model = BrainDiffuser(cfg).fit(Xtr, Ytr)
    latents = model.predict_latents(Xte, subject="nsd/subj01")
    assert set(latents) == set(cfg.target_shapes) and set(latents) <= set(LATENT_KEYS)
    shuffled = np.random.default_rng(1).permutation(len(Xte))
    for name, shape in cfg.target_shapes.items():
        assert latents[name].shape == (len(Xte), *shape)
        acc = _top1_identification(latents[name], Yte[name])
        control = _top1_identification(latents[name], Yte[name][shuffled])
        assert acc >= 0.8, (name, acc)
        assert control <= 0.3, (name, control)
    # re-standardised to the training latents' statistics, per feature (the paper's step)
    for name in cfg.target_shapes:
        flat = latents[name].reshape(len(Xte), -1)
        np.testing.assert_allclose(flat.mean(0), Ytr[name].reshape(len(Xtr), -1).mean(0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(flat.std(0), Ytr[name].reshape(len(Xtr), -1).std(0), rtol=1e-3)


def _reference_zscore(Xtr, Xte):
    """scripts/*_regression.py: raw betas / 300, then one z-score with the training mean and std (ddof=1)."""
    tr, te = Xtr / 300, Xte / 300
    mu, sd = np.mean(tr, axis=0), np.std(tr, axis=0, ddof=1)
    return (tr - mu) / sd, (te - mu) / sd


def test_matches_plain_ridge_on_zscored_voxels_with_fixed_alphas():
    from sklearn.linear_model import Ridge

    alphas = {"vae_latents": 50.0, "clip_image_tokens": 60.0, "clip_text_tokens": 100.0}
    cfg = BrainDiffuserConfig.tiny(alphas=alphas, cv=None, restandardize="none", dtype="float64")
    Xtr, Ytr, Xte, _ = _linear_problem(cfg, seed=2)
    model = BrainDiffuser(cfg).fit(Xtr, Ytr)
    mu, sd = Xtr.mean(0), Xtr.std(0, ddof=1)
    out = model.predict_latents(Xte)
    for name, a in alphas.items():
        sk = Ridge(alpha=a).fit((Xtr - mu) / sd, Ytr[name].reshape(len(Xtr), -1))
        np.testing.assert_allclose(out[name].reshape(len(Xte), -1), sk.predict((Xte - mu) / sd), atol=1e-8)
        assert np.all(model._buffer("alpha", name).numpy() == a)
    # "train" mode: in-sample predictions take exactly the training latents' mean and std
    ins = model.predict_latents(Xtr, restandardize="train")
    for name in alphas:
        np.testing.assert_allclose(ins[name].reshape(len(Xtr), -1).std(0), Ytr[name].reshape(len(Xtr), -1).std(0),
                                   rtol=1e-8)


def test_reference_pipeline_with_the_paper_alphas():
    """vdvae/clipvision/cliptext_regression.py end to end, written here from the reference: z-score (ddof 1),
    one sklearn Ridge per token group at 5e4 / 6e4 / 1e5, predictions re-standardised to the training latents."""
    from sklearn.linear_model import Ridge

    cfg = BrainDiffuserConfig.tiny(alphas={"vae_latents": 5e4, "clip_image_tokens": 6e4, "clip_text_tokens": 1e5},
                                   cv=None, dtype="float64")
    assert cfg.restandardize == "batch" and cfg.zscore_ddof == 1
    Xtr, Ytr, Xte, _ = _linear_problem(cfg, n_train=60, n_test=9, seed=5)
    ours = BrainDiffuser(cfg).fit(Xtr, Ytr).predict_latents(Xte)
    ztr, zte = _reference_zscore(Xtr, Xte)
    for name, alpha in (("vae_latents", 50000), ("clip_image_tokens", 60000), ("clip_text_tokens", 100000)):
        train = Ytr[name].reshape(len(Xtr), -1)
        pred = Ridge(alpha=alpha, fit_intercept=True).fit(ztr, train).predict(zte)
        std_norm = (pred - np.mean(pred, axis=0)) / np.std(pred, axis=0)
        expected = std_norm * np.std(train, axis=0) + np.mean(train, axis=0)
        np.testing.assert_allclose(ours[name].reshape(len(Xte), -1), expected, rtol=1e-6, atol=1e-8)
    # ddof matters at this size: the population std (ddof 0) gives another ridge solution
    raw = BrainDiffuser(BrainDiffuserConfig.tiny(alphas=cfg.alphas, cv=None, dtype="float64", zscore_ddof=0,
                                                 restandardize="none")).fit(Xtr, Ytr).predict_latents(Xte)
    ref = Ridge(alpha=50000).fit(ztr, Ytr["vae_latents"].reshape(len(Xtr), -1)).predict(zte)
    assert not np.allclose(raw["vae_latents"].reshape(len(Xte), -1), ref, rtol=1e-4)


def test_save_load_round_trip(tmp_path):
    cfg = BrainDiffuserConfig.tiny(subject="nsd/subj02")
    Xtr, Ytr, Xte, _ = _linear_problem(cfg, seed=3)
    model = BrainDiffuser(cfg).fit(Xtr, Ytr)
    model.save_pretrained(tmp_path / "bd")
    loaded = BrainDiffuser.from_pretrained(tmp_path / "bd")
    assert loaded.config == model.config and loaded.config.subject == "nsd/subj02"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    a, b = model.predict_latents(Xte), loaded.predict_latents(Xte)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert isinstance(load_decoder(tmp_path / "bd"), BrainDiffuser)
    assert decoder_class("brain_diffuser") is BrainDiffuser


def test_teaching_errors():
    cfg = BrainDiffuserConfig.tiny()
    Xtr, Ytr, Xte, _ = _linear_problem(cfg, seed=4)
    model = BrainDiffuser(cfg)
    with pytest.raises(NotFittedError, match="fit"):
        model.predict_latents(Xte)
    with pytest.raises(ShapeMismatchError, match=r"clip_text_tokens.*\(70, 3, 8\)"):
        model.fit(Xtr, {**Ytr, "clip_text_tokens": Ytr["clip_text_tokens"][:-1]})
    with pytest.raises(ValidationError, match="missing"):
        model.fit(Xtr, {k: v for k, v in Ytr.items() if k != "vae_latents"})
    bad = Xtr.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValidationError, match="finite"):
        model.fit(bad, Ytr)
    model.fit(Xtr, Ytr)
    with pytest.raises(ShapeMismatchError, match=r"37 voxels per trial for subject nsd/subj01.*30 voxels"):
        model.predict_latents(Xte[:, :30])
    with pytest.raises(MetadataMismatchError, match="subj01"):
        model.predict_latents(Xte, subject="nsd/subj05")
    with pytest.raises(ValidationError, match="restandardize='train'"):
        model.predict_latents(Xte[:1])
    assert model.predict_latents(Xte[:1], restandardize="train")["vae_latents"].shape == (1, 4, 4, 4)
    with pytest.raises(ValidationError, match="LATENT_KEYS"):
        BrainDiffuserConfig.tiny(target_shapes={"pixels": (3,)}, alphas={"pixels": 1.0})


def test_paper_config_is_the_published_setting():
    cfg = BrainDiffuserConfig()
    assert cfg.alphas == {"vae_latents": (5e4,), "clip_image_tokens": (6e4,), "clip_text_tokens": (1e5,)}
    assert cfg.target_shapes["clip_image_tokens"] == (257, 768)
    assert cfg.target_shapes["clip_text_tokens"] == (77, 768)
    assert cfg.target_shapes["vae_latents"] == (91168,)
    assert cfg.cv is None and cfg.restandardize == "batch"


def test_recipe_names_the_paper_settings_and_tiny_preset():
    from pathlib import Path

    from neurodecode._core.recipes import load_recipe

    path = Path(__file__).resolve().parents[1] / "pipelines" / "brain_diffuser_nsd.toml"
    recipe = load_recipe(path)
    data, gen = recipe["data"], recipe["generate"]
    assert (data["sessions"], data["beta_version"], data["average_train_repeats"]) == (37, "b3", True)
    assert (gen["generator"], gen["steps"], gen["guidance"]) == ("versatile", 50, 7.5)
    assert gen["options"] == {"scheduler": "ddim", "strength": 0.75, "text_weight": 0.4, "height": 512, "width": 512}
    assert recipe["decoder"]["name"] == "brain_diffuser" and recipe["decoder"]["alphas"] == {
        "vae_latents": [5e4], "clip_image_tokens": [6e4], "clip_text_tokens": [1e5]}
    assert recipe["latents"]["clip_image_tokens"] == {"space": "clip-vit-l-14-tokens", "normalize": "vd",
                                                      "batch_size": 64}
    # the paper's low-level target and stage 1 (VDVAE, 64 -> 512 px) and one z-score of raw betas / 300
    assert recipe["latents"]["vae_latents"]["space"] == "vdvae" and data["zscore"] == "none"
    assert (gen["lowlevel"], gen["lowlevel_options"]) == ("vdvae", {"size": 512})
    # the recipe's decoder table with the paper's sizes is the paper's configuration
    decoder = {k: v for k, v in recipe["decoder"].items() if k != "name"}
    assert BrainDiffuserConfig.from_dict(decoder) == BrainDiffuserConfig()
    tiny = load_recipe(path, preset="tiny")
    assert tiny["latents"]["vae_latents"]["space"] == "vdvae-tiny"
    decoder = {k: v for k, v in tiny["decoder"].items() if k not in ("name", "base")}
    assert BrainDiffuserConfig.tiny(**decoder) == BrainDiffuserConfig.tiny()
