"""Offline resolution on the hub layouts: exact file lists, partial caches named, every complete layout accepted
(plain folder and Hugging Face cache; fp16-variant only, full only, .bin only, sharded), loads in the requested dtype."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError, MissingFileError, OfflineError, ValidationError
from neurodecode.generate import get_generator
from neurodecode.io.hub import cached_snapshot, missing_files, pick_variant, resolve_files
from neurodecode.testing import write_hub_fixture


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache that the library reads (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def _params_dtype(module):
    return {p.dtype for p in module.parameters()}


@pytest.mark.parametrize("variant", ["full", "fp16", "bin"])
def test_complete_cache_of_each_variant_loads_through_the_hub_id(hub_cache, variant):
    snap = write_hub_fixture("lowlevel", hub_cache, layout="cache", variant=variant, size="tiny")
    # the hub cache layout: blobs, snapshot symlinks, refs/main naming the snapshot
    repo_dir = hub_cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    assert (repo_dir / "refs" / "main").read_text() == snap.name
    assert (snap / "unet" / "config.json").is_symlink()
    assert cached_snapshot("stable-diffusion-v1-5/stable-diffusion-v1-5") == snap
    gen = get_generator("lowlevel", weights=None, dtype="float32").load()
    assert gen.weights_id_ == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert _params_dtype(gen.components_["unet"]) == {__import__("torch").float32}
    lat = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    out = gen.generate({"vae_latents": lat}, seeds=0, steps=2, strength=0.5)
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8


def test_partial_cache_names_the_missing_files(hub_cache):
    snap = write_hub_fixture("lowlevel", hub_cache, layout="cache", variant="fp16", size="tiny")
    (snap / "unet" / "config.json").unlink()
    (snap / "text_encoder" / "model.fp16.safetensors").unlink()
    with pytest.raises(OfflineError) as info:
        get_generator("lowlevel", weights=None).load()
    msg = str(info.value)
    assert "unet/config.json" in msg and "text_encoder/model.fp16.safetensors" in msg
    assert "vae/config.json" not in msg  # only what is missing
    assert "partly cached" in msg


def test_partial_folder_names_the_missing_files(tmp_path):
    folder = write_hub_fixture("versatile", tmp_path / "vd", variant="full", size="tiny")
    (folder / "text_unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingFileError, match="text_unet/diffusion_pytorch_model"):
        get_generator("versatile", weights=str(folder)).load()


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_loads_in_the_requested_dtype_with_variant_fallback(tmp_path, dtype):
    import torch

    full = write_hub_fixture("unclip", tmp_path / "full", variant="full", size="tiny")
    half = write_hub_fixture("unclip", tmp_path / "half", variant="fp16", size="tiny")
    want = getattr(torch, dtype)
    # reduced dtype: the fp16 files when present, the full ones otherwise; float32: the full files first
    assert pick_variant(half, "unet", dtype) == "fp16" and pick_variant(full, "unet", dtype) is None
    for folder in (full, half):
        gen = get_generator("unclip", weights=str(folder), dtype=dtype).load()
        assert _params_dtype(gen.components_["unet"]) == {want}
        assert _params_dtype(gen.components_["text_encoder"]) == {want}


@pytest.mark.parametrize("variant", ["full", "fp16"])
def test_sdxl_turbo_loads_any_variant(tmp_path, variant):
    # the real tier used to hard-code variant="fp16": a full-precision folder raised ValueError
    folder = write_hub_fixture("sdxl-turbo", tmp_path / "sdxl", variant=variant, size="tiny")
    ip = write_hub_fixture("ip-adapter", tmp_path / "ip", variant=variant, size="tiny")
    gen = get_generator("sdxl-turbo", weights=str(folder), ip_adapter=str(ip)).load()
    emb = np.random.default_rng(1).standard_normal((2, 24)).astype(np.float32)
    assert gen.expects == {"clip_image_embeds": (None, 24)}
    out = gen.generate({"clip_image_embeds": emb}, seeds=0, steps=1, height=32, width=32)
    assert out.shape == (2, 32, 32, 3)


def test_sharded_checkpoint_needs_every_shard(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    model = CLIPTextModel(CLIPTextConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, max_position_embeddings=7))
    model.save_pretrained(tmp_path / "text_encoder", max_shard_size="20KB")
    index = json.loads((tmp_path / "text_encoder" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    from neurodecode.io.hub import transformers_model_files

    files = transformers_model_files("text_encoder", sharded=True)
    assert resolve_files(tmp_path, files) == tmp_path
    (tmp_path / "text_encoder" / shards[-1]).unlink()
    assert missing_files(tmp_path, files)  # the index alone is not a checkpoint
    with pytest.raises(MissingFileError, match="model.safetensors"):
        resolve_files(tmp_path, files)


def test_offline_hub_id_not_cached_names_repo_and_files(hub_cache):
    with pytest.raises(OfflineError) as info:
        resolve_files("owner/not-cached", (("config.json",), ("a.safetensors", "a.bin")))
    assert "owner/not-cached" in str(info.value) and "a.safetensors or a.bin" in str(info.value)


def test_lowlevel_decode_only_from_a_vae_alone(tmp_path):
    import torch
    from diffusers import AutoencoderKL

    folder = write_hub_fixture("sd-vae", tmp_path / "vae", variant="full", size="tiny")
    assert not (folder / "unet").exists()
    gen = get_generator("lowlevel", weights=str(folder)).load()
    assert set(gen.components_) == {"vae"}  # no UNet, no text encoder
    lat = np.random.default_rng(2).standard_normal((3, 4, 8, 8)).astype(np.float32)
    out = gen.generate({"vae_latents": lat}, seeds=0, strength=0.0)
    # independent decode of the raw latents with the same VAE: images = clamp(decode(z) / 2 + 0.5)
    vae = AutoencoderKL.from_pretrained(folder)
    with torch.no_grad():
        ref = (vae.decode(torch.from_numpy(lat)).sample / 2 + 0.5).clamp(0, 1)
    ref = np.round(ref.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    assert out.shape == ref.shape and np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    with pytest.raises(ValidationError, match="decode only"):
        gen.generate({"vae_latents": lat}, seeds=0, strength=0.5)
    # decode_only on a full Stable Diffusion folder reads its vae/ only
    sd = write_hub_fixture("lowlevel", tmp_path / "sd", variant="fp16", size="tiny")
    gen = get_generator("lowlevel", weights=str(sd), decode_only=True).load()
    assert set(gen.components_) == {"vae"}
    arts = type(gen).artefacts(None, "float32", decode_only=True)
    assert arts[0].repo == "stabilityai/sd-vae-ft-mse" and ("config.json",) in arts[0].files


def test_git_and_open_clip_fixtures_load_through_their_routes(tmp_path, hub_cache):
    from neurodecode.latents import get_space

    git = write_hub_fixture("git", tmp_path / "git", variant="full", size="tiny")
    gen = get_generator("git", weights=str(git)).load()
    n, w = gen.expects["git_image_tokens"][1:]
    caps = gen.generate({"git_image_tokens": np.random.default_rng(3).standard_normal((2, n, w))}, max_length=6)
    assert len(caps) == 2 and all(isinstance(c, str) for c in caps)
    # an open_clip hub cache: the clip-vit-l-14 spaces read timm/vit_large_patch14_clip_224.openai, with the
    # repository's own open_clip_config.json when it has one
    snap = write_hub_fixture("clip-vit-l-14", hub_cache, layout="cache", variant="full", size="tiny")
    space = get_space("clip-vit-l-14-tokens")
    assert space.shape == (17, 16) and space.weights == "open_clip:ViT-L-14/openai"
    (snap / "open_clip_config.json").unlink()
    with pytest.raises(DataIntegrityError, match="open_clip_model.safetensors"):
        # without it, open_clip's ViT-L/14 config: the tiny file does not fit and is refused
        get_space("clip-vit-l-14-tokens")


def test_open_clip_space_keeps_weights_in_the_requested_dtype(hub_cache):
    import torch

    from neurodecode.latents import get_space

    write_hub_fixture("clip-vit-l-14", hub_cache, layout="cache", variant="fp16", size="tiny")
    half = get_space("clip-vit-l-14-text-tokens", dtype="bfloat16")
    full = get_space("clip-vit-l-14-text-tokens")
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}  # not materialised in float32
    assert {p.dtype for p in full.model.parameters()} == {torch.float32}
    a, b = half.encode_texts(["a cat", "two dogs"]), full.encode_texts(["a cat", "two dogs"])
    assert np.abs(a - b).max() < 0.05 * np.abs(b).max()


@pytest.mark.parametrize("variant", ["fp16", "bin"])
def test_versatile_real_route_reads_only_what_it_uses(tmp_path, variant):
    """uncond="zeros" (MindBridge) needs no CLIP encoder: they are neither required nor loaded; every UNet
    block, the text UNet's borrowed ones included, ends in the requested dtype."""
    import torch

    folder = write_hub_fixture("versatile", tmp_path / "vd", variant=variant, size="tiny")
    for sub in ("text_encoder", "image_encoder", "tokenizer"):
        import shutil

        shutil.rmtree(folder / sub)
    gen = get_generator("versatile", weights=str(folder), dtype="bfloat16").load()
    assert set(gen.components_) == {"unet", "vae", "scheduler"}
    assert _params_dtype(gen.components_["unet"]) == {torch.bfloat16}
    assert gen.expects == {"clip_image_tokens": (None, 257, 32), "clip_text_tokens": (None, 77, 32)}
    with pytest.raises(MissingFileError, match="text_encoder/config.json"):
        get_generator("versatile", weights=str(folder), uncond="encoded").load()


@pytest.mark.parametrize("name", ["lowlevel", "versatile", "unclip", "sdxl-turbo", "git"])
def test_declared_files_are_exactly_enough(tmp_path, name):
    """A folder holding only the files a generator declares (one alternative per group) loads and runs: the
    declaration `neurodecode download` fetches is what the loader reads."""
    import shutil

    from neurodecode.generate import generator_class
    from neurodecode.io.hub import group_choice

    full = write_hub_fixture(name, tmp_path / "full", variant="fp16", size="tiny")
    lean = tmp_path / "lean"
    groups = generator_class(name).hub_files("bfloat16")
    for group in groups:
        choice = group_choice(full, group)
        assert choice is not None, group
        (lean / choice).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(full / choice, lean / choice)
    kw = {}
    if name == "sdxl-turbo":
        kw["ip_adapter"] = str(write_hub_fixture("ip-adapter", tmp_path / "ip", variant="fp16", size="tiny"))
    gen = get_generator(name, weights=str(lean), dtype="bfloat16", **kw).load()
    shapes = {k: tuple(8 if s is None else s for s in v[1:]) for k, v in gen.expects.items()}
    rng = np.random.default_rng(0)
    lat = {k: rng.standard_normal((1, *s)).astype(np.float32) for k, s in shapes.items()}
    out = gen.generate(lat, seeds=0, steps=1, **({} if name in ("git", "lowlevel") else {"height": 32, "width": 32}))
    assert len(out) == 1


def test_realarch_depth_reads_the_environment(monkeypatch):
    from neurodecode.errors import ValidationError
    from neurodecode.testing import realarch_depth

    monkeypatch.delenv("NEURODECODE_REALARCH_DEPTH", raising=False)
    assert realarch_depth() == 1 and realarch_depth(minimum=4) == 4
    monkeypatch.setenv("NEURODECODE_REALARCH_DEPTH", "full")
    assert realarch_depth() is None and realarch_depth(minimum=4) is None
    monkeypatch.setenv("NEURODECODE_REALARCH_DEPTH", "6")
    assert realarch_depth() == 6 and realarch_depth(minimum=4) == 6
    for bad in ("two", "0"):
        monkeypatch.setenv("NEURODECODE_REALARCH_DEPTH", bad)
        with pytest.raises(ValidationError, match="NEURODECODE_REALARCH_DEPTH"):
            realarch_depth()
