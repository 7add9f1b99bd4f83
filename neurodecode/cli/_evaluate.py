"""`neurodecode evaluate`: score reconstructions (images or decoded sentences), write metrics.json and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import fail, handle_errors, print_json

_KEYS = ("value", "ci", "chance", "shuffled")


def _entry(e: dict[str, Any]) -> dict[str, Any]:
    out = {k: e.get(k) for k in _KEYS}
    for k in ("reason", "value_finite_items", "nan_items"):
        if k in e:
            out[k] = e[k]
    return out


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """The --json document: per metric value / ci / chance / shuffled, plus n_items, weights, version.

    Images add ``"blended"`` (with --blurry), ``"retrieval"`` (predicted latents saved by reconstruct)
    and ``"constant_recons"`` (blank reconstructions), when there are any.
    """
    out: dict[str, Any] = {}
    for name, entry in result.items():
        if isinstance(entry, dict) and "value" in entry:
            out[name] = _entry(entry)
    if isinstance(result.get("blended"), dict):
        out["blended"] = {n: _entry(e) for n, e in result["blended"].items()}
    if isinstance(result.get("retrieval"), dict):
        ret = result["retrieval"]
        out["retrieval"] = {**{k: _entry(ret[k]) for k in ("image_retrieval", "brain_retrieval") if k in ret},
                            "n_way": ret.get("n_way"), "n_repeats": ret.get("n_repeats")}
    if (result.get("constant_recons") or {}).get("count"):
        out["constant_recons"] = result["constant_recons"]
    if isinstance(result.get("ablation"), dict):  # --ablate yeo7 (WAVE runs)
        out["ablation"] = result["ablation"]
    if isinstance(result.get("brain_correlation"), dict):  # --brain-correlation ENCODER_RUN
        bc = result["brain_correlation"]
        out["brain_correlation"] = {"protocol": bc["protocol"], "rois": bc["rois"], "n_items": bc["n_items"],
                                    "encoder": bc["encoder"], "model": bc["model"]}
    for key in ("n_items", "weights", "metrics_version"):
        out[key] = result[key]
    return out


def _kind(recons: Path, names: list[str]) -> str:
    """"text" or "image": from the metrics asked for, else from what the recons folder holds."""
    from ..metrics._evaluate import IMAGE_METRICS
    from ..metrics._sources import output_kind
    from ..metrics._text import TEXT_METRICS

    names = [m.split("@")[0] for m in names]
    unknown = [m for m in names if m not in IMAGE_METRICS and m not in TEXT_METRICS]
    if unknown:
        fail(f"--metrics: unknown metric(s) {', '.join(unknown)}; choose among {', '.join(IMAGE_METRICS)} (images) "
             f"or {', '.join(TEXT_METRICS)} (sentences)", 2)
    kinds = {"image" if m in IMAGE_METRICS else "text" for m in names}
    if len(kinds) > 1:
        fail("--metrics: image and text metrics mixed; score images and sentences in two runs", 2)
    return kinds.pop() if kinds else output_kind(recons)


def _provenance(recons: Path, truth: str) -> dict[str, Any]:
    import json

    from .._core.versions import package_versions

    provenance: dict[str, Any] = {"recons": str(recons.resolve()), "truth": truth, "command": "neurodecode evaluate"}
    prov_file = recons / "provenance.json"
    if prov_file.is_file():
        try:
            provenance["reconstruct"] = json.loads(prov_file.read_text(encoding="utf-8"))
        except ValueError:
            provenance["reconstruct"] = f"unreadable {prov_file}"
    provenance["versions"] = package_versions()
    return provenance


def _echo_rows(result: dict[str, Any], weights: dict[str, Any], prefix: str = "") -> None:
    for name, e in result.items():
        if not (isinstance(e, dict) and "value" in e):
            continue
        label = f"{prefix}{name}"
        if e.get("value") is None or e.get("ci") is None:
            typer.echo(f"{label:20s} {'n/a' if e.get('value') is None else e['value']}: {e.get('reason', '')}")
            continue
        shuffled = "n/a" if e.get("shuffled") is None else f"{e['shuffled']:.4f}"
        tier = (weights.get(name) or {}).get("tier", "none")
        typer.echo(f"{label:20s} {e['value']:.4f}  95% CI [{e['ci'][0]:.4f}, {e['ci'][1]:.4f}]  "
                   f"shuffled {shuffled}  ({tier} weights)")


def _print(result: dict[str, Any], out_dir: Path, json_out: bool) -> None:
    if json_out:
        print_json(_summary(result))
        return
    weights = result.get("weights", {})
    _echo_rows(result, weights)
    if isinstance(result.get("blended"), dict):
        _echo_rows(result["blended"], weights, "blended/")
    if isinstance(result.get("retrieval"), dict):
        _echo_rows(result["retrieval"], {}, f"{result['retrieval'].get('n_way')}-way/")
    constant = result.get("constant_recons") or {}
    if constant.get("count"):
        typer.echo(f"{constant['count']} blank (constant) reconstruction(s), scored as the protocol does: "
                   f"{', '.join(constant['ids'][:10])}", err=True)
    typer.echo(f"wrote {out_dir / 'report.html'} and {out_dir / 'metrics.json'}", err=True)


def _brain_correlation(recons: Path, run: Path, data: Path | None, subjects: list[str], model: str, n_boot: int,
                       seed: int, device: str) -> dict[str, Any]:
    """MindEye2's brain correlation of the reconstructions with a trained brain-encoder run (per ROI, with CIs),
    plus one report row per ROI (``brain_corr/<roi>``: value, CI, chance 0, shuffled control)."""
    from ..recipes._encoder import brain_correlation_report
    from ._common import resolve_data_root

    if model not in ("encoder", "ridge"):
        fail(f"--brain-model: expected encoder or ridge, got {model!r}", 2)
    root = resolve_data_root(data, "nsd", param="--data") if data is not None else None
    res = brain_correlation_report(recons, run, root, subjects or None, model=model, n_boot=n_boot, seed=seed,
                                   device=device)
    rows = {f"brain_corr/{roi}": {k: e[k] for k in ("value", "ci", "chance", "shuffled")}
            for roi, e in res["rois"].items()}
    return {"brain_correlation": res, **rows}


def _retrieval(recons: Path, n_boot: int, seed: int) -> dict[str, Any] | None:
    """Retrieval (MindEye2's columns) from the predicted latents reconstruct saved, per subject, then pooled."""
    import numpy as np

    from ..metrics import read_predicted_latents, retrieval_top1
    from ..metrics._evaluate import summarize

    files = [f for f in read_predicted_latents(recons) if f["target"] is not None]
    if not files:
        return None
    per_subject: dict[str, Any] = {}
    per_item: dict[str, list[Any]] = {"image_retrieval": [], "brain_retrieval": []}
    for f in files:
        res = retrieval_top1(f["predicted"], f["target"], n_way=300, n_repeats=30, random_state=seed)
        per_subject[f"sub-{f['subject']}"] = {k: res[k] for k in ("image_retrieval", "brain_retrieval", "n_way")}
        for k in per_item:
            per_item[k].append(res["per_item"][k])
        chance = res["chance"]
    out: dict[str, Any] = {}
    for k, parts in per_item.items():
        entry = summarize(np.concatenate(parts), chance=chance, n_boot=n_boot, random_state=seed)
        entry["value"] = float(np.mean([s[k] for s in per_subject.values()]))  # mean of the subjects' means
        out[k] = entry
    out.update({"per_subject": per_subject, "n_way": min(s["n_way"] for s in per_subject.values()),
                "n_repeats": 30, "source": [str(f["path"]) for f in files],
                "columns": "image_retrieval = MindEye2 FwdRetrieval (Image retrieval); "
                           "brain_retrieval = BwdRetrieval (Brain retrieval)"})
    return out


def _derivative_items(recons: Path, suffix: str) -> list[tuple[Path, str, str]]:
    """(file, subject label, stimulus id) of every ``sub-*/recon/*_stim-<id>_*{suffix}`` of a derivative."""
    import re

    files = sorted(recons.glob(f"sub-*/recon/*{suffix}"))
    out = []
    for f in files:
        m_sub, m_stim = re.search(r"sub-([A-Za-z0-9]+)", f.name), re.search(r"stim-([A-Za-z0-9]+)", f.name)
        if m_sub and m_stim:
            out.append((f, m_sub.group(1), m_stim.group(1)))
    if not out:
        fail(f"--recons: no sub-XX/recon/*{suffix} files under {recons} (the --out folder of `neurodecode "
             "reconstruct` on a recipe that writes them: takagi_nsd, brain_captioning_nsd, nvl_nsd)", 1)
    return out


def _caption_truth(truth: Path | None, stims: list[str]) -> tuple[list[list[str]], Any]:
    """Reference captions per stimulus (and the stimulus images for CLIP-S when ``truth`` is an NSD root)."""
    import json

    import numpy as np

    if truth is None:
        fail("--truth is needed to score captions: the NSD root (COCO captions through nsd_stim_info_merged.csv) "
             "or a JSON {\"<stim id>\": [\"caption\", ...]}", 2)
        raise AssertionError
    if truth.is_dir():
        from .._core.specs import load_spec
        from ..data import load_nsd_stimuli
        from ..recipes._targets import read_nsd_captions

        ann = load_spec("nsd")["paths"].get("captions") or [
            "nsddata_stimuli/stimuli/nsd/annotations/captions_train2017.json",
            "nsddata_stimuli/stimuli/nsd/annotations/captions_val2017.json"]
        files = [f for f in ([ann] if isinstance(ann, str) else ann) if (truth / f).is_file()]
        caps = read_nsd_captions(truth, files or ann)
        ids = [int(s) for s in stims]
        missing = [i for i in ids if not caps.get(i)]
        if missing:
            fail(f"--truth: no COCO caption for NSD ids {missing[:5]} under {truth}", 1)
        return [caps[i] for i in ids], load_nsd_stimuli(truth, np.asarray(ids))
    table = json.loads(truth.read_text(encoding="utf-8"))
    refs = []
    for s in stims:
        got = table.get(s, table.get(str(int(s)) if s.isdigit() else s))
        if not got:
            fail(f"--truth: no reference caption for stimulus {s!r} in {truth}", 1)
        refs.append([got] if isinstance(got, str) else [str(c) for c in got])
    return refs, None


def _depth_truth(truth: Path, stims: list[str]) -> Any:
    """True depth maps per stimulus: a simulated NSD tree (known-answer depth) or a folder of <stim id>.npy."""
    import numpy as np

    if truth.is_dir() and not any(truth.glob("*.npy")):
        from ..simulate import load_simulated_depth

        return load_simulated_depth(truth, np.asarray([int(s) for s in stims]))
    maps = []
    for s in stims:
        hits = sorted(truth.glob(f"*{s}*.npy"))
        if not hits:
            fail(f"--depth-truth: no {s}.npy in {truth}", 1)
        maps.append(np.load(hits[0], allow_pickle=False))
    return np.stack(maps)


def _score_captions(recons: Path, truth: Path | None, depth_truth: Path | None, names: list[str], weights: str,
                    n_boot: int, seed: int, device: str, out_dir: Path, json_out: bool) -> None:
    """Decoded captions (``*_caption.txt``) with the coco-caption protocol, and decoded depth maps when asked."""
    import numpy as np

    from .._core.files import write_json
    from ..metrics import evaluate_captions, evaluate_depth, write_report
    from ..metrics._captions import CAPTION_DEFAULT_METRICS, CAPTION_METRICS
    from ..metrics._sources import describe_source

    unknown = [m for m in names if m not in CAPTION_METRICS]
    if unknown:
        fail(f"--metrics: unknown caption metric(s) {', '.join(unknown)}; choose among {', '.join(CAPTION_METRICS)}", 2)
    items = _derivative_items(recons, "_caption.txt")
    stims = [stim for _, _, stim in items]
    hyps = [f.read_text(encoding="utf-8").strip() for f, _, _ in items]
    refs, images = _caption_truth(truth, stims)
    chosen = names or [*CAPTION_DEFAULT_METRICS, *(["clip_s"] if images is not None else [])]
    result = evaluate_captions(hyps, refs, images=images, metrics=chosen, weights=weights, n_boot=n_boot,
                               random_state=seed, device=device)
    ids = [f"sub-{sub}/stim-{stim}" for _, sub, stim in items]
    provenance = _provenance(recons, describe_source(truth) if truth is not None else "none")
    if depth_truth is not None:
        d_items = _derivative_items(recons, "_depth.npy")
        pred = np.stack([np.load(f, allow_pickle=False) for f, _, _ in d_items])
        true = _depth_truth(depth_truth, [stim for _, _, stim in d_items])
        if true.shape[1:] != pred.shape[1:]:
            import torch

            true = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(true, np.float32))[:, None],
                                                   size=pred.shape[1:], mode="bilinear", align_corners=False)[:, 0].numpy()
        result["depth"] = evaluate_depth(pred, true, n_boot=n_boot, random_state=seed)
        provenance["depth_truth"] = describe_source(depth_truth)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", {**result, "outputs": "captions", "item_ids": ids, "hypotheses": hyps,
                                          "references": refs, "provenance": provenance})
    write_report(out_dir / "report.html", result, item_ids=ids, texts=(hyps, [r[0] for r in refs]),
                 provenance=provenance, title=f"neurodecode evaluation: {recons.name} (captions)")
    if json_out:
        summary = _summary(result)
        if "depth" in result:
            summary["depth"] = {k: _entry(v) for k, v in result["depth"].items() if isinstance(v, dict) and "value" in v}
        print_json(summary)
        return
    _echo_rows(result, result.get("weights", {}))
    if "depth" in result:
        _echo_rows(result["depth"], {}, "depth/")
    typer.echo(f"wrote {out_dir / 'report.html'} and {out_dir / 'metrics.json'}", err=True)


def register(app: typer.Typer) -> None:
    @app.command("evaluate", help="Score reconstructions (images, or decoded sentences) against their ground truth "
                                  "and write the report.")
    @handle_errors
    def evaluate(
        recons: Path = typer.Option(..., "--recons", help="Folder of reconstructions, or a reconstruct output folder "
                                                          "(images, or GLIM's *_recon.txt sentences)."),
        truth: Path | None = typer.Option(None, "--truth", help="Images: NSD stimuli HDF5 (imgBrick) or a folder of "
                                                                "ground-truth images paired by file stem / stim-<id> "
                                                                "(THINGS: the test image folder). Sentences: a "
                                                                "references.tsv or JSON {stim_id: sentence} "
                                                                "(default: RECONS/references.tsv)."),
        metrics: str | None = typer.Option(None, "--metrics", help="Comma-separated metrics (default: pixcorr,ssim,"
                                                                   "alex2,alex5,incep,clip,effnet,swav for images; "
                                                                   "bleu1-4,rouge1_p/r/f,wer for sentences)."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
        out: Path | None = typer.Option(None, "--out", help="Where report.html and metrics.json go "
                                                            "(default: the recons folder)."),
        weights: str = typer.Option("real", "--weights", help="Feature-network weights: real | random (smoke runs)."),
        weights_dir: Path | None = typer.Option(None, "--weights-dir", help="Folder with the torchvision/SwAV "
                                                                           "weight files (default: torch hub cache)."),
        n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and the controls."),
        device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda or cuda:N."),
        protocol: str | None = typer.Option(None, "--protocol", help="Images: mindeye2 (default) | brain-diffuser. "
                                                                     "Sentences: corpus (default) | glim (GLIM's "
                                                                     "per-sentence scores vs paraphrases and raw). "
                                                                     "Captions of images (*_caption.txt): "
                                                                     "coco-captions (--truth: the NSD root or a "
                                                                     "JSON of reference captions)."),
        depth_truth: Path | None = typer.Option(None, "--depth-truth", help="With --protocol coco-captions: score "
                                                                            "the decoded *_depth.npy maps against a "
                                                                            "simulated NSD tree's depth or a folder "
                                                                            "of <stim id>.npy."),
        blurry: Path | None = typer.Option(None, "--blurry", help="Folder of MindEye2's blurry low-level "
                                                                  "reconstructions (paired by sub/stim): the 0.75 / "
                                                                  "0.25 blend is scored too, beside the plain one."),
        paraphrases: Path | None = typer.Option(None, "--paraphrases", help="Sentences: a paraphrase table (.tsv/"
                                                                            ".csv/.json keyed by the sentence read, "
                                                                            "e.g. GLIM's released table as CSV) "
                                                                            "merged into the references."),
        ablate: str | None = typer.Option(None, "--ablate", help="yeo7: network ablation of a WAVE run "
                                                                 "(--checkpoint RUN): the drop in test retrieval "
                                                                 "with each Yeo-7 network masked, with CIs."),
        checkpoint: Path | None = typer.Option(None, "--checkpoint", help="With --ablate: the WAVE run folder."),
        data: Path | None = typer.Option(None, "--data", help="With --ablate: the BOLD5000 root (default: the "
                                                              "run's). With --brain-correlation: the NSD root "
                                                              "(default: the encoder run's)."),
        brain_correlation: Path | None = typer.Option(None, "--brain-correlation",
                                                      help="A brain-encoder run (pipelines/brain_encoder_nsd.toml): "
                                                           "encode each reconstruction and correlate it with the "
                                                           "measured test response per ROI (MindEye2's GNet-style "
                                                           "brain correlation, our encoder as GNet), with CIs."),
        brain_model: str = typer.Option("encoder", "--brain-model", help="With --brain-correlation: encoder "
                                                                        "(the transformer) or ridge (its baseline)."),
        subject: list[str] = typer.Option([], "--subject", help="With --brain-correlation: the NSD subject(s) "
                                                                "(default: every sub-XX of RECONS the encoder run "
                                                                "has)."),
    ) -> None:
        from .._core.files import write_json
        from ..metrics import evaluate_reconstructions, evaluate_text, write_report
        from ..metrics._evaluate import IMAGE_METRICS, IMAGE_PROTOCOLS, TEXT_DEFAULT_METRICS
        from ..metrics._sources import describe_source, load_by_ids, load_pairs, load_text_pairs
        from ..metrics._text import TEXT_PROTOCOLS

        names = [m.strip() for m in (metrics or "").split(",") if m.strip()]
        if metrics is not None and not names:
            fail("--metrics: no metric given; omit --metrics for the default protocol", 2)
        if weights not in ("real", "random"):
            fail(f"--weights: expected real or random, got {weights!r}", 2)
        if subject and brain_correlation is None:
            fail("--subject: only with --brain-correlation ENCODER_RUN", 2)
        if brain_correlation is not None and not (brain_correlation / "recipe.json").is_file():
            fail(f"--brain-correlation: {brain_correlation} is not a brain-encoder run (no recipe.json; the --out "
                 "folder of `neurodecode train pipelines/brain_encoder_nsd.toml`)", 2)
        if protocol == "coco-captions":
            _score_captions(recons, truth, depth_truth, names, weights, n_boot, seed, device, out or recons, json_out)
            return
        if depth_truth is not None:
            fail("--depth-truth: decoded depth maps are scored with --protocol coco-captions", 2)
        kind = _kind(recons, names)
        out_dir = out or recons
        if kind == "text":
            protocol = protocol or "corpus"
            if protocol not in TEXT_PROTOCOLS:
                fail(f"--protocol: expected {' or '.join(TEXT_PROTOCOLS)} for sentences, got {protocol!r}", 2)
            if blurry is not None:
                fail("--blurry: blurry low-level images only apply to image reconstructions", 2)
            names = names or list(TEXT_DEFAULT_METRICS)
            hyps, refs, ids = load_text_pairs(recons, truth, paraphrases=paraphrases)
            result = evaluate_text(hyps, refs, metrics=names, weights=weights, protocol=protocol, n_boot=n_boot,
                                   random_state=seed, device=device)
            provenance = _provenance(recons, describe_source(truth or recons / "references.tsv"))
            if paraphrases is not None:
                provenance["paraphrases"] = describe_source(paraphrases)
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json(out_dir / "metrics.json", {**result, "outputs": "text", "item_ids": ids, "hypotheses": hyps,
                                                  "references": refs, "provenance": provenance})
            write_report(out_dir / "report.html", result, item_ids=ids, texts=(hyps, refs), provenance=provenance,
                         title=f"neurodecode evaluation: {recons.name}")
            _print(result, out_dir, json_out)
            return
        protocol = protocol or "mindeye2"
        if protocol not in IMAGE_PROTOCOLS:
            fail(f"--protocol: expected {' or '.join(IMAGE_PROTOCOLS)} for images, got {protocol!r}", 2)
        if paraphrases is not None:
            fail("--paraphrases: paraphrases only apply to decoded sentences", 2)
        names = names or list(IMAGE_METRICS)
        if truth is None and brain_correlation is not None:  # NSD reconstructions: the root's stimuli
            from .._core.specs import load_spec
            from ._common import resolve_data_root

            nsd = resolve_data_root(data, "nsd", param="--data") if data is not None else None
            if nsd is None:
                import json

                prov = brain_correlation / "provenance.json"
                got = json.loads(prov.read_text(encoding="utf-8")).get("data_root") if prov.is_file() else None
                nsd = Path(got) if got else None
            if nsd is not None:
                truth = nsd / load_spec("nsd")["paths"]["stimuli"]
        if truth is None:
            fail("--truth is needed to score images: the NSD stimuli HDF5 (nsd_stimuli.hdf5) or a folder of the "
                 "ground-truth images (THINGS: ROOT/image_set/test_images or ROOT/stimuli/images_test_meg)", 2)
            return
        r, t, ids = load_pairs(recons, truth)
        b = load_by_ids(blurry, ids, "blurry") if blurry is not None else None
        result = evaluate_reconstructions(r, t, metrics=names, weights=weights, weights_dir=weights_dir,
                                          protocol=protocol, blurry=b, item_ids=ids, n_boot=n_boot,
                                          random_state=seed, device=device)
        retrieval = _retrieval(recons, n_boot, seed)
        if retrieval is not None:
            result["retrieval"] = retrieval
        if ablate is not None:
            if ablate != "yeo7" or checkpoint is None:
                fail("--ablate: expected `--ablate yeo7 --checkpoint RUN` (a WAVE run folder)", 2)
            from ..recipes._wave import ablate_run
            from ._common import resolve_data_root

            root = resolve_data_root(data, "bold5000", param="--data") if data is not None else None
            result["ablation"] = ablate_run(checkpoint, root, n_boot=n_boot, seed=seed, device=device)
        if brain_correlation is not None:
            result.update(_brain_correlation(recons, brain_correlation, data, subject, brain_model, n_boot, seed,
                                             device))
        provenance = _provenance(recons, describe_source(truth))
        if blurry is not None:
            provenance["blurry"] = describe_source(blurry)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "metrics.json", {**result, "item_ids": ids, "provenance": provenance})
        figures = [(f.stem.replace("_", " ").capitalize(), f) for f in sorted((recons / "figures").glob("*.png"))]
        write_report(out_dir / "report.html", result, r, t, item_ids=ids, provenance=provenance,
                     title=f"neurodecode evaluation: {recons.name}", figures=figures)
        _print(result, out_dir, json_out)
