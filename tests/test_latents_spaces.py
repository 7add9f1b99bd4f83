"""Tiny twins of every named latent space: shapes, token logic, normalisation, tokenizer check, weights folders."""

from __future__ import annotations

import time

import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError, OfflineError, ShapeMismatchError, ValidationError
from neurodecode.latents import available_spaces, get_space, load_open_clip_folder, save_open_clip_folder
from neurodecode.latents.clip import build_open_clip, check_tokenizer_vocab, tiny_clip_config

TINY_SHAPES = {
    "vicregl-convnext-xl-tiny": (16, 6),
    "sd-vae-tiny": (4, 16, 16),
    "vdvae-tiny": (1924,),
    "git-large-coco-tokens-tiny": (17, 20),
    "clip-vit-l-14-tokens-tiny": (17, 16),
    "clip-vit-l-14-tiny": (16,),
    "clip-vit-h-14-tiny": (24,),
    "clip-bigg-14-tokens-tiny": (16, 48),
    "clip-vit-l-14-text-tokens-tiny": (77, 16),
    "clip-vit-l-14-text-tiny": (16,),
    "clip-vit-h-14-text-tiny": (24,),
    "minilm-l6-tiny": (32,),
    "flan-t5-large-encoder-tiny": (32,),
    "flan-t5-large-encoder-tokens-tiny": (64, 32),
    "dinov2-base-tiny": (28,),
    "dinov2-base-tokens-tiny": (9, 28),
    "dinov2-base-q-tokens-tiny": (9, 28),
    "dinov2-giant-tiny": (36,),
    "blip-base-capfilt-tokens-tiny": (26, 44),
    "dpt-large-hidden-tiny": (4, 17, 52),
    "sd14-vae-320-tiny": (4, 20, 20),
    "sd14-text-cond-tiny": (77, 40),
}
TEXTS = ["a cat sits on a mat", "two dogs run on the beach at dawn", "x"]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 41, 53, 3), dtype=np.uint8)


def test_every_real_name_has_a_tiny_twin():
    real = available_spaces(tiny=False)
    assert set(TINY_SHAPES) == {f"{n}-tiny" for n in real if n != "clip-custom"}
    assert "clip-vit-l-14-tokens" in real and "minilm-l6" in real


@pytest.mark.parametrize("name", sorted(TINY_SHAPES))
def test_tiny_shapes(name, images):
    space = get_space(name)
    assert space.shape == TINY_SHAPES[name]
    feats = space.encode_images(images) if space.modality == "image" else space.encode_texts(TEXTS)
    assert feats.shape == (3, *TINY_SHAPES[name]) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])  # different stimuli give different targets
    key = space.cache_key()
    assert key["space"] == name and key["versions"]["torch"] and key["weights"] == "random-init:seed=0"


def test_tiny_init_is_seeded_and_deterministic(images):
    import torch

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = get_space("clip-vit-l-14-tiny").encode_images(images)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    b = get_space("clip-vit-l-14-tiny").encode_images(images)
    c = get_space("clip-vit-l-14-tiny", seed=1).encode_images(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_image_tokens_cls_is_the_pooled_embedding_and_vd_norm(images):
    tokens = get_space("clip-vit-l-14-tokens-tiny").encode_images(images)
    pooled = get_space("clip-vit-l-14-tiny").encode_images(images)
    np.testing.assert_allclose(tokens[:, 0], pooled, rtol=1e-5, atol=1e-5)
    vd = get_space("clip-vit-l-14-tokens-tiny", normalize="vd").encode_images(images)
    np.testing.assert_allclose(np.linalg.norm(vd[:, 0], axis=-1), 1.0, rtol=1e-5)
    cls_norm = np.linalg.norm(tokens[:, :1], axis=-1, keepdims=True)
    np.testing.assert_allclose(vd, tokens / cls_norm, rtol=1e-4, atol=1e-6)
    l2 = get_space("clip-vit-l-14-tiny", normalize="l2").encode_images(images)
    np.testing.assert_allclose(np.linalg.norm(l2, axis=-1), 1.0, rtol=1e-5)


def test_text_tokens_eos_is_the_pooled_embedding_and_vd_norm():
    import open_clip

    tokens = get_space("clip-vit-l-14-text-tokens-tiny").encode_texts(TEXTS)
    pooled = get_space("clip-vit-l-14-text-tiny").encode_texts(TEXTS)
    eos = open_clip.tokenize(TEXTS).argmax(-1).numpy()
    assert eos.tolist() == [7, 9, 2]  # <start> words <end>: known token counts
    np.testing.assert_allclose(tokens[np.arange(3), eos], pooled, rtol=1e-5, atol=1e-5)
    vd = get_space("clip-vit-l-14-text-tokens-tiny", normalize="vd").encode_texts(TEXTS)
    np.testing.assert_allclose(vd, tokens / np.linalg.norm(pooled, axis=-1)[:, None, None], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vd[np.arange(3), eos], axis=-1), 1.0, rtol=1e-5)


def test_bigg_patch_tokens_exclude_cls_and_are_unprojected(images):
    import torch

    space = get_space("clip-bigg-14-tokens-tiny")
    feats = space.encode_images(images)
    v = space.model.visual
    pix = torch.stack([space._transform(__import__("PIL.Image").Image.fromarray(im)) for im in images])
    with torch.no_grad():
        full = v.ln_post(v.transformer(v._embeds(pix)))
    np.testing.assert_allclose(feats, full[:, 1:].numpy(), rtol=1e-5, atol=1e-5)
    assert feats.shape[-1] == tiny_clip_config("ViT-bigG-14")["vision_cfg"]["width"]


def test_preprocessing_is_recorded_and_applied():
    space = get_space("clip-vit-l-14-tokens-tiny")
    pre = space.preprocessing
    assert pre["size"] == 32 and pre["interpolation"] == "bicubic" and pre["resize_mode"] == "shortest"
    np.testing.assert_allclose(pre["mean"], [0.48145466, 0.4578275, 0.40821073])
    # a uniform grey image becomes (0.5 - mean) / std after preprocessing
    grey = np.full((1, 45, 37, 3), 128, np.uint8)
    space.encode_images(grey)
    t = space._transform(__import__("PIL.Image").Image.fromarray(grey[0]))
    assert tuple(t.shape) == (3, 32, 32)
    np.testing.assert_allclose(t[:, 5, 5].numpy(), (128 / 255 - np.array(pre["mean"])) / np.array(pre["std"]),
                               rtol=1e-5)


def test_pil_and_array_inputs_agree(images):
    from PIL import Image

    space = get_space("clip-vit-h-14-tiny")
    np.testing.assert_array_equal(space.encode_images(images), space.encode_images([Image.fromarray(i) for i in images]))


def test_bad_inputs_teach(images):
    space = get_space("clip-vit-l-14-tiny")
    with pytest.raises(ValidationError, match="uint8"):
        space.encode_images(images.astype(np.float32) / 255)
    with pytest.raises(ShapeMismatchError, match="leading axis"):
        space.encode_images(images[0])
    with pytest.raises(ValidationError, match="clip-vit-l-14-text"):
        space.encode_texts(TEXTS)
    with pytest.raises(ValidationError, match="Use encode_texts"):
        get_space("minilm-l6-tiny").encode_images(images)
    with pytest.raises(ValidationError, match="Did you mean"):
        get_space("clip-vit-l14-tokens")
    with pytest.raises(ValidationError, match="normalize"):
        get_space("clip-bigg-14-tokens-tiny", normalize="vd")


def test_tokenizer_vocab_check():
    class Empty:
        encoder = {"a": 0, "b": 1}

    with pytest.raises(DataIntegrityError, match="49408 tokens.*vocabulary of 2"):
        check_tokenizer_vocab(Empty(), 49408, "CLIP BPE")
    space = get_space("clip-vit-l-14-text-tiny")
    assert len(space._tokenizer.encoder) == 49408
    assert space.preprocessing["vocab_size"] == 49408


def test_offline_real_weights_fail_fast_naming_the_artefact():
    t0 = time.perf_counter()
    with pytest.raises(OfflineError, match="ViT-L-14.*openai"):
        get_space("clip-vit-l-14-tokens")
    with pytest.raises(OfflineError, match="google/flan-t5-large"):
        get_space("flan-t5-large-encoder")
    assert time.perf_counter() - t0 < 10


def test_open_clip_folder_round_trip(tmp_path, images):
    import open_clip
    import torch

    cfg = tiny_clip_config("ViT-L-14")
    cfg["vision_cfg"]["width"] = 24
    cfg["vision_cfg"]["head_width"] = 8
    model = build_open_clip(cfg, seed=3)
    folder = save_open_clip_folder(model, tmp_path / "clip", model_cfg=cfg,
                                   preprocess_cfg={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    assert (folder / "open_clip_config.json").is_file() and (folder / "open_clip_model.safetensors").is_file()
    loaded, cfg2, pre, wfile = load_open_clip_folder(folder)
    assert cfg2 == cfg and pre["mean"] == [0.5, 0.5, 0.5] and wfile.name == "open_clip_model.safetensors"
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)

    direct = get_space("clip-custom", model_cfg=cfg, seed=3, output="image_tokens",
                       preprocess_cfg={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    from_folder = get_space("clip-custom", weights=folder, output="image_tokens")
    a, b = direct.encode_images(images), from_folder.encode_images(images)
    assert a.shape == (3, 17, 16)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert from_folder.weights.startswith("folder:") and len(from_folder.cache_key()["weights_sha256"]) == 64
    assert from_folder.preprocessing["mean"] == [0.5, 0.5, 0.5]
    # text side through the same folder with the real BPE tokenizer
    t = get_space("clip-custom", weights=folder, output="text_pooled").encode_texts(TEXTS)
    # open_clip's own reader of the folder layout agrees
    oc = open_clip.create_model(f"local-dir:{folder}").eval()
    with torch.no_grad():
        ref = oc.encode_text(open_clip.tokenize(TEXTS)).numpy()
    np.testing.assert_allclose(t, ref, rtol=1e-5, atol=1e-5)


def test_cache_key_tracks_what_changes_features():
    a = get_space("clip-vit-l-14-tokens-tiny").cache_key()
    assert a == get_space("clip-vit-l-14-tokens-tiny").cache_key()
    assert a != get_space("clip-vit-l-14-tokens-tiny", normalize="vd").cache_key()
    assert a != get_space("clip-vit-l-14-tokens-tiny", seed=2).cache_key()
    assert set(a["versions"]) >= {"torch", "open_clip_torch", "transformers"}
    assert a["preprocessing"]["interpolation"] == "bicubic"


def test_bf16_autocast_path_matches_float32(images):
    import warnings

    ref = get_space("clip-vit-l-14-tokens-tiny").encode_images(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the one-time reduced-precision notice
        space = get_space("clip-vit-l-14-tokens-tiny", dtype="bfloat16")
    low = space.encode_images(images)
    assert space.dtype == "bfloat16" and low.dtype == np.float32
    assert space.cache_key()["compute_dtype"] == "bfloat16"
    err = np.abs(low - ref).max() / np.abs(ref).max()
    assert 0 < err < 0.05  # reduced precision really ran, and stays close


def test_text_tokens_padded_with_eot_like_hugging_face_clip_tokenizer(tmp_path):
    """Token ids match transformers' CLIPTokenizer (pad = <|endoftext|>, as VD / MindBridge / Brain-Diffuser use);
    causal attention: everything up to the first EOT (and the pooled embedding) is unchanged by the padding."""
    from transformers import CLIPTokenizer

    from neurodecode.latents.clip import EOT_TOKEN, pad_with_eot
    from neurodecode.testing._hub import clip_bpe_tokenizer_files

    hf = CLIPTokenizer.from_pretrained(clip_bpe_tokenizer_files(tmp_path / "tok"))
    assert len(hf) == 49408
    ref = hf(TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    eot = get_space("clip-vit-l-14-text-tokens-tiny")
    zero = get_space("clip-vit-l-14-text-tokens-tiny", pad="zero")
    ids = pad_with_eot(eot._tokenizer(TEXTS))
    assert (ids == ref).all()
    assert eot.preprocessing["pad_token"] == EOT_TOKEN and zero.preprocessing["pad_token"] == 0
    assert eot.cache_key_hash() != zero.cache_key_hash()
    a, b = eot.encode_texts(TEXTS), zero.encode_texts(TEXTS)
    for i, row in enumerate(ref):
        first = int((row == EOT_TOKEN).nonzero()[0])
        np.testing.assert_allclose(a[i, :first + 1], b[i, :first + 1], rtol=1e-5, atol=1e-6)
        assert np.abs(a[i, first + 1:] - b[i, first + 1:]).max() > 1e-3
    np.testing.assert_allclose(get_space("clip-vit-l-14-text-tiny").encode_texts(TEXTS),
                               get_space("clip-vit-l-14-text-tiny", pad="zero").encode_texts(TEXTS), rtol=1e-5,
                               atol=1e-6)
