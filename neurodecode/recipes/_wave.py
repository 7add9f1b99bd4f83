"""The WAVE runner (Wang et al., arXiv 2411.07121): whole-brain parcel time series -> CLIP, with network ablation.

:func:`train` runs the frame of :func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_wave`:

1. **Data.** Every subject of ``[data] subjects`` through :func:`neurodecode.data.load_bold5000` with
   ``data = "parcels"``: ``n_trs`` TRs from each image onset, reduced to the parcels of ``[data] atlas`` (a
   Schaefer 2018 atlas, relative to the data root unless absolute), the Yeo-7 network of every parcel from
   its name; the 113 repeated images are the test set, their presentations averaged.
2. **Targets.** ``[latents] image`` (CLIP ViT-L/14 image embedding, ``clip-vit-l-14``) of every image, resized
   to ``[latents] image_size``, and ``[latents] text`` (``clip-vit-l-14-text``) of the label prompt
   ``"a photo of a <label>"``, the label read from the image name (Scene images ``<category><k>.jpg``;
   ImageNet / COCO names give their synset or file stem: an approximation of WAVE's labels).
3. **Model.** One :class:`~neurodecode.models.WAVE` for all subjects (WAVE's "all" universal model), its input
   width and TR from the data, the learning-from-brains encoder loaded from ``[decoder] encoder_checkpoint``
   when given; trained with the tri-contrastive loss and the reference's augmentation. With ``[decoder] prompt
   = "token-ids"`` (the reference) the label is tokenised to ``text_length - ctx_dim`` CLIP tokens and the
   meta-net's pseudo tokens go through the frozen text tower of ``[latents] text`` at every step; with
   ``"none"`` the label prompt's text embedding is the target.
4. **Evaluation** (``metrics.json``, ``ablation.json``): each test sample's predicted embedding ranks the test
   images' CLIP embeddings (cosine; a tie is a miss): ``test/<subject>/top1``, ``test/all/top1``,
   ``percentile`` (mean percentile of the true image, chance 0.5), their shuffled-pairing controls and chance;
   with ``[evaluate] ablate = "yeo7"``, :func:`neurodecode.metrics.network_ablation` masks each network's
   parcels (zeros) and reports the drop per network with bootstrap CIs (``test/ablation/<network>/drop_top1``,
   ``drop_percentile`` and the CIs in ``ablation.json``).

:func:`reconstruct` is the prior-free path: each test sample's predicted CLIP image embedding retrieves the
nearest training image (cosine), written as the reconstruction, labelled by the image's file stem
(``kitchen3.jpg`` -> ``stim-kitchen3``: ``neurodecode evaluate --truth`` pairs the ``Presented_Stimuli`` folder
with these names). The diffusion prior + Versatile Diffusion of
WAVE's second stage is not run by this recipe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.files import write_json
from .._core.logging import logger, progress
from .._core.validation import format_error
from ._meeg import _check_field, _tiny_fields, reconstruct_meeg, train_meeg
from ._run import fit as _fit

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct", "train_wave", "label_prompt", "score_wave",
           "ablate_run"]

DATASETS = ("bold5000",)


@dataclass
class WaveGenerate:
    """``[generate]`` of a WAVE recipe: ``"training-image-retrieval"`` (retrieval; the prior-free path)."""

    generator: str = "training-image-retrieval"


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of a WAVE recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..models.wave import WAVEConfig
    from ..train import TrainConfig
    from ._schema import check_recipe_tables

    out = check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=WAVEConfig, generate=WaveGenerate,
                              train_config=TrainConfig, decoder_extra=("encoder_checkpoint", "allow_pickle"),
                              latents_extra=("image", "text", "image_size", "weights"))
    prompt = out["decoder"].get("prompt", "token-ids")
    if prompt not in ("token-ids", "none"):
        problems.add("decoder.prompt", f"expected 'token-ids' (reference) or 'none', got {prompt!r}")
    if out["data"].get("data", "parcels") != "parcels":
        problems.add("data.data", "expected 'parcels' (WAVE reads whole-brain parcel time series)")
    gen = out.get("generate", {}).get("generator", "training-image-retrieval")
    if gen != "training-image-retrieval":
        problems.add("generate.generator", f"expected 'training-image-retrieval', got {gen!r}")
    ablate = out.get("evaluate", {}).get("ablate")
    if ablate not in (None, "", "none", "yeo7"):
        problems.add("evaluate.ablate", f"expected 'yeo7' or 'none', got {ablate!r}")
    return out


def train(recipe: Mapping[str, Any], data_root: Any, out_dir: Any, **kwargs: Any) -> Any:
    """Train a WAVE recipe (:func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_wave`)."""
    return train_meeg(recipe, data_root, out_dir, train_wave, **kwargs)


def label_prompt(name: str) -> str:
    """The text of an image: ``"a photo of a <label>"`` with the label read from its BOLD5000 file name.

    ``kitchen3.jpg`` -> ``a photo of a kitchen``; ``n01440764_10110.JPEG`` -> ``a photo of a n01440764``;
    ``COCO_train2014_000000000042.jpg`` -> ``a photo of a COCO train2014``.
    """
    stem = Path(str(name)).stem
    m = re.fullmatch(r"(.+)_\d+", stem)  # ImageNet <synset>_<k>, COCO COCO_<split>_<id>
    stem = m.group(1) if m else (re.sub(r"\d+$", "", stem) or stem)  # Scene <category><k>
    return "a photo of a " + re.sub(r"[_]+", " ", stem).strip()


def _token_ids(texts: list[str], length: int) -> np.ndarray:
    """CLIP BPE token ids of ``texts`` at ``length`` tokens (BOS ... EOT, zero padded; truncated as the reference)."""
    from open_clip.tokenizer import SimpleTokenizer

    return np.asarray(SimpleTokenizer(context_length=length)(texts), dtype=np.int64)


def _text_tower(space: Any) -> Any:
    """The frozen text tower of a CLIP text space as ``token ids -> pooled embedding`` (WAVE.set_text_encoder)."""
    import torch

    model = getattr(space, "model", None)
    if model is None or not hasattr(model, "encode_text"):
        raise ValidationError(format_error("latents.text", "an open_clip CLIP text space (for decoder.prompt = "
                                           "'token-ids')", type(space).__name__,
                                           "Use clip-vit-l-14-text, or decoder.prompt = \"none\""))
    device = next(model.parameters()).device

    def encode(ids: torch.Tensor) -> torch.Tensor:
        return model.encode_text(ids.to(device)).to(ids.device)

    return encode


def _data_path(root: Path, value: Any) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else root / p


def _load(ctx_root: Path, data: Mapping[str, Any], subject: Any) -> Any:
    from ..data import load_bold5000

    if not data.get("atlas") or not data.get("atlas_labels"):
        raise ValidationError(format_error("data.atlas", "a Schaefer 2018 atlas and its lookup table",
                                           "none", "Set data.atlas and data.atlas_labels (relative to the data "
                                           "root, or absolute)"))
    return load_bold5000(ctx_root, subject, data="parcels", atlas=_data_path(ctx_root, data["atlas"]),
                         atlas_labels=_data_path(ctx_root, data["atlas_labels"]), n_trs=data.get("n_trs"),
                         standardize=data.get("standardize"),
                         average_test_repeats=bool(data.get("average_test_repeats", True)),
                         bold_pattern=data.get("bold_pattern"))


def _image_embeds(root: Path, names: list[str], latents: Mapping[str, Any], device: Any, verbose: Any
                  ) -> tuple[np.ndarray, int]:
    from ..data import load_bold5000_stimuli
    from ..latents import get_space

    space = get_space(str(latents.get("image", "clip-vit-l-14")), weights=latents.get("weights"), device=device,
                      verbose=verbose)
    size = int(latents.get("image_size", 224))
    out = []
    for a in range(0, len(names), 64):
        out.append(space.encode_images(load_bold5000_stimuli(root, names[a:a + 64], size=size)))
    return np.concatenate(out).astype(np.float32), int(space.shape[0])


def _ranks(pred: np.ndarray, cand: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from ..metrics._retrieval import cosine_similarity_matrix, true_rank

    return np.asarray(true_rank(cosine_similarity_matrix(pred, cand), labels))


def _item_scores(ranks: np.ndarray, n_cand: int) -> dict[str, np.ndarray]:
    """Per item: top-1 hit and percentile of the true candidate (1 best, 0 worst; chance 0.5)."""
    r = np.asarray(ranks, dtype=np.float64)
    return {"top1": (r == 0).astype(np.float64), "percentile": 1.0 - r / max(n_cand - 1, 1)}


def train_wave(ctx: Any) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """Load BOLD5000 parcels, compute the CLIP targets, train one WAVE, score retrieval and network ablation.

    Returns
    -------
    results, metrics, provenance
        As :func:`~neurodecode.recipes._meeg.train_meeg` expects (see the module docstring).
    """
    from ..latents import get_space
    from ..models.wave import WAVE, WAVEConfig
    from ..train import ArrayBatches

    data, latents = ctx.data, ctx.latents
    subjects_in = data.get("subjects")
    subjects_in = [subjects_in] if isinstance(subjects_in, (str, int)) else list(subjects_in or [])
    if not subjects_in:
        raise ValidationError(format_error("data.subjects", "at least one subject", subjects_in))
    trials = {}
    for s in progress(subjects_in, desc="load", unit="subject", verbose=ctx.verbose):
        t = _load(ctx.root, data, s)
        trials[t.subject] = t
    subjects = list(trials)
    first = trials[subjects[0]]
    networks = list(first.provenance["parcel_networks"])
    for s, t in trials.items():
        if list(t.ch_names or []) != list(first.ch_names or []):
            raise ValidationError(format_error("data.atlas", "one parcellation for every subject", s))

    names = sorted({str(i) for t in trials.values() for i in t.stimulus_ids})
    embeds, dim = _image_embeds(ctx.root, names, latents, ctx.latent_device, ctx.verbose)
    index = {n: k for k, n in enumerate(names)}
    text_space = get_space(str(latents.get("text", "clip-vit-l-14-text")), weights=latents.get("weights"),
                           device=ctx.latent_device, verbose=ctx.verbose)
    text = np.asarray(text_space.encode_texts([label_prompt(n) for n in names]), dtype=np.float32)
    if text.shape[1] != dim:
        raise ValidationError(format_error("latents.text", f"a text space of the image space's width ({dim})",
                                           text.shape[1], "Use the text tower of the same CLIP"))

    fields: dict[str, Any] = dict(ctx.decoder)
    ckpt = fields.pop("encoder_checkpoint", None)
    allow_pickle = bool(fields.pop("allow_pickle", False))
    _check_field(fields, "n_parcels", int(first.X.shape[1]), "the atlas's parcels")
    _check_field(fields, "clip_dim", dim, "the width of latents.image")
    _check_field(fields, "tr", float(first.provenance["tr"]), "the dataset's TR")
    context = getattr(text_space, "model_cfg", {}).get("text_cfg", {}).get("context_length")
    if context is not None and fields.get("prompt", "token-ids") == "token-ids":
        _check_field(fields, "text_length", int(context), "the context length of latents.text")
    cfg = WAVEConfig(**({**_tiny_fields(WAVEConfig), **fields} if ctx.base == "tiny" else fields))
    model = WAVE(cfg)
    skipped: list[str] = []
    if ckpt:
        skipped = model.load_encoder_checkpoint(_data_path(ctx.root, ckpt), allow_pickle=allow_pickle)
        logger.info("WAVE: learning-from-brains encoder loaded from %s (%d keys not used)", ckpt, len(skipped))

    arrays: dict[str, Any] = {}
    if cfg.prompt == "token-ids":  # the reference's prompt: pseudo tokens through the frozen CLIP text tower
        arrays["text_ids"] = _token_ids([label_prompt(n) for n in names], cfg.text_length - cfg.ctx_dim)
        model.set_text_encoder(_text_tower(text_space))

    rows = {s: np.flatnonzero(t.split == "train") for s, t in trials.items()}
    X = np.concatenate([trials[s].X[rows[s]] for s in subjects]).astype(np.float32)
    lengths = np.concatenate([trials[s].lengths[rows[s]] for s in subjects])  # type: ignore[index]
    ids = np.concatenate([trials[s].stimulus_ids[rows[s]] for s in subjects]).astype(str)
    pos = np.array([index[i] for i in ids])
    if len(X) < 2:
        raise ValidationError(format_error("data", "training samples", len(X), "Add sessions or subjects"))
    src = ArrayBatches({"x": X, "lengths": lengths, "image_embeds": embeds[pos], "text_embeds": text[pos],
                        **{k: v[pos] for k, v in arrays.items()}}, int(ctx.config.batch_size))
    logger.info("WAVE: training on %d samples of %s", len(X), ", ".join(subjects))
    result = _fit(model, ctx.config, src, None, ctx.out, ctx.resume)
    model.eval()

    # evaluation: each subject's test samples rank that subject's test images
    n_boot = int(ctx.evaluate.get("bootstrap", 1000) or 1000)
    ablate = str(ctx.evaluate.get("ablate") or "none") == "yeo7"
    metrics, report = score_wave(model, trials, embeds, index, networks, ablate=ablate, n_boot=n_boot,
                                 seed=int(ctx.config.seed))
    if "ablation" in report:
        write_json(ctx.out / "ablation.json", report["ablation"])
    write_json(ctx.out / "retrieval.json", report)
    model.save_pretrained(ctx.out, metadata={"subjects": subjects, "parcel_names": list(first.ch_names or []),
                                             "parcel_networks": networks})
    prov = {"subjects": subjects, "data": {s: t.provenance for s, t in trials.items()},
            "targets": {"image": str(latents.get("image", "clip-vit-l-14")),
                        "text": str(latents.get("text", "clip-vit-l-14-text")), "dim": dim,
                        "text_prompt": "a photo of a <label from the image name>", "n_images": len(names)},
            "encoder_checkpoint": str(ckpt) if ckpt else None, "encoder_keys_not_used": skipped}
    return {"joint": result}, metrics, prov


def score_wave(model: Any, trials: Mapping[str, Any], embeds: np.ndarray, index: Mapping[str, int],
               networks: list[str], *, ablate: bool, n_boot: int, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Test retrieval of a WAVE model (and with ``ablate`` the Yeo-7 network ablation), per subject and pooled.

    Parameters
    ----------
    model : WAVE
    trials : mapping of str to Trials
        Parcel samples per subject; the ``"test"`` rows are scored.
    embeds : ndarray of shape (n_images, clip_dim)
        CLIP image embeddings; ``index`` maps an image name to its row.
    networks : list of str
        Network of every parcel.

    Returns
    -------
    metrics : dict of str to float
        ``test/<subject>/top1``... (see the module docstring).
    report : dict
        ``scores`` with bootstrap CIs, ``protocol``, and ``ablation`` (:func:`neurodecode.metrics.network_ablation`).
    """
    from ..metrics import bootstrap_ci, network_ablation
    from ..metrics._stats import derangement

    metrics: dict[str, float] = {}
    parts = []
    for s, t in trials.items():
        test = np.flatnonzero(t.split == "test")
        if len(test) < 2:
            continue
        cand = embeds[[index[str(i)] for i in t.stimulus_ids[test]]]
        parts.append((s, t.X[test], t.lengths[test], cand))
    if not parts:
        raise ValidationError(format_error("data", "at least 2 test images per subject", "fewer",
                                           "The test set is the repeated images (repeated_stimuli_113_list.txt)"))
    all_scores: dict[str, list[np.ndarray]] = {"top1": [], "percentile": [], "shuffled_top1": [],
                                               "shuffled_percentile": []}
    rng = np.random.default_rng(seed)
    for s, Xt, lt, cand in parts:
        n = len(cand)
        pred = model.encode(Xt, lt)
        sc = _item_scores(_ranks(pred, cand, np.arange(n)), n)
        sh = _item_scores(_ranks(pred, cand, derangement(n, rng)), n)
        for k in ("top1", "percentile"):
            metrics[f"test/{s}/{k}"] = float(sc[k].mean())
            metrics[f"test/{s}/shuffled_{k}"] = float(sh[k].mean())
            all_scores[k].append(sc[k])
            all_scores[f"shuffled_{k}"].append(sh[k])
        metrics[f"test/{s}/chance_top1"] = 1.0 / n
    pooled = {k: np.concatenate(v) for k, v in all_scores.items()}
    cis = {}
    for k, v in pooled.items():
        metrics[f"test/all/{k}"] = float(v.mean())
        cis[k] = list(bootstrap_ci(v, n_boot, seed))
    metrics["test/all/chance_top1"] = float(np.mean([1.0 / len(p[3]) for p in parts]))
    metrics["test/all/chance_percentile"] = 0.5
    report: dict[str, Any] = {"scores": {k: {"value": metrics[f"test/all/{k}"], "ci": cis[k]} for k in pooled},
                              "protocol": "each test sample (repeats averaged) ranks its subject's test images by "
                                          "cosine of the predicted and the CLIP image embeddings; a tie is a miss; "
                                          "shuffled: a derangement of the pairing"}
    if ablate:
        offsets = np.cumsum([0] + [len(p[3]) for p in parts])
        Xall = np.concatenate([p[1] for p in parts])
        lall = np.concatenate([p[2] for p in parts])

        def score(x: np.ndarray) -> dict[str, np.ndarray]:
            out: dict[str, list[np.ndarray]] = {"top1": [], "percentile": []}
            for k, (_, _, _, cand) in enumerate(parts):
                a, b = offsets[k], offsets[k + 1]
                sc = _item_scores(_ranks(model.encode(x[a:b], lall[a:b]), cand, np.arange(b - a)), b - a)
                for key in out:
                    out[key].append(sc[key])
            return {key: np.concatenate(v) for key, v in out.items()}

        abl = network_ablation(Xall, networks, score, axis=1, n_boot=n_boot, random_state=seed)
        for net, entry in abl["networks"].items():
            for key in ("top1", "percentile"):
                metrics[f"test/ablation/{net}/drop_{key}"] = entry[key]["drop"]
        report["ablation"] = abl
    return metrics, report


def ablate_run(run: Any, data_root: Any = None, *, n_boot: int = 1000, seed: int = 0, device: str = "cpu",
               verbose: Any = None) -> dict[str, Any]:
    """Yeo-7 network ablation of a trained WAVE run on its test data (``neurodecode evaluate --ablate yeo7``).

    Parameters
    ----------
    run : path-like
        The run folder of ``neurodecode train pipelines/wave_bold5000.toml`` (``recipe.json``, the model).
    data_root : path-like or None
        The BOLD5000 root (default: the run's ``provenance.json`` ``data_root``).

    Returns
    -------
    result : dict
        :func:`neurodecode.metrics.network_ablation`'s result, plus ``retrieval`` (the intact scores with CIs).
    """
    import json

    from .._core.errors import MissingFileError
    from ..models.wave import WAVE
    from ._derivative import model_class, not_a_run

    run = Path(run)
    if model_class(run) != "WAVE" or not (run / "recipe.json").is_file():
        raise not_a_run(run, "wave", "wave_bold5000", f"a {model_class(run)} checkpoint")
    recipe = json.loads((run / "recipe.json").read_text(encoding="utf-8"))
    if data_root is None:
        prov = run / "provenance.json"
        data_root = json.loads(prov.read_text(encoding="utf-8")).get("data_root") if prov.is_file() else None
    if data_root is None or not Path(data_root).exists():
        raise MissingFileError(format_error("--data", "the BOLD5000 root the run was trained on", str(data_root),
                                            "Pass --data ROOT"))
    root = Path(data_root)
    model = WAVE.from_pretrained(run, device=device).eval()
    meta = json.loads((run / "config.json").read_text(encoding="utf-8")).get("metadata", {})
    trials = {}
    for s in meta.get("subjects", []):
        t = _load(root, recipe["data"], s)
        trials[t.subject] = t
    names = sorted({str(i) for t in trials.values() for i in t.stimulus_ids[t.split == "test"]})
    embeds, _ = _image_embeds(root, names, recipe.get("latents", {}), device, verbose)
    networks = list(meta.get("parcel_networks") or next(iter(trials.values())).provenance["parcel_networks"])
    _, report = score_wave(model, trials, embeds, {n: k for k, n in enumerate(names)}, networks, ablate=True,
                           n_boot=n_boot, seed=seed)
    return {**report["ablation"], "retrieval": report["scores"], "run": str(run), "data_root": str(root)}


# ---------------------------------------------------------------------------------------- reconstruct
def reconstruct(recipe: Mapping[str, Any], data_root: Any, subject: Any, checkpoint: Any, out_dir: Any,
                **kwargs: Any) -> dict[str, Any]:
    """Nearest-training-image reconstructions of a WAVE run's test samples (the prior-free path)."""
    return reconstruct_meeg(recipe, data_root, subject, checkpoint, out_dir, _reconstruct_wave, outputs="image",
                            **kwargs)


def _reconstruct_wave(ctx: Any, subject: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import json

    from ..data import load_bold5000_stimuli
    from ..metrics._retrieval import cosine_similarity_matrix
    from ..models.wave import WAVE
    from ._derivative import _png, model_class, not_a_run, output_paths, pick_subjects

    if model_class(ctx.run) != "WAVE":
        raise not_a_run(ctx.run, "wave", ctx.recipe_name, f"a {model_class(ctx.run)} checkpoint")
    meta = json.loads((ctx.run / "config.json").read_text(encoding="utf-8")).get("metadata", {})
    model = WAVE.from_pretrained(ctx.run, device=str(ctx.device)).eval()
    chosen = pick_subjects(subject, list(meta.get("subjects", [])), ctx.run)
    latents = dict(ctx.recipe.get("latents", {}))
    size = int(latents.get("image_size", 224))
    per: dict[str, Any] = {}
    picked: dict[str, str] = {}
    for s in chosen:
        t = _load(ctx.root, ctx.data, s)
        train_names = sorted({str(i) for i in t.stimulus_ids[t.split == "train"]})
        embeds, _ = _image_embeds(ctx.root, train_names, latents, ctx.device, ctx.verbose)
        test = np.flatnonzero(t.split == "test")
        mine = test[ctx.rank::ctx.world]
        if ctx.limit is not None:
            mine = mine[:ctx.limit]
        pred = model.encode(t.X[mine], t.lengths[mine])  # type: ignore[index]
        best = np.argmax(cosine_similarity_matrix(pred, embeds), axis=1)
        done = 0
        for r, b in zip(mine, best):
            path = output_paths(ctx.out, t.subject, Path(str(t.stimulus_ids[r])).stem, ctx.recipe_name)["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            _png(path, load_bold5000_stimuli(ctx.root, [train_names[b]], size=size)[0])
            picked[str(t.stimulus_ids[r])] = train_names[b]
            ctx.log.add_items({path.stem: train_names[b]})
            done += 1
        per[t.subject] = {"n_items": len(test), "n_assigned": len(mine), "n_done": done, "n_skipped": 0}
    return per, {"generator": {"generator": "training-image-retrieval", "chosen": picked}}
