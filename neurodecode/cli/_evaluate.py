"""`neurodecode evaluate`: score reconstructions (images or decoded sentences), write metrics.json and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import fail, handle_errors, print_json


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """The --json document: per metric value / ci / chance / shuffled, plus n_items, weights, version."""
    out: dict[str, Any] = {}
    for name, entry in result.items():
        if isinstance(entry, dict) and "value" in entry:
            out[name] = {k: entry.get(k) for k in ("value", "ci", "chance", "shuffled")}
    if isinstance(result.get("blended"), dict):
        out["blended"] = {n: {k: e.get(k) for k in ("value", "ci", "chance", "shuffled")}
                          for n, e in result["blended"].items()}
    for key in ("n_items", "weights", "metrics_version"):
        out[key] = result[key]
    return out


def _kind(recons: Path, names: list[str]) -> str:
    """"text" or "image": from the metrics asked for, else from what the recons folder holds."""
    from ..metrics._evaluate import IMAGE_METRICS
    from ..metrics._sources import output_kind
    from ..metrics._text import TEXT_METRICS

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


def _print(result: dict[str, Any], names: list[str], out_dir: Path, json_out: bool) -> None:
    if json_out:
        print_json(_summary(result))
        return
    for name in names:
        e = result[name]
        if e.get("value") is None:
            typer.echo(f"{name:8s} unavailable: {e.get('reason', '')}")
            continue
        shuffled = "n/a" if e["shuffled"] is None else f"{e['shuffled']:.4f}"
        typer.echo(f"{name:8s} {e['value']:.4f}  95% CI [{e['ci'][0]:.4f}, {e['ci'][1]:.4f}]  "
                   f"shuffled {shuffled}  ({result['weights'][name]['tier']} weights)")
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
    ) -> None:
        from .._core.files import write_json
        from ..metrics import evaluate_reconstructions, evaluate_text, write_report
        from ..metrics._evaluate import IMAGE_METRICS, TEXT_DEFAULT_METRICS
        from ..metrics._sources import describe_source, load_pairs, load_text_pairs

        names = [m.strip() for m in (metrics or "").split(",") if m.strip()]
        if metrics is not None and not names:
            fail("--metrics: no metric given; omit --metrics for the default protocol", 2)
        if weights not in ("real", "random"):
            fail(f"--weights: expected real or random, got {weights!r}", 2)
        kind = _kind(recons, names)
        out_dir = out or recons
        if kind == "text":
            names = names or list(TEXT_DEFAULT_METRICS)
            hyps, refs, ids = load_text_pairs(recons, truth)
            result = evaluate_text(hyps, refs, metrics=names, weights=weights, n_boot=n_boot, random_state=seed,
                                   device=device)
            provenance = _provenance(recons, describe_source(truth or recons / "references.tsv"))
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json(out_dir / "metrics.json", {**result, "outputs": "text", "item_ids": ids, "hypotheses": hyps,
                                                  "references": refs, "provenance": provenance})
            write_report(out_dir / "report.html", result, item_ids=ids, texts=(hyps, refs), provenance=provenance,
                         title=f"neurodecode evaluation: {recons.name}")
            _print(result, names, out_dir, json_out)
            return
        names = names or list(IMAGE_METRICS)
        if truth is None:
            fail("--truth is needed to score images: the NSD stimuli HDF5 (nsd_stimuli.hdf5) or a folder of the "
                 "ground-truth images (THINGS: ROOT/image_set/test_images or ROOT/stimuli/images_test_meg)", 2)
            return
        r, t, ids = load_pairs(recons, truth)
        result = evaluate_reconstructions(r, t, metrics=names, weights=weights, weights_dir=weights_dir,
                                          n_boot=n_boot, random_state=seed, device=device)
        provenance = _provenance(recons, describe_source(truth))
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "metrics.json", {**result, "item_ids": ids, "provenance": provenance})
        write_report(out_dir / "report.html", result, r, t, item_ids=ids, provenance=provenance,
                     title=f"neurodecode evaluation: {recons.name}")
        _print(result, names, out_dir, json_out)
