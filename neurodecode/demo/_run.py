"""The embedded demo: simulated brains -> cross-subject decoder -> shipped diffusion model -> report.

Everything runs offline on a laptop CPU in a few minutes:

1. real stimuli: the shipped Fashion-MNIST test-split subset (never seen by the demo models);
2. brains: the known-answer fMRI simulator writes an NSD-layout tree for two subjects
   (750 trials per session, 3 repeats per image, a shared test set);
3. targets: the shipped tiny CLIP's image tokens (VD-normalised), computed once;
4. decoder: a tiny MindBridge (per-subject adapters + shared translator) trained across both subjects
   with the one trainer; the same network trained on permuted trial labels is the shuffled-brain control;
5. reconstruction: the shipped pixel unCLIP draws each test image from the predicted tokens, written as
   a BIDS-style derivative;
6. evaluation: PixCorr, SSIM, two-way identification and zero-shot class accuracy in the tiny CLIP's
   space, token retrieval, each with a bootstrap CI, its chance level and the shuffled control, next to
   the simulator's ideal-observer ceiling; ``report.html`` + ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._core.device import resolve_device
from .._core.docs import fill_doc
from .._core.files import write_json
from .._core.logging import logger, use_log_level

__all__ = ["DemoSettings", "run_demo", "summary_lines"]


@dataclass
class DemoSettings:
    """Sizes of the demo run (defaults: the embedded demo, about 2-3 minutes on 2 CPU cores)."""

    subjects: tuple[int, ...] = (1, 2)
    n_sessions: int = 4
    n_test: int = 50
    n_voxels: int = 600
    snr: float = 1.0
    epochs: int = 20
    batch_size: int = 48
    lr: float = 3e-3
    #: MSE weight on the VD-normalised tokens. The paper's 1e4 suits 257 x 768 tokens, whose entries are
    #: ~30x smaller than those of the demo's 17 x 64 tokens; at 1e4-1e2 the MSE swamps SoftCLIP here and
    #: the decoder stays at chance (measured), at 1-10 it learns.
    mse_weight: float = 1.0
    width: int = 256
    pooled: int = 512
    steps: int = 15
    guidance: float = 2.0
    seed: int = 0


def _pad32(images: np.ndarray) -> np.ndarray:
    """Pad 28 x 28 Fashion-MNIST images to the demo models' 32 x 32 (black border, no resampling)."""
    h, w = images.shape[1:3]
    ph, pw = (32 - h) // 2, (32 - w) // 2
    return np.pad(images, ((0, 0), (ph, 32 - h - ph), (pw, 32 - w - pw), (0, 0)))


def _train_decoder(data: dict[str, dict[str, np.ndarray]], n_voxels: dict[str, int], token_shape: tuple[int, int],
                   s: DemoSettings, out_dir: Path, device: Any, verbose: Any) -> Any:
    import torch

    from ..models.mindbridge import MindBridge, MindBridgeConfig
    from ..train import MultiSubjectBatches, TrainConfig, Trainer

    torch.manual_seed(s.seed)
    config = MindBridgeConfig.tiny(subjects=n_voxels, pooled=s.pooled, bottleneck=32, width=s.width, n_blocks=2,
                                   image_tokens=list(token_shape), text_tokens=None, embed_dropout=0.3,
                                   block_dropout=0.1, mse_weight=s.mse_weight)
    model = MindBridge(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: one thread is fastest, and avoids spin-waits on a busy laptop
    batches = MultiSubjectBatches(data, batch_size=s.batch_size, subjects_per_step=min(2, len(data)))
    cfg = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, weight_decay=0.01, scheduler="onecycle",
                      seed=s.seed, device=str(device), checkpoint_every=None, log_every=50, verbose=verbose)
    try:
        Trainer(model, cfg, out_dir=out_dir).fit(batches, resume=False)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def restandardise(pred: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray) -> np.ndarray:
    """Brain-Diffuser's re-standardisation: give the predicted batch the training targets' mean and std.

    Regression shrinks predictions towards the mean; each feature of the predicted test batch is
    z-scored over items and rescaled to the training targets' statistics.

    Parameters
    ----------
    pred : ndarray of shape (n_items, ...)
        Predicted latents (at least 2 items).
    target_mean, target_std : ndarray of shape (...)
        Per-feature statistics of the training targets.
    """
    mu, sd = pred.mean(0), pred.std(0)
    return ((pred - mu) / np.where(sd > 0, sd, 1.0) * target_std + target_mean).astype(np.float32)


@fill_doc
def run_demo(out_dir: str | Path = "neurodecode-demo", settings: DemoSettings | None = None, *,
             device: Any = "cpu", verbose: Any = True) -> dict[str, Any]:
    """Run the embedded demo end to end and write the derivative, ``metrics.json`` and ``report.html``.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created; re-running overwrites the demo's outputs).
    settings : DemoSettings or None
        Sizes; the defaults are the embedded demo.
    device : str
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"`` for the decoder training and the generation.
    %(verbose)s

    Returns
    -------
    summary : dict
        ``metrics`` (the metrics.json content), ``report`` and ``metrics_path`` paths, ``seconds``.
    """
    import torch

    from ..data import load_nsd
    from ..metrics import bootstrap_ci, pixcorr, ssim, two_way_identification, write_report
    from ..recipes._derivative import output_paths
    from ..simulate import load_stimuli, simulate_nsd
    from ._assets import load_demo_clip, load_demo_diffusion, verify_demo_models

    s = settings or DemoSettings()
    dev = resolve_device(device)
    out = Path(out_dir)
    work = out / "work"
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    torch.set_num_threads(max(1, torch.get_num_threads()))

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 2)
        logger.info("demo: %s done (%.1f s)", name, timings[name])

    with use_log_level("info" if verbose else "warning"):
        checksums = verify_demo_models()
        images28, labels, class_names, captions = load_stimuli("fashion-mnist")
        stimuli = _pad32(images28)
        sim = simulate_nsd(work / "sim", subjects=s.subjects, n_sessions=s.n_sessions, n_shared=s.n_test,
                           n_voxels=s.n_voxels, snr=s.snr, seed=s.seed, image_size=32, stimuli=stimuli, labels=labels,
                           formats=("nifti",), verbose=False)
        lap("simulate")

        trials = {}
        for subj in s.subjects:
            t = load_nsd(sim.root, subj, verbose=False)
            trials[t.subject] = t
        lap("load")

        clip_tokens = load_demo_clip(output="image_tokens", normalize="vd")
        clip_pooled = load_demo_clip(output="image_pooled", normalize="l2")
        used = np.unique(np.concatenate([t.stimulus_ids for t in trials.values()]))
        token_of = dict(zip(used.tolist(), clip_tokens.encode_images(stimuli[used]), strict=True))
        lap("targets")

        rng = np.random.default_rng(s.seed)
        data, data_ctrl, n_vox = {}, {}, {}
        for sid, t in trials.items():
            tr = t.train
            y = np.stack([token_of[int(i)] for i in tr.stimulus_ids]).astype(np.float32)
            data[sid] = {"x": tr.X.astype(np.float32), "image_tokens": y}
            data_ctrl[sid] = {"x": tr.X.astype(np.float32), "image_tokens": y[rng.permutation(len(y))]}
            n_vox[sid] = tr.X.shape[1]
        token_shape = tuple(clip_tokens.shape)
        train_targets = np.concatenate([d["image_tokens"] for d in data.values()])
        target_mean, target_std = train_targets.mean(0), train_targets.std(0)
        decoder = _train_decoder(data, n_vox, token_shape, s, work / "train", dev, verbose)
        control = _train_decoder(data_ctrl, n_vox, token_shape, s, work / "train-control", dev, verbose)
        decoder.save_pretrained(out / "decoder", metadata={"subjects": list(trials), "demo": True})
        lap("train")

        diffusion = load_demo_diffusion(device=dev)
        results: dict[str, dict[str, Any]] = {}
        for sid, t in trials.items():
            te = t.test
            pred = restandardise(decoder.predict_latents(te.X, sid)["clip_image_tokens"], target_mean, target_std)
            pred_c = restandardise(control.predict_latents(te.X, sid)["clip_image_tokens"], target_mean, target_std)
            n = len(te)
            seeds = [s.seed * 100003 + int(i) for i in te.stimulus_ids]
            rec = diffusion.generate({"clip_image_tokens": pred}, seeds=seeds, steps=s.steps, guidance=s.guidance)
            rec_c = diffusion.generate({"clip_image_tokens": pred_c}, seeds=seeds, steps=s.steps,
                                       guidance=s.guidance)
            results[sid] = {"ids": te.stimulus_ids, "pred": pred, "pred_c": pred_c, "rec": rec, "rec_c": rec_c,
                            "truth": stimuli[te.stimulus_ids], "labels": labels[te.stimulus_ids], "n": n}
            from PIL import Image

            from .._core.files import atomic_path

            for i, stim in enumerate(te.stimulus_ids):
                path = output_paths(out, sid, int(stim), "demo")["image"]
                with atomic_path(path, suffix=".png") as tmp:
                    Image.fromarray(rec[i]).save(tmp, format="PNG")
        lap("reconstruct")

        # ---- evaluation (pooled over subjects; per-item scores)
        def cat(key: str) -> np.ndarray:
            return np.concatenate([r[key] for r in results.values()])

        rec, rec_c, truth, lab = cat("rec"), cat("rec_c"), cat("truth"), cat("labels")
        feats = {k: clip_pooled.encode_images(v) for k, v in (("rec", rec), ("rec_c", rec_c), ("truth", truth))}
        text_emb = _class_text_embeddings(class_names)
        acc = (feats["rec"] @ text_emb.T).argmax(1) == lab
        acc_c = (feats["rec_c"] @ text_emb.T).argmax(1) == lab
        per_subject_2way, per_subject_2way_c, retr, retr_c = [], [], [], []
        for r in results.values():
            true_tok = np.stack([token_of[int(i)] for i in r["ids"]])
            per_subject_2way.append(two_way_identification(clip_pooled.encode_images(r["rec"]),
                                                           clip_pooled.encode_images(r["truth"])))
            per_subject_2way_c.append(two_way_identification(clip_pooled.encode_images(r["rec_c"]),
                                                             clip_pooled.encode_images(r["truth"])))
            retr.append(_retrieval_hits(r["pred"], true_tok))
            retr_c.append(_retrieval_hits(r["pred_c"], true_tok))
        scores = {
            "class_accuracy": (acc.astype(float), acc_c.astype(float), 1.0 / len(class_names), True),
            "clip_two_way": (np.concatenate(per_subject_2way), np.concatenate(per_subject_2way_c), 0.5, True),
            "top1_token_retrieval": (np.concatenate(retr), np.concatenate(retr_c), 1.0 / s.n_test, True),
            "pixcorr": (pixcorr(rec, truth), pixcorr(rec_c, truth), 0.0, True),
            "ssim": (ssim(rec, truth), ssim(rec_c, truth), None, True),
        }
        metrics: dict[str, Any] = {}
        for name, (vals, ctrl, chance, hib) in scores.items():
            metrics[name] = {"value": float(np.mean(vals)), "ci": list(bootstrap_ci(vals, random_state=s.seed)),
                             "chance": chance, "shuffled": float(np.mean(ctrl)), "higher_is_better": hib,
                             "per_item": vals.tolist()}
        metrics["n_items"] = int(len(rec))
        metrics["weights"] = {
            name: {"tier": "demo", "source": "tiny CLIP shipped in neurodecode/assets/demo_models (trained on "
                                             "Fashion-MNIST train split)"} for name in ("class_accuracy", "clip_two_way")}
        metrics["ceiling"] = sim.ceiling
        metrics["metrics_version"] = "1.0-demo"
        metrics["protocol"] = {
            "note": "Simulated brains (known-answer NSD simulator) and miniature models; numbers do not compare with "
                    "the literature. 'shuffled' is the same decoder trained with permuted trial labels.",
            "seed": s.seed, "images": "32 x 32 Fashion-MNIST test-split images", "subjects": list(trials),
            "control": "the shuffled control is the same decoder trained with the trial labels permuted, its "
                       "predictions re-standardised and drawn by the same diffusion model with the same seeds"}
        lap("evaluate")
        provenance = {"settings": s.__dict__, "checksums": checksums, "timings": timings,
                      "postprocessing": "predicted tokens re-standardised per test batch to the training targets' "
                                        "mean and std (Brain-Diffuser)",
                      "simulation": str(sim.out), "decoder": str(out / "decoder")}
        metrics["provenance"] = provenance
        write_json(out / "metrics.json", {k: v for k, v in metrics.items() if k != "provenance"} | {
            k: {kk: vv for kk, vv in v.items() if kk != "per_item"} for k, v in metrics.items()
            if isinstance(v, dict) and "value" in v})
        write_json(out / "provenance.json", provenance)
        write_json(out / "dataset_description.json", {
            "Name": "neurodecode demo reconstructions", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "neurodecode", "Description": "embedded demo"}]})
        ids = [f"{sid.split('/')[-1]} stim {int(i)}" for sid, r in results.items() for i in r["ids"]]
        report = write_report(out / "report.html", metrics, rec, truth, item_ids=ids, provenance=provenance,
                              title="neurodecode demo: simulated brains decoded into pictures",
                              rank_metric="clip_two_way")
        seconds = time.perf_counter() - t0
    return {"metrics": json.loads((out / "metrics.json").read_text()), "report": report,
            "metrics_path": out / "metrics.json", "seconds": seconds}


def _retrieval_hits(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """1 where a predicted token set's nearest true token set (cosine, flattened) is its own."""
    p = pred.reshape(len(pred), -1)
    t = true.reshape(len(true), -1)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    return ((p @ t.T).argmax(1) == np.arange(len(p))).astype(float)


def _class_text_embeddings(class_names: Any) -> np.ndarray:
    """Zero-shot classifier of the tiny CLIP: mean of its prompt templates per class, L2-normalised."""
    from ._assets import demo_models_dir, load_demo_clip

    cfg = json.loads((demo_models_dir() / "clip" / "open_clip_config.json").read_text())
    names = cfg.get("class_names", list(class_names))
    templates = cfg.get("templates", ["a photo of a {}"])
    space = load_demo_clip(output="text_pooled", normalize="l2")
    emb = np.stack([space.encode_texts([tpl.format(c) for tpl in templates]).mean(0) for c in names])
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable lines summarising a :func:`run_demo` result (what the CLI prints)."""
    m = result["metrics"]
    lines = [f"neurodecode demo: {m['n_items']} test images of simulated subjects reconstructed "
             f"in {result['seconds']:.0f} s"]
    for name in ("class_accuracy", "clip_two_way", "top1_token_retrieval", "pixcorr", "ssim"):
        e = m.get(name)
        if not e:
            continue
        chance = "" if e.get("chance") is None else f", chance {e['chance']:.3f}"
        lines.append(f"  {name:<22} {e['value']:.3f}  (95% CI {e['ci'][0]:.3f}-{e['ci'][1]:.3f}; "
                     f"shuffled-brain control {e['shuffled']:.3f}{chance})")
    ceiling = m.get("ceiling", {})
    if "two_way_identification" in ceiling:
        lines.append(f"  ideal-observer ceiling: two-way {ceiling['two_way_identification']:.3f}, "
                     f"top-1 {ceiling.get('top1_retrieval', float('nan')):.3f} (brain-space, simulator)")
    lines.append(f"report: {result['report']}")
    lines.append(f"metrics: {result['metrics_path']}")
    return lines
