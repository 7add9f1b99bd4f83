"""A self-contained HTML report: pictures (or sentences) first, then numbers with CIs and controls, then provenance.

Every image is embedded as a base64 PNG, so the file can be mailed or attached to a
lab notebook on its own. Published numbers sit beside ours in bar charts; a run that
used random feature-network weights says so in a banner at the top. A text evaluation
(:func:`~neurodecode.metrics.evaluate_text`) shows the first decoded sentences beside their
references instead of pictures.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._core.files import _json_default, atomic_write
from ._image import as_float_images, resize_images

__all__ = ["PUBLISHED", "PUBLISHED_EEG", "PUBLISHED_ROWS", "published_rows", "render_report", "write_report"]

#: Published numbers, each row with the protocol it was computed under and its source. The report
#: plots only the rows of the evaluation's own protocol (like with like). Two-way identification
#: and retrieval as fractions.
PUBLISHED_ROWS: list[dict[str, Any]] = [
    {"name": "MindEye2 (40 sessions)", "protocol": "mindeye2",
     "source": "Scotti et al., ICML 2024, Table 1 (specs/decoders.md)",
     "values": {"pixcorr": 0.322, "ssim": 0.431, "alex2": 0.961, "alex5": 0.986, "incep": 0.954, "clip": 0.930,
                "effnet": 0.619, "swav": 0.344, "image_retrieval": 0.988, "brain_retrieval": 0.983}},
    {"name": "MindEye2 (1 hour)", "protocol": "mindeye2",
     "source": "Scotti et al., ICML 2024, Table 1 (specs/decoders.md)",
     "values": {"pixcorr": 0.195, "ssim": 0.419, "alex2": 0.842, "alex5": 0.906, "incep": 0.812, "clip": 0.792,
                "effnet": 0.810, "swav": 0.468, "image_retrieval": 0.790, "brain_retrieval": 0.574}},
    {"name": "Brain-Diffuser (MindEye2's recomputation)", "protocol": "mindeye2",
     "source": "Brain-Diffuser's reconstructions scored with MindEye2's evaluation, Scotti et al., ICML 2024, "
               "Table 1 (specs/reference-details.md)",
     "values": {"pixcorr": 0.273, "ssim": 0.365, "alex2": 0.944, "alex5": 0.966, "incep": 0.913, "clip": 0.909,
                "effnet": 0.728, "swav": 0.421}},
    {"name": "MindBridge", "protocol": "mindeye2",
     "source": "Wang et al., CVPR 2024, Table 1 (multi-subject); MindEye's evaluation",
     "values": {"pixcorr": 0.151, "ssim": 0.263, "alex2": 0.877, "alex5": 0.955, "incep": 0.924, "clip": 0.947,
                "effnet": 0.712, "swav": 0.418}},
    {"name": "Brain-Diffuser (own paper)", "protocol": "brain-diffuser",
     "source": "Ozcelik & VanRullen, Sci Rep 2023, Table 1 (its own scripts/evaluate_reconstruction.py)",
     "values": {"pixcorr": 0.254, "ssim": 0.356, "alex2": 0.942, "alex5": 0.962, "incep": 0.872, "clip": 0.915,
                "effnet": 0.775, "swav": 0.423}},
    {"name": "ATM (within subject)", "protocol": "atm", "source": "Li et al., NeurIPS 2024 (specs/decoders.md)",
     "values": {"top1@200": 0.285, "top5@200": 0.604}},
    {"name": "ATM (across subjects)", "protocol": "atm", "source": "Li et al., NeurIPS 2024 (specs/decoders.md)",
     "values": {"top1@200": 0.118, "top5@200": 0.336}},
    {"name": "GLIM (released test outputs)", "protocol": "glim",
     "source": "GLIM's released test outputs scored per sentence (specs/decoders.md)",
     "values": {"bleu1@paraphrases": 0.260, "bleu1@raw": 0.078}},
    # Captions of NSD test images vs their COCO captions (coco-caption + CLIP-S; tables print x 100)
    {"name": "Brain Captioning", "protocol": "coco-captions",
     "source": "Ferrante et al. 2023, as reported in NVL (Shen et al., NeurIPS 2024) Table 1, values derived from "
               "UMBRAE (specs/seed-systems.md 3)",
     "values": {"bleu1": 0.5596, "bleu2": 0.3621, "bleu3": 0.2270, "bleu4": 0.1451, "meteor": 0.1668,
                "rougeL": 0.4069, "cider": 0.4130, "spice": 0.0906, "clip_s": 0.6431}},
    {"name": "Takagi & Nishimoto (SDRecon, BLIP captions)", "protocol": "coco-captions",
     "source": "NVL (Shen et al., NeurIPS 2024) Table 1, via UMBRAE (specs/seed-systems.md 2)",
     "values": {"bleu1": 0.3621, "bleu4": 0.0343, "meteor": 0.1003, "rougeL": 0.2513, "cider": 0.1383,
                "spice": 0.0502, "clip_s": 0.6107}},
    {"name": "NVL", "protocol": "coco-captions",
     "source": "Shen et al., NeurIPS 2024, Table 1, vs COCO captions (specs/seed-systems.md 5)",
     "values": {"bleu1": 0.5719, "bleu4": 0.1585, "meteor": 0.1860, "rougeL": 0.3667, "cider": 0.4951,
                "spice": 0.1239, "clip_s": 0.6549}},
    {"name": "UMBRAE", "protocol": "coco-captions",
     "source": "Xia et al., ECCV 2024, as reported in NVL Table 1 (specs/seed-systems.md 3)",
     "values": {"bleu1": 0.5784, "bleu4": 0.1717, "meteor": 0.1870, "cider": 0.5387}},
]

#: Backwards-compatible views: the rows of each protocol as {name: values}.
PUBLISHED: dict[str, dict[str, float]] = {r["name"]: r["values"] for r in PUBLISHED_ROWS
                                          if r["protocol"] == "mindeye2"}
PUBLISHED_EEG: dict[str, dict[str, float]] = {r["name"]: r["values"] for r in PUBLISHED_ROWS
                                              if r["protocol"] == "atm"}


def published_rows(protocol: str) -> list[dict[str, Any]]:
    """The published rows computed under ``protocol`` (``"mindeye2"``, ``"brain-diffuser"``, ``"atm"``, ``"glim"``)."""
    return [r for r in PUBLISHED_ROWS if r["protocol"] == protocol]


_LABELS = {"pixcorr": "PixCorr", "ssim": "SSIM", "alex2": "Alex(2)", "alex5": "Alex(5)", "incep": "Incep",
           "clip": "CLIP", "effnet": "EffNet-B (dist.)", "swav": "SwAV (dist.)",
           "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "rouge1_p": "ROUGE-1 P",
           "rouge1_r": "ROUGE-1 R", "rouge1_f": "ROUGE-1 F", "rougeL_f": "ROUGE-L F", "wer": "WER (lower is better)",
           "meteor": "METEOR", "sentence_sim": "Sentence similarity", "clip_text_sim": "CLIP-text similarity",
           "image_retrieval": "Image retrieval (MindEye2 FwdRetrieval)",
           "brain_retrieval": "Brain retrieval (MindEye2 BwdRetrieval)",
           "rougeL": "ROUGE-L (coco-caption)", "cider": "CIDEr-D", "spice": "SPICE", "clip_s": "CLIP-S"}


def _label(name: str) -> str:
    base, _, variant = name.partition("@")
    label = _LABELS.get(base, base)
    return f"{label} @{variant}" if variant else label
_THUMB = 112

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.banner{background:#fff3cd;border:1px solid #e0c36c;padding:.7em 1em;border-radius:4px}
.bad{color:#a40000;font-weight:600}img{max-width:100%}pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.85em}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
"""


def _png_data_uri(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(*args: Any, **kwargs: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _pairs_grid(truth: np.ndarray, recons: np.ndarray, idx: list[int], labels: list[str]) -> str:
    n = len(idx)
    fig, axes = _figure(2, n, figsize=(1.25 * n + 0.6, 2.9), squeeze=False)
    for col, i in enumerate(idx):
        for row, (imgs, name) in enumerate(((truth, "truth"), (recons, "recon"))):
            ax = axes[row][col]
            ax.imshow(imgs[i])
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name)
        axes[0][col].set_title(labels[col], fontsize=7)
    return _png_data_uri(fig)


def _metric_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(k, v) for k, v in result.items() if isinstance(v, dict) and "value" in v]


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v, pct) for v in x) + "]"
    return f"{100 * float(x):.1f} %" if pct else f"{float(x):.3f}"


def _table(result: dict[str, Any], weights: dict[str, Any]) -> str:
    head = ("<table><thead><tr><th>metric</th><th>value</th><th>95 % CI</th><th>chance</th><th>shuffled control</th>"
            "<th>beats control</th><th>size (px)</th><th>weights</th></tr></thead><tbody>")
    rows = []
    for name, e in _metric_rows(result):
        pct = name in ("alex2", "alex5", "incep", "clip", "image_retrieval", "brain_retrieval") or name.startswith("top")
        if e.get("value") is None or (isinstance(e.get("value"), float) and np.isnan(e["value"])):
            extra = ""
            if e.get("value_finite_items") is not None:
                extra = f" (mean over the other items: {_fmt(e['value_finite_items'], pct)}; " \
                        f"items without a score: {html.escape(', '.join(map(str, e.get('nan_items', [])[:10])))})"
            rows.append(f"<tr><td>{html.escape(_label(name))}</td><td colspan='7'><span class='bad'>"
                        f"{'NaN' if e.get('value') is not None else 'unavailable'}</span>: "
                        f"{html.escape(str(e.get('reason', '')))}{extra}</td></tr>")
            continue
        better = None
        if e.get("shuffled") is not None:
            better = e["value"] > e["shuffled"] if e.get("higher_is_better", True) else e["value"] < e["shuffled"]
        beats = "n/a" if better is None else ("yes" if better else "<span class='bad'>NO</span>")
        tier = weights.get(name, {}).get("tier", "") if isinstance(weights.get(name), dict) else ""
        tier_html = f"<span class='bad'>{tier}</span>" if tier == "random" else html.escape(str(tier))
        rows.append(
            f"<tr><td>{html.escape(_label(name))}</td><td>{_fmt(e['value'], pct)}</td>"
            f"<td>{_fmt(e.get('ci'), pct)}</td><td>{_fmt(e.get('chance'), pct)}</td>"
            f"<td>{_fmt(e.get('shuffled'), pct)}</td><td>{beats}</td><td>{html.escape(str(e.get('size', '')))}</td>"
            f"<td>{tier_html}</td></tr>"
        )
    return head + "".join(rows) + "</tbody></table>"


def _text_table(hyps: list[str], refs: list[Any], ids: list[str], per_item: Any, key: str | None, n: int) -> str:
    """The first ``n`` decoded sentences beside their reference(s) (and their score under ``key``)."""
    score_head = f"<th>{html.escape(_label(key))}</th>" if key else ""
    rows = []
    for i in range(min(n, len(hyps))):
        ref = refs[i] if isinstance(refs[i], str) else " | ".join(refs[i])
        score = f"<td>{_fmt(per_item[i])}</td>" if key else ""
        rows.append(f"<tr><td>{html.escape(ids[i])}</td><td>{html.escape(hyps[i]) or '<i>(empty)</i>'}</td>"
                    f"<td>{html.escape(ref)}</td>{score}</tr>")
    return ("<table><thead><tr><th>item</th><th>decoded</th><th>reference</th>" + score_head + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _bar_chart(result: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    metrics = [m for m, e in _metric_rows(result) if e.get("value") is not None and np.isfinite(e["value"])
               and any(m in r["values"] for r in rows)]
    if not metrics:
        return None
    ncols = min(4, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig, axes = _figure(nrows, ncols, figsize=(3.1 * ncols, 2.6 * nrows), squeeze=False)
    names = ["ours", *[r["name"] for r in rows]]
    colors = ["#d62728", *["#7f7f7f", "#9a9a9a", "#b5b5b5", "#cfcfcf", "#e0e0e0"][: len(rows)]]
    for ax, m in zip(axes.ravel(), metrics):
        e = result[m]
        vals = [e["value"], *[r["values"].get(m, np.nan) for r in rows]]
        ax.bar(range(len(names)), vals, color=colors)
        if e.get("ci"):
            lo, hi = e["ci"]
            # a percentile interval need not contain the statistic (few items, skewed resamples): clip at 0
            ax.errorbar([0], [e["value"]], yerr=[[max(0.0, e["value"] - lo)], [max(0.0, hi - e["value"])]], color="k",
                        capsize=3)
        if e.get("chance") is not None:
            ax.axhline(e["chance"], color="k", ls=":", lw=1, label="chance")
        if e.get("shuffled") is not None:
            ax.axhline(e["shuffled"], color="#1f77b4", ls="--", lw=1, label="shuffled")
        ax.set_title(_label(m) + ("  (lower is better)" if not e.get("higher_is_better", True) else ""),
                     fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return _png_data_uri(fig)


def _result_protocol(result: dict[str, Any]) -> str:
    name = (result.get("protocol") or {}).get("name")
    if name:
        return str(name)
    if any(k.startswith("top") for k, _ in _metric_rows(result)):
        return "atm"
    return "mindeye2"


def render_report(
    result: dict[str, Any],
    recons: Any = None,
    truth: Any = None,
    *,
    item_ids: list[str] | None = None,
    provenance: dict[str, Any] | None = None,
    title: str = "neurodecode evaluation",
    rank_metric: str | None = None,
    n_grid: int = 10,
    n_examples: int = 5,
    texts: tuple[list[str], list[Any]] | None = None,
    figures: list[tuple[str, Any]] | None = None,
) -> str:
    """Build the HTML report as a string.

    Parameters
    ----------
    result : dict
        Output of :func:`~neurodecode.metrics.evaluate_reconstructions` (or
        :func:`~neurodecode.metrics.evaluate_text`, without images).
    recons, truth : array-like of shape (n_items, H, W, 3) or None
        The images, for the grid and the best / worst examples.
    item_ids : list of str or None
        Names of the items (stimulus ids), shown above the pictures.
    provenance : dict or None
        Anything describing the run (recipe, checkpoint, seeds, versions).
    title : str
        Page title.
    rank_metric : str or None
        Per-item metric ranking the best / worst examples (default: the first of
        alex2, clip, incep, pixcorr, ssim present).
    n_grid : int
        Items in the ground truth vs reconstruction grid.
    n_examples : int
        Items among the best and among the worst.
    texts : (hypotheses, references) or None
        Decoded sentences (list of str, length n_items) and their references (str or list of
        str each), shown as a table of the first ``n_grid`` items (text evaluations).
    figures : list of (title, path) or None
        PNG figures the run wrote (e.g. MEG decoding over time), embedded under their titles.

    Returns
    -------
    html : str
    """
    weights = result.get("weights", {}) or {}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    random_metrics = [m for m, w in weights.items() if isinstance(w, dict) and w.get("tier") == "random"]
    if random_metrics:
        parts.append("<p class='banner'><b>Random feature-network weights</b> were used for "
                     f"{html.escape(', '.join(random_metrics))}: these numbers are a smoke test and do not compare "
                     "with the literature.</p>")
    parts.append(f"<p>{int(result.get('n_items', 0))} items &middot; metrics version "
                 f"{html.escape(str(result.get('metrics_version', '?')))}</p>")
    rows = _metric_rows(result)
    if recons is not None and truth is not None:
        r = resize_images(as_float_images(recons, "recons"), _THUMB, antialias=True)
        t = resize_images(as_float_images(truth, "truth"), _THUMB, antialias=True)
        ids = item_ids or [str(i) for i in range(len(r))]
        grid_idx = list(range(min(n_grid, len(r))))
        parts.append("<h2>Ground truth and reconstructions</h2><figure>"
                     f"<img alt='grid' src='{_pairs_grid(t, r, grid_idx, [ids[i] for i in grid_idx])}'>"
                     f"<figcaption>First {len(grid_idx)} test items: ground truth (top), reconstruction (bottom)."
                     "</figcaption></figure>")
        per_item = {m: e["per_item"] for m, e in rows if e.get("per_item") is not None
                    and len(np.asarray(e["per_item"])) == len(r)}
        key = rank_metric or next((m for m in ("alex2", "clip", "incep", "pixcorr", "ssim") if m in per_item), None)
        if key is not None:
            scores = np.asarray(per_item[key], dtype=float)
            sign = 1.0 if result[key].get("higher_is_better", True) else -1.0
            order = np.argsort(-sign * np.nan_to_num(scores, nan=-np.inf * sign), kind="stable")
            k = min(n_examples, len(order))
            for label, sel in (("Best", list(order[:k])), ("Worst", list(order[::-1][:k]))):
                labels = [f"{ids[i]}: {scores[i]:.2f}" for i in sel]
                parts.append(f"<h2>{label} {k} by {html.escape(_LABELS.get(key, key))}</h2><figure>"
                             f"<img alt='{label.lower()}' src='{_pairs_grid(t, r, sel, labels)}'></figure>")
    if texts is not None:
        hyps, refs = texts
        ids = item_ids or [str(i) for i in range(len(hyps))]
        per_item = {m: e["per_item"] for m, e in rows if e.get("per_item") is not None}
        key = rank_metric or next((m for m in ("bleu1", "bleu1@raw", "rouge1_f", "rouge1_f@raw", "wer", "wer@raw")
                                   if m in per_item), None)
        parts.append(f"<h2>Decoded sentences</h2>"
                     f"{_text_table(list(hyps), list(refs), ids, per_item.get(key) if key else None, key, n_grid)}"
                     f"<p>First {min(n_grid, len(hyps))} of {len(hyps)} items.</p>")
    parts.append("<h2>Scores</h2>" + _table(result, weights))
    for fig_title, fig_path in figures or []:
        import base64

        data = base64.b64encode(open(fig_path, "rb").read()).decode("ascii")
        parts.append(f"<h2>{html.escape(str(fig_title))}</h2><figure><img alt='{html.escape(str(fig_title))}' "
                     f"src='data:image/png;base64,{data}'></figure>")
    control = (result.get("protocol") or {}).get("control") or (
        "the shuffled control scores the same outputs against other items' ground truth")
    parts.append("<p>Values are means over items; 95 % CIs from a percentile bootstrap over items; "
                 f"{html.escape(control)}. A decoder that does not beat its shuffled control has learned nothing "
                 "from the brain.</p>")
    constant = result.get("constant_recons") or {}
    if constant.get("count"):
        parts.insert(2, f"<p class='banner'><b>{int(constant['count'])} blank (constant) reconstruction(s)</b>, "
                        "scored as the protocol scores them (a constant image has no PixCorr: NaN), never dropped: "
                        f"{html.escape(', '.join(map(str, constant.get('ids', [])[:20])))}</p>")
    if isinstance(result.get("retrieval"), dict):
        ret = result["retrieval"]
        n_way = ret.get("n_way")
        parts.append(f"<h2>Retrieval ({html.escape(str(n_way))}-way, top-1)</h2>"
                     + _table({k: v for k, v in ret.items() if k in ("image_retrieval", "brain_retrieval")}, {})
                     + "<p>Columns as MindEye2 publishes them: image retrieval = FwdRetrieval (for each image, its own "
                       "brain sample among the candidates); brain retrieval = BwdRetrieval.</p>")
    if isinstance(result.get("blended"), dict):
        parts.append("<h2>Blended with the low-level output (0.75 / 0.25, MindEye2)</h2>"
                     + _table(result["blended"], weights))
    protocol = _result_protocol(result)
    pub = published_rows(protocol)
    chart_source = {**result, **(result.get("retrieval") or {})} if isinstance(result.get("retrieval"), dict) \
        else result
    chart = _bar_chart(chart_source, pub)
    if chart is not None:
        sources = "".join(f"<li><b>{html.escape(r['name'])}</b>: {html.escape(r['source'])}</li>" for r in pub)
        parts.append(f"<h2>Beside the published numbers ({html.escape(protocol)} protocol)</h2><figure>"
                     f"<img alt='published comparison' src='{chart}'><figcaption>Ours (red, with 95 % CI) beside "
                     f"the results published under the same protocol ({html.escape(protocol)}; grey); dotted: "
                     f"chance; dashed: shuffled control. Rows and sources:<ul>{sources}</ul></figcaption></figure>")
    prov: dict[str, Any] = {k: result[k] for k in ("protocol", "weights", "metrics_version", "n_items") if k in result}
    if provenance:
        prov["run"] = provenance
    parts.append("<h2>Provenance</h2><pre>"
                 + html.escape(json.dumps(prov, indent=2, sort_keys=True, default=_json_default)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | os.PathLike[str], result: dict[str, Any], recons: Any = None, truth: Any = None,
                 **kwargs: Any) -> Path:
    """Render the report (see :func:`render_report`) and write it atomically to ``path``."""
    text = render_report(result, recons, truth, **kwargs)
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)
