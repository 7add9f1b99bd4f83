"""MindEye2's SDXL unCLIP generator ("sdxl-unclip"): tied to the reference's sampler, schedule, conditioning and
checkpoint layout (MedARC-AI/MindEyeV2 src/generative_models/configs/unclip6.yaml, src/utils.py unclip_recon,
src/enhanced_recon_inference.ipynb), tiny tier and a random checkpoint in the released layout."""

import re

import numpy as np
import pytest
import torch

from neurodecode._core.errors import OfflineError, UnsafeCheckpointError, ValidationError
from neurodecode.generate import generator_weights, get_generator
from neurodecode.generate._sdxl_unclip import (
    REFINER_REPO,
    UNCLIP_FILE,
    UNCLIP_REPO,
    _scheduler,
    convert_unclip_checkpoint,
    reference_timesteps,
)
from neurodecode.testing import write_hub_fixture
from neurodecode.testing._hub import _mindeye2_unclip_parts, sgm_unclip_state_dict


def _tokens(n=3, seed=0):
    return {"clip_bigg_tokens": np.random.default_rng(seed).standard_normal((n, 16, 48)).astype(np.float32)}


@pytest.fixture(scope="module")
def gen():
    return get_generator("sdxl-unclip", weights="tiny").load()


# ------------------------------------------------------------------------------------ schedule and conditioning
def _sgm_sigmas():
    """LegacyDDPMDiscretization's 1000 sigmas (float64), from the scaled-linear betas 0.00085 -> 0.012."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1.0 - betas)
    return np.sqrt((1 - ac) / ac)


def test_schedule_is_sgm_legacy_ddpm():
    # generate_roughly_equally_spaced_steps: linspace(999, 0, n, endpoint=False) floored, by hand for 38 steps
    ts = reference_timesteps(38)
    assert list(ts[:4]) == [999, 972, 946, 920] and ts[-1] == 26 and len(ts) == 38
    assert list(reference_timesteps(50)) == list(range(999, 0, -20))  # equals "trailing" only at such counts
    sched = _scheduler(38, "cpu")
    sig = sched.sigmas.numpy()
    np.testing.assert_allclose(sig[:-1], _sgm_sigmas()[ts], rtol=2e-4)
    assert sig[-1] == 0 and abs(sig[0] - 14.6146) < 1e-3  # SDXL's sigma_max
    with pytest.raises(ValidationError, match="steps"):
        reference_timesteps(0)


def test_vector_condition_is_the_sgm_size_embedding(gen):
    """unclip6.yaml's vector: ConcatTimestepEmbedderND(256) of original size (768, 768) and crop (0, 0), i.e.
    [cos(x f), sin(x f)] per scalar with f_i = 10000^(-i / half), then label_emb (Linear, SiLU, Linear)."""
    unet = gen.components_["unet"]
    dim = int(unet.config.addition_time_embed_dim)
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
    vec = np.concatenate([np.concatenate([np.cos(x * freqs), np.sin(x * freqs)]) for x in (768, 768, 0, 0)])
    sgm = sgm_unclip_state_dict(unet, gen.components_["vae"])
    w1, b1 = sgm["model.diffusion_model.label_emb.0.0.weight"], sgm["model.diffusion_model.label_emb.0.0.bias"]
    w2, b2 = sgm["model.diffusion_model.label_emb.0.2.weight"], sgm["model.diffusion_model.label_emb.0.2.bias"]
    v = torch.tensor(vec, dtype=torch.float32)[None]
    want = torch.nn.functional.silu(v @ w1.T + b1) @ w2.T + b2
    got = unet.get_aug_embed(emb=torch.zeros(1, 1), encoder_hidden_states=None, added_cond_kwargs={
        "text_embeds": torch.zeros(1, 0), "time_ids": torch.tensor([[768.0, 768.0, 0.0, 0.0]])})
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_sampler_is_the_reference_euler_with_noise_uncond_and_offset_start(gen):
    """An independent EulerEDMSampler (gamma 0) written from sgm's formulas: D = x - sigma eps(x / sqrt(1 + sigma^2),
    t), CFG on D with Gaussian-noise unconditional tokens, x <- x + (x - D) / sigma (sigma' - sigma), start
    z + sigma_max (noise + 0.04 offset); decoded with clamp(x * 0.8 + 0.2)."""
    lat = _tokens(n=2)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    with torch.inference_mode():
        ours = gen._generate_batch(lat, gens, steps=3, guidance=5.0)
    unet, vae = gen.components_["unet"], gen.components_["vae"]
    ts = [999, 666, 333]  # linspace(999, 0, 3, endpoint=False) floored
    sig = list(_sgm_sigmas()[ts]) + [0.0]
    cond = torch.tensor(lat["clip_bigg_tokens"])
    want = []
    for i, seed in enumerate((3, 4)):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn((4, 16, 16), generator=g)
        uc = torch.randn((16, 48), generator=g)
        noise = torch.randn((4, 16, 16), generator=g)
        offset = torch.randn((1, 1, 1), generator=g)
        x = (z + sig[0] * (noise + 0.04 * offset))[None]
        ids = torch.tensor([[32.0, 32.0, 0.0, 0.0]])
        with torch.inference_mode():
            for k, t in enumerate(ts):
                den = []
                for ctx in (uc[None], cond[i:i + 1]):
                    eps = unet(x / (1 + sig[k] ** 2) ** 0.5, t, encoder_hidden_states=ctx, added_cond_kwargs={
                        "text_embeds": torch.zeros(1, 0), "time_ids": ids}).sample
                    den.append(x - sig[k] * eps)
                d = den[0] + 5.0 * (den[1] - den[0])
                x = x + (x - d) / sig[k] * (sig[k + 1] - sig[k])
            img = vae.decode(x / 0.13025).sample
        want.append((img * 0.8 + 0.2).clamp(0, 1))
    torch.testing.assert_close(ours, torch.cat(want), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------ checkpoint layout
def test_sgm_round_trip_through_the_converter(tmp_path):
    torch.manual_seed(0)
    unet, vae = _mindeye2_unclip_parts("tiny", None)
    state = sgm_unclip_state_dict(unet, vae)
    state["conditioner.embedders.0.model.visual.proj"] = torch.randn(48, 24)  # ignored by the conversion
    ckpt = tmp_path / UNCLIP_FILE
    torch.save({"state_dict": state, "global_step": 110000}, ckpt)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        convert_unclip_checkpoint(ckpt, tmp_path / "conv")
    out = convert_unclip_checkpoint(ckpt, tmp_path / "conv", allow_pickle=True, dtype="float32", sample_size=16)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet2, vae2 = UNet2DConditionModel.from_pretrained(out / "unet"), AutoencoderKL.from_pretrained(out / "vae")
    x, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 9, 48)  # the UNet attends to any number of tokens
    kw = {"encoder_hidden_states": ctx, "added_cond_kwargs": {"text_embeds": torch.zeros(2, 0),
                                                              "time_ids": torch.tensor([[32.0, 32, 0, 0]] * 2)}}
    img = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(unet2(x, 321, **kw).sample, unet(x, 321, **kw).sample)
        torch.testing.assert_close(vae2(img).sample, vae(img).sample)


def test_real_size_layout_on_meta():
    """At the released size (meta device, no memory): the keys unclip6.yaml fine-tunes (its Finetuner regex on
    attn2 to_k / to_v) are exactly the 140 cross-attention projections from 1664-wide tokens; the vector input is
    1024 wide; and the model has SDXL base's 2,567,463,684 parameters less the narrower cross-attention
    (2 x 384 x (10 x 640 + 60 x 1280)) and label embedding (1792 x 1280) inputs."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    from neurodecode.generate._sdxl_unclip import _unet_config

    with torch.device("meta"):
        unet, vae = _mindeye2_unclip_parts("real", None)
    state = sgm_unclip_state_dict(unet, vae)
    finetuned = re.compile(r"model\.diffusion_model\.(input_blocks|middle_block|output_blocks)(\.[0-9])?\.[0-9]\."
                           r"transformer_blocks\.[0-9]\.attn2\.(to_k|to_v)\.weight")
    keys = [k for k in state if finetuned.fullmatch(k)]
    assert len(keys) == 140 and all(state[k].shape[1] == 1664 for k in keys)
    assert sum(1 for v in state.values() if v.ndim == 2 and v.shape[-1] == 1664) == 140
    assert tuple(state["model.diffusion_model.label_emb.0.0.weight"].shape) == (1280, 1024)
    assert tuple(state["model.diffusion_model.output_blocks.2.2.conv.weight"].shape) == (1280, 1280, 3, 3)
    unet_sd = {k[len("model.diffusion_model."):]: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    cfg = _unet_config(unet_sd, sample_size=96)
    with torch.device("meta"):
        rebuilt = UNet2DConditionModel(**cfg)
    assert sum(p.numel() for p in rebuilt.parameters()) == 2_567_463_684 - 2 * 384 * (10 * 640 + 60 * 1280) - 1792 * 1280
    converted = convert_ldm_unet_checkpoint(state, cfg)
    assert set(converted) == set(rebuilt.state_dict()) and len(converted) == len(unet_sd) == 1680


def test_checkpoint_fixture_loads_through_the_real_path(tmp_path, monkeypatch):
    from huggingface_hub import constants

    folder = write_hub_fixture("mindeye2-unclip", tmp_path / "repo", size="tiny")
    assert (folder / UNCLIP_FILE).is_file()
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        get_generator("sdxl-unclip", weights=folder, converted_dir=tmp_path / "c0").load()
    gen = get_generator("sdxl-unclip", weights=folder, allow_pickle=True, converted_dir=tmp_path / "c1").load()
    assert gen.expects == {"clip_bigg_tokens": (None, None, 48)}
    lat = _tokens(n=1)
    a = gen.generate(lat, seeds=0, steps=2, height=32, width=32)
    assert a.shape == (1, 32, 32, 3) and a.std() > 1
    marker = tmp_path / "c1" / "sdxl_unclip.json"
    stamp = marker.stat().st_mtime_ns
    again = get_generator("sdxl-unclip", weights=tmp_path / "c1").load()  # the converted folder, read directly
    np.testing.assert_array_equal(again.generate(lat, seeds=0, steps=2, height=32, width=32), a)
    # weights=None: the dataset repository in the hub cache, converted into NEURODECODE_CACHE once
    hub = tmp_path / "hub"
    write_hub_fixture("mindeye2-unclip", hub, layout="cache", size="tiny")
    assert (hub / "datasets--pscotti--mindeyev2").is_dir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("NEURODECODE_CACHE", str(tmp_path / "ndcache"))
    default = get_generator("sdxl-unclip", allow_pickle=True).load()
    np.testing.assert_array_equal(default.generate(lat, seeds=0, steps=2, height=32, width=32), a)
    assert list((tmp_path / "ndcache" / "sdxl-unclip").iterdir()) and marker.stat().st_mtime_ns == stamp


def test_offline_default_weights_name_the_dataset_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("NEURODECODE_OFFLINE", "1")
    with pytest.raises(OfflineError, match=f"{UNCLIP_REPO}.*{UNCLIP_FILE}"):
        get_generator("sdxl-unclip").load()
    assert REFINER_REPO in generator_weights("sdxl-unclip", refine=True)  # SDXL base only when refining
    assert generator_weights("sdxl-unclip") == {}  # the unCLIP file lives in a dataset repo: listed, not fetched


# ------------------------------------------------------------------------------------ tiny tier behaviour
def test_tiny_determinism_batching_and_options(gen):
    lat = _tokens()
    a = gen.generate(lat, seeds=[5, 6, 7], steps=2, batch_size=3)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8 and a.std() > 1
    single = np.concatenate([gen.generate({k: v[i:i + 1] for k, v in lat.items()}, seeds=[s], steps=2)
                             for i, s in enumerate([5, 6, 7])])
    assert np.abs(a.astype(int) - single).max() <= 1
    c = gen.generate(lat, seeds=[8, 6, 7], steps=2, batch_size=2)
    assert np.abs(c[0].astype(int) - a[0]).max() > 5 and np.abs(c[1:].astype(int) - a[1:]).max() <= 1
    other = gen.generate(_tokens(seed=1), seeds=[5, 6, 7], steps=2)
    assert np.abs(other.astype(int) - a).mean() > 0.5  # the tokens condition the image
    zeros = gen.generate(lat, seeds=[5, 6, 7], steps=2, uncond="zeros")
    assert np.abs(zeros.astype(int) - a).mean() > 0.5
    # output maps of the same decoded image: reference x * 0.8 + 0.2, standard (x + 1) / 2
    std = gen.generate(lat, seeds=[5, 6, 7], steps=2, output_map="standard").astype(float) / 255
    ref = a.astype(float) / 255
    x = 2 * std - 1
    inside = (std > 0.02) & (std < 0.98) & (x * 0.8 + 0.2 > 0.02) & (x * 0.8 + 0.2 < 0.98)
    assert inside.mean() > 0.2
    np.testing.assert_allclose(ref[inside], (x * 0.8 + 0.2)[inside], atol=2.5 / 255)
    with pytest.raises(ValueError, match="output_map"):
        gen.generate(lat, seeds=0, steps=1, output_map="other")


def test_refinement_prompts_and_caption_route(gen, tmp_path):
    from neurodecode.generate._converter import TokenConverter

    lat = _tokens(n=2)
    opts = {"steps": 2, "refine": True, "refine_steps": 5, "refine_timepoint": 3}
    a = gen.generate(lat, seeds=[1, 2], captions=["a dog on the grass", "two cats"], batch_size=1, **opts)
    b = gen.generate(lat, seeds=[1, 2], captions=["a dog on the grass", "two cats"], batch_size=2, **opts)
    assert a.shape == (2, 32, 32, 3) and np.abs(a.astype(int) - b).max() <= 1
    other = gen.generate(lat, seeds=[1, 2], captions=["a red bus", "a plate of food"], **opts)
    assert np.abs(other.astype(int) - a).mean() > 0.5  # the prompt conditions the refinement
    plain = gen.generate(lat, seeds=[1, 2], steps=2)
    assert np.abs(plain.astype(int) - a).mean() > 0.5
    # the caption route: GIT on the converted tokens gives the prompts
    conv = TokenConverter(16, 48, 17, 20, seed=3)
    routed = gen.generate(lat, seeds=[1, 2], converter=conv, caption_max_length=6, **opts)
    captions = get_generator("git", weights="tiny", converter=conv).generate(lat, max_length=6)
    given = gen.generate(lat, seeds=[1, 2], captions=captions, **opts)
    assert np.abs(routed.astype(int) - given).max() <= 1
    with pytest.raises(ValidationError, match="captions"):
        gen.generate(lat, seeds=0, steps=1, refine=True)
    with pytest.raises(ValidationError, match="refine_timepoint"):
        gen.generate(lat, seeds=0, steps=1, refine=True, captions=["a", "b"], refine_steps=5, refine_timepoint=9)


def test_refiner_from_an_sdxl_folder_with_real_tokenizers(gen, tmp_path):
    """The refiner's real loading path: an SDXL-layout folder (tiny widths, the real CLIP BPE tokenizers)."""
    folder = write_hub_fixture("sdxl-base", tmp_path / "sdxl", size="tiny")
    ours = get_generator("sdxl-unclip", weights="tiny", refiner=folder)
    lat = _tokens(n=1)
    out = ours.generate(lat, seeds=0, steps=2, refine=True, captions=["a cat on a mat"], refine_steps=4,
                        refine_timepoint=3)
    assert out.shape == (1, 32, 32, 3) and ours.provenance()["refiner"] == str(folder)
    assert ours.refiner_["tokenizer_2"] is not None and len(ours.refiner_["tokenizer_2"]) == 49408


@pytest.mark.realarch
@pytest.mark.slow
def test_released_architecture_through_the_real_path(tmp_path):
    """The released architecture (widths, heads, 1664-wide tokens, 1024-wide vector; depth reduced to
    NEURODECODE_REALARCH_DEPTH, default 1, on CPU) as a random .ckpt in the released layout, converted and run;
    then refined by an SDXL-base-layout folder (real tokenizers)."""
    import os

    depth_env = os.environ.get("NEURODECODE_REALARCH_DEPTH", "1")
    depth = None if depth_env == "full" else int(depth_env)
    device = os.environ.get("NEURODECODE_REALARCH_DEVICE", "cpu")
    folder = write_hub_fixture("mindeye2-unclip", tmp_path / "repo", depth=depth, variant="fp16")
    refiner = write_hub_fixture("sdxl-base", tmp_path / "sdxl", depth=depth, variant="fp16")
    gen = get_generator("sdxl-unclip", weights=folder, allow_pickle=True, converted_dir=tmp_path / "conv",
                        refiner=refiner, device=device).load()
    assert gen.expects == {"clip_bigg_tokens": (None, 256, 1664)}
    assert gen.components_["unet"].config.sample_size == 96  # 768 px by default, as MindEye2 samples
    lat = {"clip_bigg_tokens": np.random.default_rng(0).standard_normal((1, 256, 1664)).astype(np.float32)}
    out = gen.generate(lat, seeds=0, steps=2, height=64, width=64)
    assert out.shape == (1, 64, 64, 3) and out.dtype == np.uint8
    refined = gen.generate(lat, seeds=0, steps=2, height=64, width=64, refine=True, captions=["a cat on a mat"],
                           refine_steps=3, refine_timepoint=2)
    assert refined.shape == (1, 64, 64, 3) and np.abs(refined.astype(int) - out).mean() > 0
