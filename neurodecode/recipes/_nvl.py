"""The Neuro-Vision to Language runner: whole-volume NSD fMRI -> ViT3D -> CLIP / VAE -> LLM -> text and images.

:func:`train` runs the paper's stages on every subject of ``[data] subjects`` with one model:

1. data: each subject's betas as patched volumes (:func:`neurodecode.data.load_nsd_volumes`, the patch
   set of the union of all the recipe's subjects' nsdgeneral masks; ``[data.volumes]``:
   ``target_shape``, ``patch_size``, ``mask_threshold``); targets embedded once per image into the
   feature cache (``[latents.clip]``: CLIP ViT-L/14 image embedding, ``[latents.vae_latents]``: the SD
   VAE latent);
2. the extractor (:class:`~neurodecode.models.nvl.NVL`) trained by ``[train]`` on every subject's
   training trials, each paired with another repeat of the same image for MixUp (or itself);
   saved to ``RUN/extractor``;
3. with ``[decoder.llm_stage]``: the language stage (:class:`~neurodecode.models.nvl.NVLBrainLLM`) on
   (trial, instruction, answer) rows built from each training image's captions
   (:func:`~neurodecode.models.nvl.instruction_pairs`; ``max_rows`` > 0 keeps a seeded subset):
   ``stage1_epochs`` with the LM frozen (projector only), then ``stage2_epochs`` with ``stage2 = "lora"``
   or ``"full"``; saved to ``RUN/llm``;
4. with ``[decoder] patch_sizes`` (the paper: 14, 12, 10): one more extractor per other patch size,
   trained the same way on the volumes cut at that size, saved to ``RUN/extractor_p<size>``; they
   only serve the concept-map ensemble (the language stage reads the ``[data.volumes] patch_size`` one).

``metrics.json``: training losses, and per subject the top-1 identification of the test images from the
predicted CLIP embedding beside its shuffled-brain control.

:func:`reconstruct` (the shared :func:`~neurodecode.recipes._nsd_images.reconstruct_nsd`, fed the patched
test volumes): images from Stable unCLIP (``[generate]``, e.g. unCLIP-small, CLIP-L) conditioned on the
predicted CLIP embedding and, with ``[generate] prompt = "lm"`` (default), the LLM's answer to the
``sd_prompt`` instruction (``"empty"``: the empty prompt), started from the predicted VAE latent
(``[generate.options] init_mix = 0.93``: ``(1 - 0.93) z_v + 0.93 noise``, or img2img at ``strength``);
the prompts used go to ``sd_prompts.json``. The LLM's brief description is each item's caption
(``_recon.txt``), its answers to ``[generate] answers`` go to ``answers.json`` and, with
``concept_maps = true``, a concept map per item (``_concept.nii.gz`` on the target grid and a PNG):
``concept_method`` (``"gradcam"``, the paper's, or ``"gradient_x_input"``) of each extractor of the
run, put back on the target grid, min-max normalised and averaged (:func:`~neurodecode.models.nvl.ensemble_maps`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, ValidationError
from .._core.files import atomic_path, write_json
from .._core.validation import format_error
from ._data import nsd_subject_ids
from ._nsd_images import reconstruct_nsd
from ._run import RunContext, fit, make_context, seed_everything, write_run_outputs
from ._schema import NSDGenerate
from ._targets import compute_targets, gather_targets, read_nsd_captions

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct", "NVLGenerate", "LLMStage"]

DATASETS = ("nsd",)
#: generators that take a text prompt per item (``generate(..., prompts=[...])``)
PROMPT_GENERATORS = ("unclip",)


@dataclass
class LLMStage:
    """``[decoder.llm_stage]``: the language stage (absent: the extractor alone is trained)."""

    stage1_epochs: int = 1
    stage1_lr: float = 2e-3
    stage2: str = "lora"
    stage2_epochs: int = 1
    stage2_lr: float = 2e-5
    batch_size: int = 24
    instructions: list[str] = field(default_factory=lambda: ["brief", "detailed", "question", "sd_prompt",
                                                             "concept"])
    max_rows: int = 0


@dataclass
class NVLGenerate(NSDGenerate):
    """``[generate]`` of NVL: an NSD image generator plus the language outputs."""

    answers: list[str] = field(default_factory=lambda: ["brief", "question", "sd_prompt"])
    max_new_tokens: int = 32
    num_beams: int = 1
    concept_maps: bool = False
    #: the unCLIP text prompt: "lm" (the language model's answer to the sd_prompt instruction) or "empty"
    prompt: str = "lm"
    concept_method: str = "gradcam"


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of an NVL recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..models.nvl import CONCEPT_METHODS, INSTRUCTIONS, NVLConfig
    from ..train import TrainConfig
    from ._schema import check_recipe_tables

    out = check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=NVLConfig, generate=NVLGenerate,
                              train_config=TrainConfig, latent_tables=("clip", "vae_latents"),
                              decoder_extra=("patch_sizes",), decoder_tables={"llm_stage": (LLMStage, ())})
    gen = out["generate"]
    if gen.get("prompt", "lm") not in ("lm", "empty"):
        problems.add("generate.prompt", f"expected 'lm' or 'empty', got {gen.get('prompt')!r}")
    elif gen.get("prompt", "lm") == "lm" and gen.get("generator") not in PROMPT_GENERATORS:
        problems.add("generate.prompt", f"'lm' feeds the LM's prompt to a generator among {list(PROMPT_GENERATORS)}, "
                     f"got generator {gen.get('generator')!r}; set prompt = \"empty\"")
    if gen.get("concept_method", "gradcam") not in CONCEPT_METHODS:
        problems.add("generate.concept_method", f"expected one of {list(CONCEPT_METHODS)}, got "
                     f"{gen.get('concept_method')!r}")
    sizes = out["decoder"].get("patch_sizes")
    if sizes is not None:
        main = dict(out["data"].get("volumes") or {}).get("patch_size")
        if (not isinstance(sizes, list) or not sizes
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes)
                or len(set(sizes)) != len(sizes)):
            problems.add("decoder.patch_sizes", f"a list of distinct positive ints (e.g. [14, 12, 10]), got {sizes!r}")
        elif main is not None and int(main) not in sizes:
            problems.add("decoder.patch_sizes", f"a list holding data.volumes.patch_size = {main} (the extractor the "
                         f"language stage reads), got {sizes!r}")
    stage = dict(out["decoder"].get("llm_stage") or {})
    for kind in [*stage.get("instructions", []), *out["generate"].get("answers", [])]:
        if kind not in INSTRUCTIONS:
            problems.add("decoder.llm_stage.instructions / generate.answers",
                         f"instruction kinds among {list(INSTRUCTIONS)}, got {kind!r}")
    if stage.get("stage2", "lora") not in ("none", "lora", "full"):
        problems.add("decoder.llm_stage.stage2", f"expected 'none', 'lora' or 'full', got {stage.get('stage2')!r}")
    for key in ("n_patches", "patch_dim", "clip_shape", "vae_shape"):
        if key in out["decoder"]:
            problems.add(f"decoder.{key}", "comes from the data and the latent spaces; remove it from the recipe")
    return out


# --------------------------------------------------------------------------------------------- data
def _volumes_kwargs(data: Mapping[str, Any]) -> dict[str, Any]:
    vol = dict(data.get("volumes") or {})
    unknown = sorted(set(vol) - {"target_shape", "patch_size", "mask_threshold", "align_corners"})
    if unknown:
        raise ValidationError(format_error("data.volumes", "keys among target_shape, patch_size, mask_threshold, "
                                           "align_corners", ", ".join(unknown)))
    return vol


def load_volumes_for_recipe(root: Any, data: Mapping[str, Any], subject: Any, *, verbose: Any = None,
                            patch_size: int | None = None) -> Any:
    """One subject's patched volumes as the recipe says (the patch set of all the recipe's subjects);
    ``patch_size`` replaces ``[data.volumes] patch_size`` (the concept-map ensemble's other extractors)."""
    from ..data import load_nsd_volumes

    vol = _volumes_kwargs(data)
    if patch_size is not None:
        vol["patch_size"] = int(patch_size)
    return load_nsd_volumes(root, subject, mask_subjects=nsd_subject_ids(data["subjects"]),
                            beta_version=data["beta_version"], sessions=data["sessions"], zscore=data["zscore"],
                            average_test_repeats=data["average_test_repeats"],
                            average_train_repeats=data["average_train_repeats"], source=data["source"],
                            nan_policy=data["nan_policy"], verbose=verbose, **vol)


def _main_patch_size(data: Mapping[str, Any]) -> int:
    from ..data._nsd_volumes import _defaults

    return _defaults(None, _volumes_kwargs(data).get("patch_size"))[1]


def _ensemble_sizes(decoder: Mapping[str, Any], data: Mapping[str, Any]) -> list[int]:
    """The patch sizes of the concept-map ensemble, the main extractor's first."""
    main = _main_patch_size(data)
    return [main] + [int(p) for p in (decoder.get("patch_sizes") or []) if int(p) != main]


def _repeat_partners(stimulus_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each trial, another trial of the same image (itself when it was shown once)."""
    partner = np.arange(len(stimulus_ids))
    for sid in np.unique(stimulus_ids):
        rows = np.flatnonzero(stimulus_ids == sid)
        if len(rows) > 1:
            partner[rows] = rows[(np.arange(len(rows)) + rng.integers(1, len(rows))) % len(rows)]
    return partner


# -------------------------------------------------------------------------------------------- train
def train(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
          max_steps: int | None = None, resume: bool = True, device: str = "auto", verbose: Any = None) -> Any:
    """Train the extractor and (with ``[decoder.llm_stage]``) the language stage; see the module docstring."""
    from .._core.recipes import save_resolved_recipe
    from ..metrics import identification_with_control
    from ..models.nvl import NVL, NVLBrainLLM, NVLConfig, instruction_pairs
    from ..train import ArrayBatches, IndexedRows, TrainConfig

    ctx: RunContext = make_context(recipe, data_root, out_dir, max_steps=max_steps, resume=resume, device=device,
                                   verbose=verbose)
    subjects = nsd_subject_ids(ctx.data["subjects"])
    trials = {s: load_volumes_for_recipe(ctx.root, ctx.data, s, verbose=verbose) for s in subjects}
    all_ids = np.concatenate([t.stimulus_ids for t in trials.values()])
    tables = {k: v for k, v in ctx.latents.items() if isinstance(v, Mapping) and v.get("space")}
    if "clip" not in tables:
        raise ValidationError(format_error("latents.clip", "a CLIP image space (NVL: clip-vit-l-14)", "none"))
    targets = compute_targets(ctx.root, tables, all_ids, cache_root=ctx.cache_root, captions=ctx.data["captions"],
                              device=ctx.latent_device, dtype=ctx.dtype, verbose=verbose)

    # 1. the extractor, one for every subject
    seed_everything(ctx.config.seed)
    first = next(iter(trials.values()))
    n_patches, patch_dim = int(first.X.shape[1]), int(first.X.shape[2])
    decoder = {k: v for k, v in ctx.decoder.items() if k not in ("llm_stage", "patch_sizes")}
    fields = dict(decoder, n_patches=n_patches, patch_dim=patch_dim, clip_shape=[int(targets["clip"][1].shape[1])],
                  vae_shape=[int(v) for v in targets["vae_latents"][1].shape[1:]] if "vae_latents" in targets else None)
    config = NVLConfig.tiny(**fields) if ctx.base == "tiny" else NVLConfig(**fields)
    rng = np.random.default_rng(ctx.config.seed)
    xs, ids, partner = [], [], []
    offset = 0
    for t in trials.values():
        tr = t.train
        xs.append(np.asarray(tr.X, dtype=np.float32))
        ids.append(tr.stimulus_ids)
        partner.append(_repeat_partners(tr.stimulus_ids, rng) + offset)
        offset += len(tr)
    X_train, ids_train, pairs = np.concatenate(xs), np.concatenate(ids), np.concatenate(partner)
    arrays = {"x": X_train, "x_pair": IndexedRows(X_train, pairs), **gather_targets(targets, ids_train, lazy=True)}
    ctx.out.mkdir(parents=True, exist_ok=True)
    save_resolved_recipe(ctx.recipe, ctx.out)
    model = NVL(config)
    result = fit(model, ctx.config, ArrayBatches(arrays, min(ctx.config.batch_size, len(X_train))), None,
                 ctx.out / "extractor", ctx.resume)
    metrics: dict[str, Any] = dict(result.metrics)
    for s, t in trials.items():
        test = t.test
        if len(test) >= 2:
            pred = model.predict_latents(test.X)["clip_image_embeds"]
            top1, control = identification_with_control(pred, gather_targets(targets, test.stimulus_ids)["clip"])
            metrics[f"test/{s}/top1"], metrics[f"test/{s}/shuffled_top1"] = top1, control
            metrics[f"test/{s}/chance"] = 1.0 / len(test)

    # 1b. the concept-map ensemble: one more extractor per other patch size (same trials, pairs and targets)
    ensemble: dict[str, str] = {str(_main_patch_size(ctx.data)): str(ctx.out / "extractor")}
    for size in _ensemble_sizes(ctx.decoder, ctx.data)[1:]:
        seed_everything(ctx.config.seed)
        parts = [load_volumes_for_recipe(ctx.root, ctx.data, s, verbose=verbose, patch_size=size).train
                 for s in subjects]
        if not np.array_equal(np.concatenate([t.stimulus_ids for t in parts]), ids_train):
            raise DataIntegrityError(format_error(f"volumes at patch size {size}", "the main extractor's training "
                                                  "trials, in the same order", "other trials"))
        X_size = np.concatenate([np.asarray(t.X, dtype=np.float32) for t in parts])
        del parts
        cfg = NVLConfig(**{**config.__dict__, "n_patches": int(X_size.shape[1]), "patch_dim": int(X_size.shape[2]),
                           "llm_config": dict(config.llm_config)})
        sub_model = NVL(cfg)
        sub_arrays = {**arrays, "x": X_size, "x_pair": IndexedRows(X_size, pairs)}
        sub = fit(sub_model, ctx.config, ArrayBatches(sub_arrays, min(ctx.config.batch_size, len(X_size))), None,
                  ctx.out / f"extractor_p{size}", ctx.resume)
        metrics.update({f"extractor_p{size}/{k}": v for k, v in sub.metrics.items()})
        ensemble[str(size)] = str(ctx.out / f"extractor_p{size}")

    # 2. the language stage on captions
    stage = ctx.decoder.get("llm_stage")
    llm_info: dict[str, Any] | None = None
    if stage:
        stage = {**LLMStage().__dict__, **dict(stage)}
        caps = read_nsd_captions(ctx.root, ctx.data["captions"])
        instr_texts: list[str] = []
        answer_texts: list[str] = []
        rows, instr_idx, answer_idx = [], [], []
        for i, sid in enumerate(ids_train):
            for q, a in instruction_pairs(caps.get(int(sid), []) or ["an image"], stage["instructions"]):
                rows.append(i)
                instr_idx.append(len(instr_texts))
                instr_texts.append(q)
                answer_idx.append(len(answer_texts))
                answer_texts.append(a)
        if int(stage["max_rows"]) and len(rows) > int(stage["max_rows"]):  # a seeded subset (quick runs)
            keep = np.sort(np.random.default_rng(ctx.config.seed).choice(len(rows), int(stage["max_rows"]),
                                                                          replace=False))
            rows, instr_idx, answer_idx = ([v[i] for i in keep] for v in (rows, instr_idx, answer_idx))
        llm = NVLBrainLLM.from_extractor(model, llm_train="none")
        data = {"x": IndexedRows(X_train, np.asarray(rows)), "instruction": np.asarray(instr_idx),
                "answer": np.asarray(answer_idx)}
        bs = min(int(stage["batch_size"]), len(rows))
        src = ArrayBatches(data, bs, extra={"instruction_texts": instr_texts, "answer_texts": answer_texts})
        base = {k: v for k, v in ctx.config.to_dict().items() if k not in ("epochs", "lr", "batch_size", "extra")}
        stage_metrics = {}
        for name, mode, epochs, lr in (("stage1", "none", stage["stage1_epochs"], stage["stage1_lr"]),
                                       ("stage2", stage["stage2"], stage["stage2_epochs"], stage["stage2_lr"])):
            if int(epochs) < 1 or (name == "stage2" and mode == "none"):
                continue
            llm.set_llm_train(mode)
            cfg = TrainConfig(**{**base, "epochs": int(epochs), "lr": float(lr), "batch_size": bs,
                                 "scheduler": "constant" if base.get("scheduler") == "onecycle" else base["scheduler"],
                                 "warmup_steps": 0})
            res = fit(llm, cfg, src, None, ctx.out / f"llm_{name}", ctx.resume)
            stage_metrics.update({f"{name}/{k}": v for k, v in res.metrics.items()})
        llm.save_pretrained(ctx.out / "llm", metadata={"subjects": subjects})
        metrics.update(stage_metrics)
        llm_info = {"n_rows": len(rows), "instructions": stage["instructions"], "stage2": stage["stage2"],
                    "llm": config.llm or "tiny (random LlamaConfig)"}
    write_run_outputs(ctx, {"steps": result.steps, "resumed_from": result.resumed_from, "metrics": metrics}, {
        "subjects": subjects, "data": {s: t.provenance for s, t in trials.items()},
        "n_train": {s: len(t.train) for s, t in trials.items()}, "n_test": {s: len(t.test) for s, t in trials.items()},
        "models": {"extractor": str(ctx.out / "extractor"), "llm": str(ctx.out / "llm") if stage else None},
        "language_stage": llm_info, "patches": {"n_patches": n_patches, "patch_dim": patch_dim},
        "concept_extractors": ensemble,
    })
    return result


# ---------------------------------------------------------------------------------------- reconstruct
def reconstruct(recipe: Mapping[str, Any], data_root: Any, subject: Any, checkpoint: Any, out_dir: Any,
                **kwargs: Any) -> dict[str, Any]:
    """Images, captions, answers and concept maps for a subject's test volumes (see the module docstring)."""
    from ..models.nvl import INSTRUCTIONS, NVL, NVLBrainLLM

    run = Path(checkpoint)
    gen = dict(recipe["generate"])
    llm_dir, ext_dir = run / "llm", run / "extractor"
    if not (llm_dir / "config.json").is_file() and not (ext_dir / "config.json").is_file():
        raise ValidationError(format_error("checkpoint", "an NVL run folder (extractor/ and llm/)", str(run),
                                           "Pass the --out folder of `neurodecode train pipelines/nvl_nsd.toml`"))
    model: Any = NVLBrainLLM.from_pretrained(llm_dir) if (llm_dir / "config.json").is_file() \
        else NVL.from_pretrained(ext_dir)
    trials = load_volumes_for_recipe(data_root, recipe["data"], subject, verbose=kwargs.get("verbose"))
    test = trials.test
    if len(np.unique(test.stimulus_ids)) != len(test):
        test = test.average_repeats()
    if kwargs.get("limit") is not None:
        test = test.subset(np.arange(min(int(kwargs["limit"]), len(test))), note=f"first {kwargs['limit']} test stimuli")
    captions_fn = prompts_fn = None
    said: dict[int, str] = {}
    if isinstance(model, NVLBrainLLM):
        def captions_fn(rows: np.ndarray) -> list[str]:
            return model.answer(test.X[rows], INSTRUCTIONS["brief"], max_new_tokens=int(gen["max_new_tokens"]),
                                num_beams=int(gen["num_beams"]))

        if gen["prompt"] == "lm":
            def prompts_fn(rows: np.ndarray) -> list[str]:
                """The LM's Stable Diffusion prompt for the test items ``rows`` (the unCLIP text condition)."""
                out = model.answer(test.X[rows], INSTRUCTIONS["sd_prompt"], max_new_tokens=int(gen["max_new_tokens"]),
                                   num_beams=int(gen["num_beams"]))
                said.update({int(r): t for r, t in zip(rows, out)})
                return out
    summary = reconstruct_nsd(recipe, data_root, subject, ext_dir if ext_dir.is_dir() else llm_dir, out_dir,
                              trials=test, decoder=model, captions_fn=captions_fn, prompts_fn=prompts_fn, **kwargs)
    out = Path(out_dir)
    if said:
        from ._derivative import _stim_label, _sub_label

        write_json(out / f"sub-{_sub_label(test.subject)}" / "sd_prompts.json", {
            "instruction": INSTRUCTIONS["sd_prompt"], "source": "the language model, from the fMRI tokens alone",
            "items": {_stim_label(test.stimulus_ids[r]): t for r, t in sorted(said.items())}})
    if isinstance(model, NVLBrainLLM) and gen["answers"]:
        _write_answers(out, model, test, gen)
    if gen["concept_maps"]:
        _write_concept_maps(out, recipe, data_root, model, test, gen, run)
    return summary


def _write_answers(out: Path, model: Any, test: Any, gen: Mapping[str, Any]) -> None:
    from ..models.nvl import INSTRUCTIONS
    from ._derivative import _stim_label, _sub_label

    items: dict[str, dict[str, str]] = {_stim_label(i): {} for i in test.stimulus_ids}
    for kind in gen["answers"]:
        if "{concept}" in INSTRUCTIONS[kind]:
            continue  # concept localisation asks about the concept found by "question" (concept maps)
        said = model.answer(test.X, INSTRUCTIONS[kind], max_new_tokens=int(gen["max_new_tokens"]),
                            num_beams=int(gen["num_beams"]))
        for i, a in zip(test.stimulus_ids, said):
            items[_stim_label(i)][kind] = a
    write_json(out / f"sub-{_sub_label(test.subject)}" / "answers.json",
               {"instructions": {k: INSTRUCTIONS[k] for k in gen["answers"]}, "items": items,
                "teacher_forcing": False})


def _write_concept_maps(out: Path, recipe: Mapping[str, Any], data_root: Any, model: Any, test: Any,
                        gen: Mapping[str, Any], run: Path) -> None:
    """Per item: the LLM's main concept -> its CLIP text embedding -> a map per extractor -> their ensemble."""
    import nibabel as nib

    from ..data import nsd_patch_grid, patches_to_volume
    from ..latents import get_space
    from ..models.nvl import INSTRUCTIONS, NVL, NVLBrainLLM, ensemble_maps, main_concept
    from ._derivative import _stim_label, _sub_label

    extractor = model.extractor if isinstance(model, NVLBrainLLM) else model
    concepts = (model.answer(test.X, INSTRUCTIONS["question"], max_new_tokens=8)
                if isinstance(model, NVLBrainLLM) else [main_concept(["object"])] * len(test))
    concepts = [c.split()[0] if c.split() else "object" for c in concepts]
    space_name = str(gen.get("concept_space") or _text_space(recipe))
    clip_table = dict(recipe["latents"].get("clip") or {})
    emb = np.asarray(get_space(space_name, weights=clip_table.get("weights")).encode_texts(concepts),
                     dtype=np.float32)
    data, subjects = recipe["data"], nsd_subject_ids(recipe["data"]["subjects"])
    main = _main_patch_size(data)
    members: list[tuple[int, Any, np.ndarray]] = [(main, extractor, np.asarray(test.X))]  # (size, model, X)
    for size in _ensemble_sizes(recipe["decoder"], data)[1:]:
        folder = run / f"extractor_p{size}"
        if not (folder / "config.json").is_file():
            continue  # a run trained without that size
        trials = load_volumes_for_recipe(data_root, data, test.subject, patch_size=size).test
        if len(np.unique(trials.stimulus_ids)) != len(trials):
            trials = trials.average_repeats()
        rows = [int(np.flatnonzero(trials.stimulus_ids == sid)[0]) for sid in test.stimulus_ids]
        members.append((size, NVL.from_pretrained(folder), np.asarray(trials.X)[rows]))
    grids = {size: nsd_patch_grid(data_root, subjects, **{**_volumes_kwargs(data), "patch_size": size})
             for size, _, _ in members}
    method = str(gen.get("concept_method", "gradcam"))
    folder = out / f"sub-{_sub_label(test.subject)}" / "concepts"
    folder.mkdir(parents=True, exist_ok=True)
    record = {}
    for k, (sid, concept) in enumerate(zip(test.stimulus_ids, concepts)):
        vols = [patches_to_volume(m.concept_map(X[k:k + 1], emb[k], method=method)[0], grids[size])
                for size, m, X in members]
        vol = ensemble_maps(vols)
        path = folder / f"sub-{_sub_label(test.subject)}_stim-{_stim_label(sid)}_concept.nii.gz"
        with atomic_path(path, suffix=".nii.gz") as tmp:
            nib.save(nib.Nifti1Image(vol.astype(np.float32), np.eye(4)), str(tmp))
        _plot_map(vol, path.with_suffix("").with_suffix(".png"), f"{concept} ({_stim_label(sid)})")
        record[_stim_label(sid)] = {"concept": concept, "file": path.name}
    labels = {"gradcam": "GradCAM: ReLU(sum over features of the patch tokens entering the last block, weighted "
                         "by their gradient averaged over patches), per patch",
              "gradient_x_input": "ReLU(gradient x input) per voxel"}
    write_json(folder / "concepts.json", {"space": space_name, "grid": "the extractor's target grid (identity "
                                          "affine; resize with neurodecode.data.resample_volume)",
                                          "method": f"{labels[method]}, of cos(predicted CLIP, concept text)",
                                          "ensemble": {"patch_sizes": [size for size, _, _ in members],
                                                       "rule": "each map min-max scaled to [0, 1], then averaged"},
                                          "items": record})


def _text_space(recipe: Mapping[str, Any]) -> str:
    space = str(recipe["latents"]["clip"]["space"])
    return space.replace("clip-vit-l-14", "clip-vit-l-14-text", 1) if "-text" not in space else space


def _plot_map(volume: np.ndarray, path: Path, title: str) -> None:
    """The map with nilearn (its own grid as background: the target grid carries no anatomical affine)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    img = nib.Nifti1Image(volume.astype(np.float32), np.eye(4))
    display = plotting.plot_stat_map(img, bg_img=None, display_mode="ortho", title=title, colorbar=True,
                                     draw_cross=False, annotate=False)
    with atomic_path(path, suffix=".png") as tmp:
        display.savefig(str(tmp), dpi=80)
    display.close()
    plt.close("all")
