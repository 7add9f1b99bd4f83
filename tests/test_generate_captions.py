"""Caption generators: GIT on predicted CLIP tokens (tiny), nearest-caption retrieval (real MiniLM, offline)."""

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
    assert git.expects == {"clip_image_tokens": (None, 17, 16)}
    rng = np.random.default_rng(0)
    lat = {"clip_image_tokens": rng.standard_normal((3, 17, 16)).astype(np.float32)}
    caps = git.generate(lat, max_length=8, batch_size=3)
    assert len(caps) == 3 and all(isinstance(c, str) and c for c in caps)
    vocab = set(git.components_["tokenizer"].vocab)
    assert all(w in vocab for c in caps for w in c.split())
    assert git.generate(lat, max_length=8) == caps  # deterministic
    assert [git.generate({"clip_image_tokens": lat["clip_image_tokens"][i:i + 1]}, max_length=8)[0]
            for i in range(3)] == caps  # batched == one at a time


def test_git_reads_the_tokens(git):
    """The predicted tokens reach the language model (through GIT's visual projection)."""
    import torch

    model = git.components_["model"]
    rng = np.random.default_rng(1)
    ids = torch.tensor([[model.config.bos_token_id]])
    outs = []
    for seed in (0, 1):
        tok = torch.as_tensor(np.random.default_rng(seed).standard_normal((1, 1, 17, 16)), dtype=torch.float32)
        with torch.inference_mode():
            outs.append(model(input_ids=ids, pixel_values=tok).logits[0, -1])
    assert (outs[0] - outs[1]).abs().max() > 1e-3
    with pytest.raises(ShapeMismatchError, match="clip_image_tokens"):
        git.generate({"clip_image_tokens": rng.standard_normal((2, 257, 768))})


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
