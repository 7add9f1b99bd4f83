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


def _info_nce_reference(logits):
    """Symmetric cross-entropy of a logit matrix whose diagonal holds the matches (Retrieval/loss.py)."""
    rows = np.log(np.exp(logits).sum(1)) - np.diag(logits)
    cols = np.log(np.exp(logits).sum(0)) - np.diag(logits)
    return 0.5 * (rows.mean() + cols.mean())


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_contrastive_loss_equals_the_reference_formula():
    """Raw scale 2.66 x UNnormalised EEG features @ L2-normalised targets, 0.99 image + 0.01 text."""
    model = ATM(ATMConfig.tiny(proj_dim=9))
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)  # 2.659, used as is
    rng = np.random.default_rng(0)
    E = 3.0 * rng.standard_normal((7, 9))  # norm ~9: not normalised, as after the reference's LayerNorm
    img, txt = rng.standard_normal((7, 9)), rng.standard_normal((7, 9))
    s = math.log(1 / 0.07)
    ref_img = _info_nce_reference(s * E @ _unit(img).T)
    ref_txt = _info_nce_reference(s * E @ _unit(txt).T)
    out = model.loss(*(torch.tensor(a, dtype=torch.float32) for a in (E, img, txt)))
    assert out["loss_image"].item() == pytest.approx(ref_img, rel=1e-5)
    assert out["loss_text"].item() == pytest.approx(ref_txt, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.99 * ref_img + 0.01 * ref_txt, rel=1e-5)
    # the scale is a raw learnable multiplier: no exp, no clamp
    with torch.no_grad():
        model.logit_scale.fill_(150.0)
    assert model.logit_multiplier().item() == 150.0


def test_generation_objective_equals_the_reference_formula():
    """Generation/ATMS_reconstruction.py: 10 x (0.9 x MSE(eeg, image) + 0.1 x InfoNCE(eeg, image)), no text."""
    model = ATM(ATMConfig.tiny(proj_dim=8, objective="generation"))
    rng = np.random.default_rng(1)
    E, img, txt = 0.5 * rng.standard_normal((7, 8)), rng.standard_normal((7, 8)), rng.standard_normal((7, 8))
    s = math.log(1 / 0.07)
    mse = np.mean((E - _unit(img)) ** 2)
    expected = 10 * (0.9 * mse + 0.1 * _info_nce_reference(s * E @ _unit(img).T))
    out = model.loss(*(torch.tensor(a, dtype=torch.float32) for a in (E, img, txt)))
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["loss_mse"].item() == pytest.approx(mse, rel=1e-5) and "loss_text" not in out


def test_clip_mode_option_and_legacy_configs(tmp_path):
    model = ATM(ATMConfig.tiny(proj_dim=4, logit_scale_mode="clip", logit_scale_init=math.log(2.0)))
    n, s = 4, 2.0
    eye = torch.eye(n)
    out = model.loss(3.0 * eye, eye)  # cosine logits: the embedding's norm does not matter
    assert out["loss"].item() == pytest.approx(math.log(1 + (n - 1) * math.exp(-s)), rel=1e-5)
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_multiplier().item() == pytest.approx(100.0)  # clamped
    # a config saved before logit_scale_mode existed: the CLIP form with the multiplier 1/0.07
    legacy = {**{k: v for k, v in ATMConfig.tiny().__dict__.items() if k != "logit_scale_mode"},
              "logit_scale_init": 1 / 0.07}
    cfg = ATMConfig.from_dict(legacy)
    assert cfg.logit_scale_mode == "clip" and cfg.logit_scale_init == pytest.approx(math.log(1 / 0.07))
    assert "log_logit_scale" in ATM(cfg).state_dict()
    with pytest.raises(ValidationError, match="logit_scale_mode"):
        ATMConfig.tiny(logit_scale_mode="exp")


def test_weight_decay_on_every_parameter_like_the_reference():
    model = ATM(ATMConfig.tiny(n_channels=7, n_times=9))
    groups = model.optimizer_param_groups(0.01)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01
    ids = {id(p) for p in groups[0]["params"]}
    assert ids == {id(p) for p in model.parameters()} and id(model.logit_scale) in ids
    from neurodecode.train._trainer import _param_groups  # what the trainer builds its optimizer from

    assert _param_groups(model, 0.01) == groups
    split = ATM(ATMConfig.tiny(n_channels=7, n_times=9, decay_all_parameters=False)).optimizer_param_groups(0.01)
    assert [g["weight_decay"] for g in split] == [0.01, 0.0]
    assert all(p.ndim < 2 for p in split[1]["params"])


def test_real_size_parameter_counts_match_the_reference():
    """Counts of the reference ATMS encoder's live modules (Retrieval/ATMS_retrieval.py), built on meta."""
    with torch.device("meta"):
        model = ATM(ATMConfig())

    def count(*mods):
        return sum(p.numel() for m in mods for p in m.parameters())

    # iTransformer: value embedding 250->250, one encoder layer (q/k/v 250->4x62, out 248->250,
    # conv feed-forward 250->256->250, two LayerNorms), final LayerNorm
    assert count(model.embed, model.encoder, model.encoder_norm) == 62_750 + 378_500 + 500
    # ShallowNet-style convs: 1x25 temporal, 2 BatchNorms, 63x1 spatial, 1x1 projection
    assert count(model.temporal, model.bn1, model.spatial, model.bn2, model.pointwise) == 103_680
    assert count(model.projector) == 2_527_232  # 1440->1024, residual 1024->1024, LayerNorm
    assert sum(p.numel() for p in model.parameters()) == 3_072_663


def test_training_step_backprops_into_logit_scale_and_subject_tokens():
    model = ATM(ATMConfig.tiny(n_channels=7, n_times=9, subject_tokens=True, subjects=["a", "b"]))
    batch = {"x": torch.randn(6, 7, 9), "image_embeds": torch.randn(6, 24), "text_embeds": torch.randn(6, 24),
             "subject": torch.tensor([1, 2, 1, 2, 0, 0])}
    out = model.training_step(batch, 0)
    out["loss"].backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
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


def test_prior_real_size_parameter_counts_match_the_reference():
    """DiffusionPriorUNet(cond_dim=1024, dropout=0.1) of Generation/diffusion_prior.py: 9,675,648 parameters."""
    with torch.device("meta"):
        prior = ATMDiffusionPrior(ATMPriorConfig())

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(prior.input_layer) == 1_051_648  # Linear 1024->1024 + LayerNorm
    # per-layer timestep MLPs (512 -> d -> d) and condition Linears (1024 -> d), d = 1024, 512, 256, 128
    assert count(prior.encode_time) == 2_379_520 and count(prior.encode_cond) == 1_968_000
    assert count(prior.encode_layers) == 699_200  # 1024->512->256->128->64, each with a LayerNorm
    assert count(prior.decode_time) == 841_600 and count(prior.decode_cond) == 984_000  # d = 64, 128, 256, 512
    assert count(prior.decode_layers) == 702_080 and count(prior.output_layer) == 1_049_600
    assert count(prior) == 9_675_648
    c = prior.config
    assert (c.dropout, c.cond_dropout, c.cond_dropout_mode, c.num_inference_steps, c.guidance_scale) == (
        0.1, 0.1, "batch", 50, 5.0)


def test_prior_timestep_features_and_schedule_match_diffusers():
    from diffusers import DDPMScheduler
    from diffusers.models.embeddings import get_timestep_embedding

    from neurodecode.models.atm import _timestep_embedding

    t = torch.tensor([0.0, 1.0, 17.0, 980.0, 999.0])
    ref = get_timestep_embedding(t, 512, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(_timestep_embedding(t, 512), ref, atol=1e-5, rtol=1e-5)
    sched = DDPMScheduler()  # the reference's Pipe uses the defaults
    sched.set_timesteps(50)
    prior = ATMDiffusionPrior(ATMPriorConfig.tiny(num_train_timesteps=1000, num_inference_steps=50))
    ts = prior.timesteps()
    assert ts.tolist() == sched.timesteps.tolist() and ts[:3].tolist() == [980, 960, 940] and ts[-1] == 0
    torch.testing.assert_close(prior.alphas_cumprod, sched.alphas_cumprod)


def test_prior_sampling_equals_the_reference_pipe_with_diffusers_ddpm():
    """Pipe.generate: noise from the generator, eps_u + 5 (eps_c - eps_u), DDPMScheduler.step (clipped x0)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(3)
    prior = ATMDiffusionPrior(ATMPriorConfig.tiny(num_inference_steps=10)).eval()
    cond = torch.from_numpy(np.random.default_rng(2).standard_normal((5, 20)).astype(np.float32))
    ours = prior.sample(cond.numpy(), seed=11)
    sched = DDPMScheduler(num_train_timesteps=100)
    sched.set_timesteps(10)
    gen = torch.Generator().manual_seed(11)
    h = torch.randn(5, 24, generator=gen)
    with torch.no_grad():
        for t in sched.timesteps:
            tt = torch.ones(5) * t
            e_c, e_u = prior(h, tt, cond), prior(h, tt)
            h = sched.step(e_u + 5.0 * (e_c - e_u), int(t), h, generator=gen).prev_sample
    np.testing.assert_allclose(ours, h.numpy(), atol=1e-4, rtol=1e-4)


def test_prior_ddpm_recovers_target_with_an_oracle_noise_predictor():
    target = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0]])
    for clip, expected in ((False, target), (True, target.clamp(-1, 1))):
        prior = ATMDiffusionPrior(ATMPriorConfig.tiny(embed_dim=5, cond_dim=3, clip_sample=clip))

        def oracle(x_t, t, cond=None, cond_mask=None, prior=prior):  # exact noise for the known x0
            ab = prior.alphas_cumprod[t.long()][:, None]
            return (x_t - ab.sqrt() * target) / (1 - ab).sqrt()

        prior.forward = oracle  # type: ignore[method-assign]
        out = prior.sample(np.zeros((2, 3)), guidance_scale=5.0, num_inference_steps=7)
        np.testing.assert_allclose(out, expected.expand(2, -1).numpy(), atol=1e-4)
    ddim = ATMDiffusionPrior(ATMPriorConfig.tiny(embed_dim=5, cond_dim=3, sampler="ddim"))
    ddim.forward = lambda x_t, t, cond=None, cond_mask=None: (  # type: ignore[method-assign]
        (x_t - ddim.alphas_cumprod[t.long()][:, None].sqrt() * target)
        / (1 - ddim.alphas_cumprod[t.long()][:, None]).sqrt())
    np.testing.assert_allclose(ddim.sample(np.zeros((2, 3)), num_inference_steps=7), target.expand(2, -1), atol=1e-4)


def test_prior_null_condition_is_no_condition_term():
    torch.manual_seed(4)
    prior = ATMDiffusionPrior(ATMPriorConfig.tiny(dropout=0.0)).eval()
    x, t, cond = torch.randn(3, 24), torch.tensor([5, 50, 99]), torch.randn(3, 20)
    null = prior(x, t, None)
    torch.testing.assert_close(prior(x, t, cond, torch.zeros(3)), null)
    with torch.no_grad():
        for lin in (*prior.encode_cond, *prior.decode_cond):
            lin.bias.normal_()  # a zero condition through the Linear would now differ from "no term"
    torch.testing.assert_close(prior(x, t, None), null)
    assert not torch.allclose(prior(x, t, torch.zeros(3, 20)), null)


def test_prior_training_drops_the_condition_for_the_whole_batch():
    torch.manual_seed(0)
    prior = ATMDiffusionPrior(ATMPriorConfig.tiny(cond_dropout=0.3))
    seen = []
    forward = prior.forward

    def spy(x_t, t, cond=None, cond_mask=None):
        seen.append((cond is None, cond_mask is None))
        return forward(x_t, t, cond, cond_mask)

    prior.forward = spy  # type: ignore[method-assign]
    batch = {"eeg_embeds": torch.randn(8, 20), "image_embeds": torch.randn(8, 24)}
    for step in range(300):
        loss = prior.training_step(batch, step)["loss"]
    assert all(no_mask for _, no_mask in seen)  # never a per-row mask: all rows or none
    frac = np.mean([dropped for dropped, _ in seen])
    assert 0.22 < frac < 0.38
    loss.backward()
    assert prior.encode_cond[0].weight.grad.abs().sum() > 0


def test_prior_training_target_is_l2_normalised():
    torch.manual_seed(1)
    prior = ATMDiffusionPrior(ATMPriorConfig.tiny(cond_dropout=0.0))
    img = torch.randn(7, 24) * 5
    batch = {"eeg_embeds": torch.randn(7, 20), "image_embeds": img}
    torch.manual_seed(2)
    a = prior.training_step(batch, 0)["loss"]
    torch.manual_seed(2)
    b = prior.training_step({**batch, "image_embeds": F.normalize(img, dim=-1)}, 0)["loss"]
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_prior_guidance_shapes_and_errors(tmp_path):
    torch.manual_seed(0)
    prior = ATMDiffusionPrior(ATMPriorConfig.tiny(embed_dim=6, cond_dim=4, input_width=10))
    cond = np.random.default_rng(0).standard_normal((3, 4))
    a, b = prior.sample(cond, guidance_scale=1.0), prior.sample(cond, guidance_scale=5.0)
    assert a.shape == (3, 6) and not np.allclose(a, b)
    np.testing.assert_allclose(prior.sample(cond, guidance_scale=1.0), a)  # seeded
    with pytest.raises(ShapeMismatchError, match=r"\(n, 4\)"):
        prior.sample(np.zeros((3, 5)))
    model = ATM(ATMConfig.tiny(n_channels=7, n_times=9, proj_dim=4))
    lat = model.predict_latents(np.zeros((2, 7, 9), np.float32), prior=prior)
    assert lat["clip_image_embeds"].shape == (2, 6)
    prior.save_pretrained(tmp_path / "prior")
    np.testing.assert_allclose(ATMDiffusionPrior.from_pretrained(tmp_path / "prior").sample(cond), prior.sample(cond),
                               atol=1e-6)
    old = json.loads((tmp_path / "prior" / "config.json").read_text())
    old["config"]["time_dim"] = 8  # a prior saved with the older MLP U-Net
    (tmp_path / "prior" / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValidationError, match="older MLP U-Net.*Retrain"):
        ATMDiffusionPrior.from_pretrained(tmp_path / "prior")


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
