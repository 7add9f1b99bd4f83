"""MindEye2: real-size parameter counts against the reference, the reference losses and schedules, the prior.

Reference: MedARC-AI/MindEyeV2 @c184718 (src/models.py, src/Train.ipynb, src/utils.py) with the
dalle2-pytorch prior it builds; counts from shared/specs/reference-details.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_formulas import (
    cosine_alphas_cumprod,
    cosine_anneal,
    ddim_times,
    mixco_nce,
    mixco_sum,
    soft_clip,
    soft_cont,
    t5_bucket,
    unit_rows,
)

from neurodecode._core.errors import ValidationError
from neurodecode.models.mindeye2 import DiffusionPrior, MindEye2, MindEye2Config
from neurodecode.train import ArrayBatches, TrainConfig, Trainer

NSD = {"nsd/subj01": 15724, "nsd/subj02": 14278, "nsd/subj03": 15226, "nsd/subj04": 13153, "nsd/subj05": 13039,
       "nsd/subj06": 17907, "nsd/subj07": 12682, "nsd/subj08": 14386}


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_real_size_parameter_counts_per_component_match_the_reference():
    with torch.device("meta"):
        one = MindEye2(MindEye2Config(subjects={"nsd/subj01": NSD["nsd/subj01"]}))
        seven = MindEye2(MindEye2Config(subjects={s: n for s, n in NSD.items() if s != "nsd/subj01"}))
        out = one(torch.empty(2, 15724), "nsd/subj01")
    assert out["brain_tokens"].shape == (2, 256, 1664) and out["retrieval"].shape == (2, 256, 1664)
    assert out["vae_latents"].shape == (2, 4, 28, 28) and out["lowlevel_features"].shape == (2, 49, 512)
    # RidgeRegression: Linear(n_voxels, 4096) per subject
    assert _count(one.adapters) == 15724 * 4096 + 4096
    # BrainNetwork(h=4096, seq_len=1): 4 x [LayerNorm(4096), Linear, GELU, Dropout, Linear] + 4 x the same at width 1
    assert _count(one.backbone) == 4 * (2 * 4096 + 2 * (4096 * 4096 + 4096)) + 4 * 6
    assert _count(one.to_tokens) == 4096 * 256 * 1664 + 256 * 1664  # backbone_linear
    assert _count(one.retrieval) == 3 * (2 * 1664 + 1664 * 1664 + 1664)  # clip_proj = projector(1664, 1664, h=1664)
    # the spec's counts; the reference's RotaryEmbedding holds its 16 fixed frequencies as a (frozen) Parameter
    assert _count(one.prior) + one.prior.rotary_freqs.numel() == 259_865_216
    assert one.prior.rotary_freqs.numel() == 16
    assert _count(one.lowlevel) == 15_158_628
    assert _count(one) + 16 == 2_227_294_844
    assert _count(seven) + 16 == 2_575_262_332
    with torch.device("meta"):
        low = MindEye2(MindEye2Config.low_compute(subjects={"nsd/subj01": 15724}))
    assert low.backbone.channel[0][1].weight.shape == (1024, 1024)


def test_upsampler_is_the_diffusers_vae_decoder_the_reference_builds():
    from diffusers.models.autoencoders.vae import Decoder

    torch.manual_seed(0)
    model = MindEye2(MindEye2Config(subjects={"nsd/subj01": 7}, width=8, target_tokens=[2, 8], prior_heads=2))
    # models.py: Decoder(in_channels=64, out_channels=4, 3 x UpDecoderBlock2D, block_out_channels=[32, 64, 128],
    # layers_per_block=1)
    ref = Decoder(in_channels=64, out_channels=4, up_block_types=["UpDecoderBlock2D"] * 3,
                  block_out_channels=[32, 64, 128], layers_per_block=1)
    assert _count(ref) == _count(model.lowlevel.upsampler) == 1_750_692
    ref.load_state_dict(model.lowlevel.upsampler.state_dict(), strict=True)
    x = torch.randn(2, 64, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(model.lowlevel.upsampler(x), ref(x), atol=1e-5, rtol=1e-4)


def test_defaults_are_the_reference_settings():
    c = MindEye2Config()
    assert (c.prior_depth, c.prior_heads, c.prior_timesteps, c.prior_sampling_steps) == (6, 32, 100, 20)
    assert (c.prior_cond_drop, c.prior_eta) == (0.2, 1.0)
    assert (c.prior_weight, c.clip_weight, c.lowlevel_weight) == (30, 1, 0.5)
    assert (c.mixco_fraction, c.mixco_temperature) == (0.33, 0.006)
    assert (c.clip_temperature_start, c.clip_temperature_end, c.clip_temperature) == (0.004, 0.0075, None)
    assert (c.vae_scale, c.lowlevel_cont_weight, c.lowlevel_cont_temperature) == (0.18215, 0.1, 0.2)
    assert c.lowlevel_shape == [4, 28, 28] and c.dropout == 0.15
    with pytest.raises(ValidationError, match="backbone_residual"):
        MindEye2Config(backbone_residual="linear")
    with pytest.raises(ValidationError, match="prior_dim"):
        MindEye2Config(prior_dim=1280)


def test_softclip_temperature_and_mixco_phase_follow_the_reference_epochs():
    model = MindEye2(MindEye2Config.tiny())
    model.configure_training(total_steps=150 * 10, steps_per_epoch=10)
    n_mix = int(0.33 * 150)  # Train.ipynb: epoch < int(mixup_pct * num_epochs) uses BiMixCo
    assert model.mixco_steps == n_mix * 10 == 490
    temps = cosine_anneal(0.004, 0.0075, 150 - n_mix)  # soft_loss_temps, indexed by epoch - int(mixup_pct * epochs)
    for epoch in (n_mix, n_mix + 1, 99, 120, 149):
        for step in (epoch * 10, epoch * 10 + 9):
            assert model.clip_temperature_at(step) == pytest.approx(temps[epoch - n_mix], rel=1e-12)
    assert model.clip_temperature_at(n_mix * 10) == pytest.approx(0.004)
    assert model.clip_temperature_at(1499) == pytest.approx(0.0075)


def _batch(g, n=6):
    return {"subject": "nsd/subj01", "x": torch.randn(n, 9, generator=g), "tokens": torch.randn(n, 3, 8, generator=g),
            "vae_latents": torch.randn(n, 2, 8, 8, generator=g), "convnext_maps": torch.randn(n, 4, 6, generator=g),
            "convnext_maps_aug": torch.randn(n, 4, 6, generator=g)}


def test_softclip_phase_losses_equal_the_reference_formulas():
    torch.manual_seed(0)
    model = MindEye2(MindEye2Config.tiny(dropout=0.0, lowlevel_dropout=0.0)).eval()
    model.configure_training(total_steps=30, steps_per_epoch=10)  # int(0.33 * 3) = 0 BiMixCo epochs
    b = _batch(torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    out = model.training_step(b, 10)
    torch.manual_seed(5)
    prior = model.prior.loss(b["tokens"], model.backbone_forward(b["x"], "nsd/subj01")[1])
    with torch.no_grad():
        h, tokens = model.backbone_forward(b["x"], "nsd/subj01")
        retr = model.retrieval(tokens)
        latent, feats = model.lowlevel(h)
    temp = cosine_anneal(0.004, 0.0075, 3)[1]  # epoch 1 of 3 SoftCLIP epochs
    assert out["clip_temperature"].item() == pytest.approx(temp)
    clip = soft_clip(unit_rows(retr.numpy()), unit_rows(b["tokens"].numpy()), temp)
    assert out["clip"].item() == pytest.approx(clip, rel=1e-4)
    # l1(image_enc_pred, autoenc.encode(...) * 0.18215); soft_cont_loss(..., temp=0.2) on (batch * 49, 512) rows
    l1 = float(np.mean(np.abs(latent.numpy() - 0.18215 * b["vae_latents"].numpy())))
    cont = soft_cont(unit_rows(feats.reshape(-1, 6).numpy()), unit_rows(b["convnext_maps"].reshape(-1, 6).numpy()),
                     unit_rows(b["convnext_maps_aug"].reshape(-1, 6).numpy()), 0.2)
    assert out["lowlevel_l1"].item() == pytest.approx(l1, rel=1e-5)
    assert out["lowlevel_cont"].item() == pytest.approx(cont, rel=1e-4)
    torch.testing.assert_close(out["prior"], prior)
    total = 30 * prior.item() + clip + 0.5 * (l1 + 0.1 * cont)  # loss += (loss_blurry + 0.1 * cont_loss) * blur_scale
    assert out["loss"].item() == pytest.approx(total, rel=1e-4)


@pytest.mark.parametrize("labels", ["sum", "reference"])
def test_bimixco_phase_equals_the_reference_formula(labels):
    torch.manual_seed(0)
    model = MindEye2(MindEye2Config.tiny(dropout=0.0, lowlevel_dropout=0.0, mixco_labels=labels)).eval()
    model.configure_training(total_steps=100, steps_per_epoch=10)  # int(0.33 * 10) = 3 BiMixCo epochs
    assert model.mixco_steps == 30
    g = torch.Generator().manual_seed(1)
    a, b = _batch(g, 5), {**_batch(g, 4), "subject": "nsd/subj02", "x": torch.randn(4, 11, generator=g)}
    torch.manual_seed(7)
    out = model.training_step({"parts": [a, b]}, 29)
    # replay the mixing draws: one mixco_batch per subject, in order, from the same seed
    torch.manual_seed(7)
    from neurodecode.models.losses import mixco_batch

    xa, pa, ba, sa = mixco_batch(a["x"])
    ha, ta = model.backbone_forward(xa, "nsd/subj01")
    xb, pb, bb, sb = mixco_batch(b["x"])
    hb, tb = model.backbone_forward(xb, "nsd/subj02")
    with torch.no_grad():
        retr = unit_rows(model.retrieval(torch.cat([ta, tb])).numpy())
    target = unit_rows(torch.cat([a["tokens"], b["tokens"]]).numpy())
    betas = torch.cat([ba, bb]).numpy()
    if labels == "sum":  # partners offset into the concatenated batch, labels summed
        expected = mixco_sum(retr, target, 0.006, torch.cat([pa, pb + 5]).numpy(), betas)
    else:  # Train.ipynb concatenates each subject's perm without an offset, then utils.mixco_nce
        expected = mixco_nce(retr, target, 0.006, torch.cat([pa, pb]).numpy(), betas)
    assert out["clip"].item() == pytest.approx(expected, rel=1e-4)
    assert out["clip_temperature"].item() == pytest.approx(0.006)


def _channel_grads(mode):
    torch.manual_seed(0)
    model = MindEye2(MindEye2Config.tiny(backbone_residual=mode, dropout=0.0, lowlevel_shape=None))
    x = torch.randn(7, 9)
    model.backbone_forward(x, "nsd/subj01")[1].square().sum().backward()
    return model, x, [p.grad for p in model.backbone.channel.parameters()]


def test_reference_backbone_drops_the_residual_blocks_and_paper_backbone_keeps_them():
    model, x, grads = _channel_grads("reference")
    assert all(gr is None or torch.count_nonzero(gr) == 0 for gr in grads)
    # BrainNetwork.forward at seq_len 1: x + sum over blocks of the token block's constant output
    with torch.no_grad():
        const = sum(blk[4](torch.nn.functional.gelu(blk[1](blk[0].bias[None])))[0] for blk in model.backbone.token)
        expected = model.adapters["nsd/subj01"](x) + const
        torch.testing.assert_close(model.backbone(model.adapters["nsd/subj01"](x)), expected)
    _, _, grads = _channel_grads("paper")
    assert all(gr is not None and torch.count_nonzero(gr) > 0 for gr in grads)


def test_prior_schedule_sampling_times_and_position_buckets_follow_dalle2():
    prior = DiffusionPrior(n_tokens=3, dim=8, depth=1, heads=2, timesteps=100)
    np.testing.assert_allclose(prior.alphas_cumprod.numpy(), cosine_alphas_cumprod(100), rtol=1e-5, atol=1e-9)
    times = ddim_times(100, 20)
    assert times == [94, 89, 84, 79, 74, 69, 64, 59, 54, 49, 44, 39, 34, 29, 24, 19, 14, 9, 4, -1]
    from neurodecode.models._dalle2_prior import relative_buckets

    buckets = relative_buckets(300, 301)
    for i, j in [(0, 0), (5, 0), (5, 6), (40, 20), (120, 0), (299, 1), (17, 1)]:
        assert buckets[i, j].item() == t5_bucket(i - j), (i, j)


def test_prior_attention_equals_the_dalle2_formula():
    """Attention: pre-norm, per-head queries, one shared key/value head with a learned null key/value
    prepended, rotary positions (interleaved pairs) on the first min(32, dim_head) features, cosine
    similarity x 16 plus the relative-position bias, softmax, output Linear + LayerNorm."""
    torch.manual_seed(0)
    prior = DiffusionPrior(n_tokens=3, dim=12, depth=1, heads=3, timesteps=10)
    attn = prior.layers[0][0]
    x = torch.randn(2, 7, 12)
    n, dh = 7, 4
    bias = prior.rel_pos_bias(torch.tensor([[t5_bucket(i - j) for j in range(n + 1)] for i in range(n)])).permute(2, 0, 1)
    pos = torch.arange(n, dtype=torch.float32)
    freqs = 1.0 / 10000 ** (torch.arange(0, dh, 2).float() / dh)
    ang = (pos[:, None] * freqs[None]).repeat_interleave(2, -1)

    def rot(t):
        pairs = t.reshape(*t.shape[:-1], -1, 2)
        half = torch.stack([-pairs[..., 1], pairs[..., 0]], -1).reshape(t.shape)
        return t * ang.cos() + half * ang.sin()

    def gain_norm(t, g):
        return (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-5) * g

    with torch.no_grad():
        xn = gain_norm(x, attn.norm.g)
        q = (xn @ attn.to_q.weight.T).reshape(2, n, 3, dh).permute(0, 2, 1, 3)
        k, v = (xn @ attn.to_kv.weight.T).chunk(2, -1)
        q, k = rot(q), rot(k)
        k = torch.cat([attn.null_kv[0].expand(2, 1, dh), k], 1)
        v = torch.cat([attn.null_kv[1].expand(2, 1, dh), v], 1)
        q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
        sim = 16 * torch.einsum("bhid,bjd->bhij", q, k) + bias
        y = torch.einsum("bhij,bjd->bhid", sim.softmax(-1), v).permute(0, 2, 1, 3).reshape(2, n, 3 * dh)
        expected = gain_norm(y @ attn.to_out[0].weight.T, attn.to_out[1].g)
        rotary = (torch.arange(n, dtype=torch.float32)[:, None] * prior.rotary_freqs[None]).repeat_interleave(2, -1)
        from neurodecode.models._dalle2_prior import relative_buckets

        ours = attn(x, prior.rel_pos_bias(relative_buckets(n, n + 1)).permute(2, 0, 1), rotary)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_prior_condition_dropout_uses_learned_null_embeddings():
    torch.manual_seed(0)
    prior = DiffusionPrior(n_tokens=3, dim=8, depth=1, heads=2, timesteps=100)
    noisy, t = torch.randn(4, 3, 8), torch.tensor([3, 50, 99, 0])
    a = prior.denoise(noisy, t, torch.randn(4, 3, 8), cond_drop=1.0)
    b = prior.denoise(torch.randn(4, 3, 8), t, torch.randn(4, 3, 8), cond_drop=1.0)
    torch.testing.assert_close(a, b)  # both the brain tokens and the noisy tokens were replaced
    nulls = prior.denoise(prior.null_image.expand(4, 3, 8), t, prior.null_brain.expand(4, 3, 8))
    torch.testing.assert_close(a, nulls)
    assert not torch.allclose(prior.denoise(noisy, t, torch.randn(4, 3, 8)), a)


def test_prior_sampling_is_seeded_and_predict_latents_shapes(tmp_path):
    torch.manual_seed(0)
    model = MindEye2(MindEye2Config.tiny())
    x = np.random.default_rng(0).standard_normal((3, 9)).astype(np.float32)
    a = model.predict_latents(x, "nsd/subj01", seed=1)
    b = model.predict_latents(x, "nsd/subj01", seed=1)
    assert a["clip_bigg_tokens"].shape == (3, 3, 8) and a["vae_latents"].shape == (3, 2, 8, 8)
    np.testing.assert_array_equal(a["clip_bigg_tokens"], b["clip_bigg_tokens"])
    with torch.no_grad():  # raw latents: the head's (scaled) prediction divided by 0.18215
        scaled, _ = model.eval().lowlevel(model.backbone_forward(torch.from_numpy(x), "nsd/subj01")[0])
    np.testing.assert_allclose(a["vae_latents"], scaled.numpy() / 0.18215, rtol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = MindEye2.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.predict_latents(x, "nsd/subj01", seed=1)["clip_bigg_tokens"],
                                  a["clip_bigg_tokens"])
    # timesteps linspace(-1, 100, 21)[:-1] reversed = 94, 89, ..., 4, -1
    calls = []
    hook = model.prior.project_out.register_forward_hook(lambda *args: calls.append(1))
    model.predict_latents(x[:1], "nsd/subj01")
    hook.remove()
    assert len(calls) == 19  # dalle2 DDIM with 20 steps: pairs (94, 89) ... (4, -1), 19 denoiser calls


def test_training_reduces_prior_and_retrieval_losses():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((60, 4)).astype(np.float32)
    tokens = (z @ rng.standard_normal((4, 24)).astype(np.float32)).reshape(60, 3, 8)
    x = (z @ rng.standard_normal((4, 9)) + 0.1 * rng.standard_normal((60, 9))).astype(np.float32)
    torch.manual_seed(0)
    model = MindEye2(MindEye2Config.tiny(dropout=0.0, lowlevel_shape=None))
    src = ArrayBatches({"x": x, "tokens": tokens}, 10, extra={"subject": "nsd/subj01"})
    val = ArrayBatches({"x": x, "tokens": tokens}, 30, shuffle=False, extra={"subject": "nsd/subj01"})
    result = Trainer(model, TrainConfig(epochs=25, lr=1e-2, device="cpu", checkpoint_every=None, log_every=10)).fit(
        src, val)
    first = next(e for e in result.history if "val/prior" in e)
    assert result.metrics["val/prior"] < 0.8 * first["val/prior"]
    assert result.metrics["val/clip"] < first["val/clip"]
    assert math.isfinite(result.metrics["loss"])


def test_weight_decay_groups_follow_the_reference_optimizer():
    # Train.ipynb: ridge parameters all decay; backbone and prior: no decay only for names holding 'bias'
    # (its LayerNorm names are positional, e.g. mixer_blocks1.0.0.weight, so LayerNorm gains decay)
    model = MindEye2(MindEye2Config.tiny())
    decay, no_decay = (set(map(id, g["params"])) for g in model.optimizer_param_groups(0.01))
    assert id(model.adapters["nsd/subj01"].linear.bias) in decay
    assert id(model.backbone.channel[0][0].weight) in decay and id(model.backbone.channel[0][0].bias) in no_decay
    assert id(model.prior.rel_pos_bias.weight) in no_decay and id(model.prior.null_brain) in decay
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_convnext_shape_must_be_the_heads_tokens_and_is_predicted():
    # the tiny head: a 2 x 2 map (8 x 8 latent, 3 upsampling stages) of 6-wide feature tokens
    model = MindEye2(MindEye2Config.tiny(convnext_shape=[4, 6])).eval()
    x = np.random.default_rng(0).standard_normal((3, 9)).astype(np.float32)
    out = model.predict_latents(x, subject="nsd/subj01")
    with torch.no_grad():
        feats = model(torch.from_numpy(x), "nsd/subj01")["lowlevel_features"]
    np.testing.assert_allclose(out["convnext_maps"], feats.numpy(), rtol=1e-6)
    assert "convnext_maps" not in MindEye2(MindEye2Config.tiny()).predict_latents(x, subject="nsd/subj01")
    with pytest.raises(ValidationError, match="convnext_shape"):
        MindEye2Config.tiny(convnext_shape=[49, 512])
    with pytest.raises(ValidationError, match="convnext_shape"):
        MindEye2Config.tiny(convnext_shape=[4, 6], lowlevel_shape=None)


@pytest.mark.slow
def test_recipe_feeds_clean_and_augmented_convnext_maps(tmp_path, monkeypatch):
    """The runner embeds the tiny ConvNeXt twin for every image and `augment_views` blur_augs views of the
    training images, and each step's batch holds both: the clean maps and one view per sample."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from neurodecode.cli import app
    from neurodecode.latents import FeatureCache
    from neurodecode.testing import make_nsd_fixture

    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1, 2), n_sessions=1, seed=3)
    monkeypatch.setenv("NEURODECODE_CACHE", str(tmp_path / "cache"))
    seen: list[dict] = []
    step = MindEye2.training_step

    def spy(self, batch, i):
        seen.extend(batch["parts"] if "parts" in batch else [batch])
        return step(self, batch, i)

    monkeypatch.setattr(MindEye2, "training_step", spy)
    recipe = Path(__file__).resolve().parents[1] / "pipelines" / "mindeye2_nsd.toml"
    res = CliRunner().invoke(app, ["train", str(recipe), "--data", str(root), "--out", str(tmp_path / "run"),
                                   "--preset", "tiny", "--device", "cpu", "--json", "--max-steps", "2",
                                   "--set", "latents.convnext_maps.space=vicregl-convnext-xl-tiny",
                                   "--set", "latents.augment_views=3"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["lowlevel_cont"] > 0
    views = [FeatureCache(p.parent).load(dtype="float32")
             for p in (tmp_path / "cache").glob("features/vicregl-convnext-xl-tiny@mindeye2-views/*/manifest.json")]
    assert len(views) == 1 and views[0].shape[1:] == (16, 6)
    table = views[0].reshape(len(views[0]), -1)
    for part in seen:
        clean, aug = part["convnext_maps"].flatten(1).numpy(), part["convnext_maps_aug"].flatten(1).numpy()
        gap = np.abs(aug[:, None, :] - table[None]).max(-1).min(-1)
        assert (gap < 1e-6).all()  # every augmented target is one of the cached views
        assert (np.abs(aug - clean).max(-1) > 1e-4).all()
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["augment"]["targets"] == {"convnext_maps_aug": {"of": "convnext_maps", "transform": "mindeye2"}}
