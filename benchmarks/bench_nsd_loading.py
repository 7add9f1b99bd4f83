"""NSD loading: trial-wise reads of the HDF5 betas vs our voxel-wise conversion, and cached loads.

Default (short): one session of an 81 x 104 x 83 volume (subject 1's func1pt8mm grid) with
NSD chunking (one voxel x all trials) but fewer trials; ``--full`` uses 750 trials.
Trial-wise read time is measured on a few trials and scaled to the session.
Writes benchmarks/results/nsd_loading.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="750 trials (a real session; slow)")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--probe", type=int, default=2, help="trials read trial-wise (then scaled)")
    args = ap.parse_args()
    n_t = 750 if args.full else args.trials
    shape = (81, 104, 83)
    rng = np.random.default_rng(0)
    mask = np.zeros(shape, bool)
    mask[20:60, 30:75, 25:60] = rng.random((40, 45, 35)) < 0.25  # ~15.7k voxels, like nsdgeneral
    flat = np.flatnonzero(mask)
    coords = np.stack(np.unravel_index(flat, shape), 1)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "betas_session01.hdf5"
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("betas", shape=(n_t,) + shape[::-1], dtype=np.int16, chunks=(n_t, 1, 1, 1))
            for z in range(shape[2]):
                ds[:, z] = rng.integers(-500, 500, size=(n_t,) + shape[1::-1], dtype=np.int16)
        t_write = time.perf_counter() - t0
        from neurodecode.io.hdf5 import read_voxels

        with h5py.File(path) as f:
            ds = f["betas"]
            t0 = time.perf_counter()
            for t in range(args.probe):
                ds[t][coords[:, 2], coords[:, 1], coords[:, 0]]
            t_trial = (time.perf_counter() - t0) / args.probe * n_t
            t0 = time.perf_counter()
            out = read_voxels(ds, coords[:, ::-1])
            t_voxel = time.perf_counter() - t0
        cache = Path(d) / "betas.npy"
        np.save(cache, out)
        t0 = time.perf_counter()
        arr = np.load(cache, mmap_mode="r")
        np.asarray(arr).sum()
        t_load = time.perf_counter() - t0
        gb = cache.stat().st_size / 1e9
        idx = rng.integers(0, n_t, 256)
        t0 = time.perf_counter()
        for _ in range(20):
            np.asarray(arr[np.sort(idx)])
        t_batch = (time.perf_counter() - t0) / 20
    res = {
        "hardware": f"{platform.processor() or platform.machine()}, {platform.system()}, CPU only",
        "volume": list(shape), "trials": n_t, "n_voxels": int(len(flat)), "write_s": round(t_write, 2),
        "trialwise_session_read_s_extrapolated": round(t_trial, 3), "voxelwise_conversion_s": round(t_voxel, 3),
        "ratio_trialwise_over_voxelwise": round(t_trial / t_voxel, 2),
        "cached_load_s_per_gb": round(t_load / max(gb, 1e-9), 3), "cached_size_gb": round(gb, 5),
        "random_batch_256_ms": round(t_batch * 1e3, 3),
        "note": "trial-wise time measured on --probe trials and scaled; rerun with --full for 750 trials",
    }
    print(json.dumps(res, indent=2))
    out_path = Path(__file__).parent / "results" / "nsd_loading.json"
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
