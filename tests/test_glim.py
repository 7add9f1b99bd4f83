"""GLIM (sentence EEG -> text via a frozen T5): shapes, no teacher forcing at generation, errors, both tiers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurodecode._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from neurodecode.models.glim import GLIM, GLIMConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GLIM(GLIMConfig.tiny(n_channels=7, max_times=40, subjects=["zuco/ZAB", "zuco/ZDM"]))


def _x(n=3, t=33, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 7, t)).astype(np.float32)


def test_shapes_and_masks(model):
    X, lengths = _x(), [33, 20, 9]
    Xp, lens = model.check_input(X, lengths)
    assert Xp.shape == (3, 7, 40) and lens.tolist() == [33, 20, 9]
    e = model.embed_eeg(X, lengths)
    assert e.shape == (3, 24)
    # padding is masked: changing samples beyond the valid length changes nothing
    X2 = X.copy()
    X2[2, :, 12:] = 100.0
    np.testing.assert_allclose(model.embed_eeg(X2, lengths), e, atol=1e-5)
    # a prefix mask is the same as lengths
    mask = np.arange(33)[None] < np.array(lengths)[:, None]
    np.testing.assert_allclose(model.embed_eeg(X, mask=mask), e, atol=1e-6)
    # prompts (subject) change the embedding
    assert not np.allclose(model.embed_eeg(X, lengths, subject="zuco/ZAB"), e)
    assert model.predict_latents(X, lengths=lengths)["text_embeds"].shape == (3, 24)


def test_training_step_losses_and_frozen_text_model(model):
    tok = model.tokenize(["the cat sat.", "a dog ran!", "birds fly high"])
    assert tok["input_ids"].shape == (3, 32) and tok["attention_mask"][0].sum() == len("the cat sat.") + 1  # + EOS
    Xp, lens = model.check_input(_x(), [33, 20, 9])
    batch = {"x": torch.from_numpy(Xp), "lengths": torch.from_numpy(lens),
             **{k: torch.from_numpy(v) for k, v in tok.items()}, "subject": "zuco/ZDM"}
    model.train()
    out = model.training_step(batch, 0)
    assert out["loss"].item() == pytest.approx(0.5 * out["loss_contrastive"].item() + 0.5 * out["loss_lm"].item(),
                                               rel=1e-5)
    model.zero_grad()
    out["loss"].backward()
    # the tiny T5's random weights are trained (a frozen random T5 cannot learn to write)
    assert not model.config.text_frozen and model.text_model.decoder.block[0].layer[1].EncDecAttention.q.weight.grad.abs().sum() > 0
    assert model.prefix_queries.grad.abs().sum() > 0 and model.latent_queries.grad.abs().sum() > 0
    model.zero_grad()
    model.eval()
    # frozen on request (the default for pretrained weights): no gradient, always in eval mode
    frozen = GLIM(GLIMConfig.tiny(n_channels=7, max_times=40, subjects=["zuco/ZDM"], freeze_text_model=True)).train()
    frozen.training_step(batch, 0)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in frozen.text_model.parameters())
    assert frozen.training and not frozen.text_model.training


def test_generate_does_not_use_targets(model):
    """Each decoder call sees one new token (its own previous output), never labels or target ids."""
    X = _x()
    first = model.generate(X, [33, 20, 9], max_new_tokens=6)
    assert len(first) == 3 and all(isinstance(t, str) for t in first)
    calls, decoder_ids = [], []
    h1 = model.text_model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    h2 = model.text_model.decoder.register_forward_pre_hook(
        lambda m, a, kw: decoder_ids.append(kw.get("input_ids")), with_kwargs=True)
    # a training step on other targets in between must not change what is generated
    tok = model.tokenize(["completely different text"] * 3)
    Xp, lens = model.check_input(X, [33, 20, 9])
    with torch.no_grad():
        model.training_step({"x": torch.from_numpy(Xp), "lengths": torch.from_numpy(lens),
                             **{k: torch.from_numpy(v) for k, v in tok.items()}}, 0)
    calls.clear()
    decoder_ids.clear()
    model.eval()
    again = model.generate(X, [33, 20, 9], max_new_tokens=6, min_new_tokens=6)
    h1.remove()
    h2.remove()
    assert len(calls) == len(decoder_ids) == 6
    for kw, ids in zip(calls, decoder_ids):
        assert kw.get("labels") is None
        assert ids.shape == (3, 1)  # incremental decoding: only its own last token
    assert decoder_ids[0].flatten().tolist() == [0, 0, 0]  # the decoder start token
    assert again[:1] == model.generate(X[:1], [33], max_new_tokens=6, min_new_tokens=6)
    assert first == model.generate(X, [33, 20, 9], max_new_tokens=6)


def test_generate_reproduces_overfit_sentences_from_their_own_eeg():
    """Regression: the tiny tier used to return only "" after training (frozen random T5, LM loss at chance)."""
    torch.manual_seed(0)
    sents = ["the cat sat.", "a dog ran!", "birds fly high", "red sun"]
    m = GLIM(GLIMConfig.tiny(n_channels=7, max_times=40))
    X = np.random.default_rng(3).standard_normal((4, 7, 40)).astype(np.float32)
    lengths = [40, 33, 25, 38]
    Xp, lens = m.check_input(X, lengths)
    batch = {"x": torch.from_numpy(Xp), "lengths": torch.from_numpy(lens),
             **{k: torch.from_numpy(v) for k, v in m.tokenize(sents).items()}}
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
    # the sentence comes from the EEG: permuting the EEG permutes the output
    perm = [2, 0, 3, 1]
    assert m.generate(X[perm], [lengths[i] for i in perm], max_new_tokens=16) == [out[i] for i in perm]


def test_retrieve_and_classify_shapes(model):
    X = _x()
    ranks = model.retrieve(X, ["a", "bb", "ccc", "dddd"], [33, 20, 9])
    assert ranks.shape == (3, 4) and sorted(ranks[0].tolist()) == [0, 1, 2, 3]
    sim = model.similarity(X, ["a", "bb", "ccc", "dddd"], [33, 20, 9])
    assert (np.take_along_axis(sim, ranks, 1)[:, :-1] >= np.take_along_axis(sim, ranks, 1)[:, 1:]).all()
    labels = model.classify(X, ["positive.", "negative."], [33, 20, 9])
    assert labels.shape == (3,) and set(labels.tolist()) <= {0, 1}


def test_bad_inputs_teach(model):
    with pytest.raises(ShapeMismatchError, match=r"at most 40 samples \(0.3125 s at 128 Hz\).*Drop sentences"):
        model.embed_eeg(_x(t=41))
    with pytest.raises(ShapeMismatchError, match="lengths.*at most 40 samples.*rows \\[1\\]"):
        model.embed_eeg(_x(), [33, 41, 9])
    with pytest.raises(ShapeMismatchError, match="7 channels on axis 1"):
        model.generate(np.zeros((2, 8, 30), np.float32))
    with pytest.raises(ValidationError, match="empty sentences at rows \\[2\\]"):
        model.embed_eeg(_x(), [33, 20, 0])
    with pytest.raises(ValidationError, match="non-empty"):
        model.generate(np.zeros((0, 7, 30), np.float32))
    with pytest.raises(ValidationError, match="prefix"):
        model.embed_eeg(_x(n=1, t=4), mask=np.array([[True, False, True, False]]))
    with pytest.raises(ValidationError, match="'zuco/XYZ'.*subject=None"):
        model.embed_eeg(_x(), subject="zuco/XYZ")
    with pytest.raises(ValidationError, match="at least 2 sentences"):
        model.training_step({"x": torch.zeros(1, 7, 40), "input_ids": torch.zeros(1, 4),
                             "attention_mask": torch.ones(1, 4)}, 0)


def test_tiny_tier_roundtrip(model, tmp_path):
    model.save_pretrained(tmp_path / "glim")
    loaded = GLIM.from_pretrained(tmp_path / "glim")
    X = _x()
    np.testing.assert_allclose(loaded.embed_eeg(X), model.embed_eeg(X), atol=1e-6)
    assert loaded.generate(X, max_new_tokens=5) == model.generate(X, max_new_tokens=5)


def _twins():
    """Two models with the same weights: one to be given input statistics, one left unscaled."""
    torch.manual_seed(2)
    cfg = GLIMConfig.tiny(n_channels=7, max_times=40, subjects=["zuco/ZAB", "zuco/ZDM"])
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
    pooled = (rng.normal(0.0, 2e-5, 7), rng.uniform(5e-6, 2e-5, 7))  # EEG in volts
    own = (rng.normal(0.0, 2e-5, 7), rng.uniform(5e-6, 2e-5, 7))
    lengths = [33, 22, 9]  # not multiples of patch_size 4: the last patch holds data and padding
    valid = np.arange(33)[None] < np.array(lengths)[:, None]
    raw = ((pooled[0][:, None] + pooled[1][:, None] * rng.standard_normal((3, 7, 33))) * valid[:, None])
    raw = raw.astype(np.float32)  # zero-padded raw EEG, as a lab pads it
    assert scaled.set_input_scaling(*pooled) is scaled
    scaled.set_input_scaling(*own, subject="zuco/ZDM")
    assert scaled.input_mean.shape == (3, 7)
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
    # what the patch embedding sees: the scaled samples, and exact zeros beyond each length (not -mean / std)
    seen = []
    hook = scaled.patch_embed.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    scaled.embed_eeg(raw, lengths)
    hook.remove()
    c = scaled.config
    x_in = seen[0].view(3, c.n_tokens, 7, c.patch_size).permute(0, 2, 1, 3).reshape(3, 7, -1).numpy()
    np.testing.assert_array_equal(x_in[:, :, :33], z)
    assert not x_in[:, :, 33:].any() and not x_in[2, :, 9:].any()
    # the training step sees the same scaled sentences
    Xp, lens = scaled.check_input(raw, lengths)
    batch = {"x": torch.from_numpy(Xp), "lengths": torch.from_numpy(lens), **{
        k: torch.from_numpy(v) for k, v in scaled.tokenize(texts).items()}, "subject": "zuco/ZDM"}
    with torch.no_grad():
        loss = scaled.training_step(batch, 0)["loss"].item()
        z_pad, _ = plain.check_input(z_own, lengths)
        assert loss == plain.training_step({**batch, "x": torch.from_numpy(z_pad)}, 0)["loss"].item()
    # part of the checkpoint: a loaded model takes raw data too; the caller's config is left alone
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
    zeros, ones = np.zeros(7), np.ones(7)
    with pytest.raises(ShapeMismatchError, match=r"mean: expected one value per channel, shape \(7,\)"):
        model.set_input_scaling(np.zeros(16), ones)
    with pytest.raises(ShapeMismatchError, match=r"std: expected one value per channel, shape \(7,\)"):
        model.set_input_scaling(zeros, np.ones((1, 7)))
    with pytest.raises(ValidationError, match="std: expected only finite values"):
        model.set_input_scaling(zeros, np.r_[ones[:6], np.inf])
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
    model = GLIM(GLIMConfig.tiny(n_channels=7, max_times=40, text_model=str(t5_dir)))
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


def test_recipe_builds_the_tiny_model():
    from pathlib import Path

    from neurodecode._core.recipes import load_recipe
    from neurodecode.train import TrainConfig

    path = Path(__file__).parents[1] / "pipelines" / "glim_zuco.toml"
    real = load_recipe(path)
    cfg = GLIMConfig.from_dict(real["decoder"])
    assert (cfg.n_channels, cfg.max_times, cfg.n_latent, cfg.text_model) == (128, 1280, 96, "google/flan-t5-large")
    train = TrainConfig.from_dict(real["train"])
    assert (train.lr, train.epochs, train.batch_size, train.optimizer) == (1e-4, 200, 72, "adam")
    tiny = GLIMConfig.from_dict(load_recipe(path, preset="tiny")["decoder"])
    assert tiny.text_model is None
    assert len(GLIM(tiny).generate(np.zeros((2, 16, 64), np.float32), max_new_tokens=2)) == 2
