"""The :class:`LatentSpace` interface and the registry of named spaces.

A latent space turns stimuli (images or sentences) into fixed-shape targets a
decoder learns to predict. Every space has two tiers that run the same code:

- the real tier (``get_space("clip-vit-l-14-tokens")``): published weights from an
  open_clip tag / hub id, or a local folder;
- the tiny tier (``get_space("clip-vit-l-14-tokens-tiny")``): the same
  architecture and output logic at toy width, randomly initialised with a fixed
  seed, fully offline. Its ``shape`` is smaller (documented per space).

Nothing heavy is imported here: torch, open_clip and transformers are imported
when a space is built.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.logging import progress
from .._core.validation import check_option, describe, format_error
from .._core.versions import package_versions
from ._spec import REGISTRY, SpaceSpec, register_space

__all__ = ["LatentSpace", "SpaceSpec", "register_space", "get_space", "available_spaces", "describe_space",
           "space_artefacts"]

#: Packages whose versions change the features (part of every cache key).
FEATURE_PACKAGES = ("torch", "torchvision", "open_clip_torch", "transformers", "sentence-transformers", "pillow")

#: Bump when a change in this package changes the features of an unchanged model.
LATENTS_FORMAT_VERSION = 1


class LatentSpace:
    """One target space: a frozen encoder plus its exact preprocessing and output logic.

    Subclasses implement :meth:`_encode_image_batch` and/or
    :meth:`_encode_text_batch` (torch in, torch out); this class handles batching,
    progress, NumPy conversion and dtype/autocast.

    Attributes
    ----------
    name : str
        Registry name (``"clip-vit-l-14-tokens"``, ``"minilm-l6-tiny"``...).
    shape : tuple of int
        Shape of one target, e.g. ``(257, 768)``.
    modality : {"image", "text"}
        What the space encodes.
    dtype : str
        Compute dtype (``"float32"``, ``"bfloat16"``, ``"float16"``); reduced
        precision runs under autocast. Outputs are always float32 NumPy arrays.
    device : str
        Where the encoder runs.
    batch_size : int
        Stimuli per forward pass.
    preprocessing : dict
        Everything applied before the encoder (image resize, crop, mean, std,
        interpolation; or tokenizer, max length), recorded in the cache key.
    weights : str
        Where the weights came from (open_clip tag / hub id, folder, ``random-init``).
    """

    modality: str = "image"

    def __init__(self, name: str, *, shape: tuple[int, ...], modality: str, device: Any = "cpu",
                 dtype: Any = "float32", batch_size: int = 32, verbose: Any = None,
                 preprocessing: dict[str, Any] | None = None, weights: str = "",
                 extra_key: dict[str, Any] | None = None) -> None:
        from .._core.device import resolve_device, resolve_dtype

        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.modality = check_option(modality, "modality", ("image", "text"))
        self._device = resolve_device(device)
        self._dtype = resolve_dtype(dtype, self._device)
        self.device = str(self._device)
        self.dtype = str(self._dtype).replace("torch.", "")
        if int(batch_size) < 1:
            raise ValidationError(format_error("batch_size", "a positive integer", batch_size))
        self.batch_size = int(batch_size)
        self.verbose = verbose
        self.preprocessing = dict(preprocessing or {})
        self.weights = weights
        self._extra_key = dict(extra_key or {})
        self._weights_sha256: str | None = None
        self._weights_file: Any = None  # set by a subclass that read weights from a file

    # ------------------------------------------------------------------ public
    def encode_images(self, images: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Encode images into this space.

        Parameters
        ----------
        images : ndarray of shape (n_images, height, width, 3), dtype uint8, or list of PIL images
            RGB images; the space applies its own preprocessing (resize, crop, normalise).
        batch_size : int or None
            Override the space's batch size.

        Returns
        -------
        features : ndarray of shape (n_images, *shape), float32
        """
        if self.modality != "image":
            raise ValidationError(
                format_error("images", f"texts for the text space {self.name!r}", "images",
                             "Use encode_texts, or an image space such as 'clip-vit-l-14-tokens'")
            )
        items = as_image_list(images)
        return self._run(items, self._encode_image_batch, batch_size, unit="img")

    def encode_texts(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Encode sentences into this space.

        Parameters
        ----------
        texts : list of str
            The sentences.
        batch_size : int or None
            Override the space's batch size.

        Returns
        -------
        features : ndarray of shape (n_texts, *shape), float32
        """
        if self.modality != "text":
            raise ValidationError(
                format_error("texts", f"images for the image space {self.name!r}", "texts",
                             f"Use encode_images, or the text space of the same model (e.g. '{_text_twin(self.name)}')")
            )
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValidationError(format_error("texts", "a list of str", texts, "Wrap a single sentence in a list"))
        return self._run(list(texts), self._encode_text_batch, batch_size, unit="text")

    def encode(self, stimuli: Any, *, batch_size: int | None = None) -> np.ndarray:
        """:meth:`encode_images` or :meth:`encode_texts`, whichever fits this space's modality."""
        if self.modality == "text":
            return self.encode_texts(stimuli, batch_size=batch_size)
        return self.encode_images(stimuli, batch_size=batch_size)

    def weights_sha256(self) -> str | None:
        """SHA-256 of the weights file (``None`` for random init); computed once, on first use."""
        if self._weights_sha256 is None and self._weights_file is not None:
            from .._core.files import sha256_file

            self._weights_sha256 = sha256_file(self._weights_file)
        return self._weights_sha256

    def cache_key(self) -> dict[str, Any]:
        """Everything that changes the features: a JSON-ready dict.

        Holds the space name, its output kind and normalisation, the architecture
        (hash of the model config), the weights tag and file hash, the compute dtype,
        the preprocessing and the versions of torch, open_clip, transformers and pillow.
        The device is not part of it (CPU and GPU agree to float tolerance).
        """
        versions = package_versions(FEATURE_PACKAGES)
        return {
            "space": self.name,
            "shape": list(self.shape),
            "modality": self.modality,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256(),
            "compute_dtype": self.dtype,
            "preprocessing": _jsonable(self.preprocessing),
            "versions": versions,
            "format": LATENTS_FORMAT_VERSION,
            **_jsonable(self._extra_key),
        }

    def cache_key_hash(self) -> str:
        """SHA-256 of :meth:`cache_key` (canonical JSON)."""
        return key_hash(self.cache_key())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, shape={self.shape}, modality={self.modality!r}, "
                f"weights={self.weights!r}, device={self.device!r}, dtype={self.dtype!r})")

    # --------------------------------------------------------------- internals
    def _encode_image_batch(self, items: list[Any]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode_text_batch(self, items: list[str]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _autocast(self) -> Any:
        import torch

        if self._dtype in (torch.bfloat16, torch.float16):
            return torch.autocast(device_type=self._device.type, dtype=self._dtype)
        return nullcontext()

    def _run(self, items: list[Any], fn: Callable[[list[Any]], Any], batch_size: int | None, unit: str) -> np.ndarray:
        import torch

        n = len(items)
        bs = int(batch_size or self.batch_size)
        out = np.empty((n, *self.shape), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            for start in progress(range(0, n, bs), desc=f"embed {self.name}", unit="batch",
                                  verbose=self.verbose, total=(n + bs - 1) // bs):
                feats = fn(items[start:start + bs])
                got = tuple(feats.shape[1:])
                if got != self.shape:  # pragma: no cover - internal contract
                    raise ShapeMismatchError(format_error(f"{self.name} output", f"shape (n, {self.shape})", got))
                out[start:start + bs] = feats.float().cpu().numpy()
        return out


def _text_twin(name: str) -> str:
    tiny = name.endswith("-tiny")
    base = name.removesuffix("-tiny").replace("-tokens", "").replace("bigg", "vit-h")
    twin = base + "-text" if base.startswith("clip-") and base != "clip-custom" else "clip-vit-l-14-text"
    return twin + ("-tiny" if tiny else "")


def as_image_list(images: Any) -> list[Any]:
    """Accept a uint8 array (n, H, W, 3) or a list of PIL images / uint8 (H, W, 3) arrays."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ShapeMismatchError(
                format_error("images", "an array of shape (n_images, height, width, 3)", images,
                             "Pass RGB images channels-last; one image needs a leading axis (img[None])")
            )
        if images.dtype != np.uint8:
            raise ValidationError(
                format_error("images", "uint8 pixel values in [0, 255]", images,
                             "Convert with (img * 255).round().astype(np.uint8) if your images are floats in [0, 1]")
            )
        return list(images)
    if isinstance(images, (list, tuple)):
        out = []
        for i, im in enumerate(images):
            if isinstance(im, np.ndarray):
                if im.ndim != 3 or im.shape[-1] != 3 or im.dtype != np.uint8:
                    raise ValidationError(format_error(f"images[{i}]", "a uint8 array of shape (height, width, 3)", im))
            elif not hasattr(im, "convert"):
                raise ValidationError(format_error(f"images[{i}]", "a PIL image or a uint8 array", im))
            out.append(im)
        return out
    raise ValidationError(format_error("images", "a uint8 ndarray (n, H, W, 3) or a list of PIL images", images))


def key_hash(key: dict[str, Any]) -> str:
    """SHA-256 of a key dict, serialised canonically."""
    return hashlib.sha256(json.dumps(_jsonable(key), sort_keys=True).encode()).hexdigest()


def _jsonable(obj: Any) -> Any:
    """Normalise tuples to lists and NumPy scalars to Python (so saved and fresh keys compare equal)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_default))


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Fork torch's RNG and seed it, so random-init weights are reproducible without side effects."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ---------------------------------------------------------------------------- registry
def _ensure_builtin() -> None:
    if not REGISTRY:
        from . import _registry

        _registry.register_builtin()


def available_spaces(*, tiny: bool | None = None) -> list[str]:
    """Names of the registered spaces.

    Parameters
    ----------
    tiny : bool or None
        ``True`` only the tiny twins, ``False`` only real spaces, ``None`` both.
    """
    _ensure_builtin()
    names = sorted(REGISTRY)
    if tiny is None:
        return names
    return [n for n in names if n.endswith("-tiny") == tiny]


def describe_space(name: str) -> SpaceSpec:
    """The :class:`SpaceSpec` of a registered space."""
    _ensure_builtin()
    if name not in REGISTRY:
        _unknown(name)
    return REGISTRY[name]


def _unknown(name: str) -> None:
    import difflib

    close = difflib.get_close_matches(str(name), list(REGISTRY), n=3)
    fix = (f"Did you mean {', '.join(repr(c) for c in close)}?" if close else
           "List them with neurodecode.latents.available_spaces()")
    raise ValidationError(format_error("name", "a registered latent space", describe(name), fix))


def get_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32", batch_size: int = 32,
              verbose: Any = None, **options: Any) -> LatentSpace:
    """Build a latent space by name.

    Parameters
    ----------
    name : str
        A registered name (see :func:`available_spaces`): ``"clip-vit-l-14-tokens"`` (257 x 768),
        ``"clip-vit-l-14"`` (768), ``"clip-vit-h-14"`` (1024), ``"clip-bigg-14-tokens"`` (256 x 1664),
        ``"clip-vit-l-14-text-tokens"`` (77 x 768), ``"clip-vit-l-14-text"`` (768),
        ``"clip-vit-h-14-text"`` (1024), ``"minilm-l6"`` (384), ``"flan-t5-large-encoder"`` (1024),
        ``"flan-t5-large-encoder-tokens"`` (64 x 1024), each with a ``-tiny`` twin; or ``"clip-custom"``
        with ``model_cfg=`` (an open_clip config dict) and ``output=``.
    weights : None, "random" or path-like or str
        ``None``: the published weights (tiny twins: seeded random init). ``"random"``: the real
        architecture, randomly initialised (benchmarks, shape checks). A local folder (open_clip
        ``open_clip_config.json`` + ``open_clip_model.safetensors``, or a Hugging Face model folder
        for text spaces), a ``.safetensors`` file, or a hub id.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    dtype : str
        Compute dtype: ``"float32"``, or ``"bfloat16"`` / ``"float16"`` (autocast).
    batch_size : int
        Stimuli per forward pass.
    verbose : bool or str or None
        Progress and logging level.
    **options
        Space-specific options: ``normalize`` (``None``, ``"vd"`` for token spaces:
        Versatile-Diffusion normalisation; ``"l2"`` for pooled spaces), ``compile``
        (``torch.compile`` the encoder), ``seed`` (random init), ``allow_pickle``,
        ``model_cfg``/``preprocess_cfg``/``output`` for ``"clip-custom"``.

    Returns
    -------
    space : LatentSpace
    """
    import importlib

    _ensure_builtin()
    if name not in REGISTRY:
        _unknown(name)
    spec = REGISTRY[name]
    module_name, func_name = spec.builder.split(":")
    builder = getattr(importlib.import_module(module_name, package=__package__), func_name)
    merged = {**spec.options, **options}
    return builder(name, weights=weights, device=device, dtype=dtype, batch_size=batch_size, verbose=verbose, **merged)


def space_artefacts(name: str, *, weights: Any = None, dtype: Any = None, **options: Any) -> list[Any]:
    """What a space reads: :class:`~neurodecode.io.hub.HubArtefact` (repository + exact files) and
    :class:`~neurodecode.io.hub.ExternalArtefact` entries (random init, a pip package, a local folder).

    The single source of truth of ``neurodecode download`` for latent spaces: each builder module
    declares its files next to the code that reads them.

    Parameters
    ----------
    name : str
        A registered space.
    weights : None or str or path-like
        As for :func:`get_space`.
    dtype : str or None
        Load dtype (reduced dtypes prefer fp16 variant files where a repository has them).
    **options
        Space options (as for :func:`get_space`).

    Returns
    -------
    artefacts : list
    """
    import importlib

    from ..io.hub import ExternalArtefact

    _ensure_builtin()
    if name not in REGISTRY:
        _unknown(name)
    spec = REGISTRY[name]
    from ._registry import SPACE_ARTEFACTS

    target = SPACE_ARTEFACTS.get(spec.builder)
    if target is not None:
        module_name, func_name = target.split(":")
        fn = getattr(importlib.import_module(module_name, package=__package__), func_name)
    else:  # a builder module may declare its files with a module-level ``artefacts`` function
        module_name = spec.builder.split(":")[0]
        fn = getattr(importlib.import_module(module_name, package=__package__), "artefacts", None)
        if fn is None:
            return [ExternalArtefact(name, "note", f"latent space {name!r} declares no weights files ({spec.builder})")]
    return list(fn(name, weights=weights, dtype=dtype, **{**spec.options, **options}))
