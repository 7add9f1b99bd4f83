"""Known-answer datasets: ideal-observer ceiling vs a plain ridge baseline vs the shuffled-brain control.

For each simulator at its default settings (the NSD one also at lower SNRs), side by side in one process:

- ``ceiling``: the ideal observer written to ``ceiling.json`` (true model, true noise);
- ``ridge``: a plain sklearn ``RidgeCV`` decoding brain responses (read back through the real loaders, with
  their default preprocessing) into the image-computable feature space the simulator used (Gabor energy on a
  4 x 4 grid + semantic features, from ``truth/features.npz``), test images identified by the correlation of
  predicted and true features among the test candidates;
- ``ridge_pixels``: the same ridge decoding 14 x 14 grey pixels instead (no knowledge of the feature space);
- ``shuffled``: the ridge with training labels permuted (mean of 5 permutations): should sit at chance.

Ratios reported: ridge / ceiling (two-way identification and top-1 retrieval above chance).

    python benchmarks/bench_known_answer.py            # about 1-2 minutes on 2 CPU cores

Writes benchmarks/results/known_answer.json (hardware named).
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = np.logspace(1, 7, 13)


def _identify(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from neurodecode.simulate._ideal import correlation_scores, identification_scores

    out = identification_scores(correlation_scores(pred, target))
    return {k: round(v, 4) for k, v in out.items()}


def _ridge(x_tr, y_tr, x_te, y_te, n_shuffles=5):
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=ALPHAS).fit(x_tr, y_tr)
    res = _identify(model.predict(x_te), y_te)
    res["alpha"] = float(model.alpha_)
    if not n_shuffles:
        return res, {}
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    shuffled = []
    for _ in range(n_shuffles):
        m = Ridge(alpha=model.alpha_).fit(x_tr, y_tr[rng.permutation(len(y_tr))])
        shuffled.append(_identify(m.predict(x_te), y_te))
    shuf = {k: round(float(np.mean([s[k] for s in shuffled])), 4) for k in shuffled[0]}
    return res, shuf


def _feature_targets(energy: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    n, c, g, _ = energy.shape
    k = g // 4
    coarse = energy.astype(np.float64).reshape(n, c, 4, k, 4, k).mean(axis=(3, 5)).reshape(n, -1)
    t = np.concatenate([np.log1p(coarse), semantic], axis=1)
    return (t - t.mean(0)) / (t.std(0) + 1e-8)


def _pixels(images: np.ndarray) -> np.ndarray:
    from neurodecode.simulate._features import to_grey
    from neurodecode.simulate.stimuli import resize_images

    g = to_grey(resize_images(images, 14)).reshape(len(images), -1).astype(np.float64)
    return (g - g.mean(0)) / (g.std(0) + 1e-8)


def _ratios(ceiling: dict, ridge: dict, chance_top1: float) -> dict[str, float]:
    return {
        "two_way_above_chance": round((ridge["two_way_identification"] - 0.5)
                                      / max(ceiling["two_way_identification"] - 0.5, 1e-9), 3),
        "top1_above_chance": round((ridge["top1_retrieval"] - chance_top1)
                                   / max(ceiling["top1_retrieval"] - chance_top1, 1e-9), 3),
    }


def bench_nsd(tmp: Path, snr: float) -> dict:
    from neurodecode.data import load_nsd
    from neurodecode.simulate import load_truth, simulate_nsd

    t0 = time.perf_counter()
    sim = simulate_nsd(tmp / f"nsd_{snr}", snr=snr)
    t_sim = time.perf_counter() - t0
    feats = load_truth(sim.out, "features")
    target = _feature_targets(feats["gabor_energy"], feats["semantic"])
    from neurodecode.data import load_nsd_stimuli

    pix = _pixels(load_nsd_stimuli(sim.root, np.arange(len(target))))
    out: dict = {"snr": snr, "simulate_s": round(t_sim, 2), "subjects": {}}
    for s in sim.subjects:
        trials = load_nsd(sim.root, s)
        tr, te = trials.split == "train", trials.split == "test"
        ids_tr, ids_te = trials.stimulus_ids[tr], trials.stimulus_ids[te]
        ceiling = sim.ceiling["per_subject"][f"subj{s:02d}"]
        ridge, shuffled = _ridge(trials.X[tr], target[ids_tr], trials.X[te], target[ids_te])
        ridge_pix, _ = _ridge(trials.X[tr], pix[ids_tr], trials.X[te], pix[ids_te], n_shuffles=0)
        chance = ceiling["chance"]["top1_retrieval"]
        out["subjects"][f"subj{s:02d}"] = {
            "n_voxels": ceiling["n_voxels"], "n_train_trials": int(tr.sum()), "n_test": ceiling["n_test"],
            "median_noise_ceiling_pct": round(ceiling["median_noise_ceiling"], 1),
            "ceiling": {k: round(ceiling[k], 4) for k in ("two_way_identification", "top1_retrieval",
                                                           "top5_retrieval", "mean_rank")},
            "ridge": ridge, "ridge_pixels": ridge_pix, "shuffled": shuffled, "chance": ceiling["chance"],
            "ridge_over_ceiling": _ratios(ceiling, ridge, chance),
        }
    return out


def bench_things_eeg2(tmp: Path) -> dict:
    from neurodecode.data import load_things_eeg2
    from neurodecode.simulate import load_truth, simulate_things_eeg2
    from neurodecode.simulate._features import gabor_energy, semantic_features

    t0 = time.perf_counter()
    sim = simulate_things_eeg2(tmp / "eeg2", subjects=(1,), safe_copy=True)  # pickle-free twins
    t_sim = time.perf_counter() - t0
    stim = load_truth(sim.out, "stimuli")
    images = np.concatenate([stim["train_images"], stim["test_images"]])
    labels = np.concatenate([stim["train_labels"], stim["test_labels"]])
    energy = gabor_energy(images)
    target = _feature_targets(energy, semantic_features(energy, labels, n_classes=10, seed=0))
    trials = load_things_eeg2(sim.root, 1, average_repeats=True)
    x = trials.X.reshape(len(trials.X), 63, 25, 10).mean(-1).reshape(len(trials.X), -1)  # 25 time bins
    tr, te = trials.split == "train", trials.split == "test"
    n_tr = int(tr.sum())
    ridge, shuffled = _ridge(x[tr], target[:n_tr], x[te], target[n_tr:])
    ceiling = sim.ceiling["per_subject"]["sub-01"]
    return {"simulate_s": round(t_sim, 2), "n_train_images": n_tr, "n_test": int(te.sum()),
            "test_repetitions": sim.ceiling["test_repetitions"],
            "ceiling": {k: round(ceiling[k], 4) for k in ("two_way_identification", "top1_retrieval", "mean_rank")},
            "ridge_zero_shot": ridge, "shuffled": shuffled, "chance": ceiling["chance"],
            "ridge_over_ceiling": _ratios(ceiling, ridge, ceiling["chance"]["top1_retrieval"])}


def bench_ceiling_only(tmp: Path) -> dict:
    from neurodecode.simulate import simulate_things_meg, simulate_zuco

    out = {}
    t0 = time.perf_counter()
    meg = simulate_things_meg(tmp / "meg", sfreq=200.0)
    out["things-meg"] = {"simulate_s": round(time.perf_counter() - t0, 2), "sfreq": 200.0,
                         **{k: meg.ceiling[k] for k in ("two_way_identification", "top1_retrieval", "n_test",
                                                        "test_repetitions")}}
    t0 = time.perf_counter()
    zuco = simulate_zuco(tmp / "zuco")
    c = zuco.ceiling["per_subject"]["YAC"]
    out["zuco"] = {"simulate_s": round(time.perf_counter() - t0, 2), "space": "minilm-l6",
                   "test_split": {k: c.get(k) for k in ("two_way_identification", "top1_retrieval", "n_test")},
                   "all_sentences": c["all_sentences"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snrs", type=float, nargs="+", default=[1.0, 0.3])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "known_answer.json")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {
            "benchmark": "known_answer",
            "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                        f"{platform.system()} (no GPU)",
            "python": platform.python_version(),
            "what": __doc__.split("\n\n")[1].replace("\n", " "),
            "nsd": [bench_nsd(tmp, snr) for snr in args.snrs],
            "things-eeg2": bench_things_eeg2(tmp),
            **bench_ceiling_only(tmp),
        }
    result["total_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
