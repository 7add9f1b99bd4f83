"""Takagi & Nishimoto's SD-1.4 targets: the init latent (``sd14-vae-320``) and the text conditioning (``sd14-text-cond``).

Outside truth: 320 / 8 = 40 by hand; SD's latent scale 0.18215 applied to diffusers' own posterior mean; the CLIP
pad token 49407 (``<|endoftext|>``) of SD's tokenizer; transformers' ``CLIPTextModel`` on ids from the
tokenizer's own ``padding="max_length"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from neurodecode.latents import get_space, space_artefacts
from neurodecode.testing import write_hub_fixture

CAPTIONS = ["a man riding a wave on top of a surfboard", "two dogs", "a red bus parked next to a building"]


@pytest.fixture(scope="module")
def sd14(tmp_path_factory):
    return write_hub_fixture("sd-v1-4", tmp_path_factory.mktemp("sd14"), size="tiny")


def test_vae_320_real_shape_by_hand_and_scale():
    space: Any = get_space("sd14-vae-320", weights="random", device="meta")
    assert space.shape == (4, 320 // 8, 320 // 8) == (4, 40, 40)  # Takagi's 6,400-d init_latent
    assert space.scaled and space.scaling_factor == pytest.approx(0.18215)
    assert space.image_size == 320


def test_vae_320_tiny_mean_is_the_scaled_posterior_mean_and_distinct_from_sd_vae_tiny():
    import torch

    space: Any = get_space("sd14-vae-320-tiny", sample="mean")
    assert space.shape == (4, 20, 20)  # 40 px through one x2 downsampling; sd-vae-tiny is (4, 16, 16)
    assert get_space("sd-vae-tiny").shape == (4, 16, 16)
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)  # no resize at 40 px
    got = space.encode_images(images)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32)) / 255.0 * 2.0 - 1.0
    with torch.no_grad():
        want = space.vae.encode(x).latent_dist.mean.numpy() * 0.18215  # LDM's get_first_stage_encoding scale
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_vae_320_default_is_a_seeded_posterior_sample_as_ldm():
    import torch

    space: Any = get_space("sd14-vae-320-tiny")
    assert space.sample == "sample" and space.interpolation == "lanczos"
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    z = space.encode_images(images)
    # the draw depends on the image only (not on its batch): equal up to float noise across batch sizes
    np.testing.assert_allclose(z[1:2], space.encode_images(images[1:2]), rtol=1e-4, atol=1e-5)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32)) / 255.0 * 2.0 - 1.0
    with torch.no_grad():
        dist = space.vae.encode(x).latent_dist
    eps = (z / 0.18215 - dist.mean.numpy()) / dist.std.numpy()  # z = (mean + std * eps) * 0.18215
    assert abs(eps.mean()) < 0.1 and abs(eps.std() - 1.0) < 0.1  # 3 x 1,600 standard normal draws
    other = get_space("sd14-vae-320-tiny", sample_seed=1).encode_images(images)
    assert not np.allclose(other, z) and other.shape == z.shape


def test_vae_320_resizes_with_pil_lanczos():
    from PIL import Image

    space: Any = get_space("sd14-vae-320-tiny", sample="mean")
    big = np.random.default_rng(2).integers(0, 256, (2, 57, 57, 3), dtype=np.uint8)
    small = np.stack([np.asarray(Image.fromarray(im).resize((40, 40), resample=Image.Resampling.LANCZOS))
                      for im in big])  # img2feat_sd.py's load_img_from_arr (8-bit here, float inside the space)
    np.testing.assert_allclose(space.encode_images(big), space.encode_images(small), atol=0.02)
    bicubic = get_space("sd14-vae-320-tiny", sample="mean", interpolation="bicubic")
    assert bicubic.cache_key_hash() != space.cache_key_hash()


def test_vae_320_reads_a_pipeline_vae_folder(sd14):
    space: Any = get_space("sd14-vae-320", weights=str(sd14))
    assert space.weights.endswith("vae") and space.scaled
    z = space.encode_images(np.zeros((1, 50, 50, 3), dtype=np.uint8))
    assert z.shape == (1, *space.shape) and np.isfinite(z).all()


def test_text_cond_tiny_shape_and_eot_padding():
    space = get_space("sd14-text-cond-tiny")
    assert space.shape == (77, 40)
    assert space.preprocessing["pad_token_id"] == 49407 and space.preprocessing["vocab_size"] == 49408
    feats = space.encode_texts(CAPTIONS)
    assert feats.shape == (3, 77, 40) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])


def test_text_cond_equals_transformers_on_max_length_padding(sd14):
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    space = get_space("sd14-text-cond", weights=str(sd14))
    got = space.encode_texts(CAPTIONS, batch_size=2)
    tok = CLIPTokenizer.from_pretrained(sd14 / "tokenizer")
    ids = tok(CAPTIONS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert int(ids[1, -1]) == 49407  # "two dogs" is padded with <|endoftext|>, as FrozenCLIPEmbedder
    with torch.no_grad():
        want = CLIPTextModel.from_pretrained(sd14 / "text_encoder")(input_ids=ids).last_hidden_state.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Takagi's c of an image is the mean of its captions' conditioning: linear, so the mean of the rows
    np.testing.assert_allclose(got.mean(axis=0), want.mean(axis=0), rtol=1e-4, atol=1e-5)


def test_text_cond_real_architecture():
    space: Any = get_space("sd14-text-cond", weights="random")
    cfg = space.text_encoder.config
    assert space.shape == (77, 768)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.vocab_size) == (768, 12, 12, 49408)


def test_artefacts_name_sd14_files():
    (vae,) = space_artefacts("sd14-vae-320")
    assert vae.repo == "CompVis/stable-diffusion-v1-4" and "OpenRAIL" in vae.licence
    assert all(g[0].startswith("vae/") for g in vae.files)
    (text,) = space_artefacts("sd14-text-cond")
    assert {g[0].split("/")[0] for g in text.files} == {"text_encoder", "tokenizer"}
