"""STTM: real-size parameter counts against the reference's layer shapes, the reference losses and schedules, the prior.

Reference: YulongBonjour/STTM (model/CrossBrain_Decoding_torch_decoder_global_constra.py,
model/low_level_model_with_sub_head_high_guidance.py, model/attention.py, model/dalle2_pytorch.py,
Train_CrossBrain_Decoding_global_contras.py); counts from shared/specs/seed-systems.md section 1.
Every expected value is computed here from the reference's formulas, not from the model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_formulas import cosine_alphas_cumprod, cosine_anneal, mixco_nce, soft_clip, unit_rows

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.models.losses import mixco_batch
from neurodecode.models.sttm import STTM, CrossAttentionPrior, STTMConfig

NSD = {"nsd/subj01": 15724, "nsd/subj02": 14278, "nsd/subj05": 13039, "nsd/subj07": 12682}


def _count(m):
    return sum(p.numel() for p in m.parameters())


def _linear(i, o, bias=True):
    return i * o + (o if bias else 0)


def _ln(d):
    return 2 * d


def test_real_size_parameter_counts_per_component_match_the_reference():
    with torch.device("meta"):
        model = STTM(STTMConfig(subjects=dict(NSD)))
        out = model(torch.empty(2, 15724), "nsd/subj01")
    assert out["brain_tokens"].shape == (2, 257, 768) and out["projected"].shape == (2, 257, 768)
    assert out["vae_latents"].shape == (2, 4, 64, 64)
    h = 4096
    # input_proj: Linear(n, h), LayerNorm, GELU, Dropout(.5); input_res_block: Linear(h, h), LayerNorm, GELU, Dropout
    adapter = {s: _linear(n, h) + _ln(h) + _linear(h, h) + _ln(h) for s, n in NSD.items()}
    for s in NSD:
        assert _count(model.adapters[s]) == adapter[s]
        assert _count(model.pixel.adapters[s]) == adapter[s]  # Voxel2StableDiffusionModel builds the same heads
    assert [round(adapter[s] / 1e6, 1) for s in NSD] == [81.2, 75.3, 70.2, 68.7]  # the spec's counts
    # mlp: 4 x [Linear(h, h), LayerNorm, GELU, Dropout]; hidd2token: LayerNorm, GELU, Linear(h, 257 * 128)
    blocks = 4 * (_linear(h, h) + _ln(h))
    token_head = _ln(h) + _linear(h, 257 * 128)
    # SelfAttention_with_MLP(hidden 128, qk/v 768, 8 heads, output 768): 2 LayerNorm(128), k/q/v Linear(128, 768),
    # projection Linear(768, 128), out_proj Linear(128, 1536), LayerNorm(1536), Linear(1536, 768)
    attention = 2 * _ln(128) + 3 * _linear(128, 768) + _linear(768, 128) + _linear(128, 1536) + _ln(1536) \
        + _linear(1536, 768)
    # projector: LN(768), GELU, Linear(768, 2048), LN, GELU, Linear(2048, 2048), LN, GELU, Linear(2048, 768)
    projector = _ln(768) + _linear(768, 2048) + _ln(2048) + _linear(2048, 2048) + _ln(2048) + _linear(2048, 768)
    assert _count(model.backbone) == blocks
    assert _count(model.to_tokens) == token_head and round(token_head / 1e6, 1) == 134.8
    assert _count(model.token_attention) == attention
    assert _count(model.projector) == projector
    shared = blocks + token_head + attention + projector
    assert round(shared / 1e6) == 211
    # VersatileDiffusionPriorNetwork: TransformerDecoder(d 768, 12 heads, depth 6, FF 3072): per layer self- and
    # cross-attention (in_proj 3 d^2 + 3 d, out_proj d^2 + d), Linear(d, 3072), Linear(3072, d), 3 LayerNorms;
    # learned_query, learned_query_brain, null_brain_embeds, null_image_embed (257 x 768 each)
    attn = _linear(768, 3 * 768) + _linear(768, 768)
    layer = 2 * attn + _linear(768, 3072) + _linear(3072, 768) + 3 * _ln(768)
    tables = 4 * 257 * 768
    # continuous time: SinusoidalPosEmb(768) + MLP(768, 768) = Linear(768, 1536), Linear(1536, 1536), Linear(1536, 768)
    time_mlp = _linear(768, 1536) + _linear(1536, 1536) + _linear(1536, 768)
    assert _count(model.prior.decoder) == 6 * layer
    assert 6 * layer + tables == 57_500_160  # the spec's ~57.5 M (it leaves the time MLP out)
    assert _count(model.prior) == 6 * layer + tables + time_mlp
    # pixel branch before the upsampler: 4 x [Linear(h, h, bias=False), LayerNorm, SiLU, Dropout], the merge block,
    # two null vectors (h), Linear(h, 16384, bias=False), GroupNorm(1, 64)
    pixel = 4 * (_linear(h, h, False) + _ln(h)) + (_linear(h, h, False) + _ln(h)) + 2 * h + _linear(h, 16384, False) \
        + 2 * 64
    assert pixel == 151_044_224
    assert _count(model.pixel) - _count(model.pixel.adapters) - _count(model.pixel.upsampler) == pixel


def test_upsampler_is_the_diffusers_vae_decoder_the_reference_builds():
    from diffusers.models.autoencoders.vae import Decoder

    torch.manual_seed(0)
    model = STTM(STTMConfig.tiny(lowlevel_shape=[4, 64, 64], lowlevel_channels=[64, 128, 256],
                                 lowlevel_map_channels=64, lowlevel_groups=32))
    # Decoder(in_channels=64, out_channels=4, 3 x UpDecoderBlock2D, block_out_channels=[64, 128, 256], layers_per_block=1)
    ref = Decoder(in_channels=64, out_channels=4, up_block_types=["UpDecoderBlock2D"] * 3,
                  block_out_channels=[64, 128, 256], layers_per_block=1)
    assert _count(ref) == _count(model.pixel.upsampler)
    ref.load_state_dict(model.pixel.upsampler.state_dict(), strict=True)
    x = torch.randn(1, 64, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(model.pixel.upsampler(x), ref(x), atol=1e-4, rtol=1e-4)
    assert model.pixel.grid == (64, 16, 16)  # lin1 = Linear(h, 16384): a 64 x 16 x 16 map for a 64 x 64 latent


def test_defaults_are_the_reference_settings():
    c = STTMConfig()
    assert (c.width, c.n_blocks, c.adapter_blocks, c.token_dim, c.target_tokens) == (4096, 4, 1, 128, [257, 768])
    assert (c.adapter_dropout, c.dropout, c.attention_heads, c.attention_dropout) == (0.5, 0.15, 8, 0.1)
    assert (c.prior_depth, c.prior_heads, c.prior_ff, c.prior_timesteps) == (6, 12, 3072, 100)
    assert (c.prior_cond_drop, c.prior_guidance, c.prior_token_drop) == (0.2, 3.5, [0.6, 0.65])
    assert (c.mixco_fraction, c.mixco_temperature, c.clip_temperature_start, c.clip_temperature_end) == \
        (0.35, 0.006, 0.004, 0.006)
    assert (c.global_weight_mixco, c.global_weight_softclip, c.prior_weight) == (0.5, 0.2, 30.0)
    assert (c.lowlevel_shape, c.lowlevel_null_prob, c.input_noise) == ([4, 64, 64], 0.4, 0.01)
    assert (c.attention_scale, c.mixco_labels, c.loss_weighting) == ("reference", "reference", "fixed")
    assert STTM(STTMConfig.tiny()).prior.embed_scale == pytest.approx(4.0)  # dalle2: image_embed_dim ** 0.5
    with pytest.raises(ValidationError, match="prior_token_drop"):
        STTMConfig.tiny(prior_token_drop=[0.7, 0.6])
    with pytest.raises(ValidationError, match="text_shape"):
        STTM(STTMConfig.tiny(text_shape=[12]))


def _layer_norm(x, w, b, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@pytest.mark.parametrize("scale", ["reference", "standard"])
def test_token_attention_equals_the_reference_formula(scale):
    torch.manual_seed(0)
    model = STTM(STTMConfig.tiny(attention_scale=scale)).eval()
    att = model.token_attention
    x = torch.randn(3, 5, 6)
    with torch.no_grad():
        got = att(x).numpy()
    p = {k: v.double().numpy() for k, v in att.state_dict().items()}
    xs = x.double().numpy()
    z = _layer_norm(xs, p["layer_norm.weight"], p["layer_norm.bias"])
    heads, d = 2, 6  # attention_dim 12 over 2 heads

    def split(a):
        return a.reshape(3, 5, heads, d).transpose(0, 2, 1, 3)

    q, k, v = (split(z @ p[f"{n}.weight"].T + p[f"{n}.bias"]) for n in ("q", "k", "v"))
    # attention.py: (q @ k^T / self.scale) with self.scale = qk_head_dim ** -0.5, i.e. times sqrt(d)
    logits = q @ k.transpose(0, 1, 3, 2) * (math.sqrt(d) if scale == "reference" else 1 / math.sqrt(d))
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    y = (w @ v).transpose(0, 2, 1, 3).reshape(3, 5, heads * d) @ p["projection.weight"].T + p["projection.bias"]
    y = xs + y
    y = _layer_norm(y, p["qkv_layer_norm.weight"], p["qkv_layer_norm.bias"])
    y = _gelu(_layer_norm(y @ p["out_proj.0.weight"].T + p["out_proj.0.bias"], p["out_proj.1.weight"],
                          p["out_proj.1.bias"]))
    y = y @ p["out_proj.4.weight"].T + p["out_proj.4.bias"]
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-5)


def test_prior_sequence_time_embedding_and_schedule_follow_the_reference():
    torch.manual_seed(0)
    prior = CrossAttentionPrior(n_tokens=5, dim=8, depth=2, heads=2, ff=12, timesteps=100).eval()
    np.testing.assert_allclose(prior.alphas_cumprod.numpy(), cosine_alphas_cumprod(100), rtol=1e-6)
    abar = cosine_alphas_cumprod(100)
    prev = np.concatenate([[1.0], abar[:-1]])
    betas = 1 - abar / prev
    np.testing.assert_allclose(prior.posterior_coef1.numpy(), betas * np.sqrt(prev) / (1 - abar), rtol=1e-5)
    np.testing.assert_allclose(prior.posterior_coef2.numpy(), (1 - prev) * np.sqrt(1 - betas) / (1 - abar), rtol=1e-5)
    var = betas * (1 - prev) / (1 - abar)
    np.testing.assert_allclose(prior.posterior_log_variance.numpy(), np.log(np.maximum(var, 1e-20)), rtol=1e-5)
    noisy, cond, t = torch.randn(3, 5, 8), torch.randn(3, 5, 8), torch.tensor([0, 42, 99])
    # SinusoidalPosEmb(dim): exp(arange(half) * -log(10000) / (half - 1)), [sin, cos]
    freqs = np.exp(np.arange(4) * -(math.log(10000) / 3))
    arg = t.numpy()[:, None] * freqs[None]
    sinus = torch.from_numpy(np.concatenate([np.sin(arg), np.cos(arg)], 1)).float()
    with torch.no_grad():
        time = prior.time_mlp(sinus)[:, None]
        tgt = torch.cat([time, noisy + prior.positions], dim=1)  # [time embed (1), image embed + learned_query]
        expected = prior.decoder(tgt, cond + prior.brain_positions)[:, -5:]
        torch.testing.assert_close(prior(noisy, t, cond), expected)
        # condition dropout replaces the brain tokens and the noisy tokens by the learned nulls
        a = prior(noisy, t, cond, brain_drop=1.0, image_drop=1.0)
        torch.testing.assert_close(a, prior(prior.null_image.expand(3, 5, 8), t, prior.null_brain.expand(3, 5, 8)))
        torch.testing.assert_close(a, prior(torch.randn(3, 5, 8), t, torch.randn(3, 5, 8), brain_drop=1.0,
                                            image_drop=1.0))
    # TransformerDecoder(TransformerDecoderLayer(768, 12, 3072, dropout 0, gelu)) is post-norm
    assert not prior.decoder.layers[0].norm_first and prior.decoder.norm is None


def test_prior_drops_60_to_65_percent_of_the_brain_tokens_in_order():
    torch.manual_seed(0)
    prior = CrossAttentionPrior(n_tokens=257, dim=8, depth=1, heads=2, ff=8, timesteps=100)
    with torch.no_grad():
        prior.brain_positions.zero_()
    seen = []
    hook = prior.decoder.register_forward_hook(lambda mod, args, out: seen.append(args[1].detach().clone()))
    cond = torch.arange(257.0)[None, :, None].expand(4, 257, 8).contiguous()
    prior.cond_drop = 0.0
    for _ in range(30):
        prior.loss(torch.randn(4, 257, 8), cond)
    hook.remove()
    # random.randint(int(257 * 0.6), int(257 * 0.65)) tokens masked: 154..167, so 90..103 kept
    kept = {m.shape[1] for m in seen}
    assert kept <= set(range(90, 104)) and len(kept) > 3
    for m in seen:
        idx = m[:, :, 0]
        assert torch.all(idx[:, 1:] > idx[:, :-1])  # the kept tokens stay in order
        assert len({tuple(r.tolist()) for r in idx}) > 1  # a different subset per item
    with torch.no_grad():
        prior.eval()
        seen.clear()
        hook = prior.decoder.register_forward_hook(lambda mod, args, out: seen.append(args[1].shape[1]))
        prior.sample(cond[:1], steps=3, guidance=1.0)
        hook.remove()
    assert set(seen) == {257}  # never at inference


def test_ddpm_sampler_with_guidance_equals_the_dalle2_formula():
    torch.manual_seed(0)
    prior = CrossAttentionPrior(n_tokens=3, dim=4, depth=1, heads=2, ff=8, timesteps=10).eval()

    def fake(noisy, t, cond, *, brain_drop=0.0, image_drop=0.0, drop_tokens=False):
        # a deterministic stand-in for the network: conditional and null outputs differ
        return 0.3 * noisy + (0.0 if brain_drop else 1.0) * cond + 0.01 * t.float()[:, None, None]

    prior.forward = fake  # type: ignore[method-assign]
    cond = torch.randn(2, 3, 4)
    got = prior.sample(cond, steps=10, generator=torch.Generator().manual_seed(3), guidance=3.5)
    g = torch.Generator().manual_seed(3)
    abar = cosine_alphas_cumprod(10)
    prev = np.concatenate([[1.0], abar[:-1]])
    betas = 1 - abar / prev
    x = torch.randn((2, 3, 4), generator=g).double().numpy()
    c = cond.double().numpy()
    for i in reversed(range(10)):
        cond_out = 0.3 * x + c + 0.01 * i
        null_out = 0.3 * x + 0.01 * i
        x0 = null_out + (cond_out - null_out) * 3.5  # forward_with_cond_scale
        mean = betas[i] * np.sqrt(prev[i]) / (1 - abar[i]) * x0 + (1 - prev[i]) * np.sqrt(1 - betas[i]) / (1 - abar[i]) * x
        if i > 0:
            var = betas[i] * (1 - prev[i]) / (1 - abar[i])
            x = mean + np.exp(0.5 * np.log(max(var, 1e-20))) * torch.randn((2, 3, 4), generator=g).double().numpy()
        else:
            x = mean
    np.testing.assert_allclose(got.numpy(), x / 2.0, rtol=1e-4, atol=1e-5)  # divided by image_embed_scale sqrt(4)


def test_phases_and_softclip_temperatures_follow_the_reference_epochs():
    model = STTM(STTMConfig.tiny())
    model.configure_training(total_steps=50 * 10, steps_per_epoch=10)
    first = int(0.35 * 50)  # epoch < int(first_stage_pct * num_epochs): BiMixCo
    assert model.mixco_steps == first * 10 == 170
    temps = cosine_anneal(0.004, 0.006, 50 - first)  # soft_loss_temps[epoch - int(first_stage_pct * epochs)]
    for epoch in (first, first + 1, 30, 49):
        for step in (epoch * 10, epoch * 10 + 9):
            assert model.clip_temperature_at(step) == pytest.approx(temps[epoch - first], rel=1e-12)
    # the first 3 SoftCLIP epochs (epoch <= first + 2) keep 12 samples per batch
    assert [model._smoothing(e * 10) for e in (first - 1, first, first + 2, first + 3)] == [False, True, True, False]


def _parts(g, na=7, nb=6, n_tok=5, dim=16):
    def part(subject, n, v):
        return {"subject": subject, "x": torch.randn(n, v, generator=g), "image_tokens": torch.randn(n, n_tok, dim,
                                                                                                    generator=g),
                "text_embeds": torch.randn(n, dim, generator=g), "vae_latents": torch.randn(n, 4, 8, 8, generator=g)}

    return part("nsd/subj01", na, 9), part("nsd/subj02", nb, 11)


def _model(**kw):
    torch.manual_seed(0)
    return STTM(STTMConfig.tiny(dropout=0.0, adapter_dropout=0.0, attention_dropout=0.0, input_noise=0.0,
                                **kw)).eval()


def test_softclip_phase_loss_equals_the_reference_formula():
    model = _model()
    model.configure_training(total_steps=40, steps_per_epoch=10)  # int(0.35 * 4) = 1 BiMixCo epoch
    a, b = _parts(torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    out = model.training_step({"parts": [a, b]}, 20)  # epoch 2: SoftCLIP epoch 1 of 3
    with torch.no_grad():
        xa, xb = model.input_scaling["nsd/subj01"](a["x"]), model.input_scaling["nsd/subj02"](b["x"])
        (ha, ta), (hb, tb) = model.backbone_forward(xa, "nsd/subj01"), model.backbone_forward(xb, "nsd/subj02")
        proj = model.projector(torch.cat([ta, tb])).numpy()
        lat = torch.cat([model.pixel(xa, "nsd/subj01", ha), model.pixel(xb, "nsd/subj02", hb)]).numpy()
    torch.manual_seed(5)
    target = torch.cat([a["image_tokens"], b["image_tokens"]])
    prior = model.prior.loss(target, torch.cat([ta, tb])).item()
    temp = cosine_anneal(0.004, 0.006, 3)[1]
    assert out["clip_temperature"].item() == pytest.approx(temp)
    tgt, text = target.numpy(), torch.cat([a["text_embeds"], b["text_embeds"]]).numpy()
    # loss_nce on flattened tokens; global image: CLS projection vs image CLS; global text: CLS projection vs text
    nce = soft_clip(unit_rows(proj), unit_rows(tgt), temp)
    img = soft_clip(unit_rows(proj[:, 0]), unit_rows(tgt[:, 0]), temp)
    txt = soft_clip(unit_rows(proj[:, 0]), unit_rows(text), temp)
    assert out["clip"].item() == pytest.approx(nce, rel=1e-4)
    assert out["global_image"].item() == pytest.approx(img, rel=1e-4)
    assert out["global_text"].item() == pytest.approx(txt, rel=1e-4)
    assert out["prior"].item() == pytest.approx(prior, rel=1e-5)
    l1 = np.abs(lat - 0.18215 * torch.cat([a["vae_latents"], b["vae_latents"]]).numpy()).mean()
    assert out["lowlevel"].item() == pytest.approx(l1, rel=1e-5)
    # w0 * (nce + 0.2 * img + 0.2 * txt) + w1 * 30 * prior, fixed (w0, w1) = (0.5, 0.5); + the pixel L1
    total = 0.5 * (nce + 0.2 * (img + txt)) + 0.5 * 30 * prior + l1
    assert out["loss"].item() == pytest.approx(total, rel=1e-4)


def test_bimixco_phase_loss_equals_the_reference_formula():
    model = _model(lowlevel_shape=None)
    model.configure_training(total_steps=100, steps_per_epoch=10)  # int(0.35 * 10) = 3 BiMixCo epochs
    assert model.mixco_steps == 30
    a, b = _parts(torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    out = model.training_step({"parts": [a, b]}, 29)
    torch.manual_seed(7)  # replay the draws: utils.mixco per subject, in order, then the prior
    with torch.no_grad():
        xa, pa, ba, _ = mixco_batch(model.input_scaling["nsd/subj01"](a["x"]))
        xb, pb, bb, _ = mixco_batch(model.input_scaling["nsd/subj02"](b["x"]))
        ta, tb = model.backbone_forward(xa, "nsd/subj01")[1], model.backbone_forward(xb, "nsd/subj02")[1]
        proj = model.projector(torch.cat([ta, tb])).numpy()
    target = torch.cat([a["image_tokens"], b["image_tokens"]])
    prior = model.prior.loss(target, torch.cat([ta, tb])).item()  # mixed brain tokens vs unmixed targets
    perm, betas = torch.cat([pa, pb + 7]).numpy(), torch.cat([ba, bb]).numpy()  # one batch over both subjects
    tgt, text = target.numpy(), torch.cat([a["text_embeds"], b["text_embeds"]]).numpy()
    nce = mixco_nce(unit_rows(proj), unit_rows(tgt), 0.006, perm, betas)
    img = mixco_nce(unit_rows(proj[:, 0]), unit_rows(tgt[:, 0]), 0.006, perm, betas)
    txt = mixco_nce(unit_rows(proj[:, 0]), unit_rows(text), 0.006, perm, betas)
    assert out["clip"].item() == pytest.approx(nce, rel=1e-4)
    assert out["global_image"].item() == pytest.approx(img, rel=1e-4)
    assert out["global_text"].item() == pytest.approx(txt, rel=1e-4)
    total = 0.5 * (nce + 0.5 * (img + txt)) + 0.5 * 30 * prior
    assert out["loss"].item() == pytest.approx(total, rel=1e-4)
    assert out["clip_temperature"].item() == pytest.approx(0.006)


def test_random_loss_weighting_draws_softmax_of_two_normals_each_step():
    model = _model(lowlevel_shape=None, loss_weighting="random")
    model.configure_training(total_steps=40, steps_per_epoch=10)
    a, b = _parts(torch.Generator().manual_seed(2))
    seen = []
    for step in (20, 21, 22):
        out = model.training_step({"parts": [a, b]}, step)
        w0, w1 = out["w_contrastive"].item(), out["w_prior"].item()
        assert 0 < w0 < 1 and w0 + w1 == pytest.approx(1.0)
        part = out["clip"] + 0.2 * (out["global_image"] + out["global_text"])
        assert out["loss"].item() == pytest.approx(w0 * part.item() + w1 * 30 * out["prior"].item(), rel=1e-5)
        seen.append(w0)
    assert len(set(seen)) == 3
    torch.manual_seed(11)
    expected = torch.randn(2).softmax(-1)  # batch_weight = F.softmax(torch.randn(2), dim=-1)
    torch.manual_seed(11)
    assert model.loss_weights() == pytest.approx(tuple(expected.tolist()))


def test_smoothing_epochs_keep_twelve_samples_per_subject():
    model = _model(lowlevel_shape=None, smoothing_batch=4)
    model.configure_training(total_steps=100, steps_per_epoch=10)
    a, b = _parts(torch.Generator().manual_seed(3))
    seen = []
    hook = model.projector.register_forward_hook(lambda mod, args, out: seen.append(out.shape[0]))
    model.training_step({"parts": [a, b]}, 30)  # first SoftCLIP epoch: 4 + 4 rows
    model.training_step({"parts": [a, b]}, 60)  # after the smoothing epochs: 7 + 6 rows
    hook.remove()
    assert seen == [8, 13]


def test_pixel_branch_guidance_and_null_replacement():
    model = _model()
    pixel = model.pixel
    x, guide = torch.randn(3, 9), torch.randn(3, 24)
    with torch.no_grad():
        a = pixel(x, "nsd/subj01", guide)
        assert not torch.allclose(a, pixel(torch.randn(3, 9), "nsd/subj01", guide))
        assert not torch.allclose(a, pixel(x, "nsd/subj01", torch.randn(3, 24)))
        # no guidance: the learned null_high_embeds are added instead
        torch.testing.assert_close(pixel(x, "nsd/subj01", None), pixel(x, "nsd/subj01", pixel.null_guidance.expand(3, 24)))
        pixel.train()
        pixel.null_prob = 1.0  # the low-level path replaced by null_high_embeds_1: only the guidance is left
        torch.testing.assert_close(pixel(x, "nsd/subj01", guide), pixel(torch.randn(3, 9), "nsd/subj01", guide))
        null_out = pixel(x, "nsd/subj01", guide)
        pixel.null_prob = 0.4
        torch.manual_seed(0)
        hits = [torch.allclose(pixel(x, "nsd/subj01", guide), null_out) for _ in range(300)]
    assert 0.3 < np.mean(hits) < 0.5  # randint(0, 9) <= 3: four forwards in ten, the whole batch at once
    pixel.eval()
    # detached guidance: the pixel loss sends no gradient into the shared backbone
    model.configure_training(total_steps=40, steps_per_epoch=10)
    a, b = _parts(torch.Generator().manual_seed(4))
    model.zero_grad()
    out = model.training_step({"parts": [a, b]}, 20)
    out["lowlevel"].backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.backbone.parameters())
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.pixel.blocks.parameters())


def test_input_scaling_prediction_and_round_trip(tmp_path):
    model = STTM(STTMConfig.tiny())
    rng = np.random.default_rng(0)
    train = (rng.standard_normal((20, 9)) * 3 + 5).astype(np.float32)
    model.fit_input_scaling("nsd/subj01", train)
    x = rng.standard_normal((4, 9)).astype(np.float32)
    with torch.no_grad():
        z = model.input_scaling["nsd/subj01"](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(z, (x - train.mean(0)) / train.std(0, ddof=1), rtol=1e-5)  # np.std(..., ddof=1)
    a = model.predict_latents(x, "nsd/subj01", seed=1)
    assert a["clip_image_tokens"].shape == (4, 5, 16) and a["text_embeds"].shape == (4, 16)
    assert a["vae_latents"].shape == (4, 4, 8, 8)
    np.testing.assert_array_equal(a["clip_image_tokens"], model.predict_latents(x, "nsd/subj01", seed=1)[
        "clip_image_tokens"])
    assert not np.allclose(a["clip_image_tokens"], model.predict_latents(x, "nsd/subj01", seed=2)["clip_image_tokens"])
    with torch.no_grad():  # raw latents: the branch's (scaled) prediction divided by 0.18215
        out = model.eval()(torch.from_numpy(x), "nsd/subj01")
    np.testing.assert_allclose(a["vae_latents"], out["vae_latents"].numpy(), rtol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = STTM.from_pretrained(tmp_path)
    b = loaded.predict_latents(x, "nsd/subj01", seed=1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(ShapeMismatchError):
        model.predict_latents(np.zeros((2, 10), np.float32), "nsd/subj01")


def test_new_subject_transfer_trains_only_its_adapters():
    model = STTM(STTMConfig.tiny())
    trainable = model.train_adapters_only("nsd/subj05", 13)
    assert "nsd/subj05" in model.subjects and model.config.subjects["nsd/subj05"] == 13
    assert trainable and all(n.startswith(("adapters.adapters.nsd__subj05.", "pixel.adapters.adapters.nsd__subj05."))
                             for n in trainable)
    assert any(n.startswith("pixel.") for n in trainable)
    with pytest.raises(ValidationError, match="n_voxels"):
        model.train_adapters_only("nsd/subj07")


def test_weight_decay_groups_follow_the_reference_optimizer():
    # configure_optimizers: no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight'] matched in names that are
    # positional (voxel2clip.mlp.0.1.weight), so only biases escape the decay
    model = STTM(STTMConfig.tiny())
    decay, no_decay = (set(map(id, g["params"])) for g in model.optimizer_param_groups(0.01))
    assert id(model.backbone[0][0].bias) in no_decay and id(model.backbone[0][1].weight) in decay
    assert id(model.prior.decoder.layers[0].self_attn.in_proj_bias) in no_decay
    assert id(model.prior.null_brain) in decay
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_contract_predicts_what_it_declares_and_round_trips(tmp_path):
    # the contract of tests/test_contracts.py, for STTM (asymmetric subjects, subject 2 of 2)
    from neurodecode.models import build_decoder, decoder_class, load_decoder

    model = build_decoder("sttm", subjects={"s1": 7, "s2": 9}, base="tiny",
                          target_shapes={"image_tokens": (17, 16), "text_embeds": (16,), "vae_latents": (4, 16, 16)})
    assert isinstance(model, decoder_class("sttm")) and model.config.lowlevel_shape == [4, 16, 16]
    X = np.random.default_rng(7).standard_normal((5, 9)).astype(np.float32)
    pred = model.predict_latents(X, subject="s2", use_prior=False)
    want = {t.latent_key: tuple(getattr(model.config, t.config_field)) for t in STTM.targets.values()}
    assert {k: v.shape[1:] for k, v in pred.items()} == want
    model.save_pretrained(tmp_path)
    back = load_decoder(tmp_path).predict_latents(X, subject="s2", use_prior=False)
    for k in pred:
        np.testing.assert_allclose(back[k], pred[k], rtol=1e-5, atol=1e-6)
    off = build_decoder("sttm", subjects={"s1": 7}, base="tiny", target_shapes={"image_tokens": (17, 16)})
    assert off.pixel is None and off.config.text_shape is None
    assert set(off.predict_latents(X[:, :7], subject="s1", use_prior=False)) == {"clip_image_tokens", "text_embeds"}


def test_bimixco_phase_pixel_branch_reads_the_unmixed_voxels():
    model = _model()
    model.configure_training(total_steps=100, steps_per_epoch=10)
    a, b = _parts(torch.Generator().manual_seed(6))
    torch.manual_seed(3)
    out = model.training_step({"parts": [a, b]}, 0)  # BiMixCo: the voxels of the contrast are mixed
    with torch.no_grad():
        xa, xb = model.input_scaling["nsd/subj01"](a["x"]), model.input_scaling["nsd/subj02"](b["x"])
        pred = torch.cat([model.pixel(xa, "nsd/subj01", model.features(xa, "nsd/subj01")),
                          model.pixel(xb, "nsd/subj02", model.features(xb, "nsd/subj02"))]).numpy()
    target = 0.18215 * torch.cat([a["vae_latents"], b["vae_latents"]]).numpy()
    assert out["lowlevel"].item() == pytest.approx(np.abs(pred - target).mean(), rel=1e-5)
