"""Build the real stimuli shipped inside the package (``neurodecode/assets/stimuli/``).

Reproducible and seeded: run it again on the same inputs and the ``.npz`` files are byte-identical.

Inputs (read-only, never shipped whole):

- Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist/t10k-*-idx*-ubyte.gz``, MIT licence, Zalando Research);
- four photographs bundled with scikit-image (public domain / CC0: astronaut, coffee, chelsea, rocket).

Outputs:

- ``fashion_mnist_subset.npz``: a class-balanced subset of the Fashion-MNIST test set (``--per-class`` images
  of each of the 10 classes, 28 x 28 uint8 grey), ordered round-robin over the classes so that any prefix of
  length ``10 * k`` is itself balanced; with labels, class names, captions and the source indices;
- ``skimage_photos.npz``: the four photographs, centre-cropped to squares and resized to 128 x 128 RGB.

Usage::

    python pipelines/demo/build_assets.py [--per-class 250] [--seed 0] [--source /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import struct
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "neurodecode" / "assets" / "stimuli"
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
PHOTOS = {
    "astronaut": "a photo of an astronaut",
    "coffee": "a photo of a cup of coffee",
    "chelsea": "a photo of a cat",
    "rocket": "a photo of a rocket",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: big-endian header, then uint8 data)."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def caption(name: str) -> str:
    article = "an" if name[0] in "aeiou" else "a"
    noun = {"trouser": "pair of trousers", "sandal": "sandal"}.get(name, name)
    if noun.startswith("pair"):
        article = "a"
    return f"a photo of {article} {noun}"


def balanced_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` images per class, interleaved round-robin (class 0, 1, ..., 9, 0, 1, ...)."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)
        if idx.size < per_class:
            raise ValueError(f"class {c} has only {idx.size} images, asked for {per_class}")
        picks.append(np.sort(rng.choice(idx, size=per_class, replace=False)))
    return np.stack(picks, axis=1).reshape(-1)  # round-robin order


def save_npz_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so reruns give identical bytes."""
    tmp = path.with_suffix(".npz.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    tmp.replace(path)


def build_fashion(source: Path, per_class: int, seed: int) -> Path:
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    idx = balanced_subset(labels, per_class, seed)
    names = np.array(CLASS_NAMES)
    out = OUT / "fashion_mnist_subset.npz"
    save_npz_deterministic(
        out,
        images=images[idx],
        labels=labels[idx],
        class_names=names,
        captions=np.array([caption(CLASS_NAMES[k]) for k in labels[idx]]),
        source_index=idx.astype(np.int64),
        source_split=np.array("t10k"),
    )
    return out


def build_photos(size: int = 128) -> Path:
    import skimage.data
    from PIL import Image

    imgs = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())[..., :3]
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        crop = Image.fromarray(img[top : top + s, left : left + s])
        imgs.append(np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8))
    out = OUT / "skimage_photos.npz"
    save_npz_deterministic(
        out,
        images=np.stack(imgs),
        labels=np.arange(len(PHOTOS), dtype=np.int64),
        class_names=np.array(list(PHOTOS)),
        captions=np.array(list(PHOTOS.values())),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for path in (build_fashion(args.source, args.per_class, args.seed), build_photos()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size / 1e6:.2f} MB  sha256={digest}")


if __name__ == "__main__":
    main()
