"""Ridge at scale: neurodecode's torch solver vs sklearn Ridge / RidgeCV and himalaya, in one process.

Default size is the issue's: n = 3000 trials, p = 15000 voxels, t = 2000 targets, float32 on CPU
(a few minutes on 2 cores). ``--quick`` runs a smaller problem in seconds. Every library gets the
same float32 arrays.

Compared (each timed on the same data, in this process):
- one alpha:  sklearn ``Ridge(alpha)``                          vs ``RidgeDecoder(alphas=[alpha], cv=None)``
- LOO grid:   sklearn ``RidgeCV(alphas, alpha_per_target=True)`` vs ``RidgeDecoder(alphas, cv="loo")``
- per token:  sklearn ``Ridge(alpha)`` in float64 refitted per block of targets (Brain-Diffuser's pattern)
- 5-fold:     himalaya ``KernelRidgeCV`` / ``RidgeCV`` (torch backend, cv=5) vs ``RidgeDecoder(alphas, cv=5)``

Reported: wall-time ratios (theirs / ours), fraction of targets with the same chosen alpha, and the
max absolute difference of held-out R^2 per target. Results go to ``benchmarks/results/ridge.json``.

Usage::

    python benchmarks/bench_ridge.py            # the issue's size
    python benchmarks/bench_ridge.py --quick    # small, seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BARS = {"vs_sklearn_ridge": 3.0, "vs_sklearn_ridgecv": 5.0, "same_alpha_fraction": 0.99, "max_r2_diff": 1e-4}


def make_problem(n: int, p: int, t: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """fMRI-like data: voxels driven by a few hundred stimulus factors; targets of varied SNR."""
    rng = np.random.default_rng(seed)
    k = min(200, p // 4)
    S = rng.standard_normal((n + n_test, k)).astype(np.float32)
    X = S @ rng.standard_normal((k, p)).astype(np.float32) / np.sqrt(k)
    X += rng.standard_normal(X.shape, dtype=np.float32)
    W = rng.standard_normal((k, t)).astype(np.float32) / np.sqrt(k)
    snr = np.logspace(-1.5, 0.5, t).astype(np.float32)  # from almost noise to well predicted
    Y = (S @ W) * snr + rng.standard_normal((n + n_test, t), dtype=np.float32)
    # float32 throughout: a float64 scalar (np.sqrt) silently promoted X and Y before, and sklearn then
    # ran in float64 (2x the time) while ours cast to float32: the first recorded ratios were inflated.
    X, Y = X.astype(np.float32, copy=False), Y.astype(np.float32, copy=False)
    return X[:n], Y[:n], X[n:], Y[n:]


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def r2_per_target(model: Any, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    pred = np.asarray(model.predict(X), dtype=np.float64)
    ss_res = ((Y - pred) ** 2).sum(0)
    ss_tot = ((Y - Y.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / ss_tot


def hardware(threads: int) -> dict[str, Any]:
    import threadpoolctl
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = [{k: d.get(k) for k in ("internal_api", "prefix", "version", "num_threads", "architecture")}
            for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "threads": threads, "torch_threads": torch.get_num_threads(),
        "torch_blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "numpy_scipy_blas": blas, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"), "python": sys.version.split()[0],
        "load_average_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--p", type=int, default=15000)
    parser.add_argument("--t", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--n-alphas", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--token-width", type=int, default=256,
                        help="targets per sklearn refit in the Brain-Diffuser-pattern comparison")
    parser.add_argument("--quick", action="store_true", help="n=600, p=3000, t=400")
    parser.add_argument("--no-himalaya", action="store_true")
    parser.add_argument("--himalaya-primal", action="store_true",
                        help="also time himalaya.ridge.RidgeCV when n < p (very slow: 45x ours at --quick size)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ridge.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.p, args.t, args.n_test = 600, 3000, 400, 200

    import threadpoolctl
    import torch
    from sklearn import __version__ as skv
    from sklearn.linear_model import Ridge, RidgeCV

    from neurodecode._core.files import write_json
    from neurodecode.estimators import RidgeDecoder

    torch.set_num_threads(args.threads)
    threadpoolctl.threadpool_limits(args.threads)
    info = hardware(args.threads)
    X, Y, Xte, Yte = make_problem(args.n, args.p, args.t, args.n_test)
    alphas = np.logspace(1, 5.5, args.n_alphas)
    a0 = float(alphas[len(alphas) // 2])
    print(f"n={args.n} p={args.p} t={args.t} float32, {args.threads} threads, alphas {alphas[0]:g}..{alphas[-1]:g}",
          file=sys.stderr)
    results: dict[str, Any] = {"size": {"n": args.n, "p": args.p, "t": args.t, "n_test": args.n_test,
                                        "n_alphas": len(alphas), "dtype": "float32", "quick": args.quick},
                               "hardware": info, "bars": BARS, "versions": {"torch": torch.__version__, "sklearn": skv}}

    # warm-up (thread pools, MKL/OpenBLAS initialisation) on a small slice, not timed
    RidgeDecoder(alphas=alphas[:2]).fit(X[:50, :100], Y[:50, :5])
    Ridge(alpha=1.0).fit(X[:50, :100], Y[:50, :5])

    # ---- one alpha
    t_sk, sk = timed(lambda: Ridge(alpha=a0).fit(X, Y))
    t_us, us = timed(lambda: RidgeDecoder(alphas=[a0], cv=None).fit(X, Y))
    r2_sk, r2_us = r2_per_target(sk, Xte, Yte), r2_per_target(us, Xte, Yte)
    n, p, t = args.n, args.p, args.t
    flops = n * n * p + 2 * n * n * t + 2 * p * n * t if n < p else p * p * n + 2 * n * p * t + 2 * p * p * t
    results["one_alpha"] = {"alpha": a0, "sklearn_ridge_s": t_sk, "ours_s": t_us, "speedup": t_sk / t_us,
                            "max_r2_diff": float(np.abs(r2_sk - r2_us).max()),
                            "min_flops": flops, "ours_gflop_per_s": flops / t_us / 1e9,
                            "note": "sklearn's Ridge with one alpha and n < p already solves the kernel system by "
                                    "Cholesky, the same algorithm; both run at the BLAS FLOP rate (syrk Gram + "
                                    "triangular solves + X^T dual), so no exact method can be 3x faster on the same "
                                    "CPU. The per-token refit section measures the pattern Brain-Diffuser uses."}
    print("one alpha:", results["one_alpha"], file=sys.stderr)
    write_json(args.out, results)  # written after every section: an interrupted run keeps what it measured

    # ---- the original Brain-Diffuser pattern: one float64 sklearn Ridge per token (here per block of
    # --token-width targets), each refit rebuilding the same kernel; ours fits all targets at once
    width = max(1, min(args.token_width, args.t))
    X64 = X.astype(np.float64)
    t_tok, toks = timed(lambda X64=X64: [Ridge(alpha=a0).fit(X64, Y[:, s:s + width].astype(np.float64))
                                 for s in range(0, args.t, width)])
    t_us, us = timed(lambda: RidgeDecoder(alphas=[a0], cv=None).fit(X, Y))
    pred_tok = np.concatenate([m.predict(Xte.astype(np.float64)) for m in toks], 1)
    r2_tok = 1.0 - ((Yte - pred_tok) ** 2).sum(0) / ((Yte - Yte.mean(0)) ** 2).sum(0)
    results["per_token_refit"] = {
        "what": "sklearn Ridge(alpha) in float64 refitted once per block of targets (Brain-Diffuser refits "
                "once per CLIP token), vs ours once for all targets in float32; informative, not the issue's bar",
        "token_width": width, "n_fits": -(-args.t // width), "sklearn_s": t_tok, "ours_s": t_us,
        "speedup": t_tok / t_us, "max_r2_diff": float(np.abs(r2_tok - r2_per_target(us, Xte, Yte)).max())}
    print("per-token refit:", results["per_token_refit"], file=sys.stderr)
    del X64, toks
    write_json(args.out, results)

    # ---- LOO grid, alpha per target
    t_us, us = timed(lambda: RidgeDecoder(alphas=alphas, cv="loo").fit(X, Y))
    t_sk, sk = timed(lambda: RidgeCV(alphas=alphas, alpha_per_target=True).fit(X, Y))
    r2_sk, r2_us = r2_per_target(sk, Xte, Yte), r2_per_target(us, Xte, Yte)
    same = np.isclose(np.asarray(sk.alpha_), us.best_alphas_, rtol=1e-12)
    results["loo_per_target"] = {
        "sklearn_ridgecv_s": t_sk, "ours_s": t_us, "speedup": t_sk / t_us,
        "same_alpha_fraction": float(same.mean()), "n_distinct_alphas_chosen": int(len(np.unique(sk.alpha_))),
        "max_r2_diff": float(np.abs(r2_sk - r2_us).max()), "mean_test_r2": float(r2_us.mean())}
    print("LOO:", results["loo_per_target"], file=sys.stderr)
    write_json(args.out, results)

    # ---- himalaya (5-fold, torch backend) vs ours with the same folds
    if not args.no_himalaya:
        from himalaya.backend import set_backend
        from himalaya.kernel_ridge import KernelRidgeCV as HKernelRidgeCV
        from himalaya.ridge import RidgeCV as HRidgeCV

        set_backend("torch", on_error="raise")
        t_us, us = timed(lambda: RidgeDecoder(alphas=alphas, cv=5).fit(X, Y))
        r2_us = r2_per_target(us, Xte, Yte)
        hres: dict[str, Any] = {"ours_kfold5_s": t_us}
        himalaya_models = [("KernelRidgeCV", HKernelRidgeCV)]
        if args.n >= args.p or args.himalaya_primal:
            himalaya_models.append(("RidgeCV", HRidgeCV))
        else:
            hres["RidgeCV"] = ("skipped: n < p, where himalaya itself warns its primal RidgeCV is slower than "
                               "KernelRidgeCV (at --quick size it took 79 s vs our 1.8 s); pass --himalaya-primal")
        for name, cls in himalaya_models:
            t_h, h = timed(lambda cls=cls: cls(alphas=alphas, cv=5).fit(X, Y))
            r2_h = r2_per_target(h, Xte, Yte)
            h_alpha = np.asarray(h.best_alphas_.cpu() if hasattr(h.best_alphas_, "cpu") else h.best_alphas_)
            hres[name] = {"himalaya_s": t_h, "speedup": t_h / t_us,
                          "same_alpha_fraction": float(np.isclose(h_alpha, us.best_alphas_, rtol=1e-5).mean()),
                          "max_r2_diff": float(np.abs(r2_h - r2_us).max())}
            print(f"himalaya {name}:", hres[name], file=sys.stderr)
        hres["note"] = ("himalaya scores folds by mean R^2, ours by pooled MSE: alpha agreement is informative, "
                        "not a bar; same 5 contiguous folds")
        results["himalaya_kfold5"] = hres

    lo, cv = results["one_alpha"], results["loo_per_target"]
    results["bars_met"] = {
        "vs_sklearn_ridge": lo["speedup"] >= BARS["vs_sklearn_ridge"],
        "vs_sklearn_ridgecv": cv["speedup"] >= BARS["vs_sklearn_ridgecv"],
        "same_alpha_fraction": cv["same_alpha_fraction"] >= BARS["same_alpha_fraction"],
        "max_r2_diff": max(lo["max_r2_diff"], cv["max_r2_diff"]) <= BARS["max_r2_diff"],
    }
    info["load_average_end"] = os.getloadavg()
    info["contention_note"] = ("shared 2-core machine with other engineers' jobs; load averages above ~2 mean "
                               "timings include contention (ratios are measured back to back in one process)")
    write_json(args.out, results)
    print(f"wrote {args.out}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
