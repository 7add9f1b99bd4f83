"""Real stimuli shipped inside the package (Fashion-MNIST subset, scikit-image photographs).

See ``neurodecode/assets/README.md`` for provenance and ``ATTRIBUTION.md`` for licences; the files are built
by ``pipelines/demo/build_assets.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._core.errors import MissingFileError, ValidationError
from .._core.validation import check_option, format_error

__all__ = ["load_stimuli", "STIMULUS_SETS"]

#: Names accepted by :func:`load_stimuli` and the shipped file each reads.
STIMULUS_SETS = {"fashion-mnist": "fashion_mnist_subset.npz", "skimage-photos": "skimage_photos.npz"}


def _asset_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "stimuli"


def load_stimuli(
    name: str = "fashion-mnist", n: int | None = None, size: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load a shipped set of real images with labels and captions.

    Parameters
    ----------
    name : {"fashion-mnist", "skimage-photos"}
        ``"fashion-mnist"``: 2,500 Fashion-MNIST test images (28 x 28, grey replicated to RGB), 250 per class,
        in round-robin class order (any prefix of ``10 * k`` images is class-balanced).
        ``"skimage-photos"``: 4 natural photographs (128 x 128 RGB).
    n : int or None
        Keep the first ``n`` images (all when ``None``).
    size : int or None
        Resize to ``size`` x ``size`` pixels (bilinear, via Pillow); native size when ``None``.

    Returns
    -------
    images : ndarray of shape (n, H, W, 3), dtype uint8
        The images, RGB.
    labels : ndarray of shape (n,), dtype int64
        Class index of each image into ``class_names``.
    class_names : ndarray of shape (n_classes,), dtype str
        Class names (``"sneaker"``, ``"ankle boot"``...).
    captions : ndarray of shape (n,), dtype str
        A short caption per image (``"a photo of a sneaker"``).

    Examples
    --------
    >>> images, labels, names, captions = load_stimuli(n=20, size=32)
    >>> images.shape, str(captions[7])
    ((20, 32, 32, 3), 'a photo of a sneaker')
    """
    check_option(name, "name", list(STIMULUS_SETS))
    path = _asset_dir() / STIMULUS_SETS[name]
    if not path.is_file():
        raise MissingFileError(format_error(
            "name", f"the shipped file {path}", "nothing there",
            "Reinstall neurodecode, or rebuild the assets with `python pipelines/demo/build_assets.py`"))
    with np.load(path, allow_pickle=False) as z:
        images = z["images"]
        labels = z["labels"].astype(np.int64)
        class_names = z["class_names"].astype(str)
        captions = z["captions"].astype(str)
    total = images.shape[0]
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= total:
            raise ValidationError(format_error("n", f"an integer between 1 and {total} (or None for all)", n,
                                               f"The {name!r} set holds {total} images"))
        images, labels, captions = images[:n], labels[:n], captions[:n]
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 4:
            raise ValidationError(format_error("size", "an integer >= 4 (pixels) or None", size,
                                               "Pass e.g. size=64"))
        images = resize_images(images, int(size))
    return np.ascontiguousarray(images, dtype=np.uint8), labels, class_names, captions


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 RGB images of shape (n, H, W, 3) to (n, size, size, 3) with bilinear interpolation."""
    from PIL import Image

    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = np.empty((images.shape[0], size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    return out
