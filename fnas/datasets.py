"""Proxy-task datasets of the trained spaces: images as numpy arrays, split by a fixed seed.

A dataset is named by a string, the `Task.dataset` of a search:

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); read straight from the
  CSV that scikit-learn ships, so nothing is downloaded and scikit-learn's import cost is not paid;
- `synthetic`: 2,000 generated 3x16x16 images of 10 classes (noisy, shifted class templates), deterministic;
- `npz:<path>`: arrays `X` (N,H,W), (N,C,H,W) or (N,H,W,C) and integer labels `y` (N,), loaded without pickle;
- `imagefolder:<path>`: one sub-folder per class holding image files, resized to a square side.

Every sample of a search trains on the same split (paper 4.3: equal conditions for every sample), so the split
depends only on the seed passed here, not on the job. Bad names, missing paths and malformed data raise
ValueError with a message that says what is wrong and where. This module needs numpy (and PIL for
imagefolder) only: resizing to the trainer's input side happens in the trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUILTIN = ("digits", "synthetic")
PREFIXES = ("npz:", "imagefolder:")
#: Side that imagefolder images are resized to when the caller asks for none.
DEFAULT_IMAGE_SIDE = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: scikit-learn's digits count pixels 0..16.
DIGITS_SCALE = 1.0 / 16.0
_SYNTHETIC_SEED = 20190101  # the synthetic images are one fixed dataset; only the split varies


@dataclass(frozen=True)
class Dataset:
    """A split image-classification dataset: float32 (N, C, H, W) images, standardised, and int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    #: The recipe from the images as loaded to the network's input (before any resize): x * input_scale,
    #: then (x - mean) / std; mean and std are those of the training split, one value for every channel.
    input_scale: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    #: Positions of the validation images among the images as loaded (the split is fixed by the seed).
    val_index: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


def check_name(name: str) -> str:
    """The dataset name if it is well formed (a builtin, or a known prefix and a path); else ValueError."""
    if name in BUILTIN:
        return name
    for prefix in PREFIXES:
        if name.startswith(prefix):
            if not name[len(prefix) :].strip():
                raise ValueError(f"dataset {name!r}: no path after {prefix!r}")
            return name
    raise ValueError(
        f"unknown dataset {name!r}; use one of {', '.join(BUILTIN)}, npz:<path> or imagefolder:<path>"
    )


def load(name: str, *, seed: int = 0, val_fraction: float = 0.2, image_side: int = 0) -> Dataset:
    """Loads and splits a dataset; `image_side` resizes imagefolder images (0: DEFAULT_IMAGE_SIDE)."""
    check_name(name)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    scale = 1.0
    if name == "digits":
        x, y = _digits()
        scale = DIGITS_SCALE
    elif name == "synthetic":
        x, y = synthetic()
    elif name.startswith("npz:"):
        x, y = _npz(Path(name[4:]).expanduser())
    else:
        x, y = _imagefolder(Path(name[12:]).expanduser(), image_side or DEFAULT_IMAGE_SIDE)
        scale = 1.0 / 255.0
    return split(name, x * scale, y, seed, val_fraction, input_scale=scale)


def split(
    name: str, x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float, input_scale: float = 1.0
) -> Dataset:
    """Stratified train / validation split by `seed`; images standardised with training-split statistics."""
    rng = np.random.default_rng(seed)
    val_idx = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        # At least one validation image of each class that has two or more.
        n_val = max(1, round(val_fraction * len(idx))) if len(idx) > 1 else 0
        val_idx.append(idx[:n_val])
    is_val = np.zeros(len(y), dtype=bool)
    is_val[np.concatenate(val_idx)] = True
    train_idx, val = rng.permutation(np.flatnonzero(~is_val)), rng.permutation(np.flatnonzero(is_val))
    if len(train_idx) == 0 or len(val) == 0:
        raise ValueError(f"dataset {name!r}: too few images ({len(y)}) for a train / validation split")
    x = x.astype(np.float32)
    mean, std = float(x[train_idx].mean()), float(x[train_idx].std())
    std = std if std > 0 else 1.0
    x = (x - mean) / std
    num_classes = int(y.max()) + 1
    return Dataset(name, x[train_idx], y[train_idx], x[val], y[val], num_classes, input_scale, mean, std, val)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # scikit-learn's bundled copy: no download

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]  # (N, 1, 8, 8), counts 0..16
    return x, digits.target.astype(np.int64)


def synthetic(
    n: int = 2000, classes: int = 10, side: int = 16, channels: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Class templates (smooth random patterns), each image shifted by up to 2 pixels, plus noise."""
    rng = np.random.default_rng(_SYNTHETIC_SEED)
    coarse = rng.standard_normal((classes, channels, 4, 4))
    templates = np.kron(coarse, np.ones((1, 1, side // 4, side // 4)))  # smooth blobs, not pixel noise
    y = np.arange(n) % classes
    shifts = rng.integers(-2, 3, size=(n, 2))
    x = np.stack([np.roll(templates[c], tuple(s), axis=(1, 2)) for c, s in zip(y, shifts, strict=True)])
    x = x + 1.0 * rng.standard_normal(x.shape)
    return x.astype(np.float32), y.astype(np.int64)


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    where = f"npz:{path}"
    if not path.is_file():
        raise ValueError(f"dataset {where}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("X", "y") if k not in data.files]
            if missing:
                raise ValueError(f"dataset {where}: missing array(s) {', '.join(missing)} (has {data.files})")
            x, y = data["X"], data["y"]
    except ValueError as e:
        if str(e).startswith(f"dataset {where}"):
            raise
        raise ValueError(f"dataset {where}: not a readable .npz without pickled objects ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"dataset {where}: not a readable .npz ({e})") from None
    if not np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_:
        raise ValueError(f"dataset {where}: X must be numeric, got dtype {x.dtype}")
    x = _to_nchw(x, where)
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"dataset {where}: y must have shape ({len(x)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise ValueError(f"dataset {where}: y must hold class indices (integers >= 0), got dtype {y.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"dataset {where}: X holds NaN or infinite values")
    _check_classes(y, where)
    return x.astype(np.float32), y.astype(np.int64)


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] <= 4:
        return x
    if x.ndim == 4 and x.shape[3] <= 4:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise ValueError(
        f"dataset {where}: X must have shape (N,H,W), (N,C,H,W) or (N,H,W,C) with C <= 4, got {x.shape}"
    )


def _check_classes(y: np.ndarray, where: str) -> None:
    if len(np.unique(y)) < 2:
        raise ValueError(f"dataset {where}: needs at least 2 classes, got {len(np.unique(y))}")
    if len(y) < 4:
        raise ValueError(f"dataset {where}: needs at least 4 images, got {len(y)}")


def _imagefolder(root: Path, side: int) -> tuple[np.ndarray, np.ndarray]:
    where = f"imagefolder:{root}"
    if not root.is_dir():
        raise ValueError(f"dataset {where}: no such directory")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(
            f"dataset {where}: needs one sub-folder per class (at least 2), found {len(classes)}"
        )
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(
                f"dataset {where}: class folder {folder.name!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        for file in files:
            try:
                with Image.open(file) as img:
                    rgb = img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"dataset {where}: cannot read image {file} ({e})") from None
            images.append(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1))  # 0..255
            labels.append(label)
    y = np.array(labels, dtype=np.int64)
    _check_classes(y, where)
    return np.stack(images), y


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last partial batch is dropped, so every step sees a full batch)."""
    return max(1, math.floor(n_train / batch_size))
