"""The image-variation generator STTM reconstructs with: Versatile Diffusion at text weight 0 (image tokens only)."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.generate import get_generator


def test_image_variation_is_the_dual_generator_at_text_weight_zero_whatever_the_text():
    rng = np.random.default_rng(0)
    var = get_generator("versatile-image", weights="tiny")
    dual = get_generator("versatile", weights="tiny")
    var.load()
    assert var.expects == {"clip_image_tokens": (None, 17, 16)}
    img = rng.standard_normal((2, 17, 16)).astype(np.float32)
    init = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    a = var.generate({"clip_image_tokens": img, "vae_latents": init}, seeds=[3, 4], steps=3, strength=0.85)
    # the dual-guided UNet mixes x + 0 * text residual + 1 * image residual: any text tokens give the same image
    for text in (rng.standard_normal((2, 77, 16)), np.zeros((2, 77, 16))):
        b = dual.generate({"clip_image_tokens": img, "clip_text_tokens": text.astype(np.float32), "vae_latents": init},
                          seeds=[3, 4], steps=3, strength=0.85, text_weight=0.0)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    c = dual.generate({"clip_image_tokens": img, "clip_text_tokens": rng.standard_normal((2, 77, 16)).astype(np.float32),
                       "vae_latents": init}, seeds=[3, 4], steps=3, strength=0.85, text_weight=0.5)
    assert np.abs(a.astype(int) - c.astype(int)).max() > 1
    d = var.generate({"clip_image_tokens": img}, seeds=[3, 4], steps=3)  # no init: from noise
    assert d.shape == a.shape and np.abs(a.astype(int) - d.astype(int)).max() > 1
    with pytest.raises(ValidationError, match="text_weight"):
        var.generate({"clip_image_tokens": img}, seeds=0, steps=1, text_weight=0.5)
    with pytest.raises(ShapeMismatchError):
        var.check_latents({"clip_image_tokens": img[:, :3]})
