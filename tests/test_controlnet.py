"""sd-controlnet-depth (Brain Captioning's image step), tiny tier: shapes, seeds, the control, and outside truth.

Outside truth: diffusers' ``StableDiffusionControlNetImg2ImgPipeline`` on the same components, inputs and
generators; the control image's min-max scaling written here from its formula; ControlNetModel.from_unet's
layout (one residual per UNet skip connection).
"""

import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError
from neurodecode.generate import generator_weights, get_generator
from neurodecode.generate._controlnet import CONTROLNET, control_image


@pytest.fixture(scope="module")
def gen():
    return get_generator("sd-controlnet-depth", weights="tiny").load()


def _inputs(n=2, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    depth = np.stack([np.sin(3 * xx * (1 + i)) + yy * (1 - i) for i in range(n)])
    return {"init_images": rng.integers(0, 256, (n, 29, 31, 3)).astype(np.float32),
            "depth_maps": (4.0 * depth + 1.0).astype(np.float32),
            "captions": ["a man riding a horse", "a plate of food on a table"][:n]}


def test_shapes_seeds_and_the_control_is_read(gen):
    assert gen.expects == {"vae_latents": (None, 4, None, None), "clip_text_tokens": (None, 77, 56),
                           "depth_maps": (None, None, None)}
    inp = _inputs()
    a = gen.generate(inp, seeds=[3, 4], steps=4)
    assert a.shape == (2, 32, 32, 3) and a.dtype == np.uint8 and a.std() > 1
    np.testing.assert_array_equal(a, gen.generate(inp, seeds=[3, 4], steps=4, batch_size=1))
    b = gen.generate(inp, seeds=[5, 4], steps=4)
    assert np.abs(b[0].astype(int) - a[0]).mean() > 1 and np.abs(b[1].astype(int) - a[1]).max() <= 1
    flipped = gen.generate({**inp, "depth_maps": inp["depth_maps"][:, ::-1].copy()}, seeds=[3, 4], steps=4)
    assert np.abs(flipped.astype(int) - a).mean() > 0.2  # the depth map steers the image
    off = gen.generate(inp, seeds=[3, 4], steps=4, controlnet_scale=0.0)
    off_flipped = gen.generate({**inp, "depth_maps": inp["depth_maps"][:, ::-1].copy()}, seeds=[3, 4], steps=4,
                               controlnet_scale=0.0)
    assert np.abs(off.astype(int) - off_flipped).max() <= 1  # ...through the ControlNet only
    s = gen.generate_samples(inp, seeds=[3, 4], steps=4, n_samples=2)
    assert s.shape == (2, 2, 32, 32, 3) and gen.n_samples == 1


def test_control_image_formula():
    d = torch.as_tensor(np.random.default_rng(1).random((2, 9, 7)) * 3 - 1, dtype=torch.float32)
    out = control_image(d, (9, 7))
    assert out.shape == (2, 3, 9, 7) and torch.equal(out[:, 0], out[:, 2])
    lo, hi = d.amin(dim=(1, 2), keepdim=True), d.amax(dim=(1, 2), keepdim=True)
    np.testing.assert_allclose(out[:, 1].numpy(), ((d - lo) / (hi - lo)).numpy(), atol=1e-6)


def test_controlnet_layout_follows_the_unet(gen):
    unet, net = gen.components_["unet"], gen.components_["controlnet"]
    n_skips = 1 + sum(len(b.resnets) + (1 if b.downsamplers else 0) for b in unet.down_blocks)
    assert len(net.controlnet_down_blocks) == n_skips  # one residual per skip connection
    assert net.config.cross_attention_dim == unet.config.cross_attention_dim == 56


def test_equals_the_plain_diffusers_controlnet_img2img_pipeline(gen):
    from diffusers import DDIMScheduler, StableDiffusionControlNetImg2ImgPipeline

    c = gen.components_
    inp = _inputs(seed=2)
    init = gen.init_pixels(inp)
    assert init.shape == (2, 32, 32, 3)
    control = control_image(torch.as_tensor(inp["depth_maps"]), (32, 32))  # already at 32 px: a min-max
    pipe = StableDiffusionControlNetImg2ImgPipeline(
        vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
        controlnet=c["controlnet"], scheduler=DDIMScheduler.from_config(c["scheduler"].config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    seeds = [31, 32]
    ref = pipe(prompt=inp["captions"], image=torch.as_tensor(init.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32),
               control_image=control.contiguous(), strength=0.8, num_inference_steps=10, guidance_scale=7.5,
               controlnet_conditioning_scale=0.7, output_type="np",
               generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    ours = gen.generate(inp, seeds=seeds, steps=10, controlnet_scale=0.7)
    assert np.abs(ours.astype(float) - np.round(ref * 255)).max() <= 1


def test_declared_weights_and_errors(gen):
    files = generator_weights("sd-controlnet-depth")
    assert set(files) == {"stable-diffusion-v1-5/stable-diffusion-v1-5", CONTROLNET}
    assert files[CONTROLNET]["files"][0] == ["config.json"]
    inp = _inputs()
    with pytest.raises(ShapeMismatchError, match="depth_maps"):
        gen.generate({k: v for k, v in inp.items() if k != "depth_maps"}, steps=2)


def test_memory_preset_offload_chain_includes_the_controlnet():
    """preset="24gb" on CUDA chains accelerate offload hooks; the ControlNet must be in the chain (else it would stay
    on the CPU while the latents are on the GPU). Checked here with the execution device = CPU."""
    g = get_generator("sd-controlnet-depth", weights="tiny").load()
    inp = _inputs()
    before = g.generate(inp, seeds=[3, 4], steps=2)
    modules = {k: v for k, v in g.components_.items() if isinstance(v, torch.nn.Module)}
    g._enable_cpu_offload(modules)
    assert all(hasattr(modules[k], "_hf_hook") for k in ("text_encoder", "controlnet", "unet", "vae"))
    np.testing.assert_array_equal(g.generate(inp, seeds=[3, 4], steps=2), before)
