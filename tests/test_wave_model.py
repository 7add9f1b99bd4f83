"""WAVE model: tri-contrastive loss against the formula, CLS pooling, the learning-from-brains checkpoint,
prompt token ids, augmentation, real-size parameter count."""

import dataclasses

import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError
from neurodecode.models.wave import WAVE, WAVEConfig, prompt_token_ids


def _info_nce(a, b, scale):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = scale * a @ b.T

    def ce(z):
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - np.diag(z)))

    return 0.5 * (ce(logits) + ce(logits.T))


def test_loss_is_the_mean_of_two_symmetric_info_nce_with_separate_scales():
    torch.manual_seed(0)
    model = WAVE(WAVEConfig.tiny())
    with torch.no_grad():
        model.img_logit_scale.fill_(np.log(9.0))
        model.txt_logit_scale.fill_(np.log(4.0))
    rng = np.random.default_rng(1)
    f, i, t = (rng.standard_normal((7, 20)) for _ in range(3))
    out = model.loss(*(torch.tensor(a, dtype=torch.float32) for a in (f, i, t)))
    expect = 0.5 * (_info_nce(f, i, 9.0) + _info_nce(f, t, 4.0))
    assert out["loss"].item() == pytest.approx(expect, rel=1e-5)
    assert out["loss_image"].item() == pytest.approx(_info_nce(f, i, 9.0), rel=1e-5)
    assert WAVEConfig().logit_scale_init == pytest.approx(np.log(1 / 0.07))


def test_real_size_parameter_count():
    with torch.device("meta"):
        model = WAVE()
    d, p, L, ff = 768, 1024, 4, 3072
    embedder = (p * d + d) + 2 * d + (1500 + 1) * d + 2 * p          # Linear, LayerNorm, time table, msk/cls
    block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d)
    gpt = 1 * d + 512 * d + L * block + 2 * d                         # wte (vocab 1), wpe, blocks, ln_f
    pooler = d * d + d
    projector = d * d + d
    meta = (2 * d * (2 * d // 16) + 2 * d // 16) + (2 * d // 16 * 8 + 8) + 8  # meta-net + context vector
    expect = embedder + gpt + pooler + projector + meta + 2
    assert sum(q.numel() for q in model.parameters()) == expect
    assert 31e6 < expect < 33e6


def test_cls_pooling_ignores_padding_and_later_trs():
    torch.manual_seed(0)
    model = WAVE(WAVEConfig.tiny(dropout=0.0)).eval()
    x = np.random.default_rng(2).standard_normal((2, 7, 6)).astype(np.float32)
    full = model.encode(x, lengths=[3, 6])
    short = model.encode(x[:1, :, :3])
    np.testing.assert_allclose(full[0], short[0], rtol=1e-4, atol=1e-5)
    changed = x.copy()
    changed[0, :, 4] += 5.0  # a padded TR of sample 0
    np.testing.assert_allclose(model.encode(changed, lengths=[3, 6])[0], full[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(model.encode(changed, lengths=[6, 6])[0], model.encode(x, lengths=[6, 6])[0])
    with pytest.raises(ShapeMismatchError, match="parcels"):
        model.encode(np.zeros((2, 5, 6), np.float32))


def test_learning_from_brains_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    cfg = WAVEConfig.tiny(dropout=0.0)
    src = WAVE(cfg)
    state = {k: v.clone() for k, v in src.state_dict().items() if k.startswith(("embedder.", "decoder."))}
    state["unembedder.model.0.weight"] = torch.zeros(3, 3)  # the CSM head, not part of WAVE
    torch.save(state, tmp_path / "pytorch_model.bin")
    torch.manual_seed(1)
    dst = WAVE(cfg)
    skipped = dst.load_encoder_checkpoint(tmp_path / "pytorch_model.bin", allow_pickle=True)
    assert skipped == ["unembedder.model.0.weight"]
    x = np.random.default_rng(3).standard_normal((3, 7, 4)).astype(np.float32)
    with torch.no_grad():
        dst.fmri_projector.load_state_dict(src.fmri_projector.state_dict())
    np.testing.assert_allclose(dst.eval().encode(x), src.eval().encode(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeMismatchError, match="n_parcels"):
        WAVE(WAVEConfig.tiny(n_parcels=9)).load_encoder_checkpoint(tmp_path / "pytorch_model.bin",
                                                                   allow_pickle=True)


def test_prompt_ids_and_no_gradient_to_the_meta_net():
    ids = torch.tensor([[49406, 320, 1929, 49407], [49406, 7, 8, 49407]])
    ctx = torch.tensor([[0.0011, -0.5, 0.0029], [1.5, 0.2, -1.0]])
    out = prompt_token_ids(ids, ctx)
    assert out.tolist() == [[49406, 1, 0, 2, 320, 1929, 49407], [49406, 1500, 200, 0, 7, 8, 49407]]

    torch.manual_seed(0)
    model = WAVE(WAVEConfig.tiny(sparse_ratio=0.0, shuffle_trs=0))
    table = torch.nn.Embedding(2000, 20)
    seen = {}

    def text_encoder(tok):
        seen["ids"] = tok
        return table(tok.clamp(max=1999)).mean(dim=1)

    model.set_text_encoder(text_encoder).train()
    batch = {"x": torch.randn(4, 7, 5), "image_embeds": torch.randn(4, 20),
             "text_ids": torch.randint(0, 50, (4, 13 - 5))}
    out = model.training_step(batch, 0)
    out["loss"].backward()
    assert seen["ids"].shape == (4, 13)
    assert all(p.grad is None for p in model.meta_net.parameters()) and model.context_vector.grad is None
    assert model.fmri_projector.weight.grad is not None and model.txt_logit_scale.grad is not None


def test_augmentation_shuffles_the_first_five_trs_and_zeroes_a_fifth():
    torch.manual_seed(0)
    model = WAVE(WAVEConfig.tiny(sparse_ratio=0.0))
    x = torch.arange(8, dtype=torch.float32)[None, :, None].expand(200, 8, 7)
    y = model.augment(x)
    assert torch.equal(y[:, 5:], x[:, 5:])
    assert torch.equal(torch.sort(y[:, :5, 0], dim=1).values, x[:, :5, 0])
    assert (y[:, :5, 0] != x[:, :5, 0]).any()
    model = WAVE(WAVEConfig.tiny(shuffle_trs=0))
    z = model.augment(torch.ones(50, 8, 7))
    assert abs(float((z == 0).float().mean()) - 0.2) < 0.03


def test_save_and_load_pretrained(tmp_path):
    model = WAVE(WAVEConfig.tiny(dropout=0.0)).eval()
    model.save_pretrained(tmp_path / "m")
    again = WAVE.from_pretrained(tmp_path / "m").eval()
    x = np.random.default_rng(0).standard_normal((2, 7, 5)).astype(np.float32)
    np.testing.assert_allclose(again.encode(x), model.encode(x), rtol=1e-6)


def test_time_embedding_ids_follow_the_grid():
    model = WAVE(WAVEConfig())  # 0.2 s grid to 300 s: 1500 time embeddings + the dummy one
    ids = model.embedder.time_ids(torch.tensor([[0.0, 2.0, 4.0, 7.3, -1.0]]))
    assert ids.tolist() == [[0, 10, 20, 36, 1500]]
    assert model.embedder.wt_re.num_embeddings == 1501


def test_prior_real_size_parameter_count_and_round_trip(tmp_path):
    from neurodecode.models.wave import WAVEPrior, WAVEPriorConfig

    with torch.device("meta"):
        prior = WAVEPrior()
    # written from dalle2-pytorch's layers as MindEye1's VersatileDiffusionPriorNetwork builds them in WAVE's
    # reconstruct.py (dim 768, depth 6, dim_head 64, heads 12, 257 tokens, learned_query_mode "pos_emb")
    d, n, heads, dh, ff = 768, 257, 12, 64, 4 * 768
    mapper = 768 * n * d + n * d                           # WAVE's dim_mapper Linear(768, 257 x 768)
    time_mlp = (d * 2 * d + 2 * d) + (2 * d * 2 * d + 2 * d) + (2 * d * d + d)  # MLP(dim, dim), expansion 2
    attn = d + 2 * dh + d * heads * dh + d * 2 * dh + heads * dh * d + d  # norm g, null_kv, q, kv, out, out norm
    feed = d + d * 2 * ff + ff * d                         # norm g, SwiGLU in, out (no biases)
    rel_pos = 32 * heads
    expect = mapper + time_mlp + n * d + rel_pos + 6 * (attn + feed) + d + d * d + 2 * n * d
    #        + learned query, rel-pos bias, layers, stable norm, project_out, null brain / null image embeds
    assert sum(q.numel() for q in prior.parameters()) == expect
    # the same network as MindEye2's PriorNetwork (whose count at bigG size is tied to the reference's 259.9 M)
    from neurodecode.models.mindeye2 import DiffusionPrior

    with torch.device("meta"):
        mindeye = DiffusionPrior(n_tokens=n, dim=d, depth=6, heads=heads, dim_head=dh)
    assert sum(q.numel() for q in prior.parameters()) - mapper == sum(q.numel() for q in mindeye.parameters())
    torch.manual_seed(0)
    small = WAVEPrior(WAVEPriorConfig.tiny()).eval()
    small.save_pretrained(tmp_path / "prior")
    again = WAVEPrior.from_pretrained(tmp_path / "prior").eval()
    cond = np.random.default_rng(0).standard_normal((2, 24)).astype(np.float32)
    np.testing.assert_array_equal(small.sample(cond, 3), again.sample(cond, 3))


def test_a_prior_saved_with_the_earlier_plain_blocks_is_refused_with_a_teaching_error():
    from neurodecode._core.errors import ValidationError
    from neurodecode.models.wave import WAVEPriorConfig

    saved = {**dataclasses.asdict(WAVEPriorConfig.tiny()), "dropout": 0.0}  # the earlier layout's config.json
    with pytest.raises(ValidationError, match="Retrain the prior"):
        WAVEPriorConfig.from_dict(saved)
    again = WAVEPriorConfig.from_dict(dataclasses.asdict(WAVEPriorConfig.tiny(timesteps=7)))
    assert again.timesteps == 7 and again.token_dim == 16
