"""BLIP image tokens (``blip-base-capfilt-tokens``) and the BLIP caption decoder (Takagi & Nishimoto's captions).

Outside truth: the token count by hand ((240 / 16)^2 + 1 = 226), BLIP-base's published widths, Takagi's
preprocessing recomputed here with PIL, and transformers' own ``BlipForConditionalGeneration.generate`` from
pixels, which the captioner must reproduce when fed the true encoder tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError
from neurodecode.generate import get_generator
from neurodecode.generate._blip import BLIP_PROMPT, strip_prompt
from neurodecode.latents import get_space, space_artefacts
from neurodecode.testing import realarch_depth, write_hub_fixture


def _images(n=3, h=23, w=29, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _takagi_pixels(images, size):
    """img2feat_blip.py: PIL resize to size x size (Lanczos), ToTensor (÷255), no normalisation."""
    import torch
    from PIL import Image

    arrs = [np.asarray(Image.fromarray(im).resize((size, size), resample=Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
            for im in images]
    return torch.from_numpy(np.stack(arrs).transpose(0, 3, 1, 2).copy())


def test_tiny_space_shape_and_distinct_width():
    space = get_space("blip-base-capfilt-tokens-tiny")
    # native grid 24 / 4 = 6, encoded at 20 px: (20 / 4)^2 + 1 = 26 tokens, width 44
    assert space.shape == ((20 // 4) ** 2 + 1, 44) == (26, 44)
    feats = space.encode_images(_images())
    assert feats.shape == (3, 26, 44) and np.isfinite(feats).all()
    assert feats.std() > 0.1  # real random init (BLIP's default initializer_range 1e-10 would give ~0)
    widths = {get_space(n).shape[-1] for n in ("clip-vit-l-14-tokens-tiny", "git-large-coco-tokens-tiny")}
    assert 44 not in widths


def test_real_architecture_token_count_by_hand():
    space: Any = get_space("blip-base-capfilt-tokens", weights="random")
    # Takagi: BLIP ViT-B/16 at 240 px -> (240 / 16)^2 + 1 = 226 tokens of width 768
    assert space.shape == (226, 768)
    cfg = space.encoder.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.patch_size) == (768, 12, 12, 16)
    assert space.preprocessing["pixel_norm"] == "none"


def test_tokens_equal_transformers_vision_forward_on_takagi_pixels(tmp_path):
    import torch
    from transformers import BlipForConditionalGeneration

    folder = write_hub_fixture("blip-base", tmp_path / "blip", size="tiny")
    images = _images()
    space = get_space("blip-base-capfilt-tokens", weights=str(folder), image_size=20)
    got = space.encode_images(images)
    model = BlipForConditionalGeneration.from_pretrained(folder).eval()
    with torch.no_grad():
        want = model.vision_model(pixel_values=_takagi_pixels(images, 20),
                                  interpolate_pos_encoding=True).last_hidden_state.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # BLIP's own processor normalisation is a named option and changes the tokens
    clip = get_space("blip-base-capfilt-tokens", weights=str(folder), image_size=20, pixel_norm="clip")
    assert clip.cache_key_hash() != space.cache_key_hash()
    assert not np.allclose(clip.encode_images(images), got, atol=1e-3)


def test_captioner_on_true_tokens_reproduces_transformers_generate_from_pixels(tmp_path):
    import torch
    from transformers import AutoTokenizer, BlipForConditionalGeneration

    folder = write_hub_fixture("blip-base", tmp_path / "blip", size="tiny", seed=3)
    images = _images(n=4, seed=1)
    tokens = get_space("blip-base-capfilt-tokens", weights=str(folder), image_size=20).encode_images(images)
    captioner = get_generator("blip", weights=str(folder), image_size=20)
    got = captioner.generate({"blip_image_tokens": tokens}, batch_size=3)

    model = BlipForConditionalGeneration.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(["a picture of "] * 4, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(pixel_values=_takagi_pixels(images, 20), input_ids=ids, interpolate_pos_encoding=True,
                             num_beams=3, max_length=20, min_length=5, repetition_penalty=1.5)
    want = [t[len("a picture of "):].strip() if t.startswith("a picture of ") else t.strip()
            for t in tok.batch_decode(out, skip_special_tokens=True)]
    assert got == want
    assert all(isinstance(c, str) for c in got)


def test_captioner_defaults_are_takagis():
    import inspect

    from neurodecode.generate._blip import BlipCaptioner

    sig = inspect.signature(BlipCaptioner._generate_batch)
    got = {k: sig.parameters[k].default for k in ("num_beams", "max_length", "min_length", "repetition_penalty",
                                                   "prompt")}
    assert got == {"num_beams": 3, "max_length": 20, "min_length": 5, "repetition_penalty": 1.5,
                   "prompt": "a picture of "}
    assert BLIP_PROMPT == "a picture of "


def test_tiny_end_to_end_and_wrong_space_refused():
    tokens = get_space("blip-base-capfilt-tokens-tiny").encode_images(_images(n=2))
    captioner = get_generator("blip", weights="tiny")
    caps = captioner.generate({"blip_image_tokens": tokens})
    assert len(caps) == 2 and all(isinstance(c, str) and c for c in caps)
    assert not any(c.startswith("a picture of") for c in caps)
    git_tokens = get_space("git-large-coco-tokens-tiny").encode_images(_images(n=2))
    with pytest.raises(ShapeMismatchError, match="blip_image_tokens"):
        captioner.generate({"blip_image_tokens": git_tokens})


def test_strip_prompt():
    assert strip_prompt("a picture of a dog on a bench", "a picture of ") == "a dog on a bench"
    assert strip_prompt("two cats", "a picture of ") == "two cats"


def test_artefacts_declare_the_hub_files():
    (art,) = space_artefacts("blip-base-capfilt-tokens")
    assert art.repo == "Salesforce/blip-image-captioning-base"
    assert ("config.json",) in [tuple(g) for g in art.files]
    assert space_artefacts("blip-base-capfilt-tokens-tiny")[0].kind == "random"


@pytest.mark.realarch
@pytest.mark.slow
def test_real_architecture_fixture_both_routes(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snap = write_hub_fixture("blip-base", tmp_path / "hub", layout="cache", depth=realarch_depth())
    a = get_space("blip-base-capfilt-tokens", weights=None)
    b = get_space("blip-base-capfilt-tokens", weights=str(snap))
    assert a.shape == b.shape == (226, 768)
    fa, fb = a.encode_images(_images(n=1)), b.encode_images(_images(n=1))
    np.testing.assert_allclose(fa, fb, rtol=1e-5, atol=1e-5)
    caps = get_generator("blip", weights=None).generate({"blip_image_tokens": fa}, max_length=8, min_length=2)
    assert len(caps) == 1 and isinstance(caps[0], str)


@pytest.mark.realarch
@pytest.mark.slow
def test_caption_from_a_ridges_predicted_tokens_at_real_widths(tmp_path):
    """Brain data -> ridge -> BLIP tokens (226 x 768) -> a caption, on the real-architecture fixture (depth 1)."""
    from neurodecode.models.brain_diffuser import BrainDiffuser, BrainDiffuserConfig

    folder = write_hub_fixture("blip-base", tmp_path / "blip", depth=realarch_depth())
    space = get_space("blip-base-capfilt-tokens", weights=str(folder))
    images = _images(n=9, h=31, w=37, seed=4)
    tokens = space.encode_images(images)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 13)).astype(np.float32)
    cfg = BrainDiffuserConfig(n_voxels=13, subject="nsd/subj01", target_shapes={"blip_image_tokens": (226, 768)},
                              alphas={"blip_image_tokens": (1.0,)}, cv=None, restandardize="none", zscore_ddof=0)
    pred = BrainDiffuser(cfg).fit(X[:7], {"blip_image_tokens": tokens[:7]}).predict_latents(X[7:], "nsd/subj01")
    assert pred["blip_image_tokens"].shape == (2, 226, 768)
    caps = get_generator("blip", weights=str(folder)).generate(pred, max_length=10, min_length=3)
    assert len(caps) == 2 and all(isinstance(c, str) for c in caps)
