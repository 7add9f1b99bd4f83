"""Embedding throughput: our batched ``embed_to_cache`` vs the naive one-image-at-a-time loop.

Side by side in one process, on the same model and images:

- ``naive``: what the reference decoders do: open_clip's ``preprocess`` then
  ``model.encode_image`` for one image at a time, then stacking (no cache);
- ``ours``: ``embed_to_cache`` (batched forward, checksummed float16 shards on disk);
- ``hit``: ``embed_to_cache`` again on the same folder (the cache is reused after its
  checksums are verified).

Spaces: the tiny twin of ``clip-vit-l-14-tokens`` and the real-size ViT-L/14 token space with
random weights (``weights="random"``: same FLOPs as the published weights). On CPU the default
run is short (a few real-size images); with ``--device cuda`` the real-size run uses more images
and bf16 autocast. Writes benchmarks/results/embed.json (hardware named).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _naive(space, images) -> float:
    import torch
    from PIL import Image

    from neurodecode.latents.clip import _image_transform

    preprocess = _image_transform(space.preprocessing)
    model = space.model
    t0 = time.perf_counter()
    outs = []
    with torch.inference_mode(), space._autocast():
        for im in images:
            pix = preprocess(Image.fromarray(im))[None].to(space._device)
            v = model.visual
            tok = v.ln_post(v.transformer(v._embeds(pix))) @ v.proj  # the same targets, batch of one
            outs.append(tok.float().cpu().numpy())
    np.concatenate(outs)
    if space._device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _ours(space, images, out: Path) -> tuple[float, float]:
    import torch

    from neurodecode.latents import embed_to_cache

    t0 = time.perf_counter()
    embed_to_cache(space, images, out, shard_size=max(len(images) // 2, 1))
    if space._device.type == "cuda":
        torch.cuda.synchronize()
    t_fill = time.perf_counter() - t0
    t0 = time.perf_counter()
    embed_to_cache(space, images, out)
    return t_fill, time.perf_counter() - t0


def bench(name: str, weights, n: int, batch_size: int, device: str, dtype: str, tmp: Path) -> dict:
    from neurodecode.latents import get_space

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 425, 425, 3), dtype=np.uint8)  # NSD-sized stimuli
    t0 = time.perf_counter()
    space = get_space(name, weights=weights, device=device, dtype=dtype, batch_size=batch_size)
    t_build = time.perf_counter() - t0
    space.encode_images(images[:1])  # warm-up (allocations, first-call overheads)
    repeats = 2 if name.endswith("-tiny") else 1  # best of two where cheap (the machine is shared)
    t_naive = min(_naive(space, images) for _ in range(repeats))
    runs = [_ours(space, images, tmp / f"{name}-{r}") for r in range(repeats)]
    t_fill, t_hit = min(r[0] for r in runs), min(r[1] for r in runs)
    return {
        "space": name, "weights": space.weights, "shape": list(space.shape), "n_images": n,
        "batch_size": batch_size, "device": space.device, "dtype": space.dtype, "build_s": round(t_build, 3),
        "naive_img_per_s": round(n / t_naive, 3), "ours_img_per_s": round(n / t_fill, 3),
        "speedup_vs_naive": round(t_naive / t_fill, 3), "cache_hit_s": round(t_hit, 4),
        "hit_speedup_vs_recompute": round(t_fill / max(t_hit, 1e-9), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-tiny", type=int, default=64)
    ap.add_argument("--n-real", type=int, default=None, help="real-size images (default 4 on CPU, 256 on CUDA)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "embed.json"))
    args = ap.parse_args()
    os.environ.setdefault("NEURODECODE_PROGRESS", "0")
    import torch

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    n_real = args.n_real or (256 if cuda else 4)
    results = []
    with tempfile.TemporaryDirectory() as d:
        results.append(bench("clip-vit-l-14-tokens-tiny", None, args.n_tiny, 32, args.device, "float32", Path(d)))
        print(json.dumps(results[-1]))
        results.append(bench("clip-vit-l-14-tokens", "random", n_real, 64 if cuda else 4, args.device,
                             "bfloat16" if cuda else "float32", Path(d)))
        print(json.dumps(results[-1]))
    from neurodecode._core.device import backend_report
    from neurodecode._core.versions import package_versions

    report = {
        "benchmark": "embed",
        "hardware": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "cuda_devices": backend_report()["cuda_devices"]},
        "note": ("naive = open_clip preprocess + one image per forward (the reference decoders' loop); ours = "
                 "embed_to_cache (batched, float16 checksummed shards); hit = re-run on the filled cache. "
                 "CPU machine shared with other jobs: absolute numbers are noisy, ratios less so."),
        "versions": package_versions(("torch", "open_clip_torch", "transformers")),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
