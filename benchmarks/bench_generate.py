"""Images/s of neurodecode's batched generation vs the plain diffusers pipeline, same model, same inputs.

Two cases, each run side by side in one process:

- ``sdxl-turbo``: our SDXL-Turbo + IP-Adapter generator (batched, per-item seeds) vs
  ``StableDiffusionXLPipeline`` called one image at a time with ``ip_adapter_image_embeds``
  (default settings otherwise; its scheduler, 4 steps, guidance 0). The outputs are checked equal.
- ``lowlevel``: our img2img from a VAE latent (batched, CFG batched) vs
  ``StableDiffusionImg2ImgPipeline`` one image at a time (latents given as the image).
- ``sd-img2img``: Takagi & Nishimoto's img2img (decoded 320 px init latent, 77 x 768 condition, strength
  0.8, guidance 5, 5 samples per image) through ``generate_samples`` (batched over images and samples) vs
  ``StableDiffusionImg2ImgPipeline`` called once per sample as the reference script loops; outputs compared
  (``--no-sd-img2img`` skips it; on GPU: SD-1.4-size random weights, 50 DDIM steps).

Default (CPU, about 1-2 min): the tiny tier (32 px). ``--gpu``: real-size architectures with
random weights (SD-1.5-class UNet at 512 px, 25 steps, CFG 7.5; speed does not depend on the
weights), bf16, channels-last, SDPA, optionally ``--compile`` (regional). Writes
``benchmarks/results/generate.json``.

    python benchmarks/bench_generate.py [--n 8] [--batch-size 8] [--gpu] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _hardware(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _real_size_lowlevel(device: str, dtype: str, compile_: bool):
    """The lowlevel generator with SD-1.5-size random-weight components (benchmark only)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from neurodecode.generate._lowlevel import LowLevelGenerator

    class RealSize(LowLevelGenerator):
        def _build_tiny(self):
            unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                layers_per_block=2)
            te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                              num_attention_heads=12, max_position_embeddings=77))
            sched = UniPCMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
            return {"unet": unet, "vae": vae, "text_encoder": te, "scheduler": sched, "tokenizer": None}

    return RealSize("tiny", device=device, dtype=dtype, compile=compile_).load()


def bench_lowlevel(n: int, bs: int, steps: int, guidance: float, device: str, dtype: str, gpu: bool,
                   compile_: bool) -> dict:
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    from neurodecode.generate import get_generator

    gen = (_real_size_lowlevel(device, dtype, compile_) if gpu else
           get_generator("lowlevel", weights="tiny", device=device, dtype=dtype).load())
    c = gen.components_
    size = int(c["unet"].config.sample_size)
    lat = np.random.default_rng(0).standard_normal((n, 4, size, size)).astype(np.float32)
    pipe = StableDiffusionImg2ImgPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=None, unet=c["unet"],
                                          scheduler=c["scheduler"], safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    prompt = gen._prompt()
    scale = float(c["vae"].config.scaling_factor)

    def plain():
        for i in range(n):
            pipe(image=torch.as_tensor(lat[i:i + 1] * scale, device=gen.device_, dtype=gen.torch_dtype_),
                 prompt_embeds=prompt, negative_prompt_embeds=prompt, strength=1.0, num_inference_steps=steps,
                 guidance_scale=guidance, generator=torch.Generator().manual_seed(i), output_type="np")

    def ours():
        gen.generate({"vae_latents": lat}, seeds=0, steps=steps, guidance=guidance, batch_size=bs, strength=1.0)

    return _time_pair("lowlevel", ours, plain, n, gen, steps, guidance, bs, size * 2 ** (len(c["vae"].config.block_out_channels) - 1))


def bench_sdxl(n: int, bs: int, steps: int, device: str, dtype: str) -> dict:
    import torch

    from neurodecode.generate import get_generator

    gen = get_generator("sdxl-turbo", weights="tiny", device=device, dtype=dtype).load()
    pipe = gen.components_["pipe"]
    emb = np.random.default_rng(0).standard_normal((n, gen.expects["clip_image_embeds"][1])).astype(np.float32)
    prompt, pooled = gen._prompt()
    size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    outs: dict[str, np.ndarray] = {}

    def plain():
        imgs = []
        for i in range(n):
            e = torch.as_tensor(emb[i:i + 1, None], device=gen.device_, dtype=gen.torch_dtype_)
            out = pipe(prompt_embeds=prompt, pooled_prompt_embeds=pooled, ip_adapter_image_embeds=[e],
                       num_inference_steps=steps, guidance_scale=0.0, height=size, width=size,
                       generator=[torch.Generator().manual_seed(i)], output_type="np")
            imgs.append(np.round(out.images[0] * 255).astype(np.uint8))
        outs["plain"] = np.stack(imgs)

    def ours():
        outs["ours"] = gen.generate({"clip_image_embeds": emb}, seeds=0, steps=steps, batch_size=bs)

    res = _time_pair("sdxl-turbo", ours, plain, n, gen, steps, 0.0, bs, size)
    res["max_abs_pixel_difference"] = int(np.abs(outs["ours"].astype(int) - outs["plain"]).max())
    return res


def _real_size_sd_img2img(device: str, dtype: str, compile_: bool):
    """The sd-img2img generator with SD-1.4-size random-weight components (benchmark only; real CLIP BPE)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from neurodecode.generate._sd_img2img import (
        SDImg2ImgGenerator,
        ddim_config,
        tiny_clip_text_encoder,
        tiny_clip_tokenizer,
    )

    class RealSize(SDImg2ImgGenerator):
        def _build_tiny(self):
            unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                layers_per_block=2)
            te = tiny_clip_text_encoder(768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
            return {"unet": unet, "vae": vae, "text_encoder": te, "tokenizer": tiny_clip_tokenizer(),
                    "scheduler": DDIMScheduler(**ddim_config())}

    return RealSize("tiny", device=device, dtype=dtype, compile=compile_).load()


def bench_sd_img2img(n: int, bs: int, steps: int, device: str, dtype: str, gpu: bool, compile_: bool,
                     n_samples: int = 5) -> dict:
    """Takagi's img2img (decoded init latent + 77 x 768 condition, strength 0.8, CFG 5, n_samples per image):
    ours (generate_samples, batched over images and samples) vs StableDiffusionImg2ImgPipeline called once per
    sample as the reference script loops (init image decoded, resized and given as pixels); outputs compared."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    from neurodecode.generate import get_generator
    from neurodecode.generate._sd_img2img import SAMPLE_STRIDE

    gen = (_real_size_sd_img2img(device, dtype, compile_) if gpu else
           get_generator("sd-img2img", weights="tiny", device=device, dtype=dtype).load())
    c = gen.components_
    factor = 2 ** (len(c["vae"].config.block_out_channels) - 1)
    side = int(c["unet"].config.sample_size) * factor * 5 // 8 // factor  # Takagi: 40 x 40 latents (320 px)
    rng = np.random.default_rng(0)
    lat = {"vae_latents": rng.standard_normal((n, 4, side, side)).astype(np.float32),
           "clip_text_tokens": rng.standard_normal((n, 77, int(c["text_encoder"].config.hidden_size))).astype(np.float32)}
    pipe = StableDiffusionImg2ImgPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
                                          unet=c["unet"], scheduler=DDIMScheduler.from_config(c["scheduler"].config),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    outs: dict[str, np.ndarray] = {}

    def plain():
        init = gen.init_pixels(lat)  # decode -> 8-bit -> bicubic resize, as the reference script
        imgs = []
        for i in range(n):
            image = torch.as_tensor(init[i:i + 1].transpose(0, 3, 1, 2) / 255.0, device=gen.device_,
                                    dtype=gen.torch_dtype_)
            cond = torch.as_tensor(lat["clip_text_tokens"][i:i + 1], device=gen.device_, dtype=gen.torch_dtype_)
            for j in range(n_samples):
                out = pipe(prompt_embeds=cond, image=image, strength=0.8, num_inference_steps=steps, guidance_scale=5.0,
                           generator=[torch.Generator().manual_seed(i + j * SAMPLE_STRIDE)], output_type="np")
                imgs.append(np.round(out.images[0] * 255).astype(np.uint8))
        outs["plain"] = np.stack(imgs).reshape(n, n_samples, *imgs[0].shape)

    def ours():
        outs["ours"] = gen.generate_samples(lat, n_samples=n_samples, seeds=0, steps=steps, batch_size=bs,
                                            init_noise="diffusers")

    size = int(c["unet"].config.sample_size) * factor
    res = _time_pair("sd-img2img", ours, plain, n * n_samples, gen, steps, 5.0, bs, size)
    res["n_samples_per_image"] = n_samples
    res["max_abs_pixel_difference"] = int(np.abs(outs["ours"].astype(int) - outs["plain"]).max())
    return res


def _time_pair(name, ours, plain, n, gen, steps, guidance, bs, size) -> dict:
    import torch

    def timed(fn):
        fn()  # warm-up (and compilation)
        if gen.device_.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if gen.device_.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    t_plain = timed(plain)
    t_ours = timed(ours)
    res = {"case": name, "n_images": n, "steps": steps, "guidance": guidance, "batch_size": bs, "size_px": size,
           "weights": gen.weights_id_, "dtype": str(gen.torch_dtype_), "compile": gen.compile,
           "plain_diffusers_img_per_s": n / t_plain, "ours_img_per_s": n / t_ours, "speedup": t_plain / t_ours}
    print(json.dumps(res), file=sys.stderr)
    return res


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gpu", action="store_true", help="real-size random-weight architectures on CUDA")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (regional)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sd-img2img", action=argparse.BooleanOptionalAction, default=True,
                        help="also time Takagi's sd-img2img (5 samples per image) against the plain pipeline")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generate.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    device, dtype = ("cuda", "bfloat16") if args.gpu else ("cpu", "float32")
    results = []
    if args.gpu:
        results.append(bench_lowlevel(args.n, args.batch_size, 25, 7.5, device, dtype, True, args.compile))
        if args.sd_img2img:
            results.append(bench_sd_img2img(args.n, args.batch_size, 50, device, dtype, True, args.compile))
    else:
        results.append(bench_sdxl(args.n, args.batch_size, 4, device, dtype))
        results.append(bench_lowlevel(args.n, args.batch_size, 4, 7.5, device, dtype, False, False))
        if args.sd_img2img:
            results.append(bench_sd_img2img(max(2, args.n // 4), args.batch_size, 10, device, dtype, False, False))
    report = {"benchmark": "generate", "hardware": _hardware(device), "device": device,
              "torch": torch.__version__, "results": results,
              "note": "ours = neurodecode batched path; plain = diffusers pipeline one image at a time, "
                      "default settings, same components and inputs, same process"}
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.is_file() else {}
    existing["gpu" if args.gpu else "cpu"] = report
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
