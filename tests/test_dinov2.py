"""DINOv2 spaces: preprocessing = the hub's preprocessor_config facts, features = transformers' Dinov2Model computed
here independently (CLS after the final LayerNorm, patch tokens, a block's query projections), distinct tiny widths,
the real configuration through the hub-cache and folder routes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.latents import available_spaces, get_space, space_artefacts
from neurodecode.testing import realarch_depth, write_hub_fixture

#: facebook/dinov2-base and facebook/dinov2-giant preprocessor_config.json (BitImageProcessor)
HUB_PREPROCESSOR = {"crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 256}, "resample": 3,
                    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                    "rescale_factor": 0.00392156862745098}


def _images(n=3, h=61, w=47, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _reference_pixels(images, shortest, crop):
    """Pixels by transformers' BitImageProcessor configured from the hub file's values (built here, not ours)."""
    from transformers import BitImageProcessor

    proc = BitImageProcessor(size={"shortest_edge": shortest}, resample=HUB_PREPROCESSOR["resample"],
                             crop_size={"height": crop, "width": crop},
                             rescale_factor=HUB_PREPROCESSOR["rescale_factor"],
                             image_mean=HUB_PREPROCESSOR["image_mean"], image_std=HUB_PREPROCESSOR["image_std"])
    return torch.as_tensor(proc(images=list(images), return_tensors="pt")["pixel_values"])


def test_registered_with_tiny_twins():
    names = available_spaces()
    for n in ("dinov2-base", "dinov2-base-tokens", "dinov2-base-q-tokens", "dinov2-giant"):
        assert n in names and f"{n}-tiny" in names


def test_real_preprocessing_is_the_hub_preprocessor_config():
    from neurodecode.latents.dinov2 import DINOV2_PREPROCESSING as pre

    assert pre["shortest_edge"] == HUB_PREPROCESSOR["size"]["shortest_edge"] == 256
    assert pre["crop_size"] == HUB_PREPROCESSOR["crop_size"]["height"] == 224
    assert pre["resample"] == "bicubic"  # PIL resample 3
    np.testing.assert_allclose(pre["mean"], HUB_PREPROCESSOR["image_mean"])
    np.testing.assert_allclose(pre["std"], HUB_PREPROCESSOR["image_std"])
    np.testing.assert_allclose(pre["rescale_factor"], HUB_PREPROCESSOR["rescale_factor"])


@pytest.mark.parametrize("name, shape", [("dinov2-base-tiny", (28,)), ("dinov2-base-tokens-tiny", (9, 28)),
                                         ("dinov2-base-q-tokens-tiny", (9, 28)), ("dinov2-giant-tiny", (36,))])
def test_tiny_shapes_distinct_from_other_tiny_spaces(name, shape):
    space = get_space(name)
    assert space.shape == shape
    others = {get_space(n).shape[-1] for n in ("clip-vit-l-14-tiny", "clip-vit-h-14-tiny", "git-large-coco-tokens-tiny")}
    assert shape[-1] not in others


def test_cls_and_tokens_equal_transformers_dinov2_model():
    space = get_space("dinov2-base-tiny")
    tokens = get_space("dinov2-base-tokens-tiny")
    imgs = _images()
    pixels = _reference_pixels(imgs, 48, 42)
    with torch.no_grad():
        out = space.model(pixel_values=pixels)  # the same seeded random weights, run by transformers
        # CLS after the final LayerNorm, computed from the raw encoder output here
        enc = space.model.encoder(space.model.embeddings(pixels)).last_hidden_state
        ln = torch.nn.functional.layer_norm(enc, (enc.shape[-1],), space.model.layernorm.weight,
                                            space.model.layernorm.bias, eps=1e-6)
    np.testing.assert_allclose(space.encode_images(imgs), out.pooler_output.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(space.encode_images(imgs), ln[:, 0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tokens.encode_images(imgs), ln[:, 1:].numpy(), rtol=1e-5, atol=1e-5)
    mean = get_space("dinov2-base-tiny", output="mean").encode_images(imgs)
    np.testing.assert_allclose(mean, ln[:, 1:].mean(1).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [-1, 0])
def test_q_tokens_are_the_blocks_query_projection(block):
    space = get_space("dinov2-base-q-tokens-tiny", block=block)
    imgs = _images(2)
    pixels = _reference_pixels(imgs, 48, 42)
    m = space.model
    with torch.no_grad():
        hidden = m(pixel_values=pixels, output_hidden_states=True).hidden_states  # input of each block
        x = hidden[block if block >= 0 else len(hidden) - 2]
        layer = m.encoder.layer[block]
        normed = torch.nn.functional.layer_norm(x, (x.shape[-1],), layer.norm1.weight, layer.norm1.bias, eps=1e-6)
        attn = layer.attention
        lin = getattr(attn, "q_proj", None) or attn.attention.query
        q = normed @ lin.weight.T + lin.bias
    np.testing.assert_allclose(space.encode_images(imgs), q[:, 1:].numpy(), rtol=1e-5, atol=1e-5)


def test_bad_block_teaches():
    from neurodecode.errors import ValidationError

    with pytest.raises(ValidationError, match="block"):
        get_space("dinov2-base-q-tokens-tiny", block=5)


def test_artefacts_name_the_hub_files():
    (art,) = space_artefacts("dinov2-base")
    assert art.repo == "facebook/dinov2-base"
    files = {f for g in art.files for f in g}
    assert "config.json" in files and "model.safetensors" in files
    (giant,) = space_artefacts("dinov2-giant")
    assert giant.repo == "facebook/dinov2-giant"


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def test_dinov2_base_real_widths_depth_1_both_routes(hub_cache):
    """The published ViT-B/14 widths (768, 12 heads, patch 14, 518 px position grid interpolated to 16 x 16) at
    one block, through the hub cache (weights=None) and a folder; 256 patch tokens at 224 px."""
    snap = write_hub_fixture("dinov2-base", hub_cache, layout="cache", depth=1)
    assert "models--facebook--dinov2-base" in str(snap)
    a = get_space("dinov2-base-tokens")
    b = get_space("dinov2-base-tokens", weights=str(snap))
    assert a.shape == b.shape == (256, 768)
    imgs = _images(2, 230, 300)
    fa, fb = a.encode_images(imgs), b.encode_images(imgs)
    assert np.isfinite(fa).all()
    np.testing.assert_allclose(fa, fb, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        ref = a.model(pixel_values=_reference_pixels(imgs, 256, 224)).last_hidden_state[:, 1:]
    np.testing.assert_allclose(fa, ref.numpy(), rtol=1e-4, atol=1e-4)
    assert get_space("dinov2-base").shape == (768,)


@pytest.mark.slow
@pytest.mark.realarch
def test_dinov2_giant_real_widths_depth_1(hub_cache):
    write_hub_fixture("dinov2-giant", hub_cache, layout="cache", depth=realarch_depth())
    space = get_space("dinov2-giant")
    assert space.shape == (1536,)
    assert space.model.config.use_swiglu_ffn and space.model.config.num_attention_heads == 24
    assert np.isfinite(space.encode_images(_images(1, 224, 224))).all()
