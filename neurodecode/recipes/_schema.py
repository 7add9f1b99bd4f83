"""The typed schema of a recipe: one dataclass per table, checked all at once before any work.

:func:`validate_recipe` reads a resolved recipe (``load_recipe``: preset and ``--set`` applied) and

- refuses unknown sections and keys, every one of them in one error, each with its close matches
  (``data.subjcts`` -> "did you mean 'subjects'?");
- checks each value's type against the table's annotations (``batch_size = 8.5`` or
  ``lr = "3e-4"`` get a teaching error, not a traceback deep inside torch);
- normalises the spellings of "nothing" in one place: ``"none"``/``""`` -> None where None is allowed,
  ``"all"`` -> None for NSD ``sessions``; ``betas`` -> ``beta_version``, ``prepared`` stays a folder;
- fills in the defaults, so training and reconstruction read the very same values.

The ``[data]`` table has one dataclass per dataset (:data:`DATA_TABLES`); ``[decoder]`` is checked against
the decoder's own config class; ``[train]``, ``[generate]`` and the keys of ``[latents]`` per runner
(each runner module declares its tables; see :data:`neurodecode.recipes.RUNNERS`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from .._core.errors import ValidationError
from .._core.specs import DATASETS

__all__ = ["NSDData", "BOLD5000Data", "ThingsEEG2Data", "ThingsMEGData", "ZucoData", "MEGMASCData",
           "Broderick2019Data", "MOUSData", "Brennan2019Data", "DATA_TABLES", "LatentTable", "TrainTable",
           "NSDGenerate", "ATMGenerate", "GLIMGenerate", "EvaluateTable", "WeightEntry", "FinetuneTable",
           "SECTIONS", "check_table", "RecipeProblems"]

#: Top-level sections a recipe may hold (``presets`` is consumed by ``load_recipe``).
SECTIONS = ("data", "latents", "decoder", "train", "generate", "evaluate", "weights", "finetune")


# ---------------------------------------------------------------------------------------------- [data]
@dataclass
class NSDData:
    """``[data]`` of an NSD recipe (:func:`neurodecode.data.load_nsd`)."""

    dataset: Literal["nsd"] = "nsd"
    subjects: list[str | int] = field(default_factory=lambda: ["nsd/subj01"])
    beta_version: Literal["b1", "b2", "b3"] = "b3"
    sessions: int | list[int] | None = field(default=None, metadata={"all_is_none": True})
    zscore: Literal["train", "all"] | None = "train"
    average_test_repeats: bool = True
    average_train_repeats: bool = False
    source: Literal["auto", "nifti", "hdf5"] = "auto"
    nan_policy: Literal["raise", "zero"] = "raise"
    prepared: str = ""
    captions: list[str] = field(default_factory=list)
    rois: str | list[str] | dict[str, Any] | None = None
    within_nsdgeneral: bool = False
    volumes: dict[str, Any] | None = None


@dataclass
class _ThingsCommon:
    subjects: list[str | int] = field(default_factory=lambda: [1])
    scaling: Literal["channel-zscore", "none"] = "none"
    sfreq: float | None = None
    window: list[float] = field(default_factory=lambda: [0.0, 1.0])
    n_channels: int | None = None
    average_test_repetitions: bool = True
    split: Literal["official"] = "official"
    mode: Literal["within", "loso"] = "within"
    images: str = ""


@dataclass
class ThingsEEG2Data(_ThingsCommon):
    """``[data]`` of a THINGS-EEG2 recipe (:func:`neurodecode.data.load_things_eeg2`)."""

    dataset: Literal["things-eeg2"] = "things-eeg2"
    variant: Literal["atm", "official"] = "atm"
    allow_pickle: bool = False


@dataclass
class ThingsMEGData(_ThingsCommon):
    """``[data]`` of a THINGS-MEG recipe (:func:`neurodecode.data.load_things_meg`)."""

    dataset: Literal["things-meg"] = "things-meg"
    sessions: int | list[int] | None = field(default=None, metadata={"all_is_none": True})
    raw_sfreq: float | None = None
    l_freq: float | None = None
    h_freq: float | None = None


@dataclass
class ZucoData:
    """``[data]`` of a ZuCo recipe (:func:`neurodecode.data.load_zuco`)."""

    dataset: Literal["zuco"] = "zuco"
    subjects: Literal["all"] | list[str] = "all"
    scaling: Literal["channel-zscore", "none"] = "none"
    versions: list[Literal["zuco1", "zuco2"]] = field(default_factory=lambda: ["zuco1", "zuco2"])
    tasks: list[Literal["SR", "NR", "TSR"]] = field(default_factory=lambda: ["SR", "NR", "TSR"])
    resample_to: float = 128.0
    channels: list[str] = field(default_factory=list)
    n_channels: int = 128
    max_times: int = 1280
    min_duration: float = 0.5
    max_duration: float | None = None
    split: Literal["unique-sentence"] = "unique-sentence"
    paraphrases: bool | str = False
    nan_policy: Literal["zero", "raise"] = "zero"


@dataclass
class _SpeechCommon:
    """What every speech ``[data]`` table shares (the loaders' common contract; Défossez et al. 2023)."""

    subjects: list[str | int] = field(default_factory=lambda: [1])
    sfreq: float = 120.0
    window: list[float] = field(default_factory=lambda: [-0.5, 2.5])
    baseline: list[float] | None = field(default_factory=lambda: [-0.5, -0.2])
    raw_sfreq: float | None = None
    l_freq: float | None = None
    h_freq: float | None = None
    scaling: Literal["robust", "channel-zscore", "none"] = "robust"
    clip: float | None = 20.0


@dataclass
class MEGMASCData(_SpeechCommon):
    """``[data]`` of a speech recipe on MEG-MASC (:func:`neurodecode.data.load_meg_masc`): 3 s segments at word
    onsets, robust-scaled per channel and clipped (Défossez et al. 2023)."""

    dataset: Literal["meg-masc"] = "meg-masc"
    sessions: list[int] | None = None
    tasks: list[int] | None = None


@dataclass
class Broderick2019Data(_SpeechCommon):
    """``[data]`` of a speech recipe on Broderick 2019 EEG (:func:`neurodecode.data._broderick.load_broderick2019`):
    runs of *The Old Man and the Sea*, 128 BioSemi channels as released (``reference``: or minus the mastoids /
    the average)."""

    dataset: Literal["broderick2019"] = "broderick2019"
    runs: list[int] | None = None
    reference: Literal["mastoids", "average"] | None = None


@dataclass
class MOUSData(_SpeechCommon):
    """``[data]`` of a speech recipe on MOUS auditory MEG (``neurodecode.data._mous.load_mous``)."""

    dataset: Literal["mous"] = "mous"
    runs: list[int] | None = None
    contexts: list[Literal["sentence", "word_list"]] | None = None


@dataclass
class Brennan2019Data(_SpeechCommon):
    """``[data]`` of a speech recipe on Brennan & Hale 2019 EEG (``neurodecode.data._brennan.load_brennan2019``)."""

    dataset: Literal["brennan2019"] = "brennan2019"
    segments: list[int] | None = None
    reference: Literal["recorded", "mastoids", "average"] | None = None
    bads: Literal["keep", "drop"] | None = None


@dataclass
class BOLD5000Data:
    """``[data]`` of a BOLD5000 recipe (:func:`neurodecode.data.load_bold5000`): whole-brain parcel time series
    (``data = "parcels"``, an atlas and its lookup table, relative to the data root unless absolute) or ROI
    betas."""

    dataset: Literal["bold5000"] = "bold5000"
    subjects: list[str | int] = field(default_factory=lambda: [1])
    data: Literal["parcels", "roi"] = "parcels"
    atlas: str | None = None
    atlas_labels: str | None = None
    rois: list[str] | None = None
    n_trs: int = 5
    standardize: str | bool = "zscore_sample"
    average_test_repeats: bool = True
    bold_pattern: str | None = None


#: ``[data] dataset`` -> its table, one per name of :data:`neurodecode.data.DATASETS`.
DATA_TABLES: dict[str, type] = {t().dataset: t for t in (NSDData, ThingsEEG2Data, ThingsMEGData, ZucoData,
                                                         MEGMASCData, BOLD5000Data, Broderick2019Data, MOUSData,
                                                         Brennan2019Data)}
assert tuple(sorted(DATA_TABLES)) == tuple(sorted(DATASETS)), "one [data] table per dataset of DATASETS"


# ------------------------------------------------------------------------------------------- [latents]
@dataclass
class LatentTable:
    """One ``[latents.<key>]`` table: a registered space, its weights and batch size (other keys: space options)."""

    space: str = ""
    weights: str | None = None
    batch_size: int = 32


# --------------------------------------------------------------------------------------------- [train]
@dataclass
class TrainTable:
    """``[train]`` of the neural decoders: the runner's keys (TrainConfig's fields are checked with it)."""

    subjects_per_step: int | None = None
    batch_per_process: bool = False
    validate: bool = False
    caption_sampling: Literal["mean", "cycle", "random"] = "mean"
    caption_cycle: int = 3
    samples_per_epoch: int = 0


# ------------------------------------------------------------------------------------------ [generate]
@dataclass
class NSDGenerate:
    """``[generate]`` of the NSD recipes: a registered image generator, optionally a captioner, and optionally a
    ``lowlevel`` first stage (a registered generator, e.g. ``"vdvae"``) whose image, encoded by the generator's
    own VAE, is the img2img init (Brain-Diffuser); its image is also written as ``*_blurry.png``."""

    generator: str = ""
    weights: str | None = None
    steps: int | None = None
    guidance: float | None = None
    batch_size: int = 8
    seed: int = 0
    preset: str | None = None
    compile: bool = False
    dtype: str | None = None
    preview_vae: bool = False
    config: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    captioner: str | None = None
    captioner_weights: str | None = None
    captioner_config: dict[str, Any] | None = None
    captioner_options: dict[str, Any] = field(default_factory=dict)
    lowlevel: str | None = None
    lowlevel_weights: str | None = None
    lowlevel_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ATMGenerate:
    """``[generate]`` of the ATM recipes (prior -> image generator)."""

    generator: str = ""
    weights: str | None = None
    steps: int | None = None
    guidance: float | None = None
    latent_key: str = "clip_image_embeds"
    batch_size: int = 8
    seed: int = 0
    dtype: str | None = None
    preset: str | None = None
    compile: bool = False
    preview_vae: bool = False
    config: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class GLIMGenerate:
    """``[generate]`` of the GLIM recipe (its own T5 decodes)."""

    name: str = "glim"
    max_new_tokens: int | None = None
    num_beams: int = 2
    batch_size: int = 16
    seed: int = 0


# ------------------------------------------------------------------------------------------ [evaluate]
@dataclass
class EvaluateTable:
    """``[evaluate]``: what ``neurodecode evaluate`` and the training runners score."""

    metrics: list[str] = field(default_factory=list)
    protocol: str = "neurodecode-v1"
    test_set: str = ""
    bootstrap: int = 1000
    controls: list[str] = field(default_factory=list)
    kway: list[int] = field(default_factory=list)
    topk: list[int] = field(default_factory=list)
    n_test_concepts: int | None = None
    references: list[str] = field(default_factory=list)
    retrieval_block: int = 24
    retrieval_topk: list[int] = field(default_factory=lambda: [1, 5])
    teacher_forcing: bool = False
    text_metrics: list[str] = field(default_factory=list)
    zero_shot: list[str] = field(default_factory=list)
    ablate: Literal["yeo7", "none"] = "none"  # WAVE: network ablation of the test retrieval


# ------------------------------------------------------------------------------------------- [weights]
@dataclass
class WeightEntry:
    """One ``[weights.<name>]`` entry: an external artefact a run reads, with its licence."""

    id: str = ""
    open_clip: str = ""
    tag: str = ""
    revision: str = "main"
    files: list[str] = field(default_factory=list)
    licence: str = ""
    note: str = ""
    kind: str = ""


# ------------------------------------------------------------------------------------------ [finetune]
@dataclass
class FinetuneTable:
    """``[finetune]``: adapt a trained decoder to a new subject."""

    method: Literal["reset_tune", "full"] | None = None
    subject: str | int | None = None
    anchor: str | int | None = None
    n_train: int | None = None


# ------------------------------------------------------------------------------------------- checking
class RecipeProblems:
    """Collects every problem of a recipe, then raises them together."""

    def __init__(self, source: str = "recipe") -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def unknown(self, where: str, key: str, known: typing.Iterable[str]) -> None:
        close = difflib.get_close_matches(key, list(known), n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else \
            f" (known: {', '.join(sorted(known))})"
        self.add(f"{where}.{key}" if where else key, "unknown key" + hint)

    def raise_if_any(self) -> None:
        if self.items:
            lines = "\n".join(f"  - {p}" for p in self.items)
            raise ValidationError(
                f"{self.source}: {len(self.items)} problem(s) in the recipe:\n{lines}\n"
                "Fix them in the recipe file or with --set section.key=value (nothing was run).")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a table"
    if tp is type(None):
        return '"none"'
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if origin is tuple and len(args) > 1 and Ellipsis not in typing.get_args(tp):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, Mapping)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _allows_none(tp: Any) -> bool:
    return tp is Any or tp is type(None) or (typing.get_origin(tp) in (Union, types.UnionType)
                                             and any(_allows_none(a) for a in typing.get_args(tp)))


def _hint(value: Any, tp: Any) -> str:
    if isinstance(value, str) and (_matches(_try_number(value), tp)):
        return f"; write {value} without quotes"
    if isinstance(value, float) and _matches(int(value), tp) and not value.is_integer():
        return "; it must be a whole number"
    return ""


def _try_number(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            continue
    return text


def normalise_value(value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    """The one place where spellings of "nothing" become None: ``"none"``/``""`` (if None is allowed),
    ``"all"`` for fields marked ``all_is_none``. A single value given for a list field becomes a list."""
    if isinstance(value, str) and value.strip().lower() in ("none", "") and _allows_none(tp) \
            and not _matches(value, tp):
        return None
    if meta.get("all_is_none") and isinstance(value, str) and value.strip().lower() == "all":
        return None
    if typing.get_origin(tp) is list and isinstance(value, (str, int)) and not isinstance(value, bool) \
            and _matches([value], tp):
        return [value]
    return value


def type_hints(cls: type) -> dict[str, Any]:
    """Field types of a dataclass (``Any`` for a field whose annotation cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {f.name: Any for f in dataclasses.fields(cls)}


def check_table(cls: type, values: Any, section: str, problems: RecipeProblems, *,
                extra: typing.Iterable[str] = (), aliases: Mapping[str, str] | None = None,
                open_keys: bool = False) -> dict[str, Any]:
    """Check one recipe table against dataclass ``cls``; return it normalised, defaults filled in.

    Parameters
    ----------
    cls : dataclass type
        The table's schema (field annotations are the types checked).
    values : mapping
        The recipe's table.
    section : str
        Its dotted name, for the messages (``"data"``, ``"latents.image_tokens"``).
    problems : RecipeProblems
        Where problems are collected (nothing is raised here).
    extra : iterable of str
        Further keys allowed and passed through unchecked (checked elsewhere).
    aliases : mapping of str to str
        Old spellings -> field names (``betas`` -> ``beta_version``).
    open_keys : bool
        Pass unknown keys through (e.g. latent-space options, checked by the space).

    Returns
    -------
    table : dict
    """
    if not isinstance(values, Mapping):
        problems.add(section, f"expected a table, got {type(values).__name__} {values!r}")
        return {}
    hints = type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = set(extra)
    out: dict[str, Any] = {}
    for key, value in values.items():
        key = (aliases or {}).get(key, key)
        if key in fields:
            tp = hints[key]
            value = normalise_value(value, tp, fields[key].metadata)
            if not _matches(value, tp):
                problems.add(f"{section}.{key}", f"expected {_type_name(tp)}, got {value!r}{_hint(value, tp)}")
                continue
            out[key] = value
        elif key in extra or open_keys:
            out[key] = value
        else:
            problems.unknown(section, key, [*fields, *extra])
    for name, f in fields.items():
        if name not in out:
            if f.default is not dataclasses.MISSING:
                out[name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[name] = f.default_factory()
    return out


def check_config_fields(config_cls: type, values: Mapping[str, Any], section: str, problems: RecipeProblems, *,
                        extra: typing.Iterable[str] = ()) -> dict[str, Any]:
    """Check a table holding fields of a config dataclass (``[decoder]``, TrainConfig's part of ``[train]``):
    unknown keys and wrong types are problems; values are passed on as given (no defaults added)."""
    hints = type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    extra = set(extra)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in names:
            tp = hints.get(key, Any)
            value = normalise_value(value, tp, {})
            if not _matches(value, tp):
                problems.add(f"{section}.{key}", f"expected {_type_name(tp)}, got {value!r}{_hint(value, tp)}")
                continue
            out[key] = value
        elif key in extra:
            out[key] = value
        else:
            problems.unknown(section, key, [*names, *extra])
    return out


def _check_metric_names(evaluate: Mapping[str, Any], problems: RecipeProblems) -> None:
    """``[evaluate] metrics`` / ``text_metrics`` name metrics neurodecode computes (``retrieval``: predicted latents)."""
    from ..metrics import CAPTION_METRICS, DEPTH_METRICS, IMAGE_METRICS, TEXT_DEFAULT_METRICS, ZERO_SHOT_TASKS

    known = {"metrics": (*IMAGE_METRICS, *TEXT_DEFAULT_METRICS, "meteor", "retrieval", *CAPTION_METRICS,
                         *DEPTH_METRICS),
             "text_metrics": (*TEXT_DEFAULT_METRICS, "meteor", "retrieval", *CAPTION_METRICS),
             "zero_shot": tuple(ZERO_SHOT_TASKS)}
    for key, allowed in known.items():
        for name in evaluate.get(key, []):
            if name not in allowed:
                problems.unknown(f"evaluate.{key}", str(name), allowed)


def check_recipe_tables(recipe: Mapping[str, Any], problems: RecipeProblems, *, datasets: typing.Sequence[str],
                        decoder_config: type, generate: type, train_config: type | None = None,
                        train_table: type = TrainTable, decoder_extra: typing.Iterable[str] = (),
                        decoder_tables: Mapping[str, tuple[type, tuple[str, ...]]] | None = None,
                        latents_extra: typing.Iterable[str] = (), latent_tables: typing.Iterable[str] | None = None,
                        finetune: bool = False) -> dict[str, Any]:
    """Check every table of a recipe for one runner; return the normalised recipe (``_source`` not included).

    Parameters
    ----------
    recipe : mapping
        The resolved recipe.
    problems : RecipeProblems
    datasets : sequence of str
        ``[data] dataset`` values this runner reads (the first is the default).
    decoder_config : dataclass type
        The decoder's config class: ``[decoder]`` holds its fields plus ``name``, ``base``, ``init_from``
        and ``decoder_extra``.
    generate : dataclass type
        The ``[generate]`` table.
    train_config : dataclass type or None
        A config class whose fields ``[train]`` may also hold (the trainer's TrainConfig), with ``train_table``.
    train_table : dataclass type
        The runner's own ``[train]`` keys (checked and defaulted).
    decoder_extra : iterable of str
        Further ``[decoder]`` keys the runner reads.
    decoder_tables : mapping of str to (dataclass type, extra keys)
        Nested ``[decoder.<name>]`` tables and their schema (e.g. ATM's ``prior``).
    latents_extra : iterable of str
        ``[latents]`` keys of the runner besides ``cache_dir``, ``dtype``, ``device``.
    latent_tables : iterable of str or None
        The ``[latents.<key>]`` tables allowed (batch keys); None: none.
    finetune : bool
        Whether a ``[finetune]`` table is allowed.
    """
    out: dict[str, Any] = {}
    data = dict(recipe.get("data", {}))
    dataset = str(data.get("dataset", datasets[0]))
    if dataset not in datasets:
        problems.add("data.dataset", f"expected one of {', '.join(map(repr, datasets))} for "
                     f"{recipe.get('decoder', {}).get('name')!r}, got {dataset!r}")
        dataset = datasets[0]
    data["dataset"] = dataset
    out["data"] = check_table(DATA_TABLES[dataset], data, "data", problems, aliases={"betas": "beta_version"})

    decoder = dict(recipe.get("decoder", {}))
    nested = dict(decoder_tables or {})
    checked_dec = check_config_fields(decoder_config, {k: v for k, v in decoder.items() if k not in nested},
                                      "decoder", problems, extra=("name", "base", "init_from", *decoder_extra))
    for key, (cls, extra) in nested.items():
        if key in decoder:
            checked_dec[key] = check_config_fields(cls, dict(decoder[key] or {}), f"decoder.{key}", problems,
                                                   extra=extra)
    base = checked_dec.get("base", "default")
    if base not in ("default", "tiny", "low_compute"):
        problems.add("decoder.base", f"expected 'default', 'tiny' or 'low_compute', got {base!r}")
    out["decoder"] = checked_dec

    train = dict(recipe.get("train", {}))
    own = {k: v for k, v in train.items() if k in {f.name for f in dataclasses.fields(train_table)}}
    rest = {k: v for k, v in train.items() if k not in own}
    checked_train = check_table(train_table, own, "train", problems)
    if train_config is not None:
        checked_train.update(check_config_fields(train_config, rest, "train", problems))
    else:
        for key in rest:
            problems.unknown("train", key, [f.name for f in dataclasses.fields(train_table)])
    out["train"] = checked_train

    latents = dict(recipe.get("latents", {}))
    tables = set(latent_tables or ())
    top: dict[str, Any] = {}
    for key, value in latents.items():
        if isinstance(value, Mapping) and key not in latents_extra:
            if key not in tables:
                problems.unknown("latents", key, [*tables, "cache_dir", "dtype", "device", *latents_extra])
                continue
            top[key] = check_table(LatentTable, value, f"latents.{key}", problems, open_keys=True)
        elif key == "cache_dir" or key == "device":
            if not isinstance(value, str):
                problems.add(f"latents.{key}", f"expected a string, got {value!r}")
            top[key] = value
        elif key == "dtype":
            if value not in ("float32", "float16"):
                problems.add("latents.dtype", f"expected 'float32' or 'float16', got {value!r}")
            top[key] = value
        elif key in latents_extra:
            top[key] = value
        else:
            problems.unknown("latents", key, [*tables, "cache_dir", "dtype", "device", *latents_extra])
    out["latents"] = top

    out["generate"] = check_table(generate, dict(recipe.get("generate", {})), "generate", problems)
    out["evaluate"] = check_table(EvaluateTable, dict(recipe.get("evaluate", {})), "evaluate", problems)
    _check_metric_names(out["evaluate"], problems)
    weights = recipe.get("weights", {})
    out["weights"] = {}
    if not isinstance(weights, Mapping):
        problems.add("weights", f"expected a table of entries, got {weights!r}")
    else:
        for key, entry in weights.items():
            out["weights"][key] = check_table(WeightEntry, entry, f"weights.{key}", problems)
    if "finetune" in recipe:
        if not finetune:
            problems.add("finetune", f"fine-tuning is not offered for {recipe.get('decoder', {}).get('name')!r}")
        else:
            out["finetune"] = check_table(FinetuneTable, recipe["finetune"], "finetune", problems)
    return out
