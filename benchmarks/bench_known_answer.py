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

Decoders (``decoders`` in the JSON, issue #17 item 6): each decoder family trained on its simulated dataset
through its shipped recipe, exactly as a lab runs it (``neurodecode simulate`` then ``neurodecode train RECIPE
--preset tiny --set ...``, one subprocess each, toy width, random-init tiny latent spaces), at a size that
runs in minutes on 2 CPU cores. Read back from the run's ``metrics.json``: the test identification top-1 among
the test items, its shuffled-brain control where the runner reports one (NSD decoders: each test trial scored
against another trial's target), else chance; compared with the simulator's ideal observer (``ceiling.json``,
top-1 among the same test items) as ``fraction = (score - chance) / (ideal - chance)``. The decoder is scored in
its own target space (a tiny random CLIP), the ideal observer in the simulator's true model: same candidates,
same top-1 rule, different representation.

    python benchmarks/bench_known_answer.py                 # ridge part about 1-2 minutes, decoders about 20
    python benchmarks/bench_known_answer.py --skip-ridge    # decoders only; keeps the stored ridge entries
    python benchmarks/bench_known_answer.py --skip-decoders # ridge only; keeps the stored decoder entries

Writes benchmarks/results/known_answer.json atomically (hardware named).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
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


#: decoder family -> its recipe's dataset, the ``--set`` overrides on top of ``--preset tiny`` (more data and
#: steps than the preset's smoke size, still minutes on 2 CPU cores) and how its metrics are read.
#: NSD: ``data.sessions=2`` loads both simulated sessions, so the test split is the simulator's 100 test images
#: (the ideal observer's candidates; one session holds only 88 of them).
#: MindBridge: the tiny preset pools the simulator's 363-400 voxels to 16 (25:1; the paper's 8192 for 12.7k-15.7k
#: voxels is under 2:1), and a ridge on 16 max-pooled voxels already falls from top-1 0.14 to 0.02: ``pooled=512``
#: (no voxel lost; the simulated voxels are independent, unlike real neighbouring voxels) at width 64, and 30 epochs
#: at the recipe's learning rate (the paper trains 600). MindEye2: width 64 and 20 epochs (the paper trains 150).
#: Both learn nothing measurable in the 1-6 epochs the recipes' toy width allowed before (see the decoders' docs).
#: ``simulate``: options of ``neurodecode simulate`` (one simulation per dataset and options). ATM: at the simulator's
#: defaults (12 training concepts x 10 images, snr 1) a ridge from the EEG into the simulator's own features reaches
#: top-1 0.07 and ATM stays at chance; 48 concepts at snr 3 give the zero-shot split something to learn from.
DECODERS: dict[str, dict] = {
    "mindbridge_nsd": {"dataset": "nsd", "kind": "nsd",
                       "sets": ["data.sessions=2", "train.epochs=30", "decoder.pooled=512", "decoder.bottleneck=16",
                                "decoder.width=64"]},
    "mindeye2_nsd": {"dataset": "nsd", "kind": "nsd",
                     "sets": ["data.sessions=2", "train.epochs=20", "decoder.width=64"]},
    "brain_diffuser_nsd": {"dataset": "nsd", "kind": "brain_diffuser", "target": "clip_image_tokens",
                           "sets": ["data.sessions=2", 'data.subjects=["nsd/subj01", "nsd/subj02"]']},
    "atm_things_eeg2": {"dataset": "things-eeg2", "kind": "atm",
                        "sets": ["train.epochs=40"],  # the recipe's (and the reference's) 40 epochs
                        "simulate": ["--train-concepts", "48", "--snr", "3", "--test-images", "100"],
                        "note": "simulated with 48 training concepts (480 images, 4x the default) at snr 3 and 100 "
                                "test images (the default 30 resolve one hit as 0.033): at the defaults (120 "
                                "images, snr 1) ATM, and a ridge from the EEG into its tiny ViT-H-14 space, stay at "
                                "chance (docs/decoders/atm.md, known-answer check)"},
    "glim_zuco": {"dataset": "zuco", "kind": "glim",
                  # the recipe's 72 per device (the tiny preset's 8 is a smoke size); lr 1e-3: at the reference's
                  # 1e-4 the toy width does not move in 60 epochs (docs/decoders/glim.md)
                  "sets": ["train.epochs=60", "train.batch_size=72", "train.lr=1e-3"],
                  "simulate": ["--sentences", "1000", "--snr", "10"],
                  "note": "simulated with 1000 sentences (10x the default: 91 test sentences, 7 of GLIM's blocks "
                          "of 24 per subject, 168 scored trials) at snr 10: the semantic response is a small part "
                          "of the simulated EEG (the word-locked response dominates) and at snr 1-3 a ridge from "
                          "the tiny preset's 16 channels into the simulator's own sentence space reaches top-1 "
                          "0.07-0.11 of 28 (docs/decoders/glim.md, known-answer check)"},
}

#: Threads of each training subprocess: these toy models gain nothing from a second thread, and on 2 shared cores
#: two spin-waiting OpenMP threads made a tiny MindEye2 step 45x slower (0.9 s instead of 0.02 s for its prior).
SUBPROCESS_THREADS = "1"

MEASURES = {
    "nsd": "test/<subject>/top1: each averaged test trial's predicted main target identified among the test "
           "images' true targets (correlation, top-1); control test/<subject>/shuffled_top1 (test trials paired "
           "to other trials' targets by a fixed derangement). MindEye2: the main target is the diffusion prior's "
           "sampled bigG tokens; its retrieval embeddings (the contrastive space of its published retrieval) are "
           "reported beside as retrieval_top1 / retrieval_shuffled_top1. Ideal: ceiling.json per_subject "
           "top1_retrieval (Gaussian likelihood under the true model) among the same test images.",
    "brain_diffuser": "test/<subject>/<target>/top1 for the CLIP-vision tokens (the vision guidance), control "
                      "test/<subject>/<target>/shuffled_top1; the VDVAE and CLIP-text targets are listed under "
                      "targets. Ideal: ceiling.json per_subject top1_retrieval among the same test images.",
    "atm": "test/<subject>/top1: zero-shot identification of each test concept's averaged EEG among all test "
           "images (n_way); control test/<subject>/shuffled_top1 (each trial scored against another trial's image) "
           "where the run reports it, else chance (1 / n_way). Ideal: ceiling.json per_subject top1_retrieval "
           "among the same test images.",
    "glim": "test/retrieval_top1: EEG-to-sentence retrieval top-1 within blocks of retrieval_block test trials "
            "reading distinct sentences (the runner's fixed-order blocks, retrieval_block = GLIM's 24; with fewer test "
            "sentences than that, one block of all of them; leftover trials are dropped); control "
            "test/retrieval_shuffled_top1 (each sentence against the EEG of a trial that read another sentence; "
            "test/retrieval_chance_top1 for runs without it). Ideal: ceiling.json top1_retrieval (mean over the "
            "subjects) among the same test sentences, in the simulator's MiniLM space.",
}


def fraction_of_ideal(score: float, chance: float, ideal: float) -> float | None:
    """``(score - chance) / (ideal - chance)``: 0 at chance, 1 at the ideal observer (None when ideal <= chance)."""
    if ideal - chance <= 1e-12:
        return None
    return round((score - chance) / (ideal - chance), 4)


def p_above_chance(score: float, chance: float, n: int) -> float:
    """One-sided binomial p-value of ``round(score * n)`` hits or more among ``n`` scored trials at rate ``chance``."""
    from scipy.stats import binom

    hits = int(round(score * n))
    return float(binom.sf(hits - 1, n, chance))


def _entry(score: float, control: float, chance: float, ideal: float, n_scored: int | None = None,
           **extra) -> dict:
    out = {"score": round(float(score), 4), "control": round(float(control), 4), "chance": round(float(chance), 4),
           "ideal": round(float(ideal), 4), "fraction_of_ideal": fraction_of_ideal(score, chance, ideal),
           "beats_control": bool(score > control), **extra}
    if n_scored is not None:  # how surprising the score is at chance (the trials are the test items, scored once)
        out["n_scored"] = int(n_scored)
        out["p_above_chance"] = float(f"{p_above_chance(score, chance, int(n_scored)):.3g}")
    return out


def summarise_run(kind: str, metrics: dict, ceiling: dict, target: str | None = None) -> dict:
    """Per-subject and mean score / control / chance / ideal / fraction from a run's metrics and ``ceiling.json``.

    Parameters
    ----------
    kind : {"nsd", "brain_diffuser", "atm", "glim"}
        How the runner names its test metrics (see ``MEASURES``).
    metrics : dict
        ``metrics.json["metrics"]`` of the run.
    ceiling : dict
        The simulator's ``ceiling.json``.
    target : str, optional
        Brain-Diffuser's latent key scored as the main target.

    Returns
    -------
    summary : dict
        ``subjects`` (per subject, or one pooled entry for GLIM) and the means ``score``, ``control``,
        ``chance``, ``ideal``, ``fraction_of_ideal`` (of the means), ``beats_control`` (every subject) and
        ``candidates`` (the run's vs the ideal observer's number of candidates).
    """
    per = ceiling["per_subject"]
    subjects: dict[str, dict] = {}
    if kind == "glim":
        chance = metrics["test/retrieval_chance_top1"]
        ideal = float(np.mean([v["top1_retrieval"] for v in per.values()]))
        n_scored = (int(metrics["test/retrieval_n_blocks"] * metrics["test/retrieval_block"])
                    if "test/retrieval_n_blocks" in metrics else None)
        top5 = {}
        if "test/retrieval_top5" in metrics:
            top5 = {"top5": round(metrics["test/retrieval_top5"], 4),
                    "top5_chance": round(metrics["test/retrieval_chance_top5"], 4)}
            if n_scored is not None:
                top5["top5_p_above_chance"] = float(f"{p_above_chance(top5['top5'], top5['top5_chance'], n_scored):.3g}")
        shuffled = "test/retrieval_shuffled_top1" in metrics  # runs before the control existed: chance
        subjects["all"] = _entry(metrics["test/retrieval_top1"], metrics.get("test/retrieval_shuffled_top1", chance),
                                 chance, ideal, n_candidates=int(metrics["test/retrieval_block"]),
                                 n_candidates_ideal=int(ceiling["n_test"]),
                                 control_kind="shuffled-brain" if shuffled else "chance", n_scored=n_scored, **top5)
    else:
        prefix = {"nsd": "test/nsd/", "brain_diffuser": "test/nsd/", "atm": "test/things-eeg2/"}[kind]
        names = sorted({k[len(prefix):].split("/")[0] for k in metrics if k.startswith(prefix)})
        for s in names:
            key = f"{prefix}{s}"
            chance = metrics[f"{key}/chance"]
            extra: dict = {"n_candidates": int(round(1.0 / chance)), "n_candidates_ideal": int(per[s]["n_test"])}
            if kind == "nsd":
                score, control = metrics[f"{key}/top1"], metrics[f"{key}/shuffled_top1"]
                extra["control_kind"] = "shuffled-brain"
                if f"{key}/retrieval_top1" in metrics:  # MindEye2's retrieval embeddings
                    extra["retrieval"] = _entry(metrics[f"{key}/retrieval_top1"],
                                                metrics[f"{key}/retrieval_shuffled_top1"], chance,
                                                per[s]["top1_retrieval"], n_scored=extra["n_candidates"])
            elif kind == "brain_diffuser":
                score, control = metrics[f"{key}/{target}/top1"], metrics[f"{key}/{target}/shuffled_top1"]
                extra["control_kind"] = "shuffled-brain"
                extra["targets"] = {k.split("/")[-2]: {"top1": round(v, 4),
                                                       "shuffled_top1": round(metrics[k[:-4] + "shuffled_top1"], 4)}
                                    for k, v in metrics.items() if k.startswith(key + "/") and k.endswith("/top1")}
            else:
                score = metrics[f"{key}/top1"]
                control = metrics.get(f"{key}/shuffled_top1", chance)
                extra["control_kind"] = "shuffled-brain" if f"{key}/shuffled_top1" in metrics else "chance"
                if f"{key}/top5" in metrics:
                    extra["top5"] = round(metrics[f"{key}/top5"], 4)
                if f"{key}/prior_top1" in metrics:
                    extra["prior_top1"] = round(metrics[f"{key}/prior_top1"], 4)
            # one scored trial per test item (repetitions averaged), each ranked among all test items
            subjects[s] = _entry(score, control, chance, per[s]["top1_retrieval"], n_scored=extra["n_candidates"],
                                 **extra)
    if not subjects:
        raise ValueError(f"no test metrics of kind {kind!r} in the run's metrics.json")
    mean = {k: float(np.mean([v[k] for v in subjects.values()])) for k in ("score", "control", "chance", "ideal")}
    pooled = [v.get("n_scored") for v in subjects.values()]  # equal counts per subject: the mean is the pooled rate
    out = _entry(**mean, n_scored=sum(pooled) if None not in pooled and len(set(pooled)) == 1 else None)
    out["beats_control"] = all(v["beats_control"] for v in subjects.values())
    if all("retrieval" in v for v in subjects.values()):  # MindEye2's retrieval space, summarised the same way
        r_mean = {k: float(np.mean([v["retrieval"][k] for v in subjects.values()]))
                  for k in ("score", "control", "chance", "ideal")}
        out["retrieval"] = _entry(**r_mean, n_scored=out.get("n_scored"))
        out["retrieval"]["beats_control"] = all(v["retrieval"]["beats_control"] for v in subjects.values())
    out["candidates"] = {"run": sorted({v["n_candidates"] for v in subjects.values()}),
                         "ideal": sorted({v["n_candidates_ideal"] for v in subjects.values()})}
    out["candidates"]["same_count"] = out["candidates"]["run"] == out["candidates"]["ideal"]
    out["subjects"] = subjects
    return out


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("neurodecode")
    return [str(exe)] if exe.is_file() else [sys.executable, "-c", "from neurodecode.cli import app; app()"]


def subprocess_env(tmp: Path) -> dict[str, str]:
    """Environment of the ``neurodecode`` subprocesses: offline, a fresh feature cache, one thread each
    (:data:`SUBPROCESS_THREADS`; a value already set in the environment wins)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NEURODECODE_OFFLINE": "1",
           "NEURODECODE_CACHE": str(tmp / "cache")}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, SUBPROCESS_THREADS)
    return env


def bench_decoders(tmp: Path, families: list[str], save=None) -> dict:
    """Simulate each dataset once (seed 0), train each family's recipe on it, summarise against its ceiling.

    ``save(out)``, when given, is called after each decoder (partial results survive an interruption).
    """
    env = subprocess_env(tmp)
    sims: dict[str, Path] = {}
    out: dict = {}
    for fam in families:
        spec = DECODERS[fam]
        ds = spec["dataset"]
        sim_opts = list(spec.get("simulate", []))
        sim_key = " ".join([ds, *sim_opts])  # one simulated dataset per (dataset, options)
        if sim_key not in sims:
            sims[sim_key] = tmp / f"sim-{ds}-{len(sims)}"
            subprocess.run([*_cli(), "simulate", ds, str(sims[sim_key]), "--seed", "0", *sim_opts], check=True,
                           env=env, stdout=subprocess.DEVNULL)
        sim_dir = sims[sim_key]
        ceiling = json.loads((sim_dir / "ceiling.json").read_text())
        recipe = spec.get("recipe", fam)
        run = tmp / f"run-{fam.replace('/', '-')}"
        cmd = [*_cli(), "train", str(ROOT / "pipelines" / f"{recipe}.toml"), "--data", str(sim_dir), "--out", str(run),
               "--preset", "tiny", "--device", "cpu", *[a for s in spec["sets"] for a in ("--set", s)]]
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        shown = ["neurodecode", *cmd[len(_cli()):]]
        shown = [("SIM" if a == str(sim_dir) else "RUN" if a == str(run) else
                  f"pipelines/{recipe}.toml" if a.endswith(f"{recipe}.toml") else a) for a in shown]
        if proc.returncode != 0:
            out[fam] = {"error": proc.stderr[-2000:], "command": " ".join(shown), "wall_s": round(wall, 1)}
            print(f"{fam}: FAILED\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        doc = json.loads((run / "metrics.json").read_text())
        summary = summarise_run(spec["kind"], doc["metrics"], ceiling, spec.get("target"))
        simulator = {"snr": ceiling.get("snr"), "seed": ceiling.get("seed")}
        if sim_opts:
            simulator["command"] = " ".join(["neurodecode", "simulate", ds, "SIM", "--seed", "0", *sim_opts])
            simulator.update({k: ceiling[k] for k in ("n_train_concepts", "images_per_concept", "train_repetitions",
                                                      "test_repetitions", "n_sentences") if k in ceiling})
        out[fam] = {"recipe": recipe, "dataset": ds, "simulator": simulator,
                    "command": " ".join(shown), "settings": {"preset": "tiny", "set": spec["sets"],
                                                             "steps": doc.get("steps")},
                    "measure": MEASURES[spec["kind"]], "wall_s": round(wall, 1),
                    **({"note": spec["note"]} if "note" in spec else {}),
                    "load_average_at_start": round(load0, 2), **summary}
        print(f"{fam}: score {summary['score']:.3f} control {summary['control']:.3f} chance {summary['chance']:.3f} "
              f"ideal {summary['ideal']:.3f} fraction {summary['fraction_of_ideal']} ({wall:.0f} s)", flush=True)
        if save is not None:
            save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snrs", type=float, nargs="+", default=[1.0, 0.3])
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=list(DECODERS))
    parser.add_argument("--skip-ridge", action="store_true", help="keep the stored ridge/ceiling entries")
    parser.add_argument("--skip-decoders", action="store_true", help="keep the stored decoder entries")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "known_answer.json")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass
    from neurodecode._core.files import write_json

    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result = dict(old)
    result.update({
        "benchmark": "known_answer",
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                    f"{platform.system()} (no GPU)",
        "python": platform.python_version(),
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
    })
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_ridge:
            t0 = time.perf_counter()
            result.update({"nsd": [bench_nsd(tmp, snr) for snr in args.snrs], "things-eeg2": bench_things_eeg2(tmp),
                           **bench_ceiling_only(tmp)})
            result["total_s"] = round(time.perf_counter() - t0, 1)
        if not args.skip_decoders:
            t0 = time.perf_counter()
            result.pop("decoders_total_s", None)  # the name of an earlier layout
            result["decoders_what"] = __doc__.split("\n\n")[4].replace("\n", " ")

            def save(new: dict) -> None:
                kept = {k: v for k, v in old.get("decoders", {}).items() if k in DECODERS}  # families no longer listed go
                result["decoders"] = {**kept, **new}
                result["decoders_s"] = round(time.perf_counter() - t0, 1)
                result["decoders_measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                write_json(args.out, result)

            save(bench_decoders(tmp, args.decoders, save))
    write_json(args.out, result)
    print(json.dumps(result.get("decoders", {}), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
