"""sd-img2img (Takagi & Nishimoto's SD-1.4 img2img), tiny tier: shapes, seeds, samples, and outside truth.

Outside truth: diffusers' own ``StableDiffusionImg2ImgPipeline`` on the same components, inputs and generators;
the init image built here from the VAE and PIL as Takagi's script does; LDM's noising level written from the
scaled-linear schedule formula; the number of UNet calls of DDIM 50 at strength 0.8.
"""

import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.generate import get_generator
from neurodecode.generate._sd_img2img import SAMPLE_STRIDE, img2img_start


@pytest.fixture(scope="module")
def gen():
    return get_generator("sd-img2img", weights="tiny").load()


def _latents(n=3, seed=0, width=40):
    rng = np.random.default_rng(seed)
    return {"vae_latents": rng.standard_normal((n, 4, 9, 9)).astype(np.float32),
            "clip_text_tokens": rng.standard_normal((n, 77, width)).astype(np.float32)}


def test_shapes_seeds_batching_and_samples(gen):
    lat = _latents()
    a = gen.generate(lat, seeds=[5, 6, 7], steps=4, batch_size=3)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8 and a.std() > 1
    np.testing.assert_array_equal(a, gen.generate(lat, seeds=[5, 6, 7], steps=4, batch_size=3))
    single = np.concatenate([gen.generate({k: v[i:i + 1] for k, v in lat.items()}, seeds=[s], steps=4)
                             for i, s in enumerate([5, 6, 7])])
    assert np.abs(a.astype(int) - single).max() <= 1
    samples = gen.generate_samples(lat, seeds=[5, 6, 7], steps=4, n_samples=3, batch_size=4)
    assert samples.shape == (3, 3, 32, 32, 3)
    assert np.abs(samples[:, 0].astype(int) - a).max() <= 1  # sample 0 is generate()'s image
    for j in (1, 2):  # the other samples are other draws
        assert np.abs(samples[:, j].astype(int) - samples[:, 0]).mean() > 2
    # sample j of an item seeded s is drawn with seed s + j * SAMPLE_STRIDE
    one = gen.generate({k: v[1:2] for k, v in lat.items()}, seeds=[6 + 2 * SAMPLE_STRIDE], steps=4)
    assert np.abs(one[0].astype(int) - samples[1, 2]).max() <= 1
    assert gen.n_samples == 5 and gen.default_steps == 50 and gen.default_guidance == 5.0


def test_equals_the_plain_diffusers_pipeline(gen):
    """Our batched loop (init_noise="diffusers") = StableDiffusionImg2ImgPipeline, with the init image built here."""
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline
    from PIL import Image

    c = gen.components_
    lat = _latents(n=2, seed=3)
    # Takagi's init: decode the predicted latent, 8-bit cast (truncation), PIL bicubic resize to the UNet's size
    with torch.no_grad():
        x = c["vae"].decode(torch.as_tensor(lat["vae_latents"])).sample
    x = (255.0 * torch.clamp((x + 1) / 2, 0, 1)).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    init = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.BICUBIC)) for a in x])
    np.testing.assert_array_equal(gen.init_pixels(lat), init)

    pipe = StableDiffusionImg2ImgPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
                                          unet=c["unet"], scheduler=DDIMScheduler.from_config(c["scheduler"].config),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    seeds = [11, 12]
    ref = pipe(prompt_embeds=torch.as_tensor(lat["clip_text_tokens"]),
               image=torch.as_tensor(init.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32),
               strength=0.8, num_inference_steps=10, guidance_scale=5.0, eta=0.0, output_type="np",
               generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    ours = gen.generate(lat, seeds=seeds, steps=10, init_noise="diffusers")
    assert np.abs(ours.astype(float) - np.round(ref * 255)).max() <= 1
    ldm = gen.generate(lat, seeds=seeds, steps=10)  # the reference LDM noising level differs
    assert np.abs(ldm.astype(int) - ours).max() > 1


def test_ldm_noising_level_and_step_count(gen):
    """DDIM 50 at strength 0.8: 40 UNet steps from t=781; LDM noises x0 to t=801 (alphas_cumprod from the formula)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(gen.components_["scheduler"].config)
    x0 = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    lat, ts = img2img_start(sched, x0, gens, steps=50, strength=0.8, init_noise="ldm", device="cpu",
                            dtype=torch.float32)
    assert len(ts) == 40 and int(ts[0]) == 781 and int(ts[-1]) == 1
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2  # scaled_linear
    acp = np.cumprod(1.0 - betas)
    noise = torch.stack([torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(s)) for s in (3, 4)])
    want = np.sqrt(acp[801]) * x0.numpy() + np.sqrt(1 - acp[801]) * noise.numpy()
    np.testing.assert_allclose(lat.numpy(), want, rtol=1e-5, atol=1e-5)
    lat_d, ts_d = img2img_start(sched, x0, [torch.Generator().manual_seed(s) for s in (3, 4)], steps=50,
                                strength=0.8, init_noise="diffusers", device="cpu", dtype=torch.float32)
    want_d = np.sqrt(acp[781]) * x0.numpy() + np.sqrt(1 - acp[781]) * noise.numpy()
    np.testing.assert_allclose(lat_d.numpy(), want_d, rtol=1e-5, atol=1e-5)
    assert torch.equal(ts, ts_d)

    calls = []
    hook = gen.components_["unet"].register_forward_hook(lambda m, i, o: calls.append(int(i[1].flatten()[0])))
    try:
        gen.generate(_latents(n=1), seeds=0)  # defaults: 50 DDIM steps, strength 0.8
    finally:
        hook.remove()
    assert calls == list(range(781, 0, -20))


def test_caption_is_encoded_by_sd_text_encoder(gen):
    c = gen.components_
    caps = ["a cat on a mat", "two dogs running on the beach"]
    ids = c["tokenizer"](caps, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407  # CLIP start / end-padding
    with torch.no_grad():
        tokens = c["text_encoder"](input_ids=ids).last_hidden_state.numpy()
    lat = _latents(n=2, seed=4)
    a = gen.generate({"vae_latents": lat["vae_latents"], "captions": caps}, seeds=[1, 2], steps=4)
    b = gen.generate({"vae_latents": lat["vae_latents"], "clip_text_tokens": tokens}, seeds=[1, 2], steps=4)
    assert np.abs(a.astype(int) - b).max() <= 1
    # an init image instead of a latent
    pixels = gen.init_pixels(lat)
    d = gen.generate({"init_images": pixels, "captions": caps}, seeds=[1, 2], steps=4)
    assert np.abs(d.astype(int) - a).max() <= 1


def test_scaled_latents_are_unscaled_before_decoding(gen):
    """Takagi's init_latent (and the sd14-vae-320 space) is scaled by 0.18215: scaled_latents=True divides first."""
    z = _latents(n=2, seed=6)["vae_latents"]
    scaled = get_generator("sd-img2img", weights="tiny", scaled_latents=True)
    factor = float(gen.components_["vae"].config.scaling_factor)
    assert factor == pytest.approx(0.18215)
    np.testing.assert_array_equal(scaled.init_pixels({"vae_latents": z * factor}), gen.init_pixels({"vae_latents": z}))
    assert scaled.provenance()["scaled_latents"] is True


def test_teaching_errors(gen):
    lat = _latents(n=2)
    with pytest.raises(ShapeMismatchError, match="clip_text_tokens"):
        gen.generate({"vae_latents": lat["vae_latents"]}, steps=2)
    with pytest.raises(ShapeMismatchError, match="one caption"):
        gen.generate({"vae_latents": lat["vae_latents"], "captions": ["only one"]}, steps=2)
    with pytest.raises(ShapeMismatchError, match="77, 40"):
        gen.generate({**lat, "clip_text_tokens": np.zeros((2, 77, 768), np.float32)}, steps=2)
    with pytest.raises(ValidationError, match="init_noise"):
        gen.generate(lat, steps=2, init_noise="middle")
    with pytest.raises(ValidationError, match="options"):
        gen.generate(lat, steps=2, depth_scale=1.0)
