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

5. **Stage 2** (with a ``[decoder.prior]`` table): the trained encoder is frozen; its ``pooler_outputs`` of
   every training sample condition a :class:`~neurodecode.models.wave.WAVEPrior` trained to denoise the
   seen image's CLIP ViT-L/14 image tokens (``[latents] image_tokens``, VD-normalised), saved in
   ``RUN/prior/``; its own training keys (:data:`PRIOR_TRAIN_KEYS`) override ``[train]``. ``metrics.json``
   adds ``test/<subject>/prior_top1``: each test sample's sampled tokens identify its image among the
   subject's test images (cosine of the flattened tokens; chance ``1 / n``), beside its shuffled control.

:func:`reconstruct` draws images, WAVE's stage 2 (``[generate] mode = "generate"``, the default): encoder ->
prior (seeded per item) -> the ``[generate]`` generator (Versatile Diffusion image variation,
``"versatile-image"``, from the sampled tokens), ``samples`` candidates per item of which the one whose CLIP
image embedding is closest (cosine) to the item's predicted embedding is kept, as the reference's
``best_picks``. ``mode = "retrieve"`` is the prior-free path: the predicted CLIP image embedding retrieves the
nearest training image (cosine). Either way the output is labelled by the image's file stem (``kitchen3.jpg``
-> ``stim-kitchen3``: ``neurodecode evaluate --truth`` pairs the ``Presented_Stimuli`` folder with these names).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.files import write_json
from .._core.logging import logger, progress
from .._core.validation import format_error
from ._meeg import _check_field, _tiny_fields, reconstruct_meeg, train_meeg
from ._run import fit as _fit

__all__ = ["DATASETS", "PRIOR_TRAIN_KEYS", "MODES", "WaveGenerate", "check_recipe", "train", "reconstruct",
           "train_wave", "train_prior", "label_prompt", "score_wave", "ablate_run"]

DATASETS = ("bold5000",)


#: ``[decoder.prior]`` keys that set the prior's own training (the others are WAVEPriorConfig fields); what is
#: not given follows ``[train]``. The reference (``script/train_decode.sh``): lr 1e-5, 200,000 steps, batch 16,
#: weight decay 0.02, constant schedule.
PRIOR_TRAIN_KEYS = ("epochs", "max_steps", "lr", "batch_size", "optimizer", "scheduler", "grad_clip",
                    "weight_decay", "warmup_steps")

#: ``[generate] mode``: ``"generate"`` (prior + image generator, WAVE's stage 2) or ``"retrieve"`` (nearest
#: training image from the predicted CLIP embedding, no generator).
MODES = ("generate", "retrieve")
_RETRIEVAL = "training-image-retrieval"


@dataclass
class WaveGenerate:
    """``[generate]`` of a WAVE recipe.

    Attributes
    ----------
    mode : {"generate", "retrieve"}
        ``"generate"``: encoder -> prior -> ``generator`` (default); ``"retrieve"``: the nearest training image.
    generator : str
        A registered image generator reading ``clip_image_tokens`` (``"versatile-image"``, the reference's VD
        image variation).
    weights, steps, guidance, batch_size, seed, dtype, preset, compile, preview_vae, config, options
        As the other recipes' ``[generate]`` (``options``: per-call generator options, e.g. ``renorm``).
    samples : int
        Candidates per item (the reference's ``recons_per_sample``, 2 in the paper); the one closest to the
        predicted CLIP embedding is kept.
    """

    mode: str = "generate"
    generator: str = "versatile-image"
    weights: str | None = None
    steps: int | None = None
    guidance: float | None = None
    batch_size: int = 8
    seed: int = 0
    samples: int = 2
    dtype: str | None = None
    preset: str | None = None
    compile: bool = False
    preview_vae: bool = False
    config: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of a WAVE recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..generate import GENERATORS
    from ..models.wave import WAVEConfig, WAVEPriorConfig
    from ..train import TrainConfig
    from ._schema import check_recipe_tables

    recipe = dict(recipe)
    gen_in = dict(recipe.get("generate") or {})
    if gen_in.get("generator") == _RETRIEVAL:  # the earlier spelling of the retrieval path
        gen_in.pop("generator")
        gen_in.setdefault("mode", "retrieve")
        recipe["generate"] = gen_in
    out = check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=WAVEConfig, generate=WaveGenerate,
                              train_config=TrainConfig, decoder_extra=("encoder_checkpoint", "allow_pickle"),
                              decoder_tables={"prior": (WAVEPriorConfig, PRIOR_TRAIN_KEYS)},
                              latents_extra=("image", "text", "image_size", "weights", "image_tokens"))
    prompt = out["decoder"].get("prompt", "token-ids")
    if prompt not in ("token-ids", "none"):
        problems.add("decoder.prompt", f"expected 'token-ids' (reference) or 'none', got {prompt!r}")
    if out["data"].get("data", "parcels") != "parcels":
        problems.add("data.data", "expected 'parcels' (WAVE reads whole-brain parcel time series)")
    gen = dict(out.get("generate", {}))
    mode = gen.get("mode", "generate")
    if mode not in MODES:
        problems.add("generate.mode", f"expected 'generate' (prior + image generator) or 'retrieve', got {mode!r}")
    if mode == "generate" and gen.get("generator", "versatile-image") not in GENERATORS:
        problems.add("generate.generator", f"expected a registered image generator reading clip_image_tokens "
                                           f"('versatile-image'), got {gen.get('generator')!r}")
    if int(gen.get("samples", 2) or 0) < 1:
        problems.add("generate.samples", f"expected at least 1 candidate per item, got {gen.get('samples')!r}")
    if "prior" in out["decoder"] and not out["latents"].get("image_tokens"):
        problems.add("latents.image_tokens", "expected the prior's target space (e.g. \"clip-vit-l-14-tokens\") "
                                             "with a [decoder.prior] table, got nothing")
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
    prior_tbl = fields.pop("prior", None)
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
    results: dict[str, Any] = {}
    if prior_tbl is not None:  # stage 2: the diffusion prior on the frozen encoder
        results["joint/prior"], prior_metrics, prov["prior"] = train_prior(ctx, model, trials, names, dict(prior_tbl))
        metrics.update(prior_metrics)
    results["joint"] = result
    return results, metrics, prov


def _image_tokens(root: Path, names: list[str], latents: Mapping[str, Any], device: Any, verbose: Any
                  ) -> np.ndarray:
    """VD-normalised CLIP image tokens (``[latents] image_tokens``) of ``names``, shape (n, n_tokens, dim), float16."""
    from ..data import load_bold5000_stimuli
    from ..latents import get_space

    space = get_space(str(latents["image_tokens"]), weights=latents.get("weights"), device=device, verbose=verbose,
                      normalize="vd")
    size = int(latents.get("image_size", 224))
    out = [np.asarray(space.encode_images(load_bold5000_stimuli(root, names[a:a + 64], size=size)), np.float16)
           for a in range(0, len(names), 64)]
    return np.concatenate(out)


def train_prior(ctx: Any, model: Any, trials: Mapping[str, Any], names: list[str], table: dict[str, Any]
                ) -> tuple[Any, dict[str, float], dict[str, Any]]:
    """Train WAVE's stage-2 diffusion prior on the frozen encoder; save it in ``RUN/prior/``; score test identification.

    Parameters
    ----------
    ctx : RunContext
    model : WAVE
        The trained encoder (eval mode): ``pooled_features`` of every training sample are the conditions.
    trials : mapping of str to Trials
        Parcel samples per subject (``"train"`` rows train the prior, ``"test"`` rows are scored).
    names : list of str
        Every image of the run (train and test).
    table : dict
        ``[decoder.prior]``: :class:`~neurodecode.models.wave.WAVEPriorConfig` fields and :data:`PRIOR_TRAIN_KEYS`.

    Returns
    -------
    result : TrainResult
    metrics : dict of str to float
        ``test/<subject>/prior_top1``, its shuffled control ``shuffled_prior_top1`` and chance
        ``chance_prior_top1``; ``test/all/prior_top1`` and ``test/all/shuffled_prior_top1`` pooled.
    provenance : dict
    """
    import dataclasses

    from ..metrics._retrieval import cosine_similarity_matrix, true_rank
    from ..models.wave import WAVEPrior, WAVEPriorConfig
    from ..train import ArrayBatches, IndexedRows, TrainConfig

    tokens = _image_tokens(ctx.root, names, ctx.latents, ctx.latent_device, ctx.verbose)
    index = {n: k for k, n in enumerate(names)}
    fields = {k: v for k, v in table.items() if k not in PRIOR_TRAIN_KEYS}
    _check_field(fields, "cond_dim", int(model.config.embed_dim), "the encoder's embed_dim")
    _check_field(fields, "n_tokens", int(tokens.shape[1]), "the tokens of latents.image_tokens")
    _check_field(fields, "token_dim", int(tokens.shape[2]), "the width of latents.image_tokens")
    base = dataclasses.asdict(WAVEPriorConfig.tiny()) if ctx.base == "tiny" else {}
    prior = WAVEPrior(WAVEPriorConfig(**{**base, **fields}))
    conds, rows = [], []
    for t in trials.values():
        train = np.flatnonzero(t.split == "train")
        conds.append(model.pooled_features(t.X[train], t.lengths[train]))
        rows.append([index[str(i)] for i in t.stimulus_ids[train]])
    own = {k: table[k] for k in PRIOR_TRAIN_KEYS if k in table}
    cap = ctx.train_table.get("max_steps")
    if own.get("max_steps") and cap is not None and cap != ctx.recipe.get("train", {}).get("max_steps"):
        own["max_steps"] = min(int(own["max_steps"]), int(cap))  # the command line's --max-steps caps the prior too
    pconf = TrainConfig.from_dict({**ctx.train_table, **own})
    src = ArrayBatches({"cond": np.concatenate(conds).astype(np.float32),
                        "tokens": IndexedRows(tokens, np.concatenate(rows))}, int(pconf.batch_size))
    logger.info("WAVE prior: training on %d samples (%d x %d tokens)", src.n_samples, tokens.shape[1],
                tokens.shape[2])
    result = _fit(prior, pconf, src, None, ctx.out / "prior", ctx.resume)
    prior.eval()
    prior.save_pretrained(ctx.out / "prior", metadata={"latents": str(ctx.latents["image_tokens"]),
                                                       "normalize": "vd", "trained_steps": result.steps})
    from ..metrics._stats import derangement

    metrics: dict[str, float] = {}
    hits: dict[str, list[np.ndarray]] = {"prior_top1": [], "shuffled_prior_top1": []}
    rng = np.random.default_rng(int(ctx.config.seed))
    for s, t in trials.items():
        test = np.flatnonzero(t.split == "test")
        if len(test) < 2:
            continue
        sampled = prior.sample(model.pooled_features(t.X[test], t.lengths[test]), int(ctx.config.seed))
        cand = tokens[[index[str(i)] for i in t.stimulus_ids[test]]].astype(np.float32)
        sim = cosine_similarity_matrix(sampled.reshape(len(test), -1), cand.reshape(len(test), -1))
        for key, labels in (("prior_top1", np.arange(len(test))), ("shuffled_prior_top1", derangement(len(test), rng))):
            hit = np.asarray(true_rank(sim, labels)) == 0
            metrics[f"test/{s}/{key}"] = float(np.mean(hit))
            hits[key].append(hit)
        metrics[f"test/{s}/chance_prior_top1"] = 1.0 / len(test)
    for key, parts in hits.items():
        if parts:
            metrics[f"test/all/{key}"] = float(np.mean(np.concatenate(parts)))
    prov = {"latents": str(ctx.latents["image_tokens"]), "normalize": "vd", "n_samples": int(src.n_samples),
            "config": dataclasses.asdict(prior.config), "train_config": pconf.to_dict(),
            "condition": "the frozen encoder's pooler_outputs (eval mode, no augmentation)",
            "test_metric": "prior_top1: the sampled tokens (seed = [train] seed + i) identify the test image among the "
                           "subject's test images by cosine of the flattened tokens (a tie is a miss); "
                           "shuffled_prior_top1: the same against a derangement of the pairing"}
    return result, metrics, prov


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
    """Images of a WAVE run's test samples: prior + generator (``[generate] mode = "generate"``) or retrieval.

    ``checkpoint`` is the run folder (``RUN/config.json`` + ``model.safetensors``, the prior in ``RUN/prior/``).
    Seeds: item i of a subject's test list gets ``seed + samples * i + j`` for its candidate j (the prior's
    noise and the generator's noise both), so a resumed or split run draws the same images.
    """
    return reconstruct_meeg(recipe, data_root, subject, checkpoint, out_dir, _reconstruct_wave, outputs="image",
                            **kwargs)


def _gen_settings(gen: Mapping[str, Any], ctx: Any) -> dict[str, Any]:
    return {"name": str(gen.get("generator") or "versatile-image"),
            "weights": ctx.generator_weights or gen.get("weights"), "config": gen.get("config"),
            "options": dict(gen.get("options") or {}),
            "steps": ctx.steps if ctx.steps is not None else gen.get("steps"), "guidance": gen.get("guidance"),
            "batch_size": int(ctx.batch_size or gen.get("batch_size", 8)),
            "seed": int(ctx.seed if ctx.seed is not None else gen.get("seed", 0)),
            "samples": int(gen.get("samples", 2) or 1), "dtype": ctx.dtype or gen.get("dtype") or "float32",
            "preset": gen.get("preset"), "compile": bool(gen.get("compile", False)),
            "preview_vae": bool(gen.get("preview_vae", False))}


def _reconstruct_wave(ctx: Any, subject: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import json

    from ..models.wave import WAVE
    from ._derivative import model_class, not_a_run, pick_subjects, sha_or_none

    if model_class(ctx.run) != "WAVE":
        raise not_a_run(ctx.run, "wave", ctx.recipe_name, f"a {model_class(ctx.run)} checkpoint")
    gen = dict(ctx.recipe.get("generate") or {})
    mode = str(gen.get("mode", "generate"))
    prior_dir = ctx.run / "prior"
    if mode == "generate" and model_class(prior_dir) != "WAVEPrior":
        raise ValidationError(format_error(
            "generate.mode", f"a run with its diffusion prior in {prior_dir} for 'generate'", "no prior there",
            "Train with a [decoder.prior] table (pipelines/wave_bold5000.toml has one), or reconstruct with "
            "--set generate.mode='\"retrieve\"' (the nearest training image)"))
    meta = json.loads((ctx.run / "config.json").read_text(encoding="utf-8")).get("metadata", {})
    model = WAVE.from_pretrained(ctx.run, device=str(ctx.device)).eval()
    chosen = pick_subjects(subject, list(meta.get("subjects", [])), ctx.run)
    body = _retrieve_subject if mode == "retrieve" else _generate_subject
    state: dict[str, Any] = {"settings": _gen_settings(gen, ctx), "generator": None, "prior": None, "space": None,
                             "picked": {}, "candidates": {}}
    per: dict[str, Any] = {}
    for s in chosen:
        t = _load(ctx.root, ctx.data, s)
        test = np.flatnonzero(t.split == "test")
        mine = test[ctx.rank::ctx.world]
        if ctx.limit is not None:
            mine = mine[:ctx.limit]
        per[t.subject] = {"n_items": len(test), "n_assigned": len(mine), "n_done": 0, "n_skipped": 0}
        body(ctx, model, t, test, mine, per[t.subject], state)
    prov: dict[str, Any] = {"decoder": {"checkpoint": str(ctx.run.resolve()), "class": "WAVE",
                                        "sha256": sha_or_none(ctx.run / "model.safetensors")}, "mode": mode}
    if mode == "retrieve":
        prov["generator"] = {"generator": _RETRIEVAL, "kind": "retrieval among the training images (no test image)",
                             "chosen": state["picked"]}
    else:
        st = state["settings"]
        prov["decoder"]["prior"] = {"checkpoint": str(prior_dir.resolve()),
                                    "sha256": sha_or_none(prior_dir / "model.safetensors")}
        prov["generator"] = ({**state["generator"].provenance(),
                              **{k: st[k] for k in ("steps", "guidance", "options", "samples", "batch_size", "config")}}
                             if state["generator"] is not None else None)
        prov["best_pick"] = {"rule": "of `samples` candidates per item, the one whose CLIP image embedding "
                                     "([latents] image) has the highest cosine with the item's predicted embedding "
                                     "(the reference's best_picks)", "items": state["candidates"]}
        prov["seeds"] = {"base": st["seed"], "rule": "candidate j of item i (its position in the subject's test list) "
                                                     "uses seed + samples * i + j for the prior and the generator"}
    return per, prov


def _retrieve_subject(ctx: Any, model: Any, t: Any, test: np.ndarray, mine: np.ndarray, entry: dict[str, Any],
                      state: dict[str, Any]) -> None:
    """The prior-free path: the nearest training image (cosine of CLIP image embeddings)."""
    from ..data import load_bold5000_stimuli
    from ..metrics._retrieval import cosine_similarity_matrix
    from ._derivative import _png, output_paths

    latents = dict(ctx.recipe.get("latents", {}))
    size = int(latents.get("image_size", 224))
    train_names = sorted({str(i) for i in t.stimulus_ids[t.split == "train"]})
    embeds, _ = _image_embeds(ctx.root, train_names, latents, ctx.device, ctx.verbose)
    pred = model.encode(t.X[mine], t.lengths[mine])  # type: ignore[index]
    best = np.argmax(cosine_similarity_matrix(pred, embeds), axis=1)
    for r, b in zip(mine, best):
        path = output_paths(ctx.out, t.subject, Path(str(t.stimulus_ids[r])).stem, ctx.recipe_name)["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        _png(path, load_bold5000_stimuli(ctx.root, [train_names[b]], size=size)[0])
        state["picked"][str(t.stimulus_ids[r])] = train_names[b]
        ctx.log.add_items({path.stem: train_names[b]})
        entry["n_done"] += 1


def _generate_subject(ctx: Any, model: Any, t: Any, test: np.ndarray, mine: np.ndarray, entry: dict[str, Any],
                      state: dict[str, Any]) -> None:
    """WAVE's stage 2: encoder -> prior -> generator, ``samples`` candidates per item, the best by CLIP cosine."""
    from ..generate import get_generator
    from ..latents import get_space
    from ..models.wave import WAVEPrior
    from ._derivative import _png, _sub_label, output_paths

    st = state["settings"]
    k = st["samples"]
    position = {int(r): int(np.flatnonzero(test == r)[0]) for r in mine}  # place in the subject's test list
    paths = {int(r): output_paths(ctx.out, t.subject, Path(str(t.stimulus_ids[r])).stem, ctx.recipe_name)["image"]
             for r in mine}
    todo = [int(r) for r in mine if not paths[int(r)].is_file()]
    entry["n_skipped"] = len(mine) - len(todo)
    if not todo:
        return
    t0 = time.perf_counter()
    if state["prior"] is None:
        state["prior"] = WAVEPrior.from_pretrained(ctx.run / "prior", device=str(ctx.device)).eval()
    prior = state["prior"]
    pred = model.encode(t.X[todo], t.lengths[todo])  # type: ignore[index]
    cond = model.pooled_features(t.X[todo], t.lengths[todo])  # type: ignore[index]
    seeds = [st["seed"] + k * position[r] + j for r in todo for j in range(k)]
    tokens = prior.sample(np.repeat(cond, k, axis=0), seeds)
    ctx.timings["predict_latents_s"] = ctx.timings.get("predict_latents_s", 0.0) + time.perf_counter() - t0
    if state["generator"] is None:
        t0 = time.perf_counter()
        state["generator"] = get_generator(st["name"], weights=st["weights"], device=ctx.device, dtype=st["dtype"],
                                           preset=st["preset"], compile=st["compile"], preview_vae=st["preview_vae"],
                                           config=st["config"])
        ctx.timings["load_generator_s"] = ctx.timings.get("load_generator_s", 0.0) + time.perf_counter() - t0
    generator = state["generator"]
    generator.check_latents({"clip_image_tokens": tokens})  # fail before any work on a wrong space / NaN
    if k > 1 and state["space"] is None:
        latents = dict(ctx.recipe.get("latents", {}))
        state["space"] = get_space(str(latents.get("image", "clip-vit-l-14")), weights=latents.get("weights"),
                                   device=ctx.device, verbose=ctx.verbose)
    t0 = time.perf_counter()
    bs = st["batch_size"]
    per_batch = max(1, bs // k)  # items per generator call (all their candidates together)
    with progress(total=len(todo), desc=f"reconstruct sub-{_sub_label(t.subject)}", unit="img",
                  verbose=ctx.verbose) as bar:
        for a in range(0, len(todo), per_batch):
            items = list(range(a, min(len(todo), a + per_batch)))
            rows = [k * i + j for i in items for j in range(k)]
            images = generator.generate({"clip_image_tokens": tokens[rows]}, seeds=[seeds[q] for q in rows],
                                        steps=st["steps"], guidance=st["guidance"], batch_size=len(rows),
                                        verbose=False, **st["options"])
            images = np.asarray(images).reshape(len(items), k, *np.asarray(images).shape[1:])
            sims = np.zeros((len(items), k))
            if k > 1:
                emb = np.asarray(state["space"].encode_images(images.reshape(-1, *images.shape[2:])), np.float64)
                emb = emb.reshape(len(items), k, -1)
                p = np.asarray(pred[items], np.float64)
                sims = np.einsum("ikd,id->ik", emb, p) / np.maximum(
                    np.linalg.norm(emb, axis=2) * np.linalg.norm(p, axis=1)[:, None], 1e-12)
            for q, i in enumerate(items):
                r = todo[i]
                pick = int(np.argmax(sims[q]))
                _png(paths[r], images[q, pick])
                state["candidates"][f"{t.subject}/{paths[r].stem}"] = {
                    "stimulus_id": str(t.stimulus_ids[r]), "picked": pick,
                    "seeds": seeds[k * i:k * i + k], "cosine": [float(v) for v in sims[q]] if k > 1 else None}
                ctx.log.add_items({paths[r].stem: seeds[k * i + pick]})
            bar.update(len(items))
            entry["n_done"] += len(items)
    ctx.timings["generate_s"] = ctx.timings.get("generate_s", 0.0) + time.perf_counter() - t0
