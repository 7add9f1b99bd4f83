"""A GIT caption comes out of a decoder's predicted latents at real widths (issue 16).

The chain a lab runs: images -> the ``git-large-coco-tokens`` space (GIT-large-coco's own image-encoder tokens,
257 x 1024) -> a decoder fitted on brain data predicts ``git_image_tokens`` -> the ``git`` captioner turns them
into strings. Every piece is built from one real-architecture hub fixture of ``microsoft/git-large-coco``
(:func:`neurodecode.testing.write_hub_fixture`): the published widths, heads, token counts and vocabulary, random
weights, and the depth reduced to ONE layer in the vision encoder and in the text decoder (24 and 6 in the
published model) so it fits this CPU machine (~25 s: marked ``realarch``, run by ``make test-real``). The widths are
what this test is about; the same chain on the fixture's tiny widths runs inside ``make test``.

Outside truth: GIT's own captioning, run by transformers end to end on the pixels (its image encoder included,
nothing of ours), gives the captions that a decoder which reproduces the tokens must give through our chain.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError
from neurodecode.generate import get_generator
from neurodecode.latents import get_space
from neurodecode.models.brain_diffuser import BrainDiffuser, BrainDiffuserConfig
from neurodecode.testing import realarch_depth, write_hub_fixture

# microsoft/git-large-coco: vision_config image_size 224, patch_size 14 -> (224 / 14)^2 + 1 = 257 tokens of width 1024
GIT_TOKENS = (257, 1024)
# GIT's preprocessor_config.json (CLIPImageProcessor): OpenAI CLIP's mean and std
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


#: size -> (tokens of one image, image side). "real": the published widths (1024, 16 heads, 30,522 word pieces, 1,024
#: positions) at DEPTH 1 instead of 24 / 6, ~25 s here, so marked realarch (`make test-real`); "tiny": the fixture's
#: toy widths (17 x 20 tokens of 16 px images), the same chain inside `make test`.
SIZES = {"real": (GIT_TOKENS, 224), "tiny": ((17, 20), 16)}


@pytest.fixture(params=[pytest.param("real", marks=[pytest.mark.realarch, pytest.mark.slow]), "tiny"])
def git_fixture(request, tmp_path):
    size = request.param
    folder = write_hub_fixture("git", tmp_path / "git", depth=realarch_depth() if size == "real" else None, variant="full", size=size)
    _let_the_image_drive_the_words(folder)
    return folder, *SIZES[size]


def _let_the_image_drive_the_words(folder, gain=100.0):
    """Multiply the gain of GIT's visual projection LayerNorm in the saved weights.

    At random init (std 0.02) the text decoder all but ignores the image: every image gets the same caption, and
    captions equal to the reference would prove nothing. With the projected image tokens 100x larger the
    cross-attended image drives the words (distinct images -> distinct captions, asserted below).
    """
    from safetensors.torch import load_file, save_file

    key = "git.visual_projection.visual_projection.1.weight"  # Linear(1024 -> text width), then this LayerNorm
    for path in sorted(folder.glob("*.safetensors")):
        state = load_file(str(path))
        if key in state:
            state[key] = state[key] * gain
            save_file(state, str(path), metadata={"format": "pt"})
            return
    raise AssertionError(f"{key} not in {folder}")


def _git_reference_captions(folder, images, max_length):
    """transformers' GIT on the pixels, its own image encoder included (greedy, as the captioner decodes)."""
    import torch
    from transformers import AutoTokenizer, GitForCausalLM

    model = GitForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    pixels = (images.astype(np.float64) / 255.0 - CLIP_MEAN) / CLIP_STD
    pixels = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        ids = model.generate(pixel_values=pixels, max_length=max_length, num_beams=1, do_sample=False)
    return [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]


def test_git_caption_from_a_decoders_predicted_git_tokens(git_fixture):
    git_folder, tokens, side = git_fixture
    rng = np.random.default_rng(7)
    n_train, n_voxels, max_length = 9, 11, 8
    # images already at the encoder's side: the space's resize / crop is the identity, so the reference needs only
    # the normalisation
    images = rng.integers(0, 256, (n_train, side, side, 3), dtype=np.uint8)
    space = get_space("git-large-coco-tokens", weights=git_folder)
    assert space.shape == tokens
    targets = space.encode_images(images)
    assert targets.shape == (n_train, *tokens) and np.isfinite(targets).all()

    # Brain-Diffuser's ridge onto the GIT space at its real width: more voxels than trials and a vanishing penalty,
    # so the fitted ridge interpolates its training trials (predictions = the tokens, up to float error)
    X = rng.standard_normal((n_train, n_voxels))
    config = BrainDiffuserConfig(n_voxels=n_voxels, subject=None, target_shapes={"git_image_tokens": tokens},
                                 alphas={"git_image_tokens": (1e-8,)}, restandardize="none", dtype="float64")
    decoder = BrainDiffuser(config).fit(X, {"git_image_tokens": targets})
    predicted = decoder.predict_latents(X)
    assert set(predicted) == {"git_image_tokens"} and predicted["git_image_tokens"].shape == (n_train, *tokens)
    scale = np.abs(targets).max()
    assert np.abs(predicted["git_image_tokens"] - targets).max() < 1e-4 * scale

    captioner = get_generator("git", weights=str(git_folder)).load()
    assert captioner.expects == {"git_image_tokens": (None, *tokens)}
    captions = captioner.generate(predicted, max_length=max_length)
    assert len(captions) == n_train and all(isinstance(c, str) for c in captions)
    reference = _git_reference_captions(git_folder, images, max_length)
    assert len(set(reference)) > n_train // 2  # the captions depend on the image (equal ones would prove nothing)
    assert captions == reference

    # held-out trials: the decoder's predictions for unseen brain data are captioned too
    held_out = decoder.predict_latents(rng.standard_normal((3, n_voxels)))["git_image_tokens"]
    assert held_out.shape == (3, *tokens) and np.isfinite(held_out).all()
    more = captioner.generate({"git_image_tokens": held_out}, max_length=max_length)
    assert len(more) == 3 and all(isinstance(c, str) for c in more)
    # CLIP ViT-L/14's projected tokens (257 x 768; tiny CLIP 17 x 16) are another space: refused, widths named
    clip_width = 768 if tokens == GIT_TOKENS else 16
    with pytest.raises(ShapeMismatchError, match=str(tokens[1])):
        captioner.generate({"git_image_tokens": np.zeros((1, tokens[0], clip_width), np.float32)}, max_length=8)
