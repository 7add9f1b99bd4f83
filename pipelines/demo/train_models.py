"""Train the embedded demo's miniature model set: a tiny CLIP and a pixel unCLIP diffusion model.

Reproducible (seeded) and documented; uses CUDA when present. Run from the repository root:

    python pipelines/demo/train_models.py --fashion-mnist /usr/share/datasets/fashion-mnist

Inputs: the Fashion-MNIST *training* split (60,000 images, MIT licence, Zalando Research;
Debian package ``dataset-fashion-mnist``). The demo's stimuli come from the *test* split
(see ``pipelines/demo/build_assets.py``), so no demo stimulus is ever seen in training.

Outputs (``neurodecode/assets/demo_models/``):
- ``clip/``: an open_clip "local-dir" folder (``open_clip_config.json`` + ``open_clip_model.safetensors``),
  a tiny ViT/Transformer CLIP (32 px, patch 8: 17 image tokens x 64) with the real CLIP BPE tokenizer,
  trained contrastively on images and captions ("a photo of a sneaker", several templates).
- ``diffusion/``: a :class:`neurodecode.generate.PixelUnCLIP` (``config.json`` + ``model.safetensors``)
  trained to draw 32 x 32 images from the tiny CLIP's image tokens (VD-normalised: divided by the
  norm of the CLS token), with 10 % condition dropout for classifier-free guidance.
- ``MODEL_CARD.md`` with data, licence, command and measured numbers.
Weights are stored in float16 to keep the package small and loaded as float32.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch

CLASS_NAMES = ["T-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle boot"]
TEMPLATES = ["a photo of a {}", "a picture of a {}", "a grayscale photo of a {}", "a product photo of a {}",
             "a {} on a black background", "a small image of a {}"]
MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics (training split), applied to all 3 channels
PREPROCESS_CFG = {"size": 32, "mode": "RGB", "mean": [MEAN] * 3, "std": [STD] * 3, "interpolation": "bicubic",
                  "resize_mode": "shortest", "fill_color": 0}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX (MNIST format) file, gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def to_32px(images28: np.ndarray) -> np.ndarray:
    """Pad 28 x 28 images to 32 x 32 with black (exact, no interpolation)."""
    return np.pad(images28, ((0, 0), (2, 2), (2, 2)))


def image_tokens(model, x: torch.Tensor) -> torch.Tensor:
    """CLIP image tokens after the final LayerNorm and projection, VD-normalised (CLS norm)."""
    v = model.visual
    v.output_tokens = True
    pooled, patches = v(x)
    v.output_tokens = False
    # open_clip returns projected pooled (CLS) and un-projected patch tokens after ln_post; project them too.
    patches = patches @ v.proj if v.proj is not None else patches
    tokens = torch.cat([pooled[:, None], patches], 1)
    return tokens / tokens[:, :1].norm(dim=-1, keepdim=True)


def normalise(gray_uint8: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(gray_uint8, dtype=torch.float32)[:, None] / 255.0
    return ((x - MEAN) / STD).expand(-1, 3, -1, -1)


def train_clip(images: np.ndarray, labels: np.ndarray, steps: int, batch: int, seed: int, device: str):
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = open_clip.model.CLIP(**MODEL_CFG).to(device)
    tok = SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    prompts = [[t.format(c) for t in TEMPLATES] for c in CLASS_NAMES]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    model.train()
    t0 = time.time()
    for step in range(steps):
        idx = rng.choice(len(images), batch, replace=False)
        x = normalise(images[idx]).to(device)
        # random shifts of up to 2 px as augmentation
        x = torch.roll(x, shifts=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), dims=(2, 3))
        texts = [prompts[labels[i]][rng.integers(len(TEMPLATES))] for i in idx]
        img_f, txt_f, scale = model(x, tok(texts).to(device))
        logits = scale * img_f @ txt_f.T
        # several images share a class: positives are every pair with the same label
        same = torch.as_tensor(labels[idx][:, None] == labels[idx][None, :], dtype=torch.float32, device=device)
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                      + torch.sum(-target * logits.T.log_softmax(1), 1).mean())
        # keep instance discrimination between images too (image-image InfoNCE on two shifted views)
        x2 = torch.roll(x, shifts=(1, -1), dims=(2, 3))
        img_f2 = model.encode_image(x2, normalize=True)
        li = scale * img_f @ img_f2.T
        lab = torch.arange(batch, device=device)
        loss = loss + 0.5 * torch.nn.functional.cross_entropy(li, lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"clip step {step:5d} loss {loss.item():.3f} scale {scale.item():.1f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    return model, tok, prompts


@torch.no_grad()
def zero_shot_accuracy(model, tok, prompts, images, labels, device) -> float:
    txt = torch.stack([model.encode_text(tok(p).to(device), normalize=True).mean(0) for p in prompts])
    txt = txt / txt.norm(dim=-1, keepdim=True)
    preds = []
    for s in range(0, len(images), 512):
        f = model.encode_image(normalise(images[s:s + 512]).to(device), normalize=True)
        preds.append((f @ txt.T).argmax(1).cpu().numpy())
    return float((np.concatenate(preds) == labels).mean())


@torch.no_grad()
def all_tokens(model, images, device) -> torch.Tensor:
    return torch.cat([image_tokens(model, normalise(images[s:s + 512]).to(device)).cpu()
                      for s in range(0, len(images), 512)])


def train_diffusion(images: np.ndarray, tokens: torch.Tensor, steps: int, batch: int, seed: int, device: str,
                    save_dir: Path | None = None, save_every: int = 500):
    from neurodecode.generate import PixelUnCLIP, PixelUnCLIPConfig

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PixelUnCLIP(PixelUnCLIPConfig(cond_tokens=tokens.shape[1], cond_dim=tokens.shape[2])).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    x_all = torch.as_tensor(images, dtype=torch.float32)[:, None] / 127.5 - 1
    model.train()
    t0 = time.time()
    ema = None
    for step in range(steps):
        idx = torch.as_tensor(rng.choice(len(images), batch, replace=False))
        loss = model.training_loss(x_all[idx].to(device), tokens[idx].to(device), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            print(f"diffusion step {step:5d} loss {ema:.4f} ({time.time() - t0:.0f}s)", flush=True)
        if save_dir is not None and step and step % save_every == 0:  # a usable snapshot if the run is cut short
            snapshot = copy.deepcopy(model).eval().half()
            snapshot.save_pretrained(save_dir, metadata={"snapshot_step": step})
    model.eval()
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fashion-mnist", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out", type=Path, default=Path("neurodecode/assets/demo_models"))
    ap.add_argument("--clip-steps", type=int, default=1500)
    ap.add_argument("--diffusion-steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", choices=["all", "clip", "diffusion"], default="all")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(max(1, torch.get_num_threads()))

    images = to_32px(read_idx(args.fashion_mnist / "train-images-idx3-ubyte.gz"))
    labels = read_idx(args.fashion_mnist / "train-labels-idx1-ubyte.gz").astype(np.int64)
    test_images = to_32px(read_idx(args.fashion_mnist / "t10k-images-idx3-ubyte.gz"))
    test_labels = read_idx(args.fashion_mnist / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    clip_dir, diff_dir = args.out / "clip", args.out / "diffusion"
    card: dict = json.loads((args.out / "metrics.json").read_text()) if (args.out / "metrics.json").exists() else {}

    import open_clip
    from safetensors.torch import load_file, save_file

    from neurodecode._core.files import atomic_path, write_json

    if args.stage in ("all", "clip"):
        t0 = time.time()
        model, tok, prompts = train_clip(images, labels, args.clip_steps, args.batch * 2, args.seed, device)
        acc = zero_shot_accuracy(model, tok, prompts, test_images[:2000], test_labels[:2000], device)
        print(f"tiny CLIP zero-shot accuracy on 2000 test images: {acc:.3f}")
        clip_dir.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(clip_dir / "open_clip_model.safetensors") as tmp:
            save_file(sd, str(tmp))
        write_json(clip_dir / "open_clip_config.json", {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG,
                                                        "class_names": CLASS_NAMES, "templates": TEMPLATES})
        card["clip"] = {"zero_shot_accuracy_test2000": acc, "steps": args.clip_steps, "seconds": time.time() - t0,
                        "device": device}
        write_json(args.out / "metrics.json", card)
    if args.stage in ("all", "diffusion"):
        t0 = time.time()
        model = open_clip.model.CLIP(**MODEL_CFG)
        model.load_state_dict({k: v.float() for k, v in load_file(str(clip_dir / "open_clip_model.safetensors")).items()})
        model.eval().to(device)
        tokens = all_tokens(model, images, device)
        diff = train_diffusion(images, tokens, args.diffusion_steps, args.batch, args.seed, device, save_dir=diff_dir)
        diff.half().save_pretrained(diff_dir, metadata={"trained_on": "fashion-mnist train split",
                                                        "condition": "tiny CLIP image tokens, VD-normalised"})
        card["diffusion"] = {"steps": args.diffusion_steps, "seconds": time.time() - t0, "device": device}
        write_json(args.out / "metrics.json", card)
    write_manifest(args.out)
    print(json.dumps(card, indent=2))


def write_manifest(folder: Path) -> None:
    """Record the sha256 of every shipped file (checked by neurodecode.demo before use)."""
    from neurodecode._core.files import sha256_file, write_json

    files = ["clip/open_clip_config.json", "clip/open_clip_model.safetensors", "diffusion/config.json",
             "diffusion/model.safetensors"]
    write_json(folder / "MANIFEST.json", {"sha256": {f: sha256_file(folder / f) for f in files}})


if __name__ == "__main__":
    main()
