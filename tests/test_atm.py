"""ATM (EEG/MEG -> CLIP image embedding) and its diffusion prior: shapes, fusion, losses, training, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurodecode._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from neurodecode.models.atm import (
    ATM,
    ATMConfig,
    ATMDiffusionPrior,
    ATMPriorConfig,
    fused_temporal_kernel,
    subject_splits,
)


@pytest.mark.parametrize(("n_channels", "n_times"), [(17, 9), (63, 250), (271, 200)])
def test_shapes_every_channel_layout(n_channels, n_times):
    model = ATM(ATMConfig.tiny(n_channels=n_channels, n_times=n_times))
    X = np.random.default_rng(0).standard_normal((3, n_channels, n_times)).astype(np.float32)
    emb = model.encode(X)
    assert emb.shape == (3, 24) and np.isfinite(emb).all()
    assert model.predict_latents(X)["clip_image_embeds"].shape == (3, 24)


@pytest.mark.parametrize(("n_channels", "n_times"), [(63, 250), (271, 200)])
def test_real_size_flatten_is_1440(n_channels, n_times):
    cfg = ATMConfig(n_channels=n_channels, n_times=n_times)
    assert cfg.n_conv_out == 36 and cfg.flat_dim == 1440
    model = ATM(cfg)
    assert model.encoder.attn.qkv.out_features == 3 * 248  # 4 heads x 62 dims (250 is not divisible by 4)
    emb = model.encode(np.zeros((2, n_channels, n_times), np.float32))
    assert emb.shape == (2, 1024)


def test_fused_kernel_equals_conv_then_pool():
    torch.manual_seed(0)
    w = torch.randn(5, 1, 1, 4)
    b = torch.randn(5)
    x = torch.randn(2, 1, 7, 41)
    ref = F.avg_pool2d(F.conv2d(x, w, b), (1, 6), (1, 3))
    fused = F.conv2d(x, fused_temporal_kernel(w, 6), b, stride=(1, 3))
    assert fused.shape == ref.shape == (2, 5, 7, 11)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    # known answer: kernel [1, 2] with a pool of 2 -> [0.5, 1.5, 1.0]
    k = fused_temporal_kernel(torch.tensor([1.0, 2.0]).view(1, 1, 1, 2), 2)
    assert k.flatten().tolist() == [0.5, 1.5, 1.0]


def test_fused_model_equals_unfused_model():
    """The fused GEMM conv stack equals the reference convs: eval and train mode, outputs, grads, BN stats."""
    torch.manual_seed(1)
    kw = dict(n_channels=7, n_times=9, dropout=0.0, conv_dropout=0.0, proj_dropout=0.0)
    fused = ATM(ATMConfig.tiny(**kw))
    plain = ATM(ATMConfig.tiny(**kw, fuse_temporal_pool=False))
    plain.load_state_dict(fused.state_dict())
    X = np.random.default_rng(1).standard_normal((4, 7, 9)).astype(np.float32)
    np.testing.assert_allclose(fused.encode(X), plain.encode(X), atol=1e-5)
    batch = {"x": torch.from_numpy(X), "image_embeds": torch.randn(4, 24)}
    for m in (fused, plain):
        m.train()
        m.training_step(batch, 0)["loss"].backward()
    torch.testing.assert_close(fused.temporal.weight.grad, plain.temporal.weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fused.spatial.weight.grad, plain.spatial.weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fused.bn1.running_var, plain.bn1.running_var, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fused.bn2.running_mean, plain.bn2.running_mean, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(fused.encode(X), plain.encode(X), atol=1e-5)


def test_loss_hand_checked():
    model = ATM(ATMConfig.tiny(proj_dim=4))
    n, s = 4, 2.0
    with torch.no_grad():
        model.log_logit_scale.fill_(math.log(s))
    eye = torch.eye(n)
    # matching orthonormal rows: each row's logits are s on the diagonal, 0 elsewhere
    expected_img = math.log(1 + (n - 1) * math.exp(-s))
    out = model.loss(eye, eye)
    assert out["loss"].item() == pytest.approx(expected_img, rel=1e-5)
    # text targets permuted with no fixed point: the true logit is 0, one wrong logit is s
    expected_txt = math.log(math.exp(s) + n - 1)
    out = model.loss(eye, eye, eye[[1, 2, 3, 0]])
    assert out["loss_text"].item() == pytest.approx(expected_txt, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.99 * expected_img + 0.01 * expected_txt, rel=1e-5)
    # the scale is clamped at 100
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_scale.item() == pytest.approx(100.0)


def test_training_step_backprops_into_logit_scale_and_subject_tokens():
    model = ATM(ATMConfig.tiny(n_channels=7, n_times=9, subject_tokens=True, subjects=["a", "b"]))
    batch = {"x": torch.randn(6, 7, 9), "image_embeds": torch.randn(6, 24), "text_embeds": torch.randn(6, 24),
             "subject": torch.tensor([1, 2, 1, 2, 0, 0])}
    out = model.training_step(batch, 0)
    out["loss"].backward()
    assert model.log_logit_scale.grad is not None and model.log_logit_scale.grad.abs() > 0
    assert model.subject_embed.weight.grad[1:].abs().sum() > 0
    # a subject id string (MultiSubjectBatches) works too
    assert torch.isfinite(model.training_step({**batch, "subject": "b"}, 1)["loss"])


def test_subject_tokens_change_embeddings():
    model = ATM(ATMConfig.tiny(n_channels=7, n_times=9, subject_tokens=True, subjects=["s1", "s2"]))
    X = np.random.default_rng(2).standard_normal((3, 7, 9)).astype(np.float32)
    e1, e2, e0 = model.encode(X, "s1"), model.encode(X, "s2"), model.encode(X)
    assert not np.allclose(e1, e2) and not np.allclose(e1, e0)
    np.testing.assert_allclose(model.encode(X, ["s1", "s2", "s1"])[1], e2[1], atol=1e-5)
    with pytest.raises(ValidationError, match="'s9'.*subject=None"):
        model.encode(X, "s9")


def test_bad_inputs_teach():
    names = [f"E{i}" for i in range(7)]
    model = ATM(ATMConfig.tiny(n_channels=7, n_times=9, sfreq=100.0, ch_names=names))
    X = np.zeros((2, 7, 9), np.float32)
    with pytest.raises(ShapeMismatchError, match="7 channels on axis 1"):
        model.encode(np.zeros((2, 8, 9), np.float32))
    with pytest.raises(MetadataMismatchError, match=r"missing: \['E6'\]; extra: \['Cz'\]"):
        model.encode(X, ch_names=names[:6] + ["Cz"])
    with pytest.raises(MetadataMismatchError, match="'E2' at position 1.*reorder_channels"):
        model.encode(X, ch_names=[names[0], names[2], names[1]] + names[3:])
    with pytest.raises(MetadataMismatchError, match="100 Hz.*got 250 Hz.*resample"):
        model.encode(X, sfreq=250)
    with pytest.raises(ShapeMismatchError, match=r"9 samples on axis 2 \(0.09 s at 100 Hz\)"):
        model.encode(np.zeros((2, 7, 10), np.float32))
    with pytest.raises(ValidationError, match="non-empty"):
        model.encode(np.zeros((0, 7, 9), np.float32))
    with pytest.raises(ValidationError, match="at least 2 trials"):
        model.training_step({"x": torch.zeros(1, 7, 9), "image_embeds": torch.zeros(1, 24)}, 0)
    assert model.encode(X, ch_names=names, sfreq=100.0).shape == (2, 24)


def test_subject_splits_within_and_loso():
    subs = np.array(["b", "a", "a", "b", "a", "b"])
    split = np.array(["train", "train", "test", "test", "train", "train"])
    within = subject_splits(subs, split, mode="within")
    assert [(s, tr.tolist(), te.tolist()) for s, tr, te in within] == [("a", [1, 4], [2]), ("b", [0, 5], [3])]
    loso = subject_splits(subs, split, mode="loso")
    assert [(s, tr.tolist(), te.tolist()) for s, tr, te in loso] == [("a", [0, 5], [2]), ("b", [1, 4], [3])]
    with pytest.raises(ValidationError, match="split"):
        subject_splits(subs, mode="within")
    with pytest.raises(ValidationError, match="two subjects"):
        subject_splits(["a", "a"], mode="loso")


def test_save_and_load_roundtrip(tmp_path):
    model = ATM(ATMConfig.tiny(n_channels=7, n_times=9, ch_names=[f"E{i}" for i in range(7)]))
    X = np.random.default_rng(3).standard_normal((3, 7, 9)).astype(np.float32)
    model.save_pretrained(tmp_path / "atm")
    loaded = ATM.from_pretrained(tmp_path / "atm")
    assert loaded.config.ch_names == model.config.ch_names
    np.testing.assert_allclose(loaded.encode(X), model.encode(X), atol=1e-6)


# --------------------------------------------------------------------------- input scaling


def _twins(**kw):
    """Two models with the same weights: one to be given input statistics, one left unscaled."""
    torch.manual_seed(5)
    cfg = ATMConfig.tiny(n_channels=7, n_times=9, **kw)
    plain, scaled = ATM(cfg), ATM(cfg)
    scaled.load_state_dict(plain.state_dict())
    return cfg, plain, scaled


def _zscore(X, mean, std):
    """The known answer, in float32 as the model computes it: ``(X - mean) / std`` per channel."""
    return (X - np.float32(mean)[:, None]) / np.float32(std)[:, None]


def test_input_scaling_on_raw_data_equals_the_unscaled_model_on_scaled_data(tmp_path):
    cfg, plain, scaled = _twins()
    rng = np.random.default_rng(4)
    mean, std = rng.normal(0.0, 3e-13, 7), rng.uniform(1e-13, 5e-13, 7)  # MEG-like, in tesla
    raw = (mean[:, None] + std[:, None] * rng.standard_normal((5, 7, 9))).astype(np.float32)
    assert scaled.set_input_scaling(mean, std) is scaled
    ref = plain.encode(_zscore(raw, mean, std))
    np.testing.assert_array_equal(scaled.encode(raw), ref)
    np.testing.assert_array_equal(scaled.predict_latents(raw)["clip_image_embeds"], ref)
    assert not np.allclose(plain.encode(raw), ref)  # raw tesla into an unscaled model: another answer
    # part of the checkpoint: a loaded model takes raw data too; the caller's config is left alone
    assert scaled.config.input_scaling and not cfg.input_scaling
    scaled.save_pretrained(tmp_path / "atm")
    loaded = ATM.from_pretrained(tmp_path / "atm")
    assert loaded.config.input_scaling
    np.testing.assert_array_equal(loaded.encode(raw), ref)
    # the training step sees the same scaled trials (same dropout draws under the same seed)
    targets = torch.randn(5, 24)
    losses = []
    for model, x in ((scaled, raw), (plain, _zscore(raw, mean, std))):
        model.train()
        torch.manual_seed(6)
        losses.append(model.training_step({"x": torch.from_numpy(x), "image_embeds": targets}, 0)["loss"].item())
    assert losses[0] == losses[1]


def test_input_scaling_rows_per_subject_token():
    _, plain, scaled = _twins(subject_tokens=True, subjects=["s1", "s2"])
    rng = np.random.default_rng(7)
    pooled, own = (rng.normal(size=7), rng.uniform(0.5, 2.0, 7)), (rng.normal(size=7), rng.uniform(0.5, 2.0, 7))
    scaled.set_input_scaling(*pooled)  # every row
    scaled.set_input_scaling(*own, subject="s2")  # then s2's own
    assert scaled.input_mean.shape == (3, 7)
    raw = (3.0 + 4.0 * rng.standard_normal((3, 7, 9))).astype(np.float32)
    np.testing.assert_array_equal(scaled.encode(raw, "s2"), plain.encode(_zscore(raw, *own), "s2"))
    np.testing.assert_array_equal(scaled.encode(raw, "s1"), plain.encode(_zscore(raw, *pooled), "s1"))
    np.testing.assert_array_equal(scaled.encode(raw), plain.encode(_zscore(raw, *pooled)))  # unknown subject
    mixed = scaled.encode(raw, ["s2", "s1", "s2"])
    np.testing.assert_allclose(mixed[[0, 2]], scaled.encode(raw, "s2")[[0, 2]], atol=1e-5)
    np.testing.assert_allclose(mixed[1], scaled.encode(raw, "s1")[1], atol=1e-5)


def test_checkpoint_saved_before_input_scaling_loads_as_identity(tmp_path):
    from neurodecode.io.checkpoints import load_state_dict

    _, plain, _ = _twins()
    plain.save_pretrained(tmp_path / "old")
    cfg_file = tmp_path / "old" / "config.json"
    info = json.loads(cfg_file.read_text())
    del info["config"]["input_scaling"]  # as written before the field existed
    cfg_file.write_text(json.dumps(info))
    assert not [k for k in load_state_dict(tmp_path / "old" / "model.safetensors") if k.startswith("input_")]
    old = ATM.from_pretrained(tmp_path / "old")  # strict loading
    X = np.random.default_rng(8).standard_normal((3, 7, 9)).astype(np.float32)
    np.testing.assert_array_equal(old.encode(X), plain.encode(X))
    assert not old.config.input_scaling and old.input_mean.abs().sum() == 0 and bool((old.input_std == 1).all())
    # it can be given statistics later, and then saves them
    old.set_input_scaling(np.full(7, 2.0), np.full(7, 0.5)).save_pretrained(tmp_path / "new")
    np.testing.assert_array_equal(ATM.from_pretrained(tmp_path / "new").encode(X), plain.encode((X - 2) / 0.5))
    # strict loading is kept: a config that promises statistics the weights lack is refused
    info["config"]["input_scaling"] = True
    cfg_file.write_text(json.dumps(info))
    with pytest.raises(MetadataMismatchError, match="missing key.*input_mean"):
        ATM.from_pretrained(tmp_path / "old")


def test_set_input_scaling_errors_teach():
    _, _, model = _twins()
    zeros, ones = np.zeros(7), np.ones(7)
    with pytest.raises(ShapeMismatchError, match=r"mean: expected one value per channel, shape \(7,\).*X.mean"):
        model.set_input_scaling(np.zeros(9), ones)
    with pytest.raises(ShapeMismatchError, match=r"std: expected one value per channel, shape \(7,\)"):
        model.set_input_scaling(zeros, np.ones((7, 1)))
    with pytest.raises(ValidationError, match="mean: expected only finite values"):
        model.set_input_scaling(np.r_[np.nan, zeros[1:]], ones)
    with pytest.raises(ValidationError, match=r"std: expected positive values.*channel\(s\) \[2, 4\].*Use 1"):
        model.set_input_scaling(zeros, [1.0, 1.0, 0.0, 1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValidationError, match="subject: expected None.*no subject tokens.*subject=None"):
        model.set_input_scaling(zeros, ones, subject="s1")
    _, _, tokens = _twins(subject_tokens=True, subjects=["s1"])
    with pytest.raises(ValidationError, match="'s9'"):
        tokens.set_input_scaling(zeros, ones, subject="s9")
    assert not model.config.input_scaling and bool((model.input_std == 1).all())  # refused calls change nothing


# --------------------------------------------------------------------------- diffusion prior


def test_prior_ddim_recovers_target_with_an_oracle_noise_predictor():
    prior = ATMDiffusionPrior(ATMPriorConfig.tiny(embed_dim=5, cond_dim=3))
    target = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0]])

    def oracle(x_t, t, cond):  # exact noise for the known x0
        ab = prior.alphas_cumprod[t][:, None]
        return (x_t - ab.sqrt() * target) / (1 - ab).sqrt()

    prior.forward = oracle  # type: ignore[method-assign]
    out = prior.sample(np.zeros((2, 3)), guidance_scale=5.0, num_inference_steps=7)
    np.testing.assert_allclose(out, target.expand(2, -1).numpy(), atol=1e-4)


def test_prior_training_and_guidance():
    torch.manual_seed(0)
    cfg = ATMPriorConfig.tiny(embed_dim=6, cond_dim=4, cond_dropout=0.5)
    prior = ATMDiffusionPrior(cfg)
    batch = {"eeg_embeds": torch.randn(8, 4), "image_embeds": torch.randn(8, 6)}
    loss = prior.training_step(batch, 0)["loss"]
    loss.backward()
    assert loss.item() > 0 and prior.cond_mlp[0].weight.grad.abs().sum() > 0
    cond = np.random.default_rng(0).standard_normal((3, 4))
    a, b = prior.sample(cond, guidance_scale=1.0), prior.sample(cond, guidance_scale=5.0)
    assert a.shape == (3, 6) and not np.allclose(a, b)
    np.testing.assert_allclose(prior.sample(cond, guidance_scale=1.0), a)  # seeded
    with pytest.raises(ShapeMismatchError, match=r"\(n, 4\)"):
        prior.sample(np.zeros((3, 5)))
    model = ATM(ATMConfig.tiny(n_channels=7, n_times=9, proj_dim=4))
    lat = model.predict_latents(np.zeros((2, 7, 9), np.float32), prior=prior)
    assert lat["clip_image_embeds"].shape == (2, 6)


@pytest.mark.parametrize(("recipe", "n_channels", "n_times"), [("atm_things_eeg2", 63, 250), ("atm_things_meg", 271, 200)])
def test_recipes_build_the_models(recipe, n_channels, n_times):
    from pathlib import Path

    from neurodecode._core.recipes import load_recipe
    from neurodecode.train import TrainConfig

    path = Path(__file__).parents[1] / "pipelines" / f"{recipe}.toml"
    real = load_recipe(path)
    cfg = ATMConfig.from_dict(real["decoder"])
    assert (cfg.n_channels, cfg.n_times, cfg.flat_dim, cfg.proj_dim) == (n_channels, n_times, 1440, 1024)
    train = TrainConfig.from_dict(real["train"])
    assert (train.lr, train.epochs, train.batch_size, train.optimizer) == (3e-4, 40, 64, "adamw")
    tiny = load_recipe(path, preset="tiny")
    model = ATM(ATMConfig.from_dict(tiny["decoder"]))
    prior = ATMDiffusionPrior(ATMPriorConfig.from_dict(tiny["decoder"]["prior"]))
    emb = model.encode(np.zeros((2, n_channels, n_times), np.float32))
    assert prior.sample(emb).shape == (2, 24)
