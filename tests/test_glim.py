"""GLIM (sentence EEG -> text via a frozen T5): the reference layout and losses, no teacher forcing, errors, tiers.

Reference: justin-xzliu/GLIM @f812f84 (model/modules.py, model/glim.py, train.py); the formulas below are written
from it, independently of neurodecode's code.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurodecode._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from neurodecode.models.glim import GLIM, GLIMConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GLIM(GLIMConfig.tiny(n_channels=8, max_times=40, subjects=["zuco/ZAB", "zuco/ZDM"]))


def _x(n=3, t=33, seed=0, c=8):
    return np.random.default_rng(seed).standard_normal((n, c, t)).astype(np.float32)


def _batch(m, X, lengths, texts, **extra):
    Xp, lens = m.check_input(X, lengths)
    return {"x": torch.from_numpy(Xp), "lengths": torch.from_numpy(lens),
            **{k: torch.from_numpy(v) for k, v in m.tokenize(texts).items()}, **extra}


# --------------------------------------------------------------------------- the reference layout


def test_real_size_parameter_counts_match_the_reference():
    """18,972,291 = every GLIM parameter outside T5 in the reference, its frozen 1280 x 128 position table included
    (requires_grad=False there; a buffer here): 18,808,451 trainable + 163,840."""
    t5 = dict(vocab_size=384, d_model=1024, d_kv=64, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=16,
              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # only the T5 width matters here
    with torch.device("meta"):
        m = GLIM(GLIMConfig(text_model=None, text_config=t5, freeze_text_model=True,
                            subjects=[f"zuco/S{i:02d}" for i in range(30)]))

    def count(*mods):
        return sum(p.numel() for x in mods for p in ([x] if isinstance(x, torch.nn.Parameter) else x.parameters()))

    assert m.config.prompt_rows == (3, 3, 31)
    assert count(m.prompt_tables, m.prompt_sigma) == 37 * 128 + 3  # PromptEmbedder
    # 6 adaLN blocks at width 128: attention 66,048, MLP 131,712, adaLN 99,072, temporal adaLN 330,240
    assert count(m.in_blocks) == 6 * 627_072
    # x_proj 128->256 + LayerNorm, 96 x 256 queries, 6 decoder blocks (2 attentions, MLP, 3 LayerNorms), LayerNorm
    assert count(m.x_proj, m.x_norm, m.queries, m.out_blocks, m.latent_norm) == 33_024 + 512 + 24_576 + 6 * 1_053_440 + 512
    # Aligner: in_proj 256->1024, two queries, two 8-head attentions at 1024
    assert count(m.to_text, m.eeg_query, m.text_query, m.eeg_pool, m.text_pool) == 8_662_016
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert trainable == 18_808_451 and trainable + m.positions.numel() == 18_972_291
    assert m.positions.shape == (1280, 128) and not m.positions.requires_grad
    c = m.config
    assert (c.d_model, c.n_latent, c.n_heads, c.mlp_ratio, c.dropout, c.n_in_blocks, c.n_out_blocks) == (
        256, 96, 8, 4, 0.0, 6, 6)
    assert (c.contrastive_weight, c.num_beams, c.max_text_len, c.max_source_len, c.prompt_dropout) == (
        0.5, 2, 64, 96, [0.0, 1.0, 1.0])


def test_positions_are_the_reference_sincos_table(model):
    d, n = model.config.n_channels, model.config.max_times
    omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
    ang = np.arange(n)[:, None] * omega[None]
    np.testing.assert_allclose(model.positions.numpy(), np.concatenate([np.sin(ang), np.cos(ang)], 1), atol=1e-6)


def _ln(x, eps=1e-6):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)


def _mha(att, q_in, kv_in, key_mask=None, causal=False):
    """nn.MultiheadAttention maths with explicit softmax (the attention's q / kv / out weights)."""
    d, h = q_in.shape[-1], att.n_heads
    q = q_in @ att.q.weight.T + att.q.bias
    k, v = (kv_in @ att.kv.weight.T + att.kv.bias).chunk(2, -1)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], h, d // h).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(-1, -2) / math.sqrt(d // h)
    if key_mask is not None:
        s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    y = (s.softmax(-1) @ v).transpose(1, 2).reshape(q_in.shape[0], -1, d)
    return y @ att.out.weight.T + att.out.bias


def _mlp(seq, x):
    return F.linear(F.gelu(F.linear(x, seq[0].weight, seq[0].bias), approximate="tanh"), seq[3].weight, seq[3].bias)


def test_input_block_equals_the_dit_adaptive_layernorm_formula():
    torch.manual_seed(1)
    m = GLIM(GLIMConfig.tiny(n_channels=8, max_times=12)).eval()
    block = m.in_blocks[0]
    x, p = torch.randn(3, 12, 8), torch.randn(3, 8)
    valid = torch.arange(12)[None] < torch.tensor([12, 7, 3])[:, None]
    # zero-initialised modulation (DiT): a fresh block is the identity
    torch.testing.assert_close(block(x, valid, p), x)
    with torch.no_grad():
        for lin in (block.ada, block.t_ada):
            lin.weight.normal_(0, 0.3)
            lin.bias.normal_(0, 0.3)
    sp = F.silu(p)
    scale, shift = (sp @ block.t_ada.weight.T + block.t_ada.bias).chunk(2, 1)  # per time step
    xt = x * (1 + scale[:, :, None]) + shift[:, :, None]
    h1, s1, g1, h2, s2, g2 = (v[:, None] for v in (sp @ block.ada.weight.T + block.ada.bias).chunk(6, 1))
    a = _ln(xt) * (1 + s1) + h1
    y = xt + g1 * _mha(block.attn, a, a, valid)
    y = y + g2 * _mlp(block.mlp, _ln(y) * (1 + s2) + h2)
    torch.testing.assert_close(block(x, valid, p), y, atol=1e-5, rtol=1e-5)


def test_decoder_block_is_causal_self_attention_then_masked_cross_attention():
    torch.manual_seed(2)
    m = GLIM(GLIMConfig.tiny(n_channels=8, max_times=12)).eval()
    block = m.out_blocks[0]
    q, x = torch.randn(3, 8, 24), torch.randn(3, 12, 24)
    valid = torch.arange(12)[None] < torch.tensor([12, 7, 3])[:, None]
    ln = lambda norm, t: F.layer_norm(t, (24,), norm.weight, norm.bias, 1e-6)  # noqa: E731
    h = ln(block.norm1, q)
    y = q + _mha(block.self_attn, h, h, causal=True)
    y = y + _mha(block.cross_attn, ln(block.norm2, y), x, valid)
    y = y + _mlp(block.mlp, ln(block.norm3, y))
    torch.testing.assert_close(block(q, x, valid), y, atol=1e-5, rtol=1e-5)
    # causal: changing query 5 leaves queries 0..4 untouched; padded time steps are never read
    q2, x2 = q.clone(), x.clone()
    q2[:, 5] += 3.0
    x2[2, 3:] = 100.0
    out, out2 = block(q, x, valid), block(q2, x2, valid)
    torch.testing.assert_close(out2[:2, :5], out[:2, :5])
    assert not torch.allclose(out2[:, 5], out[:, 5])
    torch.testing.assert_close(out2[2, :5], out[2, :5])


def test_prompt_is_the_sigma_weighted_sum_with_dataset_and_subject_dropped():
    torch.manual_seed(3)
    subs = [f"zuco/S{i:02d}" for i in range(30)]
    m = GLIM(GLIMConfig.tiny(subjects=subs)).eval()
    np.testing.assert_allclose(m.prompt_sigma.detach().numpy(), [3 / 37, 3 / 37, 31 / 37], rtol=1e-6)
    task = torch.from_numpy(m.prompt_index("task", ["NR", "TSR", "SR"], 3))
    assert task.tolist() == [1, 2, 1]  # SR reads as NR (the reference merges them)
    ds = torch.tensor([1, 2, 0])
    sub = torch.tensor([5, 17, 30])
    T = [t.weight.detach() for t in m.prompt_tables]
    sig = m.prompt_sigma.detach()
    expected = sig[0] * T[0][task] + sig[1] * T[1][0] + sig[2] * T[2][0]  # p = 1.0: always row 0
    torch.testing.assert_close(m.prompt_embedding([task, ds, sub]), expected)
    m.train()
    torch.testing.assert_close(m.prompt_embedding([task, ds, sub]), expected)
    # a kind with dropout 0 < p < 1 is replaced by row 0 in training only, about p of the time
    m2 = GLIM(GLIMConfig.tiny(prompt_dropout=[0.5, 0.0, 0.0])).train()
    ids = torch.ones(4000, dtype=torch.long)
    zeros = torch.zeros(4000, dtype=torch.long)
    with torch.no_grad():
        p = m2.prompt_embedding([ids, zeros, zeros])
        row0 = sum(m2.prompt_sigma[k] * m2.prompt_tables[k].weight[0] for k in range(3))
    frac = float(((p - row0).abs().amax(1) < 1e-7).float().mean())
    assert 0.45 < frac < 0.55
    m2.eval()
    torch.testing.assert_close(m2.prompt_embedding([ids[:2], zeros[:2], zeros[:2]])[0],
                               m2.prompt_embedding([ids[:2], zeros[:2], zeros[:2]])[1])


def test_contrastive_loss_is_cosine_without_temperature():
    rng = np.random.default_rng(4)
    e, t = rng.standard_normal((7, 9)) * 3, rng.standard_normal((7, 9))
    en = e / np.linalg.norm(e, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    L = en @ tn.T
    rows = np.log(np.exp(L).sum(1)) - np.diag(L)
    cols = np.log(np.exp(L).sum(0)) - np.diag(L)
    got = GLIM.contrastive_loss(torch.tensor(e, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
    assert got.item() == pytest.approx(0.5 * (rows.mean() + cols.mean()), rel=1e-5)


def test_training_step_is_half_contrastive_half_lm_on_the_templated_sentence(model):
    texts = ["the cat sat.", "a dog ran!", "birds fly high"]
    tok = model.tokenize(texts, sources=["SENT one", "SENT two", "SENT three"])
    assert tok["input_ids"].shape == (3, 32) and tok["attention_mask"][0].sum() == len("the cat sat.") + 1  # + EOS
    assert tok["source_ids"].shape == (3, 40)
    assert model.tokenizer.decode(tok["source_ids"][1], skip_special_tokens=True) == "To English: SENT two"
    X, lengths = _x(), [33, 20, 9]
    batch = _batch(model, X, lengths, texts, subject="zuco/ZDM")
    batch.update(source_ids=torch.from_numpy(tok["source_ids"]), source_mask=torch.from_numpy(tok["source_mask"]))
    model.eval()
    with torch.no_grad():
        out = model.training_step(batch, 0)
        states = model.encode_eeg(batch["x"], batch["lengths"], model._prompt_ids(batch, 3, torch.device("cpu")))
        assert states.shape == (3, model.config.n_latent, 32)  # n_latent x T5 width: the encoder states
        # LM: T5's cross-entropy over the target tokens (pads ignored), decoder fed the right-shifted targets
        ids = batch["input_ids"]
        dec_in = torch.cat([torch.zeros(3, 1, dtype=torch.long), ids[:, :-1]], 1)
        logits = model.text_model(encoder_outputs=(states,), decoder_input_ids=dec_in).logits
        lp = logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]
        am = batch["attention_mask"].bool()
        lm = -(lp[am]).mean()
        # contrastive text side: the frozen T5 encoding of "To English: <source sentence>"
        h = model.text_model.encoder(input_ids=batch["source_ids"], attention_mask=batch["source_mask"]).last_hidden_state
        c = GLIM.contrastive_loss(model.pool_eeg(states), model.pool_text(h, batch["source_mask"]))
    assert out["loss_lm"].item() == pytest.approx(lm.item(), rel=1e-5)
    assert out["loss_contrastive"].item() == pytest.approx(c.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.5 * c.item() + 0.5 * lm.item(), rel=1e-5)
    with pytest.raises(ValidationError, match="source_ids.*GLIM.tokenize"):
        model.training_step({k: v for k, v in batch.items() if not k.startswith("source")}, 0)


def test_gradients_and_frozen_text_model(model):
    batch = _batch(model, _x(), [33, 20, 9], ["the cat sat.", "a dog ran!", "birds fly high"], subject="zuco/ZDM")
    model.train()
    model.zero_grad()
    model.training_step(batch, 0)["loss"].backward()
    # the tiny T5's random decoder is trained (a frozen random T5 cannot learn to write); its encoder is not
    assert not model.config.text_frozen
    assert model.text_model.decoder.block[0].layer[1].EncDecAttention.q.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_model.encoder.parameters())
    # (the prompt tables and sigma start without gradient: the adaLN modulation they feed is zero-initialised)
    for p in (model.queries, model.text_query, model.eeg_query, model.to_text.weight,
              model.in_blocks[0].ada.weight, model.in_blocks[0].t_ada.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.zero_grad()
    model.eval()
    frozen = GLIM(GLIMConfig.tiny(n_channels=8, max_times=40, subjects=["zuco/ZDM"], freeze_text_model=True)).train()
    frozen.training_step(batch, 0)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in frozen.text_model.parameters())
    assert frozen.training and not frozen.text_model.training


def test_shapes_and_masks(model):
    X, lengths = _x(), [33, 20, 9]
    Xp, lens = model.check_input(X, lengths)
    assert Xp.shape == (3, 8, 40) and lens.tolist() == [33, 20, 9]
    e = model.embed_eeg(X, lengths)
    assert e.shape == (3, 32)
    X2 = X.copy()
    X2[2, :, 12:] = 100.0  # padding is masked: changing samples beyond the valid length changes nothing
    np.testing.assert_allclose(model.embed_eeg(X2, lengths), e, atol=1e-5)
    mask = np.arange(33)[None] < np.array(lengths)[:, None]
    np.testing.assert_allclose(model.embed_eeg(X, mask=mask), e, atol=1e-6)
    # with the reference's prompt dropout (0, 1, 1) only the task prompt matters
    np.testing.assert_allclose(model.embed_eeg(X, lengths, subject="zuco/ZAB"), e, atol=1e-6)
    with torch.no_grad():
        for blk in model.in_blocks:  # give the (zero-initialised) modulation some weight
            blk.ada.weight.normal_(0, 0.2)
    assert not np.allclose(model.embed_eeg(X, lengths, task="TSR"), model.embed_eeg(X, lengths, task="NR"))
    assert model.predict_latents(X, lengths=lengths)["text_embeds"].shape == (3, 32)


def test_generate_defaults_to_two_beams_and_max_length_64():
    m = GLIM(GLIMConfig.tiny(n_channels=8, max_text_len=64))
    seen = []
    gen = m.text_model.generate

    def spy(**kw):
        seen.append(kw)
        return gen(**kw)

    m.text_model.generate = spy
    m.generate(_x(n=2, t=20), [20, 11])
    assert seen[0]["num_beams"] == 2 and seen[0]["max_length"] == 64 and seen[0]["min_length"] == 0
    assert seen[0]["encoder_outputs"].last_hidden_state.shape[1:] == (8, 32)  # n_latent x T5 width
    m.generate(_x(n=2, t=20), [20, 11], num_beams=1, max_new_tokens=3)
    assert seen[1]["num_beams"] == 1 and seen[1]["max_new_tokens"] == 3 and "max_length" not in seen[1]


def test_generate_does_not_use_targets(model):
    """Each decoder call sees one new token (its own previous output), never labels or target ids."""
    X = _x()
    first = model.generate(X, [33, 20, 9], max_new_tokens=6, num_beams=1)
    assert len(first) == 3 and all(isinstance(t, str) for t in first)
    calls, decoder_ids = [], []
    h1 = model.text_model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    h2 = model.text_model.decoder.register_forward_pre_hook(
        lambda m, a, kw: decoder_ids.append(kw.get("input_ids")), with_kwargs=True)
    with torch.no_grad():  # a training step on other targets in between must not change what is generated
        model.training_step(_batch(model, X, [33, 20, 9], ["completely different text"] * 3), 0)
    calls.clear()
    decoder_ids.clear()
    model.eval()
    again = model.generate(X, [33, 20, 9], max_new_tokens=6, min_new_tokens=6, num_beams=1)
    h1.remove()
    h2.remove()
    assert len(calls) == len(decoder_ids) == 6
    for kw, ids in zip(calls, decoder_ids):
        assert kw.get("labels") is None
        assert ids.shape == (3, 1)  # incremental decoding: only its own last token
    assert decoder_ids[0].flatten().tolist() == [0, 0, 0]  # the decoder start token
    assert again[:1] == model.generate(X[:1], [33], max_new_tokens=6, min_new_tokens=6, num_beams=1)
    assert first == model.generate(X, [33, 20, 9], max_new_tokens=6, num_beams=1)


def test_generate_reproduces_overfit_sentences_from_their_own_eeg():
    """Regression: the tiny tier used to return only "" after training (frozen random T5, LM loss at chance)."""
    torch.manual_seed(0)
    sents = ["the cat sat.", "a dog ran!", "birds fly high", "red sun"]
    m = GLIM(GLIMConfig.tiny(n_channels=8, max_times=40))
    X = np.random.default_rng(3).standard_normal((4, 8, 40)).astype(np.float32)
    lengths = [40, 33, 25, 38]
    batch = _batch(m, X, lengths, sents)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    m.train()
    for step in range(80):
        loss = m.training_step(batch, step)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = m.generate(X, lengths, max_new_tokens=16)  # EEG alone: no targets given
    assert all(len(t) > 0 for t in out), out
    assert sum(o == s for o, s in zip(out, sents)) >= 3, out  # known answer: its own sentence
    assert all(o[:4] == s[:4] for o, s in zip(out, sents)), out
    perm = [2, 0, 3, 1]  # the sentence comes from the EEG: permuting the EEG permutes the output
    assert m.generate(X[perm], [lengths[i] for i in perm], max_new_tokens=16) == [out[i] for i in perm]


def test_retrieve_and_classify(model):
    X = _x()
    cands = ["a", "bb", "ccc", "dddd"]
    ranks = model.retrieve(X, cands, [33, 20, 9])
    assert ranks.shape == (3, 4) and sorted(ranks[0].tolist()) == [0, 1, 2, 3]
    sim = model.similarity(X, cands, [33, 20, 9])
    assert (np.take_along_axis(sim, ranks, 1)[:, :-1] >= np.take_along_axis(sim, ranks, 1)[:, 1:]).all()
    # retrieval candidates go through "To English: {}", label sentences of classify are used as given
    np.testing.assert_allclose(model.embed_texts(cands), model.embed_texts([f"To English: {c}" for c in cands],
                                                                           template="{}"), atol=1e-6)
    labels = ["Sentiment classification: It is positive.", "Sentiment classification: It is negative."]
    sim_l = model.similarity(X, labels, [33, 20, 9], template="{}")
    assert model.classify(X, labels, [33, 20, 9]).tolist() == sim_l.argmax(1).tolist()


def test_bad_inputs_teach(model):
    with pytest.raises(ShapeMismatchError, match=r"at most 40 samples \(0.3125 s at 128 Hz\).*Drop sentences"):
        model.embed_eeg(_x(t=41))
    with pytest.raises(ShapeMismatchError, match="lengths.*at most 40 samples.*rows \\[1\\]"):
        model.embed_eeg(_x(), [33, 41, 9])
    with pytest.raises(ShapeMismatchError, match="8 channels on axis 1"):
        model.generate(np.zeros((2, 9, 30), np.float32))
    with pytest.raises(ValidationError, match="empty sentences at rows \\[2\\]"):
        model.embed_eeg(_x(), [33, 20, 0])
    with pytest.raises(ValidationError, match="non-empty"):
        model.generate(np.zeros((0, 8, 30), np.float32))
    with pytest.raises(ValidationError, match="prefix"):
        model.embed_eeg(_x(n=1, t=4), mask=np.array([[True, False, True, False]]))
    with pytest.raises(ValidationError, match="'zuco/XYZ'.*subject=None"):
        model.embed_eeg(_x(), subject="zuco/XYZ")
    with pytest.raises(ValidationError, match="at least 2 sentences"):
        model.training_step({"x": torch.zeros(1, 8, 40), "input_ids": torch.zeros(1, 4),
                             "attention_mask": torch.ones(1, 4)}, 0)
    with pytest.raises(ShapeMismatchError, match="sources"):
        model.tokenize(["a", "b"], sources=["a"])
    with pytest.raises(ValidationError, match="even"):
        GLIMConfig.tiny(n_channels=9, d_model=27, n_heads=3)
    with pytest.raises(ValidationError, match="n_heads"):
        GLIMConfig.tiny(n_heads=3)


def test_tiny_tier_roundtrip(model, tmp_path):
    model.save_pretrained(tmp_path / "glim")
    assert "positions" not in json.dumps(sorted(model.state_dict()))  # the fixed table is not saved
    loaded = GLIM.from_pretrained(tmp_path / "glim")
    X = _x()
    np.testing.assert_allclose(loaded.embed_eeg(X), model.embed_eeg(X), atol=1e-6)
    assert loaded.generate(X, max_new_tokens=5) == model.generate(X, max_new_tokens=5)


def test_checkpoint_of_the_earlier_layout_is_refused_with_what_replaced_it(model, tmp_path):
    model.save_pretrained(tmp_path / "old")
    cfg_file = tmp_path / "old" / "config.json"
    info = json.loads(cfg_file.read_text())
    info["config"].update(patch_size=4, n_prefix=6, embed_dim=24)  # as the patch-token GLIM saved it
    cfg_file.write_text(json.dumps(info))
    with pytest.raises(ValidationError, match="embed_dim, n_prefix, patch_size.*each time step is a token.*retrain"):
        GLIM.from_pretrained(tmp_path / "old")


def _twins():
    """Two models with the same weights: one to be given input statistics, one left unscaled."""
    torch.manual_seed(2)
    cfg = GLIMConfig.tiny(n_channels=8, max_times=40, subjects=["zuco/ZAB", "zuco/ZDM"],
                          prompt_dropout=[0.0, 0.0, 0.0])
    plain, scaled = GLIM(cfg), GLIM(cfg)
    scaled.load_state_dict(plain.state_dict())
    return cfg, plain.eval(), scaled.eval()


def _zscore(X, mean, std, lengths):
    """The known answer, in float32 as the model computes it; samples beyond each length stay zero."""
    valid = np.arange(X.shape[2])[None] < np.asarray(lengths)[:, None]
    return np.where(valid[:, None], (X - np.float32(mean)[:, None]) / np.float32(std)[:, None], np.float32(0))


def test_input_scaling_on_raw_data_equals_the_unscaled_model_on_scaled_data(tmp_path):
    cfg, plain, scaled = _twins()
    rng = np.random.default_rng(5)
    pooled = (rng.normal(0.0, 2e-5, 8), rng.uniform(5e-6, 2e-5, 8))  # EEG in volts
    own = (rng.normal(0.0, 2e-5, 8), rng.uniform(5e-6, 2e-5, 8))
    lengths = [33, 22, 9]
    valid = np.arange(33)[None] < np.array(lengths)[:, None]
    raw = ((pooled[0][:, None] + pooled[1][:, None] * rng.standard_normal((3, 8, 33))) * valid[:, None])
    raw = raw.astype(np.float32)  # zero-padded raw EEG, as a lab pads it
    assert scaled.set_input_scaling(*pooled) is scaled
    scaled.set_input_scaling(*own, subject="zuco/ZDM")
    assert scaled.input_mean.shape == (3, 8)
    z, z_own = _zscore(raw, *pooled, lengths), _zscore(raw, *own, lengths)
    ref = plain.embed_eeg(z, lengths)
    np.testing.assert_array_equal(scaled.embed_eeg(raw, lengths), ref)
    np.testing.assert_array_equal(scaled.embed_eeg(raw, lengths, subject="zuco/ZAB"),  # never set on its own
                                  plain.embed_eeg(z, lengths, subject="zuco/ZAB"))
    np.testing.assert_array_equal(scaled.embed_eeg(raw, lengths, subject="zuco/ZDM"),
                                  plain.embed_eeg(z_own, lengths, subject="zuco/ZDM"))
    np.testing.assert_array_equal(scaled.predict_latents(raw, lengths=lengths)["text_embeds"], ref)
    texts = ["the cat sat.", "a dog ran!", "birds fly high"]
    np.testing.assert_array_equal(scaled.similarity(raw, texts, lengths), plain.similarity(z, texts, lengths))
    np.testing.assert_array_equal(scaled.retrieve(raw, texts, lengths), plain.retrieve(z, texts, lengths))
    np.testing.assert_array_equal(scaled.classify(raw, texts[:2], lengths), plain.classify(z, texts[:2], lengths))
    assert scaled.generate(raw, lengths, max_new_tokens=4) == plain.generate(z, lengths, max_new_tokens=4)
    assert not np.allclose(plain.embed_eeg(raw, lengths), ref)  # raw volts into an unscaled model: another answer
    # what the first input block sees: scaled samples plus positions, exact zeros (plus positions) beyond each length
    seen = []
    hook = scaled.in_blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    scaled.embed_eeg(raw, lengths)
    hook.remove()
    x_in = (seen[0] - scaled.positions).transpose(1, 2).numpy()
    np.testing.assert_allclose(x_in[:, :, :33], z, atol=1e-6)
    assert np.abs(x_in[:, :, 33:]).max() < 1e-6 and np.abs(x_in[2, :, 9:]).max() < 1e-6
    Xp, lens = scaled.check_input(raw, lengths)  # the training step sees the same scaled sentences
    batch = {"x": torch.from_numpy(Xp), "lengths": torch.from_numpy(lens), **{
        k: torch.from_numpy(v) for k, v in scaled.tokenize(texts).items()}, "subject": "zuco/ZDM"}
    with torch.no_grad():
        loss = scaled.training_step(batch, 0)["loss"].item()
        z_pad, _ = plain.check_input(z_own, lengths)
        assert loss == plain.training_step({**batch, "x": torch.from_numpy(z_pad)}, 0)["loss"].item()
    assert scaled.config.input_scaling and not cfg.input_scaling
    scaled.save_pretrained(tmp_path / "glim")
    loaded = GLIM.from_pretrained(tmp_path / "glim")
    np.testing.assert_array_equal(loaded.embed_eeg(raw, lengths, subject="zuco/ZDM"),
                                  plain.embed_eeg(z_own, lengths, subject="zuco/ZDM"))


def test_checkpoint_saved_before_input_scaling_loads_as_identity(tmp_path):
    from neurodecode.io.checkpoints import load_state_dict

    _, plain, _ = _twins()
    plain.save_pretrained(tmp_path / "old")
    cfg_file = tmp_path / "old" / "config.json"
    info = json.loads(cfg_file.read_text())
    del info["config"]["input_scaling"]  # as written before the field existed
    cfg_file.write_text(json.dumps(info))
    assert not [k for k in load_state_dict(tmp_path / "old" / "model.safetensors") if k.startswith("input_")]
    old = GLIM.from_pretrained(tmp_path / "old")  # strict loading
    X = _x()
    np.testing.assert_array_equal(old.embed_eeg(X, [33, 20, 9]), plain.embed_eeg(X, [33, 20, 9]))
    assert not old.config.input_scaling and old.input_mean.abs().sum() == 0 and bool((old.input_std == 1).all())
    info["config"]["input_scaling"] = True  # strict loading is kept: promised statistics must be there
    cfg_file.write_text(json.dumps(info))
    with pytest.raises(MetadataMismatchError, match="missing key.*input_mean"):
        GLIM.from_pretrained(tmp_path / "old")


def test_set_input_scaling_errors_teach(model):
    zeros, ones = np.zeros(8), np.ones(8)
    with pytest.raises(ShapeMismatchError, match=r"mean: expected one value per channel, shape \(8,\)"):
        model.set_input_scaling(np.zeros(16), ones)
    with pytest.raises(ShapeMismatchError, match=r"std: expected one value per channel, shape \(8,\)"):
        model.set_input_scaling(zeros, np.ones((1, 8)))
    with pytest.raises(ValidationError, match="std: expected only finite values"):
        model.set_input_scaling(zeros, np.r_[ones[:7], np.inf])
    with pytest.raises(ValidationError, match=r"std: expected positive values.*channel\(s\) \[0\].*Use 1"):
        model.set_input_scaling(zeros, np.r_[0.0, ones[1:]])
    with pytest.raises(ValidationError, match="'zuco/XYZ'.*GLIMConfig.subjects"):
        model.set_input_scaling(zeros, ones, subject="zuco/XYZ")
    assert not model.config.input_scaling and bool((model.input_std == 1).all())  # refused calls change nothing


def test_real_tier_from_a_local_folder_keeps_frozen_weights_out_of_the_checkpoint(tmp_path):
    """The real code path (text model by hub id or folder) with a tiny T5 written to disk, offline."""
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    t5_dir = tmp_path / "t5"
    torch.manual_seed(1)
    T5ForConditionalGeneration(T5Config(**GLIMConfig.tiny().text_config)).save_pretrained(t5_dir)
    ByT5Tokenizer().save_pretrained(t5_dir)
    model = GLIM(GLIMConfig.tiny(n_channels=8, max_times=40, text_model=str(t5_dir)))
    assert not any(k.startswith("text_model.") for k in model.state_dict())
    model.save_pretrained(tmp_path / "glim")
    loaded = GLIM.from_pretrained(tmp_path / "glim")
    X = _x()
    np.testing.assert_allclose(loaded.embed_eeg(X), model.embed_eeg(X), atol=1e-6)
    assert loaded.generate(X, max_new_tokens=4) == model.generate(X, max_new_tokens=4)


def test_real_tier_hub_id_offline_names_the_missing_model():
    from neurodecode._core.errors import OfflineError

    with pytest.raises(OfflineError, match="google/flan-t5-large"):
        GLIM(GLIMConfig())
