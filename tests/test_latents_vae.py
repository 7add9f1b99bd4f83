"""Image-autoencoder latent spaces (``sd-vae`` / ``sd-vae-tiny``): shapes, preprocessing, folders, offline, CLI.

Random weights cannot reconstruct an image, so the round trip is checked for what it can honestly
show: shapes, determinism, that the decoder inverts this space's scale (raw = the generators'
``vae_latents`` convention), and known answers against diffusers' own ``AutoencoderKL.encode``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode._core.errors import MissingFileError, OfflineError, ShapeMismatchError, ValidationError
from neurodecode.latents import FeatureCache, available_spaces, describe_space, get_space
from neurodecode.latents._base import seeded
from neurodecode.latents.vae import SD_VAE_CONFIG, tiny_vae


@pytest.fixture(scope="module")
def images():
    # asymmetric sizes catch transposed axes; smooth content so resizing is well conditioned
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (3, 7, 9, 3)).astype(np.float32)
    up = np.kron(base, np.ones((1, 6, 6, 1), np.float32))[:, :41, :53]
    return np.clip(up + rng.normal(0, 8, up.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def space():
    return get_space("sd-vae-tiny")


def _diffusers_reference(vae, x_uint8):
    """What diffusers' own encoder gives for images already at the space's size: mean of the posterior."""
    import torch

    pix = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        return vae.encode(pix).latent_dist.mean.numpy()


def test_registered_with_a_tiny_twin():
    assert "sd-vae" in available_spaces(tiny=False) and "sd-vae-tiny" in available_spaces(tiny=True)
    spec = describe_space("sd-vae")
    assert spec.options["hub_id"] == "stabilityai/sd-vae-ft-mse" and "4 x 32 x 32" in spec.description
    assert describe_space("sd-vae-tiny").options["tiny"] is True


def test_tiny_shape_determinism_and_cache_key(space, images):
    import torch

    assert space.shape == (4, 16, 16) and space.image_size == 32 and space.modality == "image"
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    z = space.encode_images(images)
    assert z.shape == (3, 4, 16, 16) and z.dtype == np.float32 and np.isfinite(z).all()
    assert not np.allclose(z[0], z[1])  # different images, different latents
    again = get_space("sd-vae-tiny")
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded init leaves the global RNG alone
    np.testing.assert_array_equal(again.encode_images(images), z)
    np.testing.assert_allclose(space.encode_images(images, batch_size=1), z, rtol=1e-5, atol=1e-6)
    assert not np.allclose(get_space("sd-vae-tiny", seed=1).encode_images(images), z)
    key = space.cache_key()
    assert key["weights"] == "random-init:seed=0" and key["sample"] == "mean" and key["scaled"] is False
    assert key["library"]["diffusers"] and key["versions"]["torch"] and key["vae_config"]["latent_channels"] == 4
    assert key["preprocessing"]["size"] == 32 and key["preprocessing"]["antialias"] is True
    assert key != get_space("sd-vae-tiny", scaled=True).cache_key()
    assert key != get_space("sd-vae-tiny", image_size=16).cache_key()


def test_preprocessing_known_answers(space, images):
    import torch
    from PIL import Image

    z = space.encode_images(images)
    # uint8 [0, 255], float [0, 1] (float32 / float64), channels-first, PIL and torch inputs agree
    np.testing.assert_allclose(space.encode_images(images.astype(np.float32) / 255), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(space.encode_images(images / 255.0), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(space.encode_images(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), z)
    np.testing.assert_array_equal(space.encode_images([Image.fromarray(im) for im in images]), z)
    np.testing.assert_array_equal(space.encode_images([im.transpose(2, 0, 1) for im in images]), z)
    np.testing.assert_array_equal(space.encode_images(torch.from_numpy(images)), z)
    # images at the space's size go straight to the encoder, mapped to [-1, 1]: diffusers' own answer
    small = images[:, :32, :32]
    np.testing.assert_allclose(space.encode_images(small), _diffusers_reference(space.vae, small),
                               rtol=1e-5, atol=1e-5)
    # a uniform image of any size resizes to the same uniform image
    flat = np.full((1, 45, 37, 3), (200, 30, 90), np.uint8)
    np.testing.assert_allclose(space.encode_images(flat), space.encode_images(np.full((1, 32, 32, 3), (200, 30, 90),
                                                                                       np.uint8)), atol=1e-5)
    # the shorter side is resized, then the centre cropped (not squashed): a 64 x 96 image keeps its middle
    # 64 columns, so its outer 8 columns on each side (beyond the resize kernel's reach) do not matter
    wide = np.ascontiguousarray(images[:1, :32, :48].repeat(2, 1).repeat(2, 2))
    edited = wide.copy()
    edited[:, :, :8] = 255 - edited[:, :, :8]
    edited[:, :, 88:] = 0
    np.testing.assert_array_equal(space.encode_images(edited), space.encode_images(wide))
    edited[:, 30:34, 46:50] = 255 - edited[:, 30:34, 46:50]
    assert not np.allclose(space.encode_images(edited), space.encode_images(wide))


def test_scaled_latents_and_decode_round_trip(space, images):
    z = space.encode_images(images)
    scaled = get_space("sd-vae-tiny", scaled=True)
    assert scaled.scaling_factor == pytest.approx(0.18215)
    np.testing.assert_allclose(scaled.encode_images(images), z * 0.18215, rtol=1e-5, atol=1e-7)
    out = space.decode_latents(z)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(space.decode_latents(z), out)  # deterministic
    # each space's decoder undoes its own scale
    assert np.abs(scaled.decode_latents(z * 0.18215).astype(int) - out).max() <= 1
    # decode(encode(x)) of a random VAE is not x, but it is a function of x
    assert space.decode_latents(space.encode_images(out)).shape == out.shape
    assert space.decode_latents(np.empty((0, 4, 16, 16), np.float32)).shape == (0, 32, 32, 3)


def test_raw_latents_are_the_generators_vae_latents(space, images):
    """Raw latents (the default) feed neurodecode.generate unchanged: its decode == this space's decode."""
    from neurodecode.generate import get_generator

    gen = get_generator("lowlevel", weights="tiny").load()
    gen.components_["vae"] = space.vae  # the same autoencoder on both sides
    z = space.encode_images(images)
    via_generator = gen.generate({"vae_latents": z}, seeds=0, strength=0.0)
    assert np.abs(via_generator.astype(int) - space.decode_latents(z)).max() <= 1


def test_reduced_precision(space, images):
    import warnings

    ref = space.encode_images(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the one-time reduced-precision notice
        low = get_space("sd-vae-tiny", dtype="bfloat16")
        half = get_space("sd-vae-tiny", dtype="float16")
    z = low.encode_images(images)
    assert low.cache_key()["compute_dtype"] == "bfloat16" and z.dtype == np.float32
    assert 0 < np.abs(z - ref).max() / np.abs(ref).max() < 0.05  # bf16 autocast really ran, and stays close
    assert low.decode_latents(z).shape == (3, 32, 32, 3)
    # float16 overflows in SD VAEs: a config with force_upcast runs (and is keyed) as float32
    assert half.dtype == "float32" and half.cache_key()["compute_dtype"] == "float32"
    np.testing.assert_array_equal(half.encode_images(images), ref)


def test_real_architecture_shapes_without_weights():
    import torch

    real = get_space("sd-vae", weights="random", device="meta")
    assert real.shape == (4, 32, 32) and real.image_size == 256  # 256 px -> 4 x 32 x 32
    assert abs(sum(p.numel() for p in real.vae.parameters()) / 83.65e6 - 1) < 0.01
    assert tuple(real.vae.config.block_out_channels) == SD_VAE_CONFIG["block_out_channels"]
    with torch.inference_mode():
        out = real._forward_tensor(torch.empty(2, 3, 256, 256, device="meta"))
    assert tuple(out.shape) == (2, 4, 32, 32)
    assert get_space("sd-vae", weights="random", device="meta", image_size=512).shape == (4, 64, 64)


def test_offline_real_weights_fail_fast_naming_the_hub_id():
    t0 = time.perf_counter()
    with pytest.raises(OfflineError, match="stabilityai/sd-vae-ft-mse"):
        get_space("sd-vae")
    with pytest.raises(OfflineError, match="someone/some-sd-pipeline"):
        get_space("sd-vae", weights="someone/some-sd-pipeline")
    assert time.perf_counter() - t0 < 10


def test_local_folder_loads_as_the_real_tier(tmp_path, space, images):
    with seeded(0):
        vae = tiny_vae(32)  # the same seeded init as the tiny twin
    vae.save_pretrained(tmp_path / "vae_only")
    vae.save_pretrained(tmp_path / "sd_pipeline" / "vae")
    (tmp_path / "sd_pipeline" / "model_index.json").write_text("{}", encoding="utf-8")
    ref = space.encode_images(images)
    for folder, suffix in ((tmp_path / "vae_only", "vae_only"), (tmp_path / "sd_pipeline", "vae")):
        real = get_space("sd-vae", weights=folder, image_size=32)
        assert real.shape == (4, 16, 16) and real.weights.startswith("folder:") and real.weights.endswith(suffix)
        assert len(real.cache_key()["weights_sha256"]) == 64
        np.testing.assert_allclose(real.encode_images(images), ref, rtol=1e-5, atol=1e-6)
    assert get_space("sd-vae", weights=tmp_path / "vae_only").shape == (4, 128, 128)  # real default: 256 px


def test_bad_folders_teach(tmp_path):
    with pytest.raises(MissingFileError, match="vae/config.json"):
        get_space("sd-vae", weights=tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}), encoding="utf-8")
    with pytest.raises(MissingFileError, match="diffusion_pytorch_model.safetensors or"):
        get_space("sd-vae", weights=tmp_path)  # config without weights: the missing file is named
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderTiny"}), encoding="utf-8")
    with pytest.raises(ValidationError, match="AutoencoderKL"):
        get_space("sd-vae", weights=tmp_path)
    with pytest.raises(MissingFileError, match="hub id"):
        get_space("sd-vae", weights=tmp_path / "nope")


# ------------------------------------------------------------------------------------ hub layouts
@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache that the library reads (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def _independent_load(folder, variant):
    """The same files loaded by diffusers directly (float32), as a lab would without this library."""
    import torch
    from diffusers import AutoencoderKL

    kw = {"variant": "fp16"} if variant == "fp16" else {"use_safetensors": False} if variant == "bin" else {}
    return AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32, **kw)


_WEIGHT_NAMES = {"full": "diffusion_pytorch_model.safetensors", "fp16": "diffusion_pytorch_model.fp16.safetensors",
                 "bin": "diffusion_pytorch_model.bin"}


@pytest.mark.parametrize("layout", ["folder", "cache"])
@pytest.mark.parametrize("variant", ["full", "fp16", "bin"])
def test_complete_hub_layouts_of_each_variant_load(tmp_path, hub_cache, layout, variant):
    """stabilityai/sd-vae-ft-mse as `hf download` or diffusers leaves it, fp32-only, fp16-variant-only or .bin-only,
    in a plain folder (weights=FOLDER) and in the hub cache (weights=None: snapshots/ + refs/main)."""
    import hashlib

    from neurodecode.testing import write_hub_fixture

    root = tmp_path / "vae" if layout == "folder" else hub_cache
    folder = write_hub_fixture("sd-vae", root, layout=layout, variant=variant, size="tiny")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", _WEIGHT_NAMES[variant]])
    real = get_space("sd-vae", weights=None if layout == "cache" else folder, image_size=32)
    assert real.weights == ("hub:stabilityai/sd-vae-ft-mse" if layout == "cache" else f"folder:{folder.resolve()}")
    assert {p.dtype for p in real.vae.parameters()} == {__import__("torch").float32}  # fp16 files upcast
    # the key hashes the weights file actually read (sha256 of its bytes, through the cache's symlink)
    want = hashlib.sha256((folder / _WEIGHT_NAMES[variant]).read_bytes()).hexdigest()
    assert real.cache_key()["weights_sha256"] == want
    x = np.random.default_rng(7).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    ref = _diffusers_reference(_independent_load(folder, variant), x)
    np.testing.assert_allclose(real.encode_images(x), ref, rtol=1e-5, atol=1e-5)


def test_partial_cache_raises_offline_error_naming_the_missing_files(hub_cache):
    """A partly cached repository is refused here, naming what is missing (it used to be accepted and fail later
    inside diffusers with "no file named ...")."""
    from neurodecode.testing import write_hub_fixture

    snap = write_hub_fixture("sd-vae", hub_cache, layout="cache", variant="full", size="tiny")
    (snap / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(OfflineError) as info:
        get_space("sd-vae")
    msg = str(info.value)
    assert "stabilityai/sd-vae-ft-mse" in msg and "partly cached" in msg
    assert "diffusion_pytorch_model.safetensors or diffusion_pytorch_model.fp16.safetensors" in msg
    assert "missing: config.json" not in msg and "config.json, " not in msg  # only what is missing
    # the same cache completed with the pickled weights (as an older `hf download` leaves it): accepted
    assert write_hub_fixture("sd-vae", hub_cache, layout="cache", variant="bin", size="tiny") == snap
    assert get_space("sd-vae", image_size=32).shape == (4, 16, 16)
    (snap / "config.json").unlink()
    with pytest.raises(OfflineError) as info:
        get_space("sd-vae")  # the .bin is there now: only config.json is missing
    assert "missing: config.json" in str(info.value) and "model.bin" not in str(info.value)


def test_partial_folder_names_the_missing_file(tmp_path):
    from neurodecode.testing import write_hub_fixture

    folder = write_hub_fixture("sd-vae", tmp_path / "vae", variant="fp16", size="tiny")
    (folder / "diffusion_pytorch_model.fp16.safetensors").unlink()
    with pytest.raises(MissingFileError, match="diffusion_pytorch_model.safetensors or"):
        get_space("sd-vae", weights=folder)


def test_pipeline_cache_reads_its_vae_subfolder_and_names_missing_files(hub_cache):
    """A Stable Diffusion pipeline's hub id: its vae/ is read from the cache; partly cached, vae/ files are named."""
    from neurodecode.latents import space_artefacts
    from neurodecode.testing import write_hub_fixture

    repo = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    snap = write_hub_fixture("lowlevel", hub_cache, layout="cache", variant="fp16", size="tiny")
    real = get_space("sd-vae", weights=repo, image_size=32)
    assert real.weights == f"hub:{repo}" and real.shape == (4, 16, 16)
    x = np.random.default_rng(8).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    ref = _diffusers_reference(_independent_load(snap / "vae", "fp16"), x)
    np.testing.assert_allclose(real.encode_images(x), ref, rtol=1e-5, atol=1e-5)
    (art,) = space_artefacts("sd-vae", weights=repo)
    assert art.repo == repo and art.files[0] == ("vae/config.json",)  # the download list is what is read
    (snap / "vae" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    with pytest.raises(OfflineError, match="vae/diffusion_pytorch_model.safetensors or"):
        get_space("sd-vae", weights=repo)


def test_declared_files_are_exactly_enough(tmp_path):
    """A folder holding only the files the sd-vae space declares (one alternative per group) loads: what
    `neurodecode download` fetches for the space is what its builder reads."""
    import shutil

    from neurodecode.io.hub import group_choice
    from neurodecode.latents import space_artefacts
    from neurodecode.testing import write_hub_fixture

    (art,) = space_artefacts("sd-vae", dtype="bfloat16")
    assert art.repo == "stabilityai/sd-vae-ft-mse" and art.files[0] == ("config.json",)
    assert art.files[1][0] == "diffusion_pytorch_model.safetensors"  # float32 weights: the full file first
    full = write_hub_fixture("sd-vae", tmp_path / "full", variant="fp16", size="tiny")
    (full / "README.md").write_text("not read", encoding="utf-8")
    lean = tmp_path / "lean"
    lean.mkdir()
    for group in art.files:
        choice = group_choice(full, group)
        assert choice is not None, group
        shutil.copyfile(full / choice, lean / choice)
    assert get_space("sd-vae", weights=lean, image_size=32).encode_images(
        np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 4, 16, 16)


def test_bad_inputs_teach(space, images):
    with pytest.raises(ShapeMismatchError, match=r"img\[None\]"):
        space.encode_images(images[0])
    with pytest.raises(ShapeMismatchError, match="height, width, 3"):
        space.encode_images(np.zeros((2, 32, 32, 4), np.uint8))
    bad = images.astype(np.float32) / 255
    bad[1, 3, 4, 0] = np.nan
    with pytest.raises(ValidationError, match="NaN"):
        space.encode_images(bad)
    with pytest.raises(ValidationError, match="Divide 0-255 floats by 255"):
        space.encode_images(images.astype(np.float32))
    with pytest.raises(ValidationError, match="uint8 pixel values"):
        space.encode_images(images.astype(np.int16))
    with pytest.raises(ShapeMismatchError, match=r"images\[1\]"):
        space.encode_images([images[0], images[1, :, :, :2]])
    with pytest.raises(ShapeMismatchError, match=r"\(n, 4, h, w\)"):
        space.decode_latents(np.zeros((4, 16, 16), np.float32))
    with pytest.raises(ValidationError, match="NaN"):
        space.decode_latents(np.full((1, 4, 16, 16), np.nan, np.float32))
    with pytest.raises(ValidationError, match="multiple of the VAE's downsampling factor 2"):
        get_space("sd-vae-tiny", image_size=31)
    with pytest.raises(ValidationError, match="sample"):
        get_space("sd-vae-tiny", sample="random")
    with pytest.raises(ValidationError, match="Did you mean 'sd-vae'"):
        get_space("sd-vea")
    with pytest.raises(ValidationError, match="Use encode_images"):
        space.encode_texts(["a cat"])


def test_cli_embed_fills_the_cache(tmp_path):
    from PIL import Image

    from neurodecode.cli import app

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (30, 26 + i, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    res = CliRunner().invoke(app, ["embed", "--space", "sd-vae-tiny", "--stimuli", str(folder), "--out",
                                   str(tmp_path / "c"), "--device", "cpu", "--store-dtype", "float32", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["complete"] and summary["n"] == 3 and summary["shape"] == [4, 16, 16]
    cache = FeatureCache(tmp_path / "c")
    assert cache.shape == (4, 16, 16) and cache.key["space"] == "sd-vae-tiny" and cache.key["scaled"] is False
    ref = get_space("sd-vae-tiny").encode_images([np.asarray(Image.open(folder / f"{i}.png")) for i in range(3)])
    np.testing.assert_allclose(cache.load(), ref, rtol=1e-5, atol=1e-6)
