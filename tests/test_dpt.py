"""DPT-large hidden states (``dpt-large-hidden``) and the DPT depth decoder (Takagi & Nishimoto's depth maps).

Outside truth: the token count by hand ((384 / 16)^2 + 1 = 577), DPT-large's published configuration, transformers'
own ``DPTForDepthEstimation`` forward from pixels (hidden states and predicted depth), and Takagi's resize +
min-max scaling recomputed here independently.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError
from neurodecode.generate import get_generator
from neurodecode.generate._depth import depth_to_uint8
from neurodecode.latents import get_space, space_artefacts
from neurodecode.testing import realarch_depth, write_hub_fixture


def _images(n=3, h=27, w=21, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _reference_pixels(images, folder):
    """img2feat_dpt.py: PIL resize to 512 x 512 (Lanczos), then the repository's image processor."""
    from PIL import Image
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(folder)
    pils = [Image.fromarray(im).resize((512, 512), resample=Image.Resampling.LANCZOS) for im in images]
    return proc(images=pils, return_tensors="pt")["pixel_values"]


def test_tiny_space_shape_and_distinct_width():
    space = get_space("dpt-large-hidden-tiny")
    assert space.shape == (4, (32 // 8) ** 2 + 1, 52) == (4, 17, 52)
    feats = space.encode_images(_images())
    assert feats.shape == (3, 4, 17, 52) and np.isfinite(feats).all()
    assert not np.allclose(feats[:, 0], feats[:, 3])  # four different layers


def test_real_configuration_by_hand():
    from neurodecode.latents.dpt import dpt_config

    cfg = dpt_config()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.patch_size, cfg.image_size) == \
        (1024, 24, 16, 16, 384)
    assert tuple(cfg.backbone_out_indices) == (5, 11, 17, 23)
    assert tuple(cfg.neck_hidden_sizes) == (256, 512, 1024, 1024) and cfg.fusion_hidden_size == 256
    # 577 = (384 / 16)^2 + 1 tokens: Takagi's (577, 1024) per index
    assert ((cfg.image_size // cfg.patch_size) ** 2 + 1, cfg.hidden_size) == (577, 1024)


def test_states_and_depth_equal_transformers_forward_from_pixels(tmp_path):
    import torch
    import torch.nn.functional as F
    from transformers import DPTForDepthEstimation

    folder = write_hub_fixture("dpt-large", tmp_path / "dpt", size="tiny", seed=5)
    images = _images(n=3, seed=2)
    space = get_space("dpt-large-hidden", weights=str(folder))
    states = space.encode_images(images)
    assert states.shape == (3, 4, 17, 52)

    model = DPTForDepthEstimation.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(pixel_values=_reference_pixels(images, folder), output_hidden_states=True)
    want = np.stack([out.hidden_states[1:][i].numpy() for i in model.config.backbone_out_indices], axis=1)
    np.testing.assert_allclose(states, want, rtol=1e-4, atol=1e-5)

    decoder = get_generator("dpt-depth", weights=str(folder))
    raw = decoder.predict_depth({"dpt_hidden_states": states}, batch_size=2)
    np.testing.assert_allclose(raw, out.predicted_depth.numpy(), rtol=1e-4, atol=1e-5)

    maps = decoder.generate({"dpt_hidden_states": states}, batch_size=2)
    # dptemb2dpt.py: bicubic resize to 64 x 64, min-max per image to [-1, 1]
    cc = F.interpolate(out.predicted_depth[:, None], size=(64, 64), mode="bicubic", align_corners=False).numpy()
    lo, hi = cc.min(axis=(1, 2, 3), keepdims=True), cc.max(axis=(1, 2, 3), keepdims=True)
    expected = (2 * (cc - lo) / (hi - lo) - 1)[:, 0]
    assert maps.shape == (3, 64, 64)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-4)
    assert maps.min() == pytest.approx(-1.0) and maps.max() == pytest.approx(1.0)


def test_tiny_end_to_end_sizes_and_wrong_space_refused():
    states = get_space("dpt-large-hidden-tiny").encode_images(_images(n=2))
    decoder = get_generator("dpt-depth", weights="tiny")
    maps = decoder.generate({"dpt_hidden_states": states}, size=9)
    assert maps.shape == (2, 9, 9) and np.isfinite(maps).all()
    assert maps.min() >= -1.0 and maps.max() <= 1.0
    png = depth_to_uint8(maps)
    assert png.shape == (2, 9, 9, 3) and png.dtype == np.uint8
    with pytest.raises(ShapeMismatchError, match="dpt_hidden_states"):
        decoder.generate({"dpt_hidden_states": states[:, :3]})


def test_constant_depth_maps_to_zeros():
    import torch

    from neurodecode.generate._depth import scale_depth

    flat = torch.full((2, 7, 8), 3.0)
    assert torch.equal(scale_depth(flat, 5), torch.zeros(2, 5, 5))


def test_artefacts_declare_the_processor():
    (art,) = space_artefacts("dpt-large-hidden")
    assert art.repo == "Intel/dpt-large"
    assert ("preprocessor_config.json",) in [tuple(g) for g in art.files]


@pytest.mark.realarch
@pytest.mark.slow
def test_real_architecture_fixture_both_routes(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snap = write_hub_fixture("dpt-large", tmp_path / "hub", layout="cache", depth=realarch_depth(minimum=4))
    a = get_space("dpt-large-hidden", weights=None)
    b = get_space("dpt-large-hidden", weights=str(snap))
    assert a.shape == b.shape == (4, 577, 1024)
    fa = a.encode_images(_images(n=1))
    np.testing.assert_allclose(fa, b.encode_images(_images(n=1)), rtol=1e-5, atol=1e-5)
    maps = get_generator("dpt-depth", weights=None).generate({"dpt_hidden_states": fa})
    assert maps.shape == (1, 64, 64) and np.isfinite(maps).all()
