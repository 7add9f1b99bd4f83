"""`neurodecode evaluate`: score reconstructions, write metrics.json and report.html."""

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


def register(app: typer.Typer) -> None:
    @app.command("evaluate", help="Score reconstructions against their ground truth and write the report.")
    @handle_errors
    def evaluate(
        recons: Path = typer.Option(..., "--recons", help="Folder of reconstructions, or a reconstruct output folder."),
        truth: Path = typer.Option(..., "--truth", help="NSD stimuli HDF5 (imgBrick) or a folder of ground-truth "
                                                        "images paired by file stem / stim-<id>."),
        metrics: str = typer.Option("pixcorr,ssim,alex2,alex5,incep,clip,effnet,swav", "--metrics",
                                    help="Comma-separated metrics."),
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
        from ..metrics import evaluate_reconstructions, write_report
        from ..metrics._evaluate import IMAGE_METRICS
        from ..metrics._sources import describe_source, load_pairs

        names = [m.strip() for m in metrics.split(",") if m.strip()]
        unknown = [m for m in names if m not in IMAGE_METRICS]
        if unknown or not names:
            fail(f"--metrics: unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                 f"choose among {', '.join(IMAGE_METRICS)}", 2)
        if weights not in ("real", "random"):
            fail(f"--weights: expected real or random, got {weights!r}", 2)
        r, t, ids = load_pairs(recons, truth)
        result = evaluate_reconstructions(r, t, metrics=names, weights=weights, weights_dir=weights_dir,
                                          n_boot=n_boot, random_state=seed, device=device)
        provenance: dict[str, Any] = {"recons": str(recons.resolve()), "truth": describe_source(truth),
                                      "command": "neurodecode evaluate"}
        prov_file = recons / "provenance.json"
        if prov_file.is_file():
            import json

            try:
                provenance["reconstruct"] = json.loads(prov_file.read_text(encoding="utf-8"))
            except ValueError:
                provenance["reconstruct"] = f"unreadable {prov_file}"
        from .._core.files import write_json
        from .._core.versions import package_versions

        provenance["versions"] = package_versions()
        out_dir = out or recons
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "metrics.json", {**result, "item_ids": ids, "provenance": provenance})
        write_report(out_dir / "report.html", result, r, t, item_ids=ids, provenance=provenance,
                     title=f"neurodecode evaluation: {recons.name}")
        if json_out:
            print_json(_summary(result))
        else:
            for name in names:
                e = result[name]
                shuffled = "n/a" if e["shuffled"] is None else f"{e['shuffled']:.4f}"
                typer.echo(f"{name:8s} {e['value']:.4f}  95% CI [{e['ci'][0]:.4f}, {e['ci'][1]:.4f}]  "
                           f"shuffled {shuffled}  ({result['weights'][name]['tier']} weights)")
            typer.echo(f"wrote {out_dir / 'report.html'} and {out_dir / 'metrics.json'}", err=True)
