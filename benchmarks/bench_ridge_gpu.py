"""Ridge at Brain-Diffuser size on a GPU: the parity fit and trial-level per-target cross-validation.

The targets of ``shared/specs/performance.md`` (one H100):

- **parity fit**: averaged NSD data, n = 8,859 trials x p = 15,724 voxels -> t = 347,680 targets
  (CLIP-vision 257 x 768 + CLIP-text 77 x 768 + VDVAE 91,168) at one alpha: aim <= 3 s;
- **trial-level CV**: n = 24,980 single trials (n > p: primal form), leave-one-out over 10 alphas,
  alpha per target: aim <= 60 s.

Targets are generated on the device batch by batch (``Y(start, stop)``; 347,680 trial-level targets
are 35 GB in float32) and the weights go into one preallocated tensor, as a lab would run it. Side by
side, in the same process: the original pipeline's pattern (a float64 sklearn ``Ridge`` refitted per
CLIP token, on CPU) timed on ``--sklearn-tokens`` tokens of the same data and scaled to all 1,359
token-sized blocks (347,680 / 256 targets; reported as an extrapolation).

Usage::

    python benchmarks/bench_ridge_gpu.py                       # on CUDA, full size (H100: a few minutes)
    python benchmarks/bench_ridge_gpu.py --device cpu --scale 0.02 --out /tmp/ridge_gpu.json   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FULL = {"n_avg": 8859, "n_trials": 24980, "p": 15724, "t": 347680}
AIMS_S = {"parity_fit": 3.0, "trial_level_loo": 60.0}


def _sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Any, device: Any) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def _design(n: int, p: int, device: Any, seed: int) -> Any:
    """fMRI-like design: a few hundred shared factors plus voxel noise, generated on the device."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    k = min(200, p // 4)
    S = torch.randn((n, k), generator=g, device=device)
    return S @ torch.randn((k, p), generator=g, device=device) / k**0.5 + torch.randn((n, p), generator=g, device=device)


def _targets(n: int, device: Any, seed: int) -> Any:
    """``Y(start, stop)``: target columns generated on the device, the same for the same slice."""
    import torch

    def block(start: int, stop: int) -> Any:
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + start)
        return torch.randn((n, stop - start), generator=g, device=device)

    return block


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of every size (smoke runs)")
    parser.add_argument("--target-batch", type=int, default=32768)
    parser.add_argument("--sections", default="parity,trial_cv", help="comma-separated: parity, trial_cv")
    parser.add_argument("--sklearn-tokens", type=int, default=2, help="tokens timed for the per-token baseline")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ridge_gpu.json"))
    args = parser.parse_args(argv)

    import torch

    from neurodecode._core.device import resolve_device
    from neurodecode._core.files import write_json
    from neurodecode.models.ridge import ridge_decompose, ridge_fit

    device = resolve_device(args.device)
    size = {k: max(8, int(round(v * args.scale))) for k, v in FULL.items()}
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    hw: dict[str, Any] = {"device": str(device), "torch": torch.__version__,
                          "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    results: dict[str, Any] = {"size": size, "scale": args.scale, "aims_s": AIMS_S, "hardware": hw}
    print(f"{device}: sizes {size}", file=sys.stderr)

    if "parity" in sections:
        n, p, t = size["n_avg"], size["p"], size["t"]
        X = _design(n, p, device, seed=0)
        Y = _targets(n, device, seed=1)
        coef = torch.empty((p, t), device=device)
        ridge_fit(X[:64, :128], Y(0, 4)[:64], 6e4, cv=None, device=device)  # warm-up (kernels, cuBLAS handles)
        fit = lambda: ridge_fit(X, Y, 6e4, cv=None, n_targets=t, target_batch=args.target_batch,  # noqa: E731
                                coef_out=coef, device=device, verbose=False)
        secs, sol = _timed(fit, device)
        flops = n * n * p + 2 * n * n * t + 2 * p * n * t
        entry: dict[str, Any] = {"n": n, "p": p, "t": t, "alpha": 6e4, "ours_s": secs,
                                 "tflop_per_s": flops / secs / 1e12, "aim_s": AIMS_S["parity_fit"] if args.scale == 1 else None}
        # the original pipeline's pattern on the same data: float64 sklearn Ridge per token, on the CPU
        from sklearn.linear_model import Ridge

        t_tok = 256
        X64 = X.cpu().double().numpy()
        blocks = [Y(s, s + t_tok).cpu().double().numpy() for s in range(0, args.sklearn_tokens * t_tok, t_tok)]
        t_sk, _ = _timed(lambda: [Ridge(alpha=6e4).fit(X64, b) for b in blocks], "cpu")
        per_token = t_sk / len(blocks)
        entry["sklearn_per_token_cpu"] = {
            "what": "float64 sklearn Ridge refitted per 256-target token on the CPU (Brain-Diffuser's pattern), "
                    f"timed on {len(blocks)} tokens of the same data and extrapolated to all {-(-t // t_tok)} tokens",
            "seconds_per_token": per_token, "extrapolated_s": per_token * -(-t // t_tok)}
        entry["speedup_vs_sklearn_per_token_extrapolated"] = entry["sklearn_per_token_cpu"]["extrapolated_s"] / secs
        del X64, blocks
        entry["finite"] = bool(torch.isfinite(sol.coef[:, :: max(1, t // 97)]).all())
        results["parity_fit"] = entry
        print("parity fit:", entry, file=sys.stderr)
        del X, coef, sol
        write_json(args.out, results)

    if "trial_cv" in sections:
        n, p, t = size["n_trials"], size["p"], size["t"]
        alphas = np.logspace(3, 6, 10)
        X = _design(n, p, device, seed=2)
        Y = _targets(n, device, seed=3)
        coef = torch.empty((p, t), device=device)
        t_dec, dec = _timed(lambda: ridge_decompose(X, device=device), device)
        t_eig, _ = _timed(dec.eigh, device)
        secs, sol = _timed(lambda: ridge_fit(dec, Y, alphas, cv="loo", n_targets=t, target_batch=args.target_batch,
                                             coef_out=coef, verbose=False), device)
        total = t_dec + t_eig + secs
        results["trial_level_loo"] = {
            "n": n, "p": p, "t": t, "n_alphas": len(alphas), "form": dec.form, "ours_s": total,
            "decompose_s": t_dec + t_eig, "solve_and_select_s": secs,
            "aim_s": AIMS_S["trial_level_loo"] if args.scale == 1 else None,
            "n_distinct_alphas_chosen": int(torch.unique(sol.best_alphas).numel())}
        print("trial-level LOO:", results["trial_level_loo"], file=sys.stderr)
        write_json(args.out, results)
    print(f"wrote {args.out}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
