"""Caption generators: GIT on predicted GIT image-encoder tokens, nearest-caption retrieval (real MiniLM, offline)."""

import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.generate import get_generator

CORPUS = ["a dog running on the grass", "a red double decker bus in the street", "two people eating pizza at a table",
          "a cat sleeping on a sofa"]


@pytest.fixture(scope="module")
def git():
    return get_generator("git", weights="tiny").load()


def test_git_tiny_captions(git):
    assert git.expects == {"git_image_tokens": (None, 17, 20)}
    rng = np.random.default_rng(0)
    lat = {"git_image_tokens": rng.standard_normal((3, 17, 20)).astype(np.float32)}
    caps = git.generate(lat, max_length=8, batch_size=3)
    assert len(caps) == 3 and all(isinstance(c, str) and c for c in caps)
    vocab = set(git.components_["tokenizer"].vocab)
    assert all(w in vocab for c in caps for w in c.split())
    assert git.generate(lat, max_length=8) == caps  # deterministic
    assert [git.generate({"git_image_tokens": lat["git_image_tokens"][i:i + 1]}, max_length=8)[0]
            for i in range(3)] == caps  # batched == one at a time
    # an older dict naming the tokens clip_image_tokens is read when the shape fits
    assert git.generate({"clip_image_tokens": lat["git_image_tokens"]}, max_length=8) == caps


def test_git_reads_the_tokens(git):
    """The predicted tokens reach the language model (through GIT's visual projection)."""
    import torch

    model = git.components_["model"]
    rng = np.random.default_rng(1)
    ids = torch.tensor([[model.config.bos_token_id]])
    outs = []
    for seed in (0, 1):
        tok = torch.as_tensor(np.random.default_rng(seed).standard_normal((1, 1, 17, 20)), dtype=torch.float32)
        with torch.inference_mode():
            outs.append(model(input_ids=ids, pixel_values=tok).logits[0, -1])
    assert (outs[0] - outs[1]).abs().max() > 1e-4
    with pytest.raises(ShapeMismatchError, match="git_image_tokens"):
        git.generate({"clip_image_tokens": rng.standard_normal((2, 257, 768))})
    # the tiny CLIP tokens (17 x 16) cannot pass for the tiny GIT tokens (17 x 20)
    from neurodecode.latents import get_space

    images = rng.integers(0, 256, (2, 23, 19, 3), dtype=np.uint8)
    with pytest.raises(ShapeMismatchError, match="git_image_tokens"):
        git.generate({"clip_image_tokens": get_space("clip-vit-l-14-tokens-tiny").encode_images(images)})


@pytest.mark.parametrize("size", ["tiny", "real"])
def test_git_caption_from_its_own_encoder_tokens_matches_the_full_model(tmp_path, size):
    """The git-large-coco-tokens space + the captioner give GIT's own caption of the image (the full
    GitForCausalLM reading the pixels is the outside truth); real widths (257 x 1024) at depth 1."""
    import torch
    from transformers import GitForCausalLM

    from neurodecode.latents import get_space
    from neurodecode.testing import write_hub_fixture

    folder = write_hub_fixture("git", tmp_path / "git", size=size, depth=1, seed=3)
    space = get_space("git-large-coco-tokens", weights=str(folder))
    assert space.shape == ((257, 1024) if size == "real" else (17, 20))
    images = np.random.default_rng(4).integers(0, 256, (2, 240, 230, 3), dtype=np.uint8)
    tokens = space.encode_images(images)
    cap = get_generator("git", weights=str(folder)).generate({"git_image_tokens": tokens}, max_length=7)
    full = GitForCausalLM.from_pretrained(folder).eval()
    tok = get_generator("git", weights=str(folder)).load().components_["tokenizer"]
    from open_clip.transform import image_transform
    from PIL import Image

    tf = image_transform(space.preprocessing["size"], is_train=False, mean=tuple(space.preprocessing["mean"]),
                         std=tuple(space.preprocessing["std"]), resize_mode="shortest", interpolation="bicubic")
    pixels = torch.stack([tf(Image.fromarray(im)) for im in images])
    with torch.inference_mode():
        ids = full.generate(pixel_values=pixels, max_length=7, num_beams=1, do_sample=False)
    assert cap == [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]


def test_retrieval_real_minilm_known_answer():
    ret = get_generator("retrieval", corpus=CORPUS)
    space = ret.load().components_["space"]
    assert ret.expects == {"text_embeds": (None, 384)}
    queries = space.encode_texts(["a puppy plays in a field", "people having pizza", "a bus on the road"])
    assert ret.generate({"text_embeds": queries}) == [CORPUS[0], CORPUS[2], CORPUS[1]]
    idx, scores = ret.retrieve({"text_embeds": queries}, k=2)
    assert idx.shape == (3, 2) and idx[0, 0] == 0 and np.all(scores[:, 0] >= scores[:, 1])


def test_retrieval_tiny_and_errors():
    ret = get_generator("retrieval", weights="tiny", corpus=CORPUS)
    emb = ret.load().components_["corpus_embeds"]
    assert ret.expects == {"text_embeds": (None, emb.shape[1])}
    # an embedding equal to a corpus item retrieves that item
    assert ret.generate({"text_embeds": emb[[3, 1]] * 2.0}) == [CORPUS[3], CORPUS[1]]
    with pytest.raises(ValidationError, match="corpus"):
        get_generator("retrieval", weights="tiny", corpus=[]).load()
    with pytest.raises(ValidationError, match="finite"):
        ret.generate({"text_embeds": np.full((1, emb.shape[1]), np.nan)})


def test_token_converter_recovers_a_known_linear_map_and_feeds_git(tmp_path):
    """MindEye2's bigG -> GIT converter (tokens 16 -> 17, channels 48 -> 20 at tiny scale): Y = A X B^T + biases,
    written here from the paper's structure, is recovered from pairs; the captioner then captions bigG tokens."""
    from neurodecode.generate._converter import TokenConverter

    rng = np.random.default_rng(7)
    A, a = rng.standard_normal((17, 16)) / 4, rng.standard_normal(17) / 4
    B, b = rng.standard_normal((20, 48)) / 7, rng.standard_normal(20) / 4

    def truth(X):
        mixed = np.einsum("ts,nsd->ntd", A, X) + a[None, :, None]
        return (mixed @ B.T + b).astype(np.float32)

    X = rng.standard_normal((256, 16, 48)).astype(np.float32)
    Xt = rng.standard_normal((9, 16, 48)).astype(np.float32)
    conv = TokenConverter(16, 48, 17, 20, seed=1).fit(X, truth(X), batch_size=50)
    pred, want = conv.convert(Xt), truth(Xt)
    r2 = 1 - ((pred - want) ** 2).sum() / ((want - want.mean()) ** 2).sum()
    assert r2 > 0.9999 and conv.loss_[-1] < 1e-6
    loaded = TokenConverter.load(conv.save(tmp_path / "conv"))
    np.testing.assert_allclose(loaded.convert(Xt), pred, rtol=1e-6, atol=1e-6)
    git = get_generator("git", weights="tiny", converter=tmp_path / "conv")
    caps = git.generate({"clip_bigg_tokens": Xt[:3]}, max_length=6)
    direct = get_generator("git", weights="tiny").generate({"git_image_tokens": pred[:3]}, max_length=6)
    assert caps == direct and len(caps) == 3
    with pytest.raises(ShapeMismatchError, match="clip_bigg_tokens"):
        git.generate({"git_image_tokens": pred[:3]})
    with pytest.raises(ShapeMismatchError, match="X"):
        conv.convert(np.zeros((2, 256, 1664), np.float32))
