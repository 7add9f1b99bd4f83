"""Feature networks of the image metrics, with the two tiers of weights.

========  =====================================  ======================  ======
metric    network                                layer                   size
========  =====================================  ======================  ======
alex2     torchvision AlexNet (IMAGENET1K_V1)    ``features.4``          256
alex5     torchvision AlexNet (IMAGENET1K_V1)    ``features.11``         256
incep     torchvision InceptionV3 (IMAGENET1K_V1) ``avgpool``            342
effnet    torchvision EfficientNet-B1 (IMAGENET1K_V2) ``avgpool``        255
swav      SwAV ResNet-50 (torchvision resnet50)  ``avgpool``             224
clip      CLIP ViT-L/14 image embedding          ``neurodecode.latents`` 224
========  =====================================  ======================  ======

Under ``protocol="brain-diffuser"`` every network takes 224 px inputs PIL-resized (bilinear,
8-bit) from the image, with no 256 px step, and ``effnet`` is EfficientNet-B1 IMAGENET1K_V1
(Brain-Diffuser's ``weights=True``; network ``"efficientnet_v1"``).

Weights (``weights=``):

- ``"real"``: the published file, from ``weights_dir`` when given, else the torch hub
  cache (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``).
  When missing it is downloaded there, unless offline mode is on
  (``NEURODECODE_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``), which raises an
  :class:`~neurodecode._core.errors.OfflineError` naming the file and its URL.
- ``"random"``: the same architecture, randomly initialised with a fixed seed. Only
  on request (tests, smoke runs); every result states which tier each metric used.

Under ``protocol="mindeye2"`` images are float tensors resized bilinearly (no antialias, see
:mod:`._image`) to the metric's size and normalised with the ImageNet mean and std (CLIP: the
CLIP mean and std, no centre crop), as in MindEye2's final_evaluations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._core.config import is_offline
from .._core.docs import fill_doc
from .._core.errors import DataIntegrityError, MissingFileError, OfflineError, UnsafeCheckpointError
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error
from ._image import RESIZE_CONVENTIONS, as_float_images, pil_resize, resize_images

__all__ = ["FEATURE_METRICS", "NETWORKS", "FeatureNetwork", "load_feature_network", "extract_features",
           "weights_file", "clip_image_features"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SWAV_URL = "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"
RANDOM_SEED = 0


@dataclass(frozen=True)
class _NetSpec:
    builder: str  # torchvision.models function
    weights_enum: str | None  # torchvision weights enum member, "Enum.MEMBER"
    url: str | None  # explicit URL when not a torchvision enum
    kwargs: tuple[tuple[str, Any], ...] = ()


NETWORKS: dict[str, _NetSpec] = {
    "alexnet": _NetSpec("alexnet", "AlexNet_Weights.IMAGENET1K_V1", None),
    "inception": _NetSpec("inception_v3", "Inception_V3_Weights.IMAGENET1K_V1", None,
                          (("aux_logits", True), ("transform_input", True), ("init_weights", True))),
    "efficientnet": _NetSpec("efficientnet_b1", "EfficientNet_B1_Weights.IMAGENET1K_V2", None),
    "efficientnet_v1": _NetSpec("efficientnet_b1", "EfficientNet_B1_Weights.IMAGENET1K_V1", None),
    "swav": _NetSpec("resnet50", None, SWAV_URL),
}

#: metric -> (network, layer)
FEATURE_METRICS: dict[str, tuple[str, str]] = {
    "alex2": ("alexnet", "features.4"),
    "alex5": ("alexnet", "features.11"),
    "incep": ("inception", "avgpool"),
    "effnet": ("efficientnet", "avgpool"),
    "swav": ("swav", "avgpool"),
}


@dataclass
class FeatureNetwork:
    """A loaded feature network and where its weights came from."""

    name: str
    model: Any
    tier: str  # "real" or "random"
    source: str  # file path or "random-init (seed 0)"

    def describe(self) -> dict[str, str]:
        return {"tier": self.tier, "source": self.source, "network": self.name}


def _weights_url(spec: _NetSpec) -> str:
    if spec.url is not None:
        return spec.url
    import torchvision.models as tvm

    assert spec.weights_enum is not None
    enum_name, member = spec.weights_enum.split(".")
    return str(getattr(getattr(tvm, enum_name), member).url)


def weights_file(network: str, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the real weights of ``network`` are looked for (the file may not exist).

    Parameters
    ----------
    network : {"alexnet", "inception", "efficientnet", "efficientnet_v1", "swav"}
        Feature network.
    weights_dir : path-like or None
        Folder holding the file; default the torch hub cache (``torch.hub.get_dir()/checkpoints``).
    """
    check_option(network, "network", list(NETWORKS))
    fname = Path(_weights_url(NETWORKS[network]).split("?")[0]).name
    if weights_dir is not None:
        return Path(weights_dir).expanduser() / fname
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / fname


def _build(spec: _NetSpec) -> Any:
    import torchvision.models as tvm

    return getattr(tvm, spec.builder)(weights=None, **dict(spec.kwargs))


def _read_state_dict(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            format_error("weights", "a checkpoint loadable with weights_only=True", str(path),
                         "The file holds arbitrary Python objects; re-save its state_dict with tensors only")
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise DataIntegrityError(
            format_error("weights", "a readable torch checkpoint", f"{path} ({exc})",
                         "The file is truncated or corrupted: delete it and download it again")
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def _download(url: str, dest: Path, network: str) -> None:
    import torch

    logger.info("downloading %s weights from %s to %s", network, url, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dest), progress=False)
    except Exception as exc:
        raise OfflineError(
            format_error("weights", f"the {network} weights downloadable", f"{url}: {exc}",
                         f"Download the file by hand into {dest.parent}, or pass weights='random' for a smoke run")
        ) from exc


def load_feature_network(
    network: str,
    weights: str = "real",
    *,
    weights_dir: str | os.PathLike[str] | None = None,
) -> FeatureNetwork:
    """Build a feature network with real or random weights, in eval mode on the CPU.

    Parameters
    ----------
    network : {"alexnet", "inception", "efficientnet", "efficientnet_v1", "swav"}
        Which network.
    weights : {"real", "random"}
        Real published weights (local file, torch hub cache, or download when online),
        or the same architecture randomly initialised (seed 0).
    weights_dir : path-like or None
        Folder holding the weight file (see :func:`weights_file`).

    Returns
    -------
    net : FeatureNetwork

    Raises
    ------
    OfflineError
        Real weights are missing and offline mode is on; names the file and its URL.
    """
    import torch

    check_option(network, "network", list(NETWORKS))
    check_option(weights, "weights", ("real", "random"))
    spec = NETWORKS[network]
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = _build(spec)
        source = f"random-init (seed {RANDOM_SEED}, same architecture, NOT the published weights)"
    else:
        path = weights_file(network, weights_dir)
        url = _weights_url(spec)
        if not path.is_file():
            if is_offline() or weights_dir is not None:
                err = OfflineError if is_offline() else MissingFileError
                raise err(
                    format_error(
                        "weights", f"the published {network} weights in {path}",
                        "no such file" + (" (offline mode is on)" if is_offline() else ""),
                        f"On a machine with network download {url} into {path.parent} (the torch hub cache, "
                        "$TORCH_HOME/hub/checkpoints) or pass weights_dir=<folder holding it>; "
                        "for a smoke run only, weights='random' uses random weights",
                    )
                )
            _download(url, path, network)
        model = _build(spec)
        state = _read_state_dict(path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("fc.", "AuxLogits."))] if network == "swav" else missing
        if missing or (unexpected and network != "swav"):
            raise DataIntegrityError(
                format_error("weights", f"the {network} state dict of {url}",
                             f"{len(missing)} missing / {len(unexpected)} unexpected keys in {path} "
                             f"(first: {(list(missing) + list(unexpected))[:3]})",
                             "Delete the file and download it again")
            )
        source = str(path)
    if network == "inception":  # only avgpool is needed; torchvision drops the aux head the same way
        model.aux_logits = False
        model.AuxLogits = None
    model.eval()
    return FeatureNetwork(network, model, weights, source)


@fill_doc
def extract_features(
    images: Any,
    net: FeatureNetwork,
    layers: list[str],
    *,
    size: int,
    prep_size: int | None = 256,
    antialias: bool = False,
    batch_size: int = 16,
    device: Any = "cpu",
    verbose: Any = None,
    resize: str = "tensor",
) -> dict[str, np.ndarray]:
    """Activations of ``layers`` for ``images``, flattened per image.

    Parameters
    ----------
    images : array-like of shape (n, H, W, 3)
        uint8 or float images in [0, 1].
    net : FeatureNetwork
        From :func:`load_feature_network`.
    layers : list of str
        Module names (``"features.4"``, ``"avgpool"``), as torchvision's
        ``create_feature_extractor`` names them.
    size : int
        Input size of the network for this metric (see ``RESIZE_CONVENTIONS``).
    prep_size : int or None
        Common first resize (256).
    antialias : bool
        Antialiased resizes (recorded; ``False`` matches the published numbers).
    batch_size : int
        Images per forward pass.
    %(device)s
    %(verbose)s
    resize : {"tensor", "pil"}
        ``"tensor"``: bilinear float-tensor resizes through ``prep_size`` (MindEye2);
        ``"pil"``: one PIL bilinear resize of the 8-bit image to ``size`` (Brain-Diffuser).

    Returns
    -------
    features : dict of str to ndarray of shape (n, n_features), float32
    """
    import torch

    from .._core.device import resolve_device

    x_all = as_float_images(images, "images")
    dev = resolve_device(device)
    model = net.model.to(dev)
    modules = dict(model.named_modules())
    bad = [name for name in layers if name not in modules]
    if bad:
        raise DataIntegrityError(format_error("layers", f"module names of {net.name}", bad))
    captured: dict[str, Any] = {}
    hooks = [modules[name].register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach().clone()))
             for name in layers]
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    try:
        with torch.inference_mode():
            for start in progress(range(0, len(x_all), batch_size), desc=f"{net.name} features", verbose=verbose):
                chunk = x_all[start:start + batch_size]
                x = (pil_resize(chunk, size, "bilinear") if resize == "pil" else
                     resize_images(resize_images(chunk, prep_size, antialias=antialias), size, antialias=antialias))
                xt = (torch.from_numpy(x).permute(0, 3, 1, 2).to(dev) - mean) / std
                captured.clear()
                model(xt)
                for name in layers:
                    chunks[name].append(captured[name].float().flatten(1).cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def clip_image_features(
    images: Any,
    weights: str = "real",
    *,
    prep_size: int | None = 256,
    antialias: bool = False,
    protocol: str = "mindeye2",
    batch_size: int = 16,
    device: Any = "cpu",
    verbose: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """CLIP ViT-L/14 image embeddings (the model of :func:`neurodecode.latents.get_space`).

    ``weights="real"`` uses the ``"clip-vit-l-14"`` space (OpenAI weights), ``"random"``
    its tiny random twin ``"clip-vit-l-14-tiny"``. The preprocessing is the protocol's,
    not open_clip's: ``"mindeye2"``: float images resized to ``prep_size``, then bilinearly
    to the model's input size (224) without antialiasing, CLIP mean / std, no centre crop;
    ``"brain-diffuser"``: one PIL bilinear resize of the 8-bit image to 224, CLIP mean / std.

    Returns
    -------
    features : ndarray of shape (n, d)
        ``model.encode_image`` outputs (not normalised).
    info : dict
        ``"tier"``, ``"source"`` (space name and weights), ``"preprocessing"``.
    """
    import torch

    check_option(weights, "weights", ("real", "random"))
    check_option(protocol, "protocol", ("mindeye2", "brain-diffuser"))
    from ..latents import get_space

    x_all = as_float_images(images, "images")
    name = "clip-vit-l-14" if weights == "real" else "clip-vit-l-14-tiny"
    space: Any = get_space(name, device=device, verbose=verbose)
    size = int(space.preprocessing["size"])
    model = space.model
    dev = next(model.parameters()).device
    mean = torch.tensor(CLIP_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=dev).view(1, 3, 1, 1)
    chunks = []
    with torch.inference_mode():
        for start in progress(range(0, len(x_all), batch_size), desc="clip features", verbose=verbose):
            chunk = x_all[start:start + batch_size]
            x = (pil_resize(chunk, size, "bilinear") if protocol == "brain-diffuser" else
                 resize_images(resize_images(chunk, prep_size, antialias=antialias), size, antialias=antialias))
            xt = (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(dev) - mean) / std
            chunks.append(model.encode_image(xt.to(next(model.parameters()).dtype)).float().flatten(1).cpu().numpy())
    pre = ({"size": size, "resize": "PIL bilinear from the 8-bit image", "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD), "crop": None} if protocol == "brain-diffuser" else
           {"prep_size": prep_size, "size": size, "resize": "float tensor, bilinear", "antialias": bool(antialias),
            "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "crop": None})
    info = {
        "tier": weights,
        "source": f"neurodecode.latents space {name!r} ({space.weights or 'random-init'})"
        + ("" if weights == "real" else ", tiny random twin: NOT the published weights"),
        "network": "clip-vit-l-14",
        "preprocessing": pre,
    }
    return np.concatenate(chunks), info


def describe_sizes() -> dict[str, int]:
    """The resize convention of every metric (recorded in each report)."""
    return dict(RESIZE_CONVENTIONS)
