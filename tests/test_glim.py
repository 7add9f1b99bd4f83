"""GLIM (sentence EEG -> text via a frozen T5): shapes, no teacher forcing at generation, errors, both tiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError, ValidationError
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
