"""sd2-depth (Takagi & Nishimoto's SD-2-depth step), tiny tier: shapes, seeds, the depth channel, and outside truth.

Outside truth: diffusers' ``StableDiffusionDepth2ImgPipeline`` with ``depth_map=`` on the same components, inputs and
generators; the depth channel's min-max scaling written here from its formula.
"""

import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError
from neurodecode.generate import get_generator
from neurodecode.generate._depth2img import depth_condition


@pytest.fixture(scope="module")
def gen():
    return get_generator("sd2-depth", weights="tiny").load()


def _inputs(n=2, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    depth = np.stack([(xx * (1 + i) + yy * (2 - i) + 0.1 * rng.standard_normal((16, 16))) for i in range(n)])
    return {"vae_latents": rng.standard_normal((n, 4, 7, 7)).astype(np.float32),
            "depth_maps": (5.0 * depth + 3.0).astype(np.float32),
            "captions": ["a dog on the grass", "a red bus in the street", "two cats"][:n]}


def test_shapes_seeds_samples_and_depth_matters(gen):
    assert gen.expects == {"vae_latents": (None, 4, None, None), "clip_text_tokens": (None, 77, 48),
                           "depth_maps": (None, None, None)}
    assert int(gen.components_["unet"].config.in_channels) == 5
    inp = _inputs()
    a = gen.generate(inp, seeds=[3, 4], steps=4)
    assert a.shape == (2, 32, 32, 3) and a.dtype == np.uint8 and a.std() > 1
    np.testing.assert_array_equal(a, gen.generate(inp, seeds=[3, 4], steps=4, batch_size=1))
    s = gen.generate_samples(inp, seeds=[3, 4], steps=4, n_samples=2)
    assert s.shape == (2, 2, 32, 32, 3) and np.abs(s[:, 0].astype(int) - a).max() <= 1
    assert np.abs(s[:, 1].astype(int) - s[:, 0]).mean() > 2
    flipped = gen.generate({**inp, "depth_maps": inp["depth_maps"][:, ::-1, ::-1].copy()}, seeds=[3, 4], steps=4)
    assert np.abs(flipped.astype(int) - a).mean() > 1  # the depth channel is read
    scaled = gen.generate({**inp, "depth_maps": 0.01 * inp["depth_maps"] - 7}, seeds=[3, 4], steps=4)
    assert np.abs(scaled.astype(int) - a).max() <= 1  # ...up to its min-max scaling


def test_depth_channel_formula():
    d = torch.as_tensor(np.random.default_rng(1).random((3, 12, 10)) * 9 + 2, dtype=torch.float32)
    out = depth_condition(d, (12, 10))
    assert out.shape == (3, 1, 12, 10)
    ref = 2 * (d - d.amin(dim=(1, 2), keepdim=True)) / (d.amax(dim=(1, 2), keepdim=True)
                                                         - d.amin(dim=(1, 2), keepdim=True)) - 1
    np.testing.assert_allclose(out[:, 0].numpy(), ref.numpy(), atol=1e-6)  # same size: a pure min-max


def test_equals_the_plain_diffusers_depth2img_pipeline(gen):
    from diffusers import DDIMScheduler, StableDiffusionDepth2ImgPipeline

    c = gen.components_
    inp = _inputs(seed=2)
    init = gen.init_pixels(inp)  # decoded, 8-bit, bicubic to 32 px (checked against PIL in test_sd_img2img)
    pipe = StableDiffusionDepth2ImgPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
                                            unet=c["unet"], scheduler=DDIMScheduler.from_config(c["scheduler"].config),
                                            depth_estimator=None, feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    seeds = [21, 22]
    ref = pipe(prompt=inp["captions"], image=torch.as_tensor(init.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32),
               depth_map=torch.as_tensor(inp["depth_maps"]), strength=0.8, num_inference_steps=10, guidance_scale=5.0,
               output_type="np", generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    ours = gen.generate(inp, seeds=seeds, steps=10, init_noise="diffusers")
    assert np.abs(ours.astype(float) - np.round(ref * 255)).max() <= 1


def test_depth_maps_required(gen):
    inp = _inputs()
    with pytest.raises(ShapeMismatchError, match="depth_maps"):
        gen.generate({k: v for k, v in inp.items() if k != "depth_maps"}, steps=2)
    with pytest.raises(ShapeMismatchError, match="depth_maps"):
        gen.generate({**inp, "depth_maps": inp["depth_maps"][:, None]}, steps=2)
