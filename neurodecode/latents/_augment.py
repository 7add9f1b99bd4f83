"""Seeded image augmentations of the published decoders' training targets, embedded once into the feature cache.

The reference decoders augment each training image inside the training step (kornia, on the GPU) and
embed the augmented image there. Here a target space embeds ``views`` augmented copies of every
training image once (:class:`AugmentedStimuli` feeds them to the feature cache) and the batch source
draws one copy per sample and step (:class:`~neurodecode.train.ChoiceRows`). Each copy is drawn from
a generator seeded by ``(seed, stimulus id, view)``: the same run gives the same views, whatever the
batch or order.

Transforms (:data:`AUGMENTATIONS`), written from the reference's kornia settings (kornia 0.7
semantics; images as floats in [0, 1], one draw per item):

``"mindbridge"``
    MindBridge's ``img_augment`` (littlepure2333/MindBridge ``src/data.py``; on by default,
    ``src/options.py`` ``use_image_aug``), in this order:

    - ``RandomResizedCrop((224, 224), scale=(0.8, 1), p=0.3)``: area fraction uniform in
      [0.8, 1], aspect ratio log-uniform in [3/4, 4/3] (10 tries, then kornia's centre-crop
      fallback), a uniform position, bilinear resize (``align_corners=True``);
    - ``Resize((224, 224))``: bilinear, ``align_corners=True``, no antialiasing (every image);
    - ``RandomBrightness((0.8, 1.2), p=0.2)``: ``x + (f - 1)``, clipped;
    - ``RandomContrast((0.8, 1.2), p=0.2)``: ``x * f``, clipped;
    - ``RandomGamma((0.8, 1.2), (1.0, 1.3), p=0.2)``: ``gain * x ** gamma``, clipped;
    - ``RandomSaturation((0.8, 1.2), p=0.2)``: HSV saturation times ``f``, clipped;
    - ``RandomHue((-0.1, 0.1), p=0.2)``: HSV hue shifted by ``f`` turns;
    - ``RandomSharpness((0.8, 1.2), p=0.2)``: PIL's sharpness (3 x 3 smoothing kernel
      ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13``, border pixels kept), blend factor ``f``;
    - ``RandomGrayscale(p=0.2)``: ``0.299 R + 0.587 G + 0.114 B`` on all three channels.

``"mindeye2"``
    MindEye2's ``blur_augs`` (MedARC-AI/MindEyeV2 ``src/Train.ipynb``), the views whose VICRegL
    ConvNeXt features are ``convnext_maps_aug``. The image is first brought to 224 x 224 (shorter
    side resized with bicubic antialiasing, centre crop: how the SD-VAE and ConvNeXt spaces read
    images; the reference reads NSD images stored at 224 px), then:

    - ``ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8)``: factors
      uniform in [0.6, 1.4], [0.6, 1.4], [0.8, 1.2], [-0.1, 0.1], applied in a random order:
      brightness ``x * b``; contrast ``c * x + (1 - c) * mean(gray(x))``; saturation
      ``s * x + (1 - s) * gray(x)``; hue shift (each clipped to [0, 1]);
    - ``RandomGrayscale(p=0.1)``;
    - ``RandomSolarize(p=0.1)``: ``x + a`` (``a`` uniform in [-0.1, 0.1], clipped), then values
      at or above the threshold (uniform in [0.4, 0.6]) become ``1 - x``;
    - ``RandomResizedCrop((224, 224), scale=(0.9, 0.9), ratio=(1, 1), p=1)``: a 213 x 213 square at
      a uniform position, resized back to 224 (bilinear, ``align_corners=True``).

Views are returned as uint8 (rounded), the input every latent space takes.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.validation import check_option, format_error
from ._stimuli import Stimuli, as_stimuli

__all__ = ["AUGMENTATIONS", "augment_image", "augment_images", "AugmentedStimuli", "view_seed",
           "rgb_to_hsv", "hsv_to_rgb"]

#: Size of the augmented views (both references train on 224 x 224 images).
VIEW_SIZE = 224
_GRAY = (0.299, 0.587, 0.114)


# ------------------------------------------------------------------------------------------- primitives
def _gray(x: Any) -> Any:
    return _GRAY[0] * x[0:1] + _GRAY[1] * x[1:2] + _GRAY[2] * x[2:3]


def rgb_to_hsv(x: Any, eps: float = 1e-8) -> Any:
    """RGB (3, H, W) in [0, 1] -> HSV with hue in [0, 1) turns (kornia's formulas, hue rescaled from radians)."""
    import torch

    maxc, argmax = x.max(dim=0)
    minc = x.min(dim=0).values
    delta = maxc - minc
    s = delta / (maxc + eps)
    d = torch.where(delta == 0, torch.ones_like(delta), delta)
    r, g, b = x[0], x[1], x[2]
    h = torch.stack([(g - b) / d, 2.0 + (b - r) / d, 4.0 + (r - g) / d]).gather(0, argmax[None])[0]
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0, 1.0)
    return torch.stack([h, s, maxc])


def hsv_to_rgb(x: Any) -> Any:
    """HSV (hue in turns) -> RGB (3, H, W)."""
    import torch

    h, s, v = x[0], x[1], x[2]
    h6 = torch.remainder(h, 1.0) * 6.0
    hi = torch.floor(h6).long() % 6
    f = h6 - torch.floor(h6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = torch.stack([torch.stack(c) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table.gather(0, hi[None, None].expand(1, 3, *hi.shape))[0]


def _sharpness(x: Any, factor: float) -> Any:
    import torch
    import torch.nn.functional as F

    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=x.dtype) / 13.0
    smooth = F.conv2d(x[:, None], kernel[None, None]).clamp(0, 1)[:, 0]  # (3, H-2, W-2)
    degenerate = x.clone()
    degenerate[:, 1:-1, 1:-1] = smooth
    return (degenerate + (x - degenerate) * factor).clamp(0, 1)


def _resize(x: Any, size: int) -> Any:
    """kornia's ``Resize`` / resized-crop resampling: bilinear, ``align_corners=True``, no antialiasing."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=True)[0]


def _resize_shorter_crop(x: Any, size: int) -> Any:
    """Shorter side to ``size`` (bicubic, antialiased), centre crop: the 224 px input of the image spaces."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    y = F.interpolate(x[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return y[:, top:top + size, left:left + size].clamp(0, 1)


def _uniform(g: Any, lo: float, hi: float) -> float:
    import torch

    return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64))


def _happens(g: Any, p: float) -> bool:
    import torch

    return bool(torch.rand((), generator=g, dtype=torch.float64) < p)


def _resized_crop(x: Any, g: Any, size: int, scale: tuple[float, float], ratio: tuple[float, float]) -> Any:
    """kornia's ``RandomResizedCrop`` for one image (crop-size sampler of ``ResizedCropGenerator``)."""
    H, W = int(x.shape[-2]), int(x.shape[-1])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    ch = cw = None
    for _ in range(10):
        area = _uniform(g, scale[0], scale[1]) * H * W
        r = math.exp(_uniform(g, log_lo, log_hi))
        w = math.floor(round(math.sqrt(area * r)))
        h = math.floor(round(math.sqrt(area / r)))
        if 0 < w < H and 0 < h < W:  # kornia compares w with the height and h with the width, then swaps them
            ch, cw = w, h
            break
    if ch is None:  # kornia's fallback: a centre crop at the smallest ratio
        in_ratio, rmin = H / W, min(ratio)
        if in_ratio < rmin:
            ch, cw = H, math.floor(round(H / rmin))
        elif in_ratio > rmin:
            cw, ch = W, math.floor(round(W * rmin))
        else:
            ch, cw = H, W
        ch, cw = min(ch, H), min(cw, W)
    left = math.floor(_uniform(g, 0, 1) * max(W - cw + 1, 0))
    top = math.floor(_uniform(g, 0, 1) * max(H - ch + 1, 0))
    return _resize(x[:, top:top + ch, left:left + cw], size)


def _hue(x: Any, turns: float) -> Any:
    hsv = rgb_to_hsv(x)
    hsv[0] = (hsv[0] + turns) % 1.0
    return hsv_to_rgb(hsv).clamp(0, 1)


# ------------------------------------------------------------------------------------------- transforms
def _mindbridge(x: Any, g: Any, size: int) -> Any:
    if _happens(g, 0.3):
        x = _resized_crop(x, g, size, (0.8, 1.0), (3.0 / 4.0, 4.0 / 3.0))
    x = _resize(x, size)
    if _happens(g, 0.2):
        x = (x + (_uniform(g, 0.8, 1.2) - 1.0)).clamp(0, 1)
    if _happens(g, 0.2):
        x = (x * _uniform(g, 0.8, 1.2)).clamp(0, 1)
    if _happens(g, 0.2):
        gamma, gain = _uniform(g, 0.8, 1.2), _uniform(g, 1.0, 1.3)
        x = (gain * x.pow(gamma)).clamp(0, 1)
    if _happens(g, 0.2):
        hsv = rgb_to_hsv(x)
        hsv[1] = (hsv[1] * _uniform(g, 0.8, 1.2)).clamp(0, 1)
        x = hsv_to_rgb(hsv).clamp(0, 1)
    if _happens(g, 0.2):
        x = _hue(x, _uniform(g, -0.1, 0.1))
    if _happens(g, 0.2):
        x = _sharpness(x, _uniform(g, 0.8, 1.2))
    if _happens(g, 0.2):
        x = _gray(x).expand(3, -1, -1).clone()
    return x


def _mindeye2(x: Any, g: Any, size: int) -> Any:
    import torch

    x = _resize_shorter_crop(x, size)
    if _happens(g, 0.8):
        b, c = _uniform(g, 0.6, 1.4), _uniform(g, 0.6, 1.4)
        s, h = _uniform(g, 0.8, 1.2), _uniform(g, -0.1, 0.1)
        steps: list[Callable[[Any], Any]] = [
            lambda y: (y * b).clamp(0, 1),
            lambda y: (y * c + _gray(y).mean() * (1 - c)).clamp(0, 1),
            lambda y: (_gray(y) * (1 - s) + y * s).clamp(0, 1),
            lambda y: _hue(y, h),
        ]
        for i in torch.randperm(4, generator=g).tolist():
            x = steps[i](x)
    if _happens(g, 0.1):
        x = _gray(x).expand(3, -1, -1).clone()
    if _happens(g, 0.1):
        threshold, addition = _uniform(g, 0.4, 0.6), _uniform(g, -0.1, 0.1)
        x = (x + addition).clamp(0, 1)
        x = torch.where(x < threshold, x, 1.0 - x)
    return _resized_crop(x, g, size, (0.9, 0.9), (1.0, 1.0))


#: name -> (transform of one float image (3, H, W) with a generator, reference it follows)
AUGMENTATIONS: dict[str, tuple[Callable[[Any, Any, int], Any], str]] = {
    "mindbridge": (_mindbridge, "littlepure2333/MindBridge src/data.py img_augment (use_image_aug, on by default)"),
    "mindeye2": (_mindeye2, "MedARC-AI/MindEyeV2 src/Train.ipynb blur_augs (ConvNeXt convnext_maps_aug)"),
}


def view_seed(seed: int, stimulus_id: Any, view: int) -> int:
    """The 63-bit seed of view ``view`` of stimulus ``stimulus_id`` (string ids are hashed)."""
    sid = int(stimulus_id) if isinstance(stimulus_id, (int, np.integer)) else \
        int.from_bytes(hashlib.sha256(str(stimulus_id).encode()).digest()[:8], "little")
    entropy = [int(seed) & 0xFFFFFFFF, sid & 0xFFFFFFFF, (sid >> 32) & 0xFFFFFFFF, int(view) & 0xFFFFFFFF, 0xA5617]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) & 0x7FFFFFFFFFFFFFFF


def augment_image(image: Any, name: str, seed: int, *, size: int = VIEW_SIZE) -> np.ndarray:
    """One augmented view of one image.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8, or a PIL image
    name : {"mindbridge", "mindeye2"}
        The transform (see the module docstring).
    seed : int
        Seed of this view's draws (:func:`view_seed`).
    size : int
        Side of the view (224, both references).

    Returns
    -------
    view : ndarray of shape (size, size, 3), uint8
    """
    import torch

    check_option(name, "augment", list(AUGMENTATIONS))
    arr = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValidationError(format_error("image", "a uint8 array of shape (height, width, 3)", arr))
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    fn = AUGMENTATIONS[name][0]
    with torch.no_grad():
        y = fn(x, g, int(size))
    return (y.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def augment_images(images: Any, name: str, seeds: Any, *, size: int = VIEW_SIZE) -> np.ndarray:
    """:func:`augment_image` for each image: ``images`` (n, H, W, 3) uint8 or a list, ``seeds`` one per image.

    Returns
    -------
    views : ndarray of shape (n, size, size, 3), uint8
    """
    items = list(images)
    seeds = [int(s) for s in np.atleast_1d(np.asarray(seeds))]
    if len(seeds) != len(items):
        raise ValidationError(format_error("seeds", f"one seed per image ({len(items)})", f"{len(seeds)} seeds"))
    out = np.empty((len(items), size, size, 3), dtype=np.uint8)
    for i, (im, s) in enumerate(zip(items, seeds)):
        out[i] = augment_image(im, name, s, size=size)
    return out


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class AugmentedStimuli(Stimuli):
    """``views`` augmented copies of every image of a stimulus source, for the feature cache.

    Position ``i * views + k`` is view ``k`` of base image ``i``; its id is ``"<base id>:<k>"``.

    Parameters
    ----------
    base : Stimuli or anything :func:`~neurodecode.latents._stimuli.as_stimuli` takes
        The clean images (e.g. an NSD ``nsd_stimuli.hdf5`` with the training ids).
    views : int
        Augmented copies per image (>= 1).
    augment : {"mindbridge", "mindeye2"}
        The transform.
    seed : int
        Seed of the draws (combined with each image's id and view number).
    size : int
        Side of the views.
    ids : array-like or None
        Base ids when ``base`` is not yet a :class:`Stimuli`.
    """

    source = "augmented"

    def __init__(self, base: Any, views: int, augment: str, seed: int = 0, *, size: int = VIEW_SIZE,
                 ids: Any = None) -> None:
        check_option(augment, "augment", list(AUGMENTATIONS))
        if not isinstance(views, (int, np.integer)) or isinstance(views, bool) or int(views) < 1:
            raise ValidationError(format_error("views", "a positive number of augmented views per image", views))
        self.base = as_stimuli(base, ids)
        if self.base.modality != "image":
            raise ValidationError(format_error("base", "image stimuli", f"{self.base.modality} stimuli"))
        self.views, self.augment, self.seed, self.size = int(views), str(augment), int(seed), int(size)
        base_ids = self.base.ids.tolist()
        super().__init__(np.array([f"{i}:{k}" for i in base_ids for k in range(self.views)]))
        self._base_ids = base_ids

    def spec(self) -> dict[str, Any]:
        """What defines the views (part of the fingerprint and of the cache folder's identity)."""
        return {"augment": self.augment, "views": self.views, "seed": self.seed, "size": self.size,
                "reference": AUGMENTATIONS[self.augment][1]}

    def read(self, start: int, stop: int) -> Any:
        if stop <= start:
            return np.empty((0, self.size, self.size, 3), dtype=np.uint8)
        first, last = start // self.views, (stop - 1) // self.views
        images = list(self.base.read(first, last + 1))
        out = np.empty((stop - start, self.size, self.size, 3), dtype=np.uint8)

        def one(j: int) -> None:
            i, k = divmod(start + j, self.views)
            out[j] = augment_image(images[i - first], self.augment, view_seed(self.seed, self._base_ids[i], k),
                                   size=self.size)

        # small images: one intra-op thread each, several images at once (each view has its own generator,
        # so the result does not depend on the scheduling)
        workers = max(1, min(stop - start, os.cpu_count() or 1, 16))
        with _one_thread():
            if workers == 1:
                for j in range(stop - start):
                    one(j)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    list(pool.map(one, range(stop - start)))
        return out

    def close(self) -> None:
        close = getattr(self.base, "close", None)
        if close is not None:
            close()

    def stat(self) -> dict[str, Any] | None:
        return self.base.stat()

    def cheap_identity(self) -> dict[str, Any]:
        return {**super().cheap_identity(), **self.spec()}

    def _content(self) -> dict[str, Any]:
        return {"base": self.base.fingerprint()}
