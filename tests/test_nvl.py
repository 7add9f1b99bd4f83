"""Neuro-Vision to Language: the ViT3D extractor (sizes from the paper, its loss) and the LLM stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.models.nvl import INSTRUCTIONS, NVL, NVLBrainLLM, NVLConfig, instruction_pairs, main_concept

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 9, 27)).astype(np.float32)


def _vit_block(d: int, hidden: int) -> int:
    # two LayerNorms, fused qkv + output projection, the 2-layer MLP (weights + biases)
    return 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)


def test_real_size_parameters_follow_the_paper():
    """16 layers of width 768 (FFN 4x) over 14^3-voxel patches; CLS heads of hidden 1024 to CLIP-L 768 and VAE."""
    with torch.device("meta"):
        model = NVL(NVLConfig(n_patches=180, vae_shape=[4, 64, 64], clip_shape=[768]))
    d, h, p, n = 768, 3072, 14 ** 3, 180
    encoder = 16 * _vit_block(d, h)
    assert sum(x.numel() for x in model.blocks.parameters()) == encoder
    assert 112e6 < encoder < 116e6  # the paper's "16-layer ViT, width 768" is about 115 M with a 4x FFN
    embed = p * d + d + d + (n + 1) * d  # patch embedding, CLS, one position per kept patch + CLS
    heads = (d * 1024 + 1024 + 1024 * 768 + 768) + (d * 1024 + 1024 + 1024 * 16384 + 16384)
    assert sum(x.numel() for x in model.parameters()) == encoder + embed + 2 * d + heads


def test_loss_is_clip_mse_plus_one_64th_vae_mse():
    torch.manual_seed(0)
    model = NVL(NVLConfig.tiny())
    clip, vae = torch.randn(3, 16), torch.randn(3, 4, 16, 16)
    out = model.training_step({"x": torch.from_numpy(X), "clip": clip, "vae_latents": vae}, 0)
    with torch.no_grad():
        pred = model(torch.from_numpy(X))
    expected = ((pred["clip_image_embeds"] - clip) ** 2).mean() + ((pred["vae_latents"] - vae) ** 2).mean() / 64
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_mixup_of_repeats_only_changes_the_input():
    torch.manual_seed(1)
    model = NVL(NVLConfig.tiny(dropout=0.0)).train()
    batch = {"x": torch.from_numpy(X), "clip": torch.zeros(3, 16), "vae_latents": torch.zeros(3, 4, 16, 16)}
    same = model.training_step({**batch, "x_pair": torch.from_numpy(X)}, 0)["loss"]  # mixing a repeat with itself
    plain = model.training_step(batch, 0)["loss"]
    assert same.item() == pytest.approx(plain.item(), rel=1e-5)
    other = model.training_step({**batch, "x_pair": torch.from_numpy(X[::-1].copy())}, 0)["loss"]
    assert abs(other.item() - plain.item()) > 1e-6


def test_penultimate_tokens_and_shapes():
    torch.manual_seed(0)
    model = NVL(NVLConfig.tiny(depth=3)).eval()
    tokens = model.fmri_tokens(X)
    assert tokens.shape == (3, 10, 24)
    with torch.no_grad():
        h = torch.cat([model.cls.expand(3, -1, -1), model.embed(torch.from_numpy(X))], 1) + model.pos
        for block in model.blocks[:2]:
            h = block(h)
    np.testing.assert_allclose(tokens, h.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="n_patches|shape"):
        model.predict_latents(X[:, :8])


def test_concept_map_vanishes_where_the_input_is_zero():
    torch.manual_seed(0)
    model = NVL(NVLConfig.tiny())
    x = X.copy()
    x[:, 4] = 0.0
    maps = model.concept_map(x, np.ones(16, np.float32))
    assert maps.shape == x.shape and (maps >= 0).all()
    assert np.all(maps[:, 4] == 0) and maps.sum() > 0


def test_instruction_pairs_from_captions():
    caps = ["A red bus on a street.", "a bus parked near the street", "Bus and cars"]
    assert main_concept(caps) == "bus"
    pairs = dict(instruction_pairs(caps))
    assert pairs[INSTRUCTIONS["brief"]] == caps[0]
    assert pairs[INSTRUCTIONS["question"]] == "bus"
    assert pairs["Locating the concept of bus."] == "bus"
    assert pairs[INSTRUCTIONS["detailed"]] == " ".join(caps)


def test_llm_stage_learns_answers_from_fmri_tokens_and_round_trips(tmp_path):
    """Two trials, two answers: the tiny LM fed only the projected fMRI tokens says which is which."""
    torch.manual_seed(0)
    x = X[:2]
    model = NVLBrainLLM(NVLConfig.tiny(llm_train="full"))
    assert not any(p.requires_grad for p in model.extractor.parameters())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    batch = {"x": torch.from_numpy(x), "instruction": [INSTRUCTIONS["brief"]] * 2, "answer": ["cat", "dog"]}
    for step in range(40):
        loss = model.training_step(batch, step)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.answer(x, INSTRUCTIONS["brief"], max_new_tokens=4) == ["cat", "dog"]
    model.save_pretrained(tmp_path / "m")
    again = NVLBrainLLM.from_pretrained(tmp_path / "m")
    assert again.answer(x, INSTRUCTIONS["brief"], max_new_tokens=4) == ["cat", "dog"]


def test_lora_stage_trains_only_adapters_and_projector():
    torch.manual_seed(0)
    extractor = NVL(NVLConfig.tiny())
    model = NVLBrainLLM.from_extractor(extractor, llm_train="lora", lora_r=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") or "lora_" in n for n in trainable)
    assert any("lora_" in n for n in trainable)
    for (n1, p1), (n2, p2) in zip(extractor.state_dict().items(), model.extractor.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_a_language_model_folder_loads_through_the_real_path_and_is_not_saved_with_the_run(tmp_path):
    """The real tier: any causal LM by folder (here a small Llama saved in the hub layout), frozen in stage 1;
    a saved run keeps the extractor and projector only and reloads the LM from its folder."""
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    from neurodecode.models.nvl import TINY_LLM

    torch.manual_seed(3)
    LlamaForCausalLM(LlamaConfig(**{**TINY_LLM, "hidden_size": 32})).save_pretrained(tmp_path / "lm")
    ByT5Tokenizer().save_pretrained(tmp_path / "lm")
    torch.manual_seed(0)
    model = NVLBrainLLM(NVLConfig.tiny(llm=str(tmp_path / "lm"), llm_dtype="float32"))
    assert model.lm.config.hidden_size == 32 and model.projector[-1].out_features == 32
    assert not any(p.requires_grad for p in model.lm.parameters())
    said = model.answer(X[:2], INSTRUCTIONS["brief"], max_new_tokens=3)
    model.save_pretrained(tmp_path / "run")
    from safetensors.numpy import load_file

    assert not any(k.startswith("lm.") for k in load_file(tmp_path / "run" / "model.safetensors"))
    wrapped = torch.nn.ModuleDict({"model": model}).state_dict()  # as the trainer's checkpoints hold it
    assert not any(".lm." in k for k in wrapped) and any(k.startswith("model.projector.") for k in wrapped)
    again = NVLBrainLLM.from_pretrained(tmp_path / "run")
    assert again.answer(X[:2], INSTRUCTIONS["brief"], max_new_tokens=3) == said


def test_real_size_language_stage_is_llama3_8b_plus_a_768_to_4096_projector():
    """The paper's LM at its published size (Llama-3-8B: 8,030,261,248 parameters), built on the meta device."""
    llama3_8b = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
                 "rope_theta": 500000.0, "tie_word_embeddings": False}
    with torch.device("meta"):
        model = NVLBrainLLM(NVLConfig(n_patches=180, llm=None, llm_config=llama3_8b))
    assert sum(p.numel() for p in model.lm.parameters()) == 8_030_261_248
    assert sum(p.numel() for p in model.projector.parameters()) == 768 * 4096 + 4096 + 4096 * 4096 + 4096
