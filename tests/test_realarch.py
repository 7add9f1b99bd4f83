"""Real-architecture fixtures: every space and generator at its published configuration (random weights), written
in the Hugging Face cache layout by :func:`neurodecode.testing.write_hub_fixture`, loaded through both routes
(``weights=<folder>`` and ``weights=None`` through the hub cache), one step at 64 px, shapes and finiteness.

The full set is marked ``realarch`` (and ``slow``, so ``make test`` skips it): ``make test-real``. On this
2-core CPU machine the transformer depth is reduced to ``NEURODECODE_REALARCH_DEPTH`` (default 1) layers per
block; widths, heads, token counts and vocabularies are the published ones. Set it to ``full`` on a GPU machine.
The fast subset (no marker) runs the smallest real-width components inside ``make test``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from neurodecode.generate import get_generator
from neurodecode.latents import get_space
from neurodecode.testing import write_hub_fixture

_DEPTH_ENV = os.environ.get("NEURODECODE_REALARCH_DEPTH", "1")
DEPTH = None if _DEPTH_ENV == "full" else int(_DEPTH_ENV)
DEVICE = os.environ.get("NEURODECODE_REALARCH_DEVICE", "cpu")


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def _images(n=2, h=71, w=67):
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _both_routes_space(name, component, hub_cache, depth, **opts):
    snap = write_hub_fixture(component, hub_cache, layout="cache", depth=depth, variant="full")
    spaces = [get_space(name, weights=None, device=DEVICE, **opts), get_space(name, weights=str(snap), device=DEVICE,
                                                                              **opts)]
    return spaces


# ------------------------------------------------------------------------------------------ fast subset
def test_sd_vae_space_real_config_both_routes(hub_cache):
    a, b = _both_routes_space("sd-vae", "sd-vae", hub_cache, 1, image_size=64)
    assert a.shape == b.shape == (4, 8, 8)
    fa, fb = a.encode_images(_images()), b.encode_images(_images())
    assert np.isfinite(fa).all()
    np.testing.assert_allclose(fa, fb, rtol=1e-5, atol=1e-5)  # the same files through either route
    assert a.weights != b.weights


def test_open_clip_vit_l_14_real_widths_depth_1_both_routes(hub_cache):
    """The clip-vit-l-14 spaces read open_clip's timm/vit_large_patch14_clip_224.openai (the recipe used to
    fetch openai/clip-vit-large-patch14, which open_clip never reads)."""
    snap = write_hub_fixture("clip-vit-l-14", hub_cache, layout="cache", depth=1, variant="full")
    assert "models--timm--vit_large_patch14_clip_224.openai" in str(snap)
    tok = get_space("clip-vit-l-14-tokens", normalize="vd")
    assert tok.shape == (257, 768)
    feats = tok.encode_images(_images())
    assert np.isfinite(feats).all()
    np.testing.assert_allclose(np.linalg.norm(feats[:, 0], axis=-1), 1.0, rtol=1e-4)  # VD: CLS has unit norm
    text = get_space("clip-vit-l-14-text-tokens")
    assert text.shape == (77, 768) and np.isfinite(text.encode_texts(["a cat", "a red bus on a road"])).all()


# ------------------------------------------------------------------------------------------ full set
SPACES = [
    ("clip-vit-l-14-tokens", "clip-vit-l-14", (257, 768)),
    ("clip-vit-l-14", "clip-vit-l-14", (768,)),
    ("clip-vit-l-14-text-tokens", "clip-vit-l-14", (77, 768)),
    ("clip-vit-l-14-text", "clip-vit-l-14", (768,)),
    ("clip-vit-h-14", "clip-vit-h-14", (1024,)),
    ("clip-vit-h-14-text", "clip-vit-h-14", (1024,)),
    ("clip-bigg-14-tokens", "clip-bigg-14", (256, 1664)),
    ("git-large-coco-tokens", "git", (257, 1024)),
    ("sd-vae", "sd-vae", (4, 32, 32)),
    ("flan-t5-large-encoder", "flan-t5-large", (1024,)),
    ("flan-t5-large-encoder-tokens", "flan-t5-large", (64, 1024)),
]


@pytest.mark.parametrize(("name", "component", "shape"), SPACES, ids=[s[0] for s in SPACES])
@pytest.mark.realarch
@pytest.mark.slow
def test_every_space_real_config(name, component, shape, hub_cache):
    for space in _both_routes_space(name, component, hub_cache, DEPTH):
        assert space.shape == shape
        feats = space.encode_texts(["a cat on a mat", "x"]) if space.modality == "text" else space.encode_images(
            _images())
        assert feats.shape == (2, *shape) and np.isfinite(feats).all()


GENERATORS = [
    ("versatile", {"clip_image_tokens": (257, 768), "clip_text_tokens": (77, 768)}, {}),
    ("unclip", {"clip_image_embeds": (1024,)}, {}),
    ("sdxl-turbo", {"clip_image_embeds": (1024,)}, {}),
    ("lowlevel", {"vae_latents": (4, 8, 8)}, {"strength": 0.5}),
    ("git", {"git_image_tokens": (257, 1024)}, {"max_length": 5}),
]


@pytest.mark.parametrize(("name", "shapes", "options"), GENERATORS, ids=[g[0] for g in GENERATORS])
@pytest.mark.realarch
@pytest.mark.slow
def test_every_generator_real_config(name, shapes, options, hub_cache, tmp_path):
    snap = write_hub_fixture(name, hub_cache, layout="cache", depth=DEPTH, variant="fp16")
    kwargs = {}
    if name == "sdxl-turbo":
        kwargs["ip_adapter"] = None
        write_hub_fixture("ip-adapter", hub_cache, layout="cache", depth=DEPTH, variant="fp16")
    rng = np.random.default_rng(1)
    latents = {k: rng.standard_normal((1, *s)).astype(np.float32) for k, s in shapes.items()}
    for weights in (None, str(snap)):
        kw = {k: v for k, v in kwargs.items() if v is not None}
        gen = get_generator(name, weights=weights, device=DEVICE, dtype="float32", **kw).load()
        expected = {k: (None, *s) for k, s in shapes.items()}
        if name == "lowlevel":
            expected = {"vae_latents": (None, 4, None, None)}
        assert gen.expects == expected
        size = {} if name in ("git", "lowlevel") else {"height": 64, "width": 64}
        out = gen.generate(latents, seeds=0, steps=1, **size, **options)
        if name == "git":
            assert len(out) == 1 and isinstance(out[0], str)
        else:
            assert out.shape == (1, 64, 64, 3) and out.dtype == np.uint8
