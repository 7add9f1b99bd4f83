"""The GPU ridge benchmark's code path, run on the CPU at a tiny scale (the GPU run itself needs a lent GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ridge_gpu.py"


def test_bench_ridge_gpu_runs_on_cpu_at_small_scale(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_ridge_gpu", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "ridge_gpu.json"
    res = mod.main(["--device", "cpu", "--scale", "0.01", "--sklearn-tokens", "1", "--target-batch", "1000",
                    "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    parity, loo = res["parity_fit"], res["trial_level_loo"]
    assert (parity["n"], parity["p"], parity["t"]) == (89, 157, 3477)
    assert parity["finite"] and parity["ours_s"] > 0 and parity["sklearn_per_token_cpu"]["seconds_per_token"] > 0
    assert parity["aim_s"] is None  # aims apply to the full size only
    assert loo["form"] == "primal" and loo["n"] == 250 and loo["n_distinct_alphas_chosen"] >= 1
