"""MEGBrainModule (Benchetrit et al. 2024): loss, input preparation, subject layers, sizes, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_formulas import log_softmax

from neurodecode._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from neurodecode.models.meg_brain_module import MEGBrainModule, MEGBrainModuleConfig, robust_channel_statistics


def _clip_mse_reference(clip, mse, target, scale, lam, symmetric):
    """lambda * InfoNCE(cosine * scale, MEG -> image [and back]) + (1 - lambda) * mean squared error, float64."""
    c = np.asarray(clip, np.float64)
    t = np.asarray(target, np.float64)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    logits = scale * cn @ tn.T
    n = len(c)
    ce = -np.mean([log_softmax(logits)[i, i] for i in range(n)])
    if symmetric:
        ce = 0.5 * (ce - np.mean([log_softmax(logits.T)[i, i] for i in range(n)]))
    m = np.mean((np.asarray(mse, np.float64) - t) ** 2)
    return lam * ce + (1 - lam) * m, ce, m


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.25, 1.0])
def test_loss_matches_reference_formula(symmetric, lam):
    torch.manual_seed(0)
    model = MEGBrainModule(MEGBrainModuleConfig.tiny(clip_weight=lam, clip_symmetric=symmetric))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(9.0))
    out = {"clip": torch.randn(7, 24), "mse": torch.randn(7, 24)}
    target = torch.randn(7, 24)
    got = model.loss(out, target)
    want, ce, m = _clip_mse_reference(out["clip"], out["mse"], target, 9.0, lam, symmetric)
    assert float(got["loss"].detach()) == pytest.approx(want, rel=1e-5)
    assert float(got["loss_clip"]) == pytest.approx(ce, rel=1e-5)
    assert float(got["loss_mse"]) == pytest.approx(m, rel=1e-5)
    assert float(got["temperature"]) == pytest.approx(9.0, rel=1e-6)


def test_temperature_is_clamped_at_100_and_learnable():
    model = MEGBrainModule(MEGBrainModuleConfig.tiny())
    assert float(model.temperature_multiplier().detach()) == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.temperature_multiplier().detach()) == pytest.approx(100.0, rel=1e-6)
    model.logit_scale.data.fill_(1.0)
    loss = model.loss({"clip": torch.randn(4, 24), "mse": torch.randn(4, 24)}, torch.randn(4, 24))["loss"]
    loss.backward()
    assert model.logit_scale.grad is not None and float(model.logit_scale.grad) != 0.0


def test_input_preparation_baseline_robust_scaling_clamp():
    rng = np.random.default_rng(0)
    cfg = MEGBrainModuleConfig.tiny(n_channels=7, n_times=9, baseline_samples=3, clamp=2.0, subjects=["a", "b"])
    model = MEGBrainModule(cfg)
    X = rng.normal(3e-13, 2e-13, (8, 7, 9))
    center, scale = robust_channel_statistics(X, 3)
    # independent statistics: per channel over trials and time after the baseline
    xb = X - X[:, :, :3].mean(2, keepdims=True)
    for ch in range(7):
        v = xb[:, ch].ravel()
        assert center[ch] == pytest.approx(np.median(v), rel=1e-9)
        assert scale[ch] == pytest.approx(np.quantile(v, 0.75) - np.quantile(v, 0.25), rel=1e-9)
    model.set_input_scaling(center * 0, scale * 0 + 1)  # pooled row
    model.set_input_scaling(center, scale, subject="b")
    idx = torch.tensor([1] * 8)
    got = model.prepare(torch.tensor(X, dtype=torch.float64).float(), idx).double().numpy()
    want = np.clip((xb - center[None, :, None]) / scale[None, :, None], -2.0, 2.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(want).max() == 2.0  # the clamp is exercised
    pooled = model.prepare(torch.tensor(X).float(), torch.full((8,), -1)).numpy()
    np.testing.assert_allclose(pooled, np.clip(xb, -2, 2), rtol=1e-4, atol=1e-18)


def test_unknown_subject_uses_mean_subject_layer():
    torch.manual_seed(0)
    cfg = MEGBrainModuleConfig.tiny(n_channels=7, n_times=9, baseline_samples=0, subjects=["a", "b", "c"])
    model = MEGBrainModule(cfg).eval()
    single = MEGBrainModule(MEGBrainModuleConfig.tiny(n_channels=7, n_times=9, baseline_samples=0,
                                                      subjects=["m"])).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("subject_layers")}
    single.load_state_dict({**state, "subject_layers.weights": model.subject_layers.weights.mean(0, keepdim=True)},
                           strict=False)
    x = torch.randn(5, 7, 9)
    with torch.no_grad():
        unknown = model(x)["clip"]
        mean_subject = single(x, torch.zeros(5, dtype=torch.long))["clip"]
        per = model(x, torch.tensor([0, 1, 2, 0, 1]))["clip"]
        alone = model(x[1:2], torch.tensor([1]))["clip"]
    torch.testing.assert_close(unknown, mean_subject, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(per[1:2], alone, rtol=1e-4, atol=1e-5)  # eval: a trial does not see the others
    assert not torch.allclose(per[0], unknown[0])
    with pytest.raises(ValidationError, match="subject"):
        model.subject_index("zz", 1)


def test_paper_size_parameter_count_on_meta_device():
    """Count from the architecture (spatial heads, 1x1 convs, 4 subject layers, conv stack, aggregation, heads)."""
    with torch.device("meta"):
        model = MEGBrainModule(MEGBrainModuleConfig(positions=np.random.default_rng(0).random((271, 2)).tolist(),
                                                    subjects=["1", "2", "3", "4"], latent_dim=768))
    spatial = 270 * 2048
    initial = 270 * 270 + 270
    subjects = 4 * 270 * 270
    stack = (270 * 320 * 3 + 320) + 9 * (320 * 320 * 3 + 320) + 10 * 2 * 320 + 5 * (320 * 640 * 3 + 640)
    final = 320 * 2048 + 2048
    affine = 180 + 1
    heads = 2 * (2 * 2048 + 2048 * 768 + 768)
    want = spatial + initial + subjects + stack + final + affine + heads + 1
    assert sum(p.numel() for p in model.parameters()) == want


def test_forward_shapes_and_shifting_window_training():
    torch.manual_seed(0)
    model = MEGBrainModule(MEGBrainModuleConfig.tiny(n_channels=7, n_times=9, baseline_samples=0, subjects=["a"]))
    out = model.training_step({"x": torch.randn(4, 7, 15), "image_embeds": torch.randn(4, 24),
                               "subject": torch.zeros(4, dtype=torch.long)}, 0)
    assert torch.isfinite(out["loss"])
    with pytest.raises(ShapeMismatchError, match="9 samples"):
        model.encode(np.zeros((2, 7, 15), np.float32))
    with pytest.raises(ValidationError, match="at least 2"):
        model.training_step({"x": torch.randn(1, 7, 9), "image_embeds": torch.randn(1, 24)}, 0)


def test_check_input_channels_and_rate():
    names = [f"C{i}" for i in range(7)]
    model = MEGBrainModule(MEGBrainModuleConfig.tiny(n_channels=7, n_times=9, baseline_samples=0, ch_names=names,
                                                     positions=np.random.default_rng(0).random((7, 2)).tolist()))
    X = np.zeros((2, 7, 9), np.float32)
    with pytest.raises(MetadataMismatchError, match="sfreq"):
        model.encode(X, sfreq=100.0)
    with pytest.raises(MetadataMismatchError, match="ch_names"):
        model.encode(X, ch_names=names[::-1])
    assert model.encode(X, ch_names=names, sfreq=40.0).shape == (2, 24)


def test_positions_from_ctf_layout_and_nan_channel():
    names = ["MLC11-1609", "MRO11-1609", "MZC01-1609", "MLT11-1609", "UPPT001"]
    model = MEGBrainModule(MEGBrainModuleConfig.tiny(n_channels=5, n_times=9, baseline_samples=0, ch_names=names,
                                                     layout="CTF-275"))
    assert torch.isnan(model.positions[4]).all() and torch.isfinite(model.positions[:4]).all()
    w = model.spatial.weights(model.positions)
    assert torch.all(w[:, 4] == 0)  # the channel without a position is never attended


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MEGBrainModule(MEGBrainModuleConfig.tiny(n_channels=7, n_times=9, baseline_samples=2,
                                                     subjects=["a", "b"])).eval()
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1e-12, (5, 7, 9)).astype(np.float32)
    model.set_input_scaling(*robust_channel_statistics(X, 2))
    before = model.encode(X, "b", head="both")
    model.save_pretrained(tmp_path / "m")
    loaded = MEGBrainModule.from_pretrained(tmp_path / "m")
    after = loaded.encode(X, "b", head="both")
    for k in ("clip", "mse"):
        np.testing.assert_allclose(after[k], before[k], rtol=1e-5, atol=1e-6)
    assert loaded.config.input_scaling and loaded.config.subjects == ["a", "b"]
    lat = loaded.predict_latents(X, "a")
    assert list(lat) == ["clip_image_embeds"] and lat["clip_image_embeds"].shape == (5, 24)
    from neurodecode.models import load_decoder

    assert type(load_decoder(tmp_path / "m")).__name__ == "MEGBrainModule"


def test_learns_a_toy_mapping_through_every_block():
    """Targets are a fixed linear read-out of each trial's spatial pattern: a few Adam steps must make the
    training windows retrieve their own target far above chance (a broken gradient path would not)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = MEGBrainModuleConfig.tiny(n_channels=9, n_times=8, baseline_samples=0, subjects=["a", "b"],
                                    spatial_dropout=0.0, clip_weight=1.0)
    model = MEGBrainModule(cfg)
    n = 16
    patterns = rng.normal(size=(n, 9))
    X = (patterns[:, :, None] * np.hanning(8)[None, None] + 0.05 * rng.normal(size=(n, 9, 8))).astype(np.float32)
    Y = (patterns @ rng.normal(size=(9, 24))).astype(np.float32)
    subj = torch.tensor([0, 1] * (n // 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(80):
        out = model.training_step({"x": torch.from_numpy(X), "image_embeds": torch.from_numpy(Y), "subject": subj}, step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    emb = model.encode(X, ["a", "b"] * (n // 2))
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    top1 = float(np.mean((e @ y.T).argmax(1) == np.arange(n)))
    assert top1 >= 0.5, top1  # chance 1/16
