"""Training step time and samples/s of MindBridge and the MindEye2-style decoder (eager vs torch.compile).

Run: ``python benchmarks/bench_train_fmri.py [--size tiny|real] [--device cpu|cuda] [--compile] [--steps N]``.
Default: tiny configs on CPU, eager only (torch.compile on this shared 2-core CPU takes minutes); ``--compile``
adds the compiled step, measured side by side in the same process. On a GPU, ``--size real --device cuda``
uses the real-size configs with bf16 autocast. Writes ``benchmarks/results/train_fmri.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from neurodecode.models.mindbridge import MindBridge, MindBridgeConfig
from neurodecode.models.mindeye2 import MindEye2, MindEye2Config


def _models(size: str) -> dict[str, tuple[torch.nn.Module, dict[str, tuple[int, ...]], int]]:
    if size == "tiny":
        subjects = {"nsd/subj01": 157, "nsd/subj02": 143}
        mb = MindBridge(MindBridgeConfig.tiny(subjects, width=64, pooled=128, bottleneck=8, image_tokens=[17, 16],
                                              text_tokens=[77, 16]))
        me = MindEye2(MindEye2Config.tiny(subjects, width=64, target_tokens=[16, 48], lowlevel_shape=None))
        return {"mindbridge": (mb, {"image_tokens": (17, 16), "text_tokens": (77, 16)}, 32),
                "mindeye2": (me, {"tokens": (16, 48)}, 32)}
    subjects = {"nsd/subj01": 15724, "nsd/subj02": 14278}
    mb = MindBridge(MindBridgeConfig(subjects=subjects))
    me = MindEye2(MindEye2Config(subjects=subjects))
    return {"mindbridge": (mb, {"image_tokens": (257, 768), "text_tokens": (77, 768)}, 50),
            "mindeye2": (me, {"tokens": (256, 1664)}, 24)}


def _batch(model, shapes, batch, device):
    g = torch.Generator().manual_seed(0)
    parts = []
    for s, n in model.config.subjects.items():
        part = {"subject": s, "x": torch.randn(batch, n, generator=g).to(device)}
        part.update({k: torch.randn(batch, *v, generator=g).to(device) for k, v in shapes.items()})
        parts.append(part)
    return {"parts": parts}


def _time(step, batch, opt, steps, warmup, device, dtype):
    def one(i):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = step(batch, i)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for i in range(warmup):
        one(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps, first


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=["tiny", "real"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_fmri.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results = {}
    for name, (model, shapes, batch) in _models(args.size).items():
        model.to(device).train()
        if hasattr(model, "configure_training"):
            model.configure_training(total_steps=10**6, steps_per_epoch=100)  # SoftCLIP phase after step 0 only
            model.mixco_steps = 0
        data = _batch(model, shapes, batch, device)
        n_samples = batch * len(data["parts"])
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        eager, _ = _time(model.training_step, data, opt, args.steps, 3, device, dtype)
        row = {"batch_per_subject": batch, "subjects_per_step": len(data["parts"]),
               "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
               "eager_step_ms": round(eager * 1e3, 3), "eager_samples_per_s": round(n_samples / eager, 1)}
        if args.compile:
            compiled = torch.compile(model.training_step)
            comp, first = _time(compiled, data, opt, args.steps, 3, device, dtype)
            row.update({"compiled_step_ms": round(comp * 1e3, 3), "compiled_samples_per_s": round(n_samples / comp, 1),
                        "compile_warmup_s": round(first, 1), "speedup_compiled_vs_eager": round(eager / comp, 3)})
        results[name] = row
        print(name, json.dumps(row))
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"{platform.processor() or platform.machine()} CPU, {args.threads} threads")
    doc = {"benchmark": "train_fmri", "size": args.size, "device": str(device), "hardware": hardware,
           "dtype": str(dtype).replace("torch.", ""), "steps": args.steps, "torch": torch.__version__,
           "numpy": np.__version__, "results": results,
           "load_average_end": os.getloadavg(),
           "note": "one training step = forward + backward + AdamW on a 2-subject batch (cycle loss for MindBridge); "
                   "targets are random tensors (cached targets: no CLIP in the step)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
