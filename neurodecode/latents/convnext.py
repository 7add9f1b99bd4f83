"""VICRegL ConvNeXt-XL: MindEye2's low-level teacher (the ``convnext_maps`` targets of its low-level branch).

``vicregl-convnext-xl``
    facebookresearch/VICRegL's ConvNeXt-XL pretrained with alpha 0.75 on ImageNet-22k
    (``convnext_xlarge_alpha0.75_fullckpt.pth``), as MindEye2 uses it (MedARC-AI/MindEyeV2
    ``src/autoencoder/convnext.py`` ``ConvnextXL``, ``src/Train.ipynb``). The network (written here
    from the published architecture, VICRegL ``convnext.py``): a 4 x 4 stride-4 stem and three 2 x 2
    stride-2 downsamplings with channels-first LayerNorms, stages of 3 / 3 / 27 / 3 blocks at widths
    256 / 512 / 1024 / 2048 (depthwise 7 x 7 conv, LayerNorm, Linear x 4, GELU, Linear, residual; no
    layer scale, as VICRegL trains it), the final LayerNorm applied to every position's features;
    then VICRegL's ``maps_projector`` (Linear 2048 -> 512, LayerNorm, ReLU, Linear 512 -> 512,
    LayerNorm, ReLU, Linear 512 -> 512 without bias) on every position. At 224 px the 7 x 7 grid
    gives **49 x 512** (``output="maps"``, MindEye2's ``cnx_embeds``); ``output="backbone"`` gives the
    normalised backbone features 49 x 2048.

Images: shorter side resized to 224 (bicubic, antialiased), centre crop, scaled to [0, 1] and
normalised with mean (0.485, 0.456, 0.406) and std (0.228, 0.224, 0.225): the reference's values
(``Train.ipynb``; its 0.228 is ImageNet's 0.229 mistyped, kept so the features are the ones MindEye2
matched).

Weights (real tier)
    The file is not on the Hugging Face Hub: download it once from :data:`WEIGHTS_URL` into
    ``$NEURODECODE_HOME/weights/vicregl/`` (or pass ``weights=PATH``). It is a torch pickle (the
    training checkpoint: ``{"epoch", "model", "optimizer"}``, DDP ``module.`` prefixes); it is read only
    with ``allow_pickle=True``, then with ``torch.load(weights_only=True)``;
    :func:`convert_convnext_checkpoint` writes the backbone and maps projector once as safetensors, found
    first afterwards. The backbone-only release (``convnext_xlarge_alpha0.75.pth``) gives
    ``output="backbone"`` only. Every missing or mis-shaped key is an error (the reference loads with
    ``strict=False`` inside a bare ``try``).

``vicregl-convnext-xl-tiny``
    The same code at toy width (stages 1 / 1 / 2 / 1 at 10 / 14 / 18 / 22 channels, projector to 6),
    randomly initialised with a fixed seed, on 128 px images: **16 x 6** (a 4 x 4 grid), the feature tokens
    of the tiny MindEye2 recipe's low-level head (``MindEye2Config.tiny()`` on a 4 x 16 x 16 latent).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import MissingFileError, UnsafeCheckpointError, ValidationError
from .._core.logging import logger
from .._core.validation import check_option, format_error
from ._base import LatentSpace, seeded
from ._external import ExternalCheckpoint

__all__ = ["ConvNeXtConfig", "CONVNEXT_XL", "TINY", "VICRegLConvNeXt", "ConvNeXtSpace", "build_convnext",
           "build_convnext_space", "load_convnext", "convert_convnext_checkpoint", "find_convnext_weights",
           "convnext_artefacts", "WEIGHTS_FILE", "WEIGHTS_URL", "OUTPUTS", "MEAN", "STD"]

WEIGHTS_FILE = "convnext_xlarge_alpha0.75_fullckpt.pth"
WEIGHTS_URL = f"https://dl.fbaipublicfiles.com/vicregl/{WEIGHTS_FILE}"
SAFETENSORS_FILE = WEIGHTS_FILE.replace(".pth", ".safetensors")
_CHECKPOINT = ExternalCheckpoint("vicregl", WEIGHTS_FILE, WEIGHTS_URL, "VICRegL's ConvNeXt-XL checkpoint",
                                 "neurodecode.latents.convnext.convert_convnext_checkpoint",
                                 "CC BY-NC 4.0 (facebookresearch/VICRegL)")
#: The reference's normalisation (``Train.ipynb``: std 0.228 for red, sic).
MEAN = (0.485, 0.456, 0.406)
STD = (0.228, 0.224, 0.225)
OUTPUTS = ("maps", "backbone")


@dataclass(frozen=True)
class ConvNeXtConfig:
    """Architecture of a VICRegL ConvNeXt with its maps projector.

    Attributes
    ----------
    depths, dims : tuple of int
        Blocks and channels of the four stages.
    maps_mlp : tuple of int
        Widths of the maps projector's layers after the backbone width (VICRegL ``--maps-mlp``).
    image_size : int
        Side of the input images (224; the grid is ``image_size // 32``).
    """

    depths: tuple[int, ...] = (3, 3, 27, 3)
    dims: tuple[int, ...] = (256, 512, 1024, 2048)
    maps_mlp: tuple[int, ...] = (512, 512, 512)
    image_size: int = 224

    @property
    def grid(self) -> int:
        return self.image_size // 32

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


CONVNEXT_XL = ConvNeXtConfig()
TINY = ConvNeXtConfig(depths=(1, 1, 2, 1), dims=(10, 14, 18, 22), maps_mlp=(6, 6, 6), image_size=128)


class _ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (n, c, h, w) maps."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class _Block(nn.Module):
    """Depthwise 7 x 7 conv, LayerNorm, Linear (x 4), GELU, Linear, residual (no layer scale)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class _Backbone(nn.Module):
    def __init__(self, depths: tuple[int, ...], dims: tuple[int, ...]) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), _ChannelsFirstLayerNorm(dims[0]))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(_ChannelsFirstLayerNorm(dims[i]),
                                                        nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList([nn.Sequential(*[_Block(dims[i]) for _ in range(depths[i])]) for i in range(4)])
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x.flatten(2).transpose(1, 2))  # type: ignore[no-any-return]  # (n, h * w, c), normalised


class VICRegLConvNeXt(nn.Module):
    """A VICRegL ConvNeXt: ``backbone`` (every position's normalised features) and ``maps_projector``.

    Parameter names are those of VICRegL's checkpoints less the DDP ``module.`` prefix.

    Parameters
    ----------
    config : ConvNeXtConfig
    """

    def __init__(self, config: ConvNeXtConfig = CONVNEXT_XL) -> None:
        super().__init__()
        self.config = config
        self.backbone = _Backbone(config.depths, config.dims)
        widths = [config.dims[-1], *config.maps_mlp]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-2], widths[1:-1]):
            layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU(True)]
        layers.append(nn.Linear(widths[-2], widths[-1], bias=False))
        self.maps_projector = nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised pixels (n, 3, S, S) -> (backbone features (n, g * g, C), maps (n, g * g, maps_mlp[-1]))."""
        feats = self.backbone(pixels)
        return feats, self.maps_projector(feats)


def build_convnext(config: ConvNeXtConfig = CONVNEXT_XL, *, seed: int = 0, device: Any = "cpu") -> Any:
    """A randomly initialised :func:`VICRegLConvNeXt` (seeded; ``device="meta"`` for shapes and counts only)."""
    with seeded(seed), torch.device(device):
        return VICRegLConvNeXt(config)


# -------------------------------------------------------------------------------------------- weights
def default_weights_dir() -> Path:
    """``$NEURODECODE_HOME/weights/vicregl`` (where the checkpoint is looked for)."""
    return _CHECKPOINT.default_dir()


def find_convnext_weights(weights: Any = None) -> Path:
    """The checkpoint to read: ``weights`` (a file or folder) or the default folder's file (safetensors first)."""
    return _CHECKPOINT.find(weights)


def _our_keys(state: dict[str, Any]) -> dict[str, Any]:
    """The released layouts -> our keys: the training checkpoint's ``model`` (``module.backbone.*``,
    ``module.maps_projector.*``; the expander, classifier and optimiser are dropped) or the backbone-only
    release (``downsample_layers.*``, ``stages.*``, ``norm.*``)."""
    if isinstance(state.get("model"), dict):
        state = state["model"]
    out: dict[str, Any] = {}
    for key, value in state.items():
        k = key.removeprefix("module.")
        if k.startswith(("backbone.", "maps_projector.")):
            out[k] = value
        elif k.startswith(("downsample_layers.", "stages.", "norm.")):
            out["backbone." + k] = value
    return out


def load_convnext(path: Any = None, *, config: ConvNeXtConfig = CONVNEXT_XL, allow_pickle: bool = False,
                  need_projector: bool = True) -> tuple[Any, Path]:
    """Build the network of ``config`` and load the checkpoint found by :func:`find_convnext_weights`.

    Parameters
    ----------
    path : path-like or None
        A checkpoint file or a folder holding it (default: ``$NEURODECODE_HOME/weights/vicregl``).
    config : ConvNeXtConfig
    allow_pickle : bool
        Read the released torch pickle (with ``torch.load(weights_only=True)``).
    need_projector : bool
        Require the maps projector (the full checkpoint); otherwise it may be absent (backbone only).

    Returns
    -------
    net : torch.nn.Module
        In eval mode, on the CPU, float32.
    path : pathlib.Path
    """
    from ..io.checkpoints import load_into, load_state_dict, sniff_checkpoint

    file = find_convnext_weights(path)
    if sniff_checkpoint(file) == "pickle" and not allow_pickle:
        raise UnsafeCheckpointError(format_error(
            "allow_pickle", "a safetensors ConvNeXt checkpoint, or allow_pickle=True for the released torch pickle",
            f"a pickle at {file}",
            "Convert it once: neurodecode.latents.convnext.convert_convnext_checkpoint(path, allow_pickle=True) "
            f"writes {SAFETENSORS_FILE} beside it (read with torch.load(weights_only=True), found first afterwards)"))
    try:
        raw = load_state_dict(file, allow_pickle=allow_pickle)
    except Exception as exc:  # torch's weights_only unpickler names the object it refused
        if isinstance(exc, (UnsafeCheckpointError, MissingFileError)):
            raise
        raise ValidationError(format_error("weights", "a checkpoint torch.load(weights_only=True) can read",
                                           f"{file}: {exc}", "Re-save the state dict alone, or as safetensors")) from exc
    state = _our_keys(raw)
    with torch.device("meta"):
        net = VICRegLConvNeXt(config)
    net = net.to_empty(device="cpu")
    has_projector = any(k.startswith("maps_projector.") for k in state)
    if need_projector and not has_projector:
        raise ValidationError(format_error(
            "weights", "the full VICRegL checkpoint (backbone and maps_projector)", f"backbone weights only in {file}",
            f"Download {WEIGHTS_FILE} ({WEIGHTS_URL}), or use output='backbone'"))
    if not has_projector:
        net.maps_projector = torch.nn.Sequential()
    load_into(net, {k: v.float() for k, v in state.items()}, source=str(file))
    return net.eval(), file


def convert_convnext_checkpoint(src: Any, dst: Any = None, *, allow_pickle: bool = False,
                                config: ConvNeXtConfig = CONVNEXT_XL) -> Path:
    """Convert the released torch-pickle checkpoint once into safetensors (our key names, checked).

    Parameters
    ----------
    src : path-like
        ``convnext_xlarge_alpha0.75_fullckpt.pth`` (or a folder holding it).
    dst : path-like or None
        Output file (default: ``convnext_xlarge_alpha0.75_fullckpt.safetensors`` beside ``src``).
    allow_pickle : bool
        Must be ``True`` to read a pickle (it is read with ``torch.load(weights_only=True)``).
    config : ConvNeXtConfig
        The architecture the weights must match.

    Returns
    -------
    dst : pathlib.Path
    """
    net, file = load_convnext(src, config=config, allow_pickle=allow_pickle, need_projector=False)
    return _CHECKPOINT.save_converted(net, config, file, dst, "neurodecode-vicregl-convnext")


def convnext_artefacts(name: str, *, weights: Any = None, dtype: Any = None, tiny: bool = False,
                       **options: Any) -> list[Any]:
    """What the ``vicregl-convnext-xl`` spaces read (for ``neurodecode download``): not on the hub."""
    return _CHECKPOINT.artefacts(name, weights=weights, tiny=tiny)


# ------------------------------------------------------------------------------------------------ space
class ConvNeXtSpace(LatentSpace):
    """The VICRegL ConvNeXt space (see the module docstring); build it with ``get_space("vicregl-convnext-xl")``.

    Attributes
    ----------
    net : torch.nn.Module
        The frozen network.
    output : {"maps", "backbone"}
        The maps projector's tokens (grid, 512) or the normalised backbone features (grid, 2048).
    image_size : int
        Side of the images the network sees (224; tiny 128).
    """

    def __init__(self, name: str, *, net: Any, output: str, weights: str, weights_file: Path | None, device: Any,
                 dtype: Any, batch_size: int, verbose: Any) -> None:
        check_option(output, "output", OUTPUTS)
        cfg: ConvNeXtConfig = net.config
        width = cfg.maps_mlp[-1] if output == "maps" else cfg.dims[-1]
        pre = {"kind": "convnext", "size": cfg.image_size, "resize_mode": "shortest", "crop": "center",
               "interpolation": "bicubic-antialias", "mean": list(MEAN), "std": list(STD)}
        super().__init__(name, shape=(cfg.grid * cfg.grid, width), modality="image", device=device, dtype=dtype,
                         batch_size=batch_size, verbose=verbose, preprocessing=pre, weights=weights,
                         extra_key={"output": output, "convnext_config": cfg.to_dict()})
        self.net = net.to(self._device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.output = output
        self.image_size = cfg.image_size
        self._weights_file = weights_file

    def pixels(self, images: Any) -> Any:
        """Images (uint8 (n, H, W, 3) or a list) -> normalised pixels (n, 3, S, S) on the space's device."""
        from ._base import as_image_list

        return self._pixels(as_image_list(images))

    def _pixels(self, items: list[Any]) -> Any:
        from ._augment import _resize_shorter_crop

        out = []
        for im in items:
            arr = np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im)
            x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
            out.append(_resize_shorter_crop(x, self.image_size))
        x = torch.stack(out).to(self._device)
        mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _encode_image_batch(self, items: list[Any]) -> Any:
        feats, maps = self.net(self._pixels(items))
        return maps if self.output == "maps" else feats


def build_convnext_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                         batch_size: int = 32, verbose: Any = None, tiny: bool = False, output: str = "maps",
                         seed: int = 0, allow_pickle: bool = False) -> ConvNeXtSpace:
    """Registry builder of ``vicregl-convnext-xl`` / ``-tiny`` (see :func:`~neurodecode.latents.get_space`).

    Parameters
    ----------
    name : str
        Registry name.
    weights : None, "random" or path-like
        ``None``: the checkpoint in ``$NEURODECODE_HOME/weights/vicregl/`` (tiny twin: seeded random
        init); ``"random"``: the architecture, randomly initialised; a checkpoint file or its folder.
    device, dtype, batch_size, verbose
        See :func:`~neurodecode.latents.get_space`.
    tiny : bool
        Build the tiny twin.
    output : {"maps", "backbone"}
        ``(grid, 512)`` maps projector tokens (MindEye2's target) or ``(grid, 2048)`` backbone features.
    seed : int
        Seed of a random initialisation.
    allow_pickle : bool
        Read the released torch pickle (with ``torch.load(weights_only=True)``).

    Returns
    -------
    space : ConvNeXtSpace
    """
    check_option(output, "output", OUTPUTS)
    config = TINY if tiny else CONVNEXT_XL
    weights_file: Path | None = None
    if (weights is None and tiny) or (isinstance(weights, str) and weights == "random"):
        from .._core.device import resolve_device

        net = build_convnext(config, seed=seed, device="meta" if resolve_device(device).type == "meta" else "cpu")
        tag = f"random-init:seed={seed}"
    else:
        net, weights_file = load_convnext(weights, config=config, allow_pickle=allow_pickle,
                                          need_projector=output == "maps")
        tag = f"file:{weights_file.resolve()}"
    logger.info("latent space %s: %s", name, tag)
    return ConvNeXtSpace(name, net=net, output=output, weights=tag, weights_file=weights_file, device=device,
                         dtype=dtype, batch_size=batch_size, verbose=verbose)
