"""ATM training and inference throughput: ours vs a straightforward eager implementation.

Side by side in one process, on the same data and the same network (THINGS-EEG2 size:
63 channels x 250 samples -> 1024, batch 64, AdamW 3e-4):

- ``eager``: the network written the obvious way, as the reference code does: separate
  q/k/v projections and einsum-softmax attention, the temporal conv (1 x 25) then an
  ``AvgPool2d`` (1 x 51, stride 5) as two layers, ``nn.Conv2d`` spatial and 1x1 convs; a
  torch ``DataLoader`` over a per-sample Python ``Dataset`` (``num_workers=0``); a
  ``loss.item()`` and an accuracy ``.item()`` host sync every step;
- ``ours``: :class:`neurodecode.models.atm.ATM` trained by the one trainer
  (:class:`neurodecode.train.Trainer` + ``ArrayBatches``: data indexed as tensors on the
  device, metrics summed on the device): fused temporal conv + pool (one strided kernel),
  the conv stack as three GEMMs, SDPA attention. With ``--device cuda``: bf16 autocast,
  ``torch.compile``.

Inference: ``ATM.encode`` vs the eager model in eval mode over the DataLoader.

    python benchmarks/bench_atm.py                  # CPU, about 1-2 minutes
    python benchmarks/bench_atm.py --device cuda --n-train 65536 --batch-size 1024 --skip-eager

Writes benchmarks/results/atm.json (hardware named).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def _eager_model(n_channels: int, n_times: int):
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, d=250, h=4, p=0.25):
            super().__init__()
            dk = d // h
            self.h, self.dk = h, dk
            self.q, self.k, self.v = nn.Linear(d, dk * h), nn.Linear(d, dk * h), nn.Linear(d, dk * h)
            self.o = nn.Linear(dk * h, d)
            self.drop = nn.Dropout(p)

        def forward(self, x):
            b, n, _ = x.shape
            q = self.q(x).view(b, n, self.h, self.dk)
            k = self.k(x).view(b, n, self.h, self.dk)
            v = self.v(x).view(b, n, self.h, self.dk)
            scores = torch.einsum("blhe,bshe->bhls", q, k) / self.dk ** 0.5
            a = self.drop(torch.softmax(scores, dim=-1))
            return self.o(torch.einsum("bhls,bshd->blhd", a, v).reshape(b, n, -1))

    class EncoderLayer(nn.Module):
        def __init__(self, d=250, ff=256, p=0.25):
            super().__init__()
            self.attn = Attention(d, 4, p)
            self.conv1, self.conv2 = nn.Conv1d(d, ff, 1), nn.Conv1d(ff, d, 1)
            self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.drop = nn.Dropout(p)

        def forward(self, x):
            x = self.n1(x + self.drop(self.attn(x)))
            y = self.drop(torch.nn.functional.gelu(self.conv1(x.transpose(-1, 1))))
            y = self.drop(self.conv2(y).transpose(-1, 1))
            return self.n2(x + y)

    class EagerATM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(n_times, 250)
            self.embed_drop = nn.Dropout(0.25)
            self.layer = EncoderLayer()
            self.norm = nn.LayerNorm(250)
            self.tsconv = nn.Sequential(
                nn.Conv2d(1, 40, (1, 25)), nn.AvgPool2d((1, 51), (1, 5)), nn.BatchNorm2d(40), nn.ELU(),
                nn.Conv2d(40, 40, (n_channels, 1)), nn.BatchNorm2d(40), nn.ELU(), nn.Dropout(0.5))
            self.pointwise = nn.Conv2d(40, 40, 1)
            self.lin = nn.Linear(1440, 1024)
            self.res = nn.Sequential(nn.GELU(), nn.Linear(1024, 1024), nn.Dropout(0.5))
            self.ln = nn.LayerNorm(1024)
            self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

        def forward(self, x):
            h = self.norm(self.layer(self.embed_drop(self.embed(x))))
            h = self.pointwise(self.tsconv(h.unsqueeze(1)))
            h = h.flatten(2).transpose(1, 2).reshape(len(x), -1)
            h = self.lin(h)
            return self.ln(h + self.res(h))

    return EagerATM()


def _eager_runner(X, Y, batch_size, device):
    """(train one epoch, infer all) closures for the eager implementation; each returns (samples/s wall, samples per CPU-second)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset

    class Trials(Dataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, i):
            return torch.from_numpy(X[i]), torch.from_numpy(Y[i])

    torch.manual_seed(0)
    model = _eager_model(X.shape[1], X.shape[2]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)

    def train() -> tuple[float, float]:
        model.train()
        loader = DataLoader(Trials(), batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
        n_seen, total_loss, correct = 0, 0.0, 0
        t0, c0 = time.perf_counter(), time.process_time()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            emb = model(xb)
            e, t = F.normalize(emb, dim=-1), F.normalize(yb, dim=-1)
            logits = model.logit_scale.exp() * e @ t.T
            labels = torch.arange(len(xb), device=device)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += loss.item()  # per-step host syncs, as the reference loop does
            correct += (logits.argmax(1) == labels).sum().item()
            n_seen += len(xb)
        return n_seen / (time.perf_counter() - t0), n_seen / (time.process_time() - c0)

    def infer() -> tuple[float, float]:
        model.eval()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for xb, _ in DataLoader(Trials(), batch_size=batch_size, shuffle=False, num_workers=0):
                model(xb.to(device)).cpu()
        return len(X) / (time.perf_counter() - t0), len(X) / (time.process_time() - c0)

    return train, infer


def _ours_runner(X, Y, batch_size, device, fast_gpu):
    """(train one epoch, infer all) closures for ATM + the one trainer; each returns (samples/s wall, samples per CPU-second)."""
    import torch

    from neurodecode.models.atm import ATM, ATMConfig
    from neurodecode.train import ArrayBatches, TrainConfig, Trainer

    kw = dict(lr=3e-4, device=device, checkpoint_every=None, scheduler="constant", weight_decay=0.0,
              log_every=10_000, precision="bf16" if fast_gpu else "fp32", compile=fast_gpu)
    data = ArrayBatches({"x": X, "image_embeds": Y}, batch_size=batch_size)
    torch.manual_seed(0)
    model = ATM(ATMConfig(n_channels=X.shape[1], n_times=X.shape[2]))
    Trainer(model, TrainConfig(epochs=1, batch_size=batch_size, max_steps=2, **kw)).fit(data)  # warm-up / compile

    def train() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        result = Trainer(model, TrainConfig(epochs=1, batch_size=batch_size, **kw)).fit(data)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        n = result.steps * batch_size
        return n / (time.perf_counter() - t0), n / (time.process_time() - c0)

    def infer() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        if fast_gpu:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                model.encode(X, batch_size=8192)
        else:
            model.encode(X, batch_size=512)
        return len(X) / (time.perf_counter() - t0), len(X) / (time.process_time() - c0)

    return train, infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=63)
    parser.add_argument("--times", type=int, default=250)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-eager", action="store_true", help="GPU runs: time ours only")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "atm.json"))
    args = parser.parse_args()

    os.environ.setdefault("NEURODECODE_PROGRESS", "0")
    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n_train, args.channels, args.times)).astype(np.float32)
    Y = rng.standard_normal((args.n_train, 1024)).astype(np.float32)
    fast_gpu = args.device.startswith("cuda")
    ours = _ours_runner(X, Y, args.batch_size, args.device, fast_gpu)
    eager = None if args.skip_eager else _eager_runner(X, Y, args.batch_size, args.device)
    # interleaved rounds, best of each: the machine may be shared, and load drifts over a run
    runs: dict[str, list[tuple[float, float]]] = {"ours_train": [], "ours_inference": [], "eager_train": [], "eager_inference": []}
    for _ in range(args.rounds):
        runs["ours_train"].append(ours[0]())
        runs["ours_inference"].append(ours[1]())
        if eager is not None:
            runs["eager_train"].append(eager[0]())
            runs["eager_inference"].append(eager[1]())
    best = {k: max(w for w, _ in v) for k, v in runs.items() if v}
    best_cpu = {k: max(c for _, c in v) for k, v in runs.items() if v}
    result = {
        "hardware": (torch.cuda.get_device_name(0) if fast_gpu else f"{platform.machine()}, {platform.system()}, "
                     f"CPU only, {args.threads} torch thread(s), load average {os.getloadavg()[0]:.1f} "
                     f"on {os.cpu_count()} cores"),
        "torch": torch.__version__,
        "shape": [args.channels, args.times], "batch_size": args.batch_size, "n_train": args.n_train,
        "rounds": args.rounds, "statistic": "best of interleaved rounds (one epoch each); wall-clock and "
                                            "per CPU-second (robust to a shared machine with one torch thread)",
        "ours_train_samples_per_s": round(best["ours_train"], 1),
        "ours_inference_samples_per_s": round(best["ours_inference"], 1),
        "ours_train_samples_per_cpu_s": round(best_cpu["ours_train"], 1),
        "ours_settings": "bf16 + torch.compile + data on device" if fast_gpu else "fp32 eager, data as tensors",
        "all_rounds_wall": {k: [round(w, 1) for w, _ in v] for k, v in runs.items() if v},
    }
    if eager is not None:
        result.update({
            "eager_train_samples_per_s": round(best["eager_train"], 1),
            "eager_inference_samples_per_s": round(best["eager_inference"], 1),
            "eager_train_samples_per_cpu_s": round(best_cpu["eager_train"], 1),
            "ratio_train": round(best["ours_train"] / best["eager_train"], 2),
            "ratio_inference": round(best["ours_inference"] / best["eager_inference"], 2),
            "ratio_train_cpu_time": round(best_cpu["ours_train"] / best_cpu["eager_train"], 2),
            "ratio_inference_cpu_time": round(best_cpu["ours_inference"] / best_cpu["eager_inference"], 2),
            "bar": "CPU: ratio_train >= 2",
        })
    print(json.dumps(result, indent=2))
    from neurodecode._core.files import write_json

    write_json(args.out, result)


if __name__ == "__main__":
    main()
