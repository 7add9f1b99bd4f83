"""MindBridge: real-size shapes and counts, each loss term, reset-tuning, save/load, cross-subject learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
    assert _count(model.embedders["nsd/subj05"]) == 18_888_832  # about 18.9 M per subject
    assert _count(model.image_head) + _count(model.text_head) == 525_593_088  # about 526 M
    assert _count(model.translator) == 4 * (2048 * 2048 + 2048 + 2 * 2048)


def test_vd_normalize_divides_by_reference_token_norm():
    t = torch.tensor([[[3.0, 4.0], [6.0, 8.0]]])
    torch.testing.assert_close(vd_normalize(t), torch.tensor([[[0.6, 0.8], [1.2, 1.6]]]))
    torch.testing.assert_close(vd_normalize(t, torch.tensor([1])), torch.tensor([[[0.3, 0.4], [0.6, 0.8]]]))


def _tiny(**kw):
    torch.manual_seed(0)
    return MindBridge(MindBridgeConfig.tiny({"nsd/subj01": 9, "nsd/subj02": 11}, **kw))


def test_loss_terms_match_hand_computation():
    model = _tiny(embed_dropout=0.0, block_dropout=0.0).eval()
    g = torch.Generator().manual_seed(1)
    a = {"subject": "nsd/subj01", "x": torch.randn(5, 9, generator=g), "image_tokens": torch.randn(5, 3, 8, generator=g),
         "text_tokens": torch.randn(5, 2, 8, generator=g)}
    b = {"subject": "nsd/subj02", "x": torch.randn(5, 11, generator=g), "image_tokens": torch.randn(5, 3, 8, generator=g)}
    # the zero-initialised builders/embedders' adapters are identity at init: perturb them so every path counts
    for p in model.parameters():
        p.data.add_(0.01 * torch.randn(p.shape, generator=g))
    out = model.training_step({"parts": [a, b]}, 0)
    ea, eb = model.embed(a["x"], "nsd/subj01"), model.embed(b["x"], "nsd/subj02")
    ha, hb = model.heads(ea), model.heads(eb)
    mse = torch.nn.functional.mse_loss
    clip_i = (soft_clip_loss(ha["image_tokens"], a["image_tokens"]) + soft_clip_loss(hb["image_tokens"], b["image_tokens"])) / 2
    mse_i = (mse(ha["image_tokens"], a["image_tokens"]) + mse(hb["image_tokens"], b["image_tokens"])) / 2
    clip_t = soft_clip_loss(ha["text_tokens"], a["text_tokens"]) / 2  # subject b has no text targets
    mse_t = mse(ha["text_tokens"], a["text_tokens"]) / 2
    pool = torch.nn.functional.adaptive_max_pool1d
    recon = (mse(model.builders["nsd/subj01"](ea), pool(a["x"][:, None], 16)[:, 0])
             + mse(model.builders["nsd/subj02"](eb), pool(b["x"][:, None], 16)[:, 0])) / 2
    cyc = (mse(model.embedders["nsd/subj02"].embed_pooled(model.builders["nsd/subj02"](ea)), ea)
           + mse(model.embedders["nsd/subj01"].embed_pooled(model.builders["nsd/subj01"](eb)), eb)) / 2
    expected = {"clip_image": clip_i, "mse_image": mse_i, "clip_text": clip_t, "mse_text": mse_t, "recon": recon,
                "cycle": cyc}
    for key, value in expected.items():
        torch.testing.assert_close(out[key], value, msg=key)
    total = clip_i + 10.0 * mse_i + clip_t + 10.0 * mse_t + recon + cyc  # tiny mse_weight is 10
    torch.testing.assert_close(out["loss"], total)


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
    model = MindBridge(MindBridgeConfig.tiny({s: xs[s].shape[1] for s in subjects}, width=32, embed_dropout=0.0,
                                             block_dropout=0.0, pool="avg"))
    data = {s: {"x": xs[s][tr], "image_tokens": img[tr], "text_tokens": txt[tr]} for s in subjects}
    Trainer(model, TrainConfig(epochs=30, lr=3e-3, device="cpu", checkpoint_every=None, log_every=50)).fit(
        MultiSubjectBatches(data, 10, subjects_per_step=2))
    control = np.random.default_rng(1).permutation(40)
    for s in subjects:
        pred = model.predict_latents(xs[s][te], s)["clip_image_tokens"]
        acc, chance = identification(pred, img[te]), identification(pred, img[te][control])
        assert acc >= 0.5 and acc > chance + 0.3, (s, acc, chance)
