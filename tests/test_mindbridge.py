"""MindBridge: real-size shapes and counts, each loss term, reset-tuning, save/load, cross-subject learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_formulas import soft_clip, unit_rows

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.models.losses import soft_clip_loss
from neurodecode.models.mindbridge import MindBridge, MindBridgeConfig, vd_normalize
from neurodecode.train import MultiSubjectBatches, TrainConfig, Trainer


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_real_size_shapes_and_parameter_counts_on_meta():
    with torch.device("meta"):
        model = MindBridge()
        out = model(torch.empty(2, 15724), "nsd/subj01")
    assert model.subjects == ["nsd/subj01", "nsd/subj02", "nsd/subj05", "nsd/subj07"]
    assert out["image_tokens"].shape == (2, 257, 768) and out["text_tokens"].shape == (2, 77, 768)
    # reference (src/models.py, h=2048, in_dim=pool_num=8192): embedder = Adapter_Layer(8192, 128),
    # Linear(8192, 2048), LayerNorm(2048); builder = Linear(2048, 8192), LayerNorm(8192), Adapter_Layer(8192, 128)
    adapter = 8192 * 128 + 128 + 128 * 8192 + 8192
    assert _count(model.embedders["nsd/subj05"]) == adapter + 8192 * 2048 + 2048 + 2 * 2048 == 18_888_832
    assert _count(model.builders["nsd/subj05"]) == 18_907_264  # shared/specs/reference-details.md
    assert _count(model.image_head) + _count(model.text_head) == 2049 * (257 + 77) * 768
    assert _count(model.translator) == 4 * (2048 * 2048 + 2048 + 2 * 2048)
    assert _count(model) == 693_579_264  # 4 subjects, the spec's reference total


def test_defaults_are_the_reference_settings():
    c = MindBridgeConfig()
    # trainer.py / utils.py / train_bridge.sh: soft_clip_loss temp 0.005, mse_mult 1e4, rec_mult 1, cyc_mult 1,
    # pool max 8192, h 2048, 4 blocks, adapter bottleneck 128
    assert (c.clip_temperature, c.mse_weight, c.recon_weight, c.cycle_weight, c.text_weight) == (0.005, 1e4, 1, 1, 1)
    assert (c.pool, c.pooled, c.width, c.n_blocks, c.bottleneck) == ("max", 8192, 2048, 4, 128)
    assert (c.embed_dropout, c.block_dropout) == (0.5, 0.15)


def test_vd_normalize_divides_by_reference_token_norm():
    t = torch.tensor([[[3.0, 4.0], [6.0, 8.0]]])
    torch.testing.assert_close(vd_normalize(t), torch.tensor([[[0.6, 0.8], [1.2, 1.6]]]))
    torch.testing.assert_close(vd_normalize(t, torch.tensor([1])), torch.tensor([[[0.3, 0.4], [0.6, 0.8]]]))


def _tiny(**kw):
    torch.manual_seed(0)
    return MindBridge(MindBridgeConfig.tiny({"nsd/subj01": 9, "nsd/subj02": 11}, **kw))


# -- the reference forward pass, written from src/models.py with plain tensor operations ------------------
def _layer_norm(y, ln):
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + 1e-5)
    return y * ln.weight + ln.bias


def _gelu(y):
    return 0.5 * y * (1 + torch.erf(y / 2 ** 0.5))


def _adapter(y, a):  # Adapter_Layer: y + up_proj(ReLU(down_proj(y)))
    return y + torch.clamp(y @ a.down.weight.T + a.down.bias, min=0) @ a.up.weight.T + a.up.bias


def _ref_embed(model, subject, pooled):  # Adapter, Linear, LayerNorm, GELU (dropout off)
    e = model.embedders[subject]
    return _gelu(_layer_norm(_adapter(pooled, e.adapter) @ e.proj.weight.T + e.proj.bias, e.norm))


def _ref_build(model, subject, h):  # Linear, LayerNorm, GELU, Adapter
    b = model.builders[subject]
    return _adapter(_gelu(_layer_norm(h @ b.proj.weight.T + b.proj.bias, b.norm)), b.adapter)


def _ref_heads(model, h):  # ResMLP: x = block(x) + x with block = Linear, LayerNorm, GELU, Dropout
    for block in model.translator:
        lin, ln = block.net[0], block.net[1]
        h = _gelu(_layer_norm(h @ lin.weight.T + lin.bias, ln)) + h
    return h @ model.image_head.weight.T + model.image_head.bias, h @ model.text_head.weight.T + model.text_head.bias


def test_training_step_equals_the_reference_losses_on_fixed_inputs():
    """trainer.py train_step + models.py MindBridge.forward: one SoftCLIP (T 0.005) + 1e4 x MSE over the
    flattened, L2-normalised vectors of the concatenated batch, reconstruction MSE, one cycle pair."""
    sizes = {"nsd/subj01": 9, "nsd/subj02": 11, "nsd/subj05": 13}
    torch.manual_seed(0)
    model = MindBridge(MindBridgeConfig.tiny(sizes, embed_dropout=0.0, block_dropout=0.0, mse_weight=1e4,
                                             clip_temperature=0.005)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the zero-initialised adapters are identities at init: perturb so every path counts
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    parts = [{"subject": s, "x": torch.randn(4, n, generator=g), "image_tokens": torch.randn(4, 3, 8, generator=g)}
             for s, n in sizes.items()]
    parts[0]["text_tokens"] = torch.randn(4, 2, 8, generator=g)
    parts[2]["text_tokens"] = torch.randn(4, 2, 8, generator=g)
    out = model.training_step({"parts": parts}, 0)

    with torch.no_grad():
        pooled = {p["subject"]: torch.nn.functional.adaptive_max_pool1d(p["x"][:, None], 16)[:, 0] for p in parts}
        emb = {s: _ref_embed(model, s, pooled[s]) for s in sizes}
        img, txt = _ref_heads(model, torch.cat([emb[s] for s in sizes]))
        img_t = torch.cat([p["image_tokens"] for p in parts])
        pi, ti = unit_rows(img.numpy()), unit_rows(img_t.numpy())
        rows = np.r_[0:4, 8:12]  # the parts with captions
        pt = unit_rows(txt.numpy()[rows])
        tt = unit_rows(torch.cat([parts[0]["text_tokens"], parts[2]["text_tokens"]]).numpy())
        recon = torch.cat([_ref_build(model, s, emb[s]) for s in sizes])
        expected = {"clip_image": soft_clip(pi, ti, 0.005), "mse_image": np.mean((pi - ti) ** 2),
                    "clip_text": soft_clip(pt, tt, 0.005), "mse_text": np.mean((pt - tt) ** 2),
                    "recon": float(torch.mean((recon - torch.cat(list(pooled.values()))) ** 2))}
        cycles = {(a, b): float(torch.mean((_ref_embed(model, b, _ref_build(model, b, emb[a])) - emb[a]) ** 2))
                  for a in sizes for b in sizes if a != b}
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, rel=1e-4, abs=1e-7), key
    assert any(out["cycle"].item() == pytest.approx(v, rel=1e-4) for v in cycles.values())
    total = (expected["clip_image"] + 1e4 * expected["mse_image"] + expected["clip_text"] + 1e4 * expected["mse_text"]
             + expected["recon"] + out["cycle"].item())
    assert out["loss"].item() == pytest.approx(total, rel=1e-4)


def test_cycle_loss_runs_source_to_new_subject_when_reset_tuning_and_is_not_detached():
    model = _tiny(embed_dropout=0.0, block_dropout=0.0).eval()
    model.reset_tune("nsd/subj07", 7)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    new = {"subject": "nsd/subj07", "x": torch.randn(5, 7, generator=g), "image_tokens": torch.randn(5, 3, 8, generator=g)}
    src = {"subject": "nsd/subj02", "x": torch.randn(5, 11, generator=g), "image_tokens": torch.randn(5, 3, 8, generator=g)}
    for order in ([new, src], [src, new]):
        out = model.training_step({"parts": order}, 0)
        with torch.no_grad():
            e_src = _ref_embed(model, "nsd/subj02", torch.nn.functional.adaptive_max_pool1d(src["x"][:, None], 16)[:, 0])
            back = _ref_embed(model, "nsd/subj07", _ref_build(model, "nsd/subj07", e_src))
        assert out["cycle"].item() == pytest.approx(float(torch.mean((back - e_src) ** 2)), rel=1e-4)
    # models.py: loss_cyc = MSELoss(x_a, x_b), x_a not detached: the gradient on x_a has both terms
    e = torch.randn(5, 12, requires_grad=True)
    model.cycle_loss(e, "nsd/subj07").backward()
    e2 = e.detach().clone().requires_grad_(True)
    torch.mean((_ref_embed(model, "nsd/subj07", _ref_build(model, "nsd/subj07", e2)) - e2) ** 2).backward()
    torch.testing.assert_close(e.grad, e2.grad)


def test_predict_latents_divides_by_the_norm_of_token_zero():
    model = _tiny()
    x = np.random.default_rng(3).standard_normal((4, 9)).astype(np.float32)
    out = model.predict_latents(x, "nsd/subj01")
    with torch.no_grad():
        raw = model.eval()(torch.from_numpy(x), "nsd/subj01")
    for key, name in (("image_tokens", "clip_image_tokens"), ("text_tokens", "clip_text_tokens")):
        r = raw[key].numpy()
        np.testing.assert_allclose(out[name], r / (np.linalg.norm(r[:, 0], axis=-1)[:, None, None] + 1e-6), rtol=1e-5)
    model.config.renormalize_outputs = False
    np.testing.assert_allclose(model.predict_latents(x, "nsd/subj01")["clip_image_tokens"], raw["image_tokens"].numpy(),
                               rtol=1e-6)


def test_soft_clip_known_answer_for_perfect_orthogonal_match():
    eye = torch.eye(3)
    # targets orthonormal: soft labels = softmax(I / 0.125) rows; brain == target gives the entropy of that row
    row = torch.softmax(torch.eye(3)[0] / 0.125, 0)
    expected = -(row * row.log()).sum()
    torch.testing.assert_close(soft_clip_loss(eye, eye), expected)


def test_reset_tuning_freezes_all_but_new_subject():
    model = _tiny()
    trainable = model.reset_tune("nsd/subj07", 13)
    assert trainable and all(n.startswith(("embedders.adapters.nsd__subj07.", "builders.adapters.nsd__subj07."))
                             for n in trainable)
    n_new = _count(model.embedders["nsd/subj07"]) + _count(model.builders["nsd/subj07"])
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == n_new
    assert model.config.subjects["nsd/subj07"] == 13
    with pytest.raises(ValidationError, match="n_voxels"):
        _tiny().reset_tune("nsd/subj08")


def test_save_load_round_trip_and_predict_latents(tmp_path):
    model = _tiny()
    model.add_subject("nsd/subj05", 7)
    x = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32)
    before = model.predict_latents(x, "nsd/subj05")
    assert before["clip_image_tokens"].shape == (4, 3, 8) and before["clip_text_tokens"].shape == (4, 2, 8)
    model.save_pretrained(tmp_path)
    loaded = MindBridge.from_pretrained(tmp_path)
    assert loaded.subjects == ["nsd/subj01", "nsd/subj02", "nsd/subj05"]
    np.testing.assert_array_equal(loaded.predict_latents(x, "nsd/subj05")["clip_image_tokens"],
                                  before["clip_image_tokens"])
    with pytest.raises(ShapeMismatchError, match="nsd/subj05"):
        loaded.predict_latents(np.zeros((2, 9), np.float32), "nsd/subj05")


# -- simulated cross-subject problem ------------------------------------------------------------------
def simulate(seed=0, n=140, d=6, sizes=None, noise=0.3):
    """Shared latents z; targets and each subject's voxels are random linear maps of z, plus noise."""
    sizes = sizes or {"nsd/subj01": 9, "nsd/subj02": 11, "nsd/subj05": 40}
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d)).astype(np.float32)
    img = (z @ rng.standard_normal((d, 24)).astype(np.float32) / np.sqrt(d)).reshape(n, 3, 8)
    txt = (z @ rng.standard_normal((d, 16)).astype(np.float32) / np.sqrt(d)).reshape(n, 2, 8)
    xs = {s: (z @ rng.standard_normal((d, p)) + noise * rng.standard_normal((n, p))).astype(np.float32)
          for s, p in sizes.items()}
    return xs, img, txt


def identification(pred, target):
    """Fraction of items whose prediction correlates best with their own target."""
    p, t = pred.reshape(len(pred), -1), target.reshape(len(target), -1)
    p = (p - p.mean(1, keepdims=True)) / p.std(1, keepdims=True)
    t = (t - t.mean(1, keepdims=True)) / t.std(1, keepdims=True)
    return float(((p @ t.T).argmax(1) == np.arange(len(p))).mean())


def test_cross_subject_training_identifies_held_out_items_for_every_subject():
    xs, img, txt = simulate()
    tr, te = slice(0, 100), slice(100, 140)
    subjects = ["nsd/subj01", "nsd/subj02"]
    torch.manual_seed(0)
    # the reference's temperature 0.005 suits 197,376-d token vectors whose items are all highly similar;
    # on these 24-d toy targets it makes the soft labels one-hot and learning slow: use 0.05 here
    model = MindBridge(MindBridgeConfig.tiny({s: xs[s].shape[1] for s in subjects}, width=32, embed_dropout=0.0,
                                             block_dropout=0.0, pool="avg", clip_temperature=0.05))
    data = {s: {"x": xs[s][tr], "image_tokens": img[tr], "text_tokens": txt[tr]} for s in subjects}
    Trainer(model, TrainConfig(epochs=30, lr=3e-3, device="cpu", checkpoint_every=None, log_every=50)).fit(
        MultiSubjectBatches(data, 10, subjects_per_step=2))
    control = np.random.default_rng(1).permutation(40)
    for s in subjects:
        pred = model.predict_latents(xs[s][te], s)["clip_image_tokens"]
        acc, chance = identification(pred, img[te]), identification(pred, img[te][control])
        assert acc >= 0.5 and acc > chance + 0.3, (s, acc, chance)


def test_weight_decay_groups_follow_the_reference_optimizer():
    # trainer.py prepare_optimizer: no decay for names holding 'bias', 'Norm' or 'temperature'; the reference's
    # LayerNorms sit in nn.Sequential (names like embedder.1.2.weight), so only biases escape decay
    model = _tiny()
    decay, no_decay = (set(map(id, g["params"])) for g in model.optimizer_param_groups(0.01))
    assert id(model.embedders["nsd/subj01"].norm.weight) in decay
    assert id(model.builders["nsd/subj02"].norm.weight) in decay
    assert id(model.embedders["nsd/subj01"].norm.bias) in no_decay and id(model.image_head.bias) in no_decay
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    model.reset_tune("nsd/subj05", 8)
    groups = model.optimizer_param_groups(0.01)
    assert sum(len(g["params"]) for g in groups) == 2 * 8  # the new embedder (8 tensors) and builder (8) only
