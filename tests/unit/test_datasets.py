"""Proxy-task datasets: the builtins, users' npz and image folders, and clear errors for bad data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fnas import datasets


def test_digits_split_is_fixed_by_the_seed_and_stratified():
    a, b, c = (
        datasets.load("digits", seed=0),
        datasets.load("digits", seed=0),
        datasets.load("digits", seed=1),
    )
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.y_train) + len(a.y_val) == 1797
    assert np.array_equal(a.y_val, b.y_val) and np.array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.y_val, c.y_val)
    counts = np.bincount(a.y_val, minlength=10)
    assert counts.min() >= 30  # every class held out in proportion (~36 each)
    assert abs(float(a.x_train.mean())) < 1e-4 and a.x_train.dtype == np.float32


def test_synthetic_is_deterministic():
    x1, y1 = datasets.synthetic()
    x2, _ = datasets.synthetic()
    assert x1.shape == (2000, 3, 16, 16) and np.array_equal(x1, x2) and set(np.unique(y1)) == set(range(10))


def test_npz_layouts(tmp_path: Path):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    for name, x in {
        "nhw": rng.random((40, 6, 6)),
        "nchw": rng.random((40, 3, 6, 6)),
        "nhwc": rng.random((40, 6, 6, 3)),
    }.items():
        np.savez(tmp_path / f"{name}.npz", X=x, y=y)
        d = datasets.load(f"npz:{tmp_path / name}.npz")
        assert d.input_shape == ((1, 6, 6) if name == "nhw" else (3, 6, 6)) and d.num_classes == 4


def test_imagefolder(tmp_path: Path):
    from PIL import Image

    for label, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (20 + i, 10), colour).save(tmp_path / label / f"{i}.png")
    d = datasets.load(f"imagefolder:{tmp_path}", image_side=12)
    assert d.input_shape == (3, 12, 12) and d.num_classes == 2 and len(d.y_train) + len(d.y_val) == 6


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mnist", "unknown dataset 'mnist'"),
        ("npz:", "no path after 'npz:'"),
        ("npz:/no/such/file.npz", "npz:/no/such/file.npz: no such file"),
        ("imagefolder:/no/such/dir", "imagefolder:/no/such/dir: no such directory"),
    ],
)
def test_bad_names_and_paths(name, message):
    with pytest.raises(ValueError, match=message):
        datasets.load(name)


def _write(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_malformed_npz_errors_say_what_is_wrong(tmp_path: Path):
    x, y = np.zeros((10, 4, 4)), np.arange(10) % 2
    cases = {
        r"missing array\(s\) y": _write(tmp_path / "a.npz", X=x),
        r"y must have shape \(10,\)": _write(tmp_path / "b.npz", X=x, y=np.zeros(9, dtype=int)),
        "y must hold class indices": _write(tmp_path / "c.npz", X=x, y=np.linspace(0, 1, 10)),
        "X must have shape": _write(tmp_path / "d.npz", X=np.zeros((10, 4)), y=y),
        "X must be numeric": _write(tmp_path / "e.npz", X=np.array(["a"] * 10), y=y),
        "needs at least 2 classes": _write(tmp_path / "f.npz", X=x, y=np.zeros(10, dtype=int)),
        "NaN or infinite": _write(tmp_path / "g.npz", X=np.full((10, 4, 4), np.nan), y=y),
        "without pickled objects": _write(tmp_path / "h.npz", X=np.array([{"a": 1}] * 10, dtype=object), y=y),
    }
    (tmp_path / "i.npz").write_bytes(b"not a zip file")
    cases["not a readable .npz"] = f"npz:{tmp_path / 'i.npz'}"
    for message, name in cases.items():
        with pytest.raises(ValueError, match=message):
            datasets.load(name)


def test_bad_image_folders(tmp_path: Path):
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="at least 2"):
        datasets.load(f"imagefolder:{tmp_path}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="class folder 'empty' holds no images"):
        datasets.load(f"imagefolder:{tmp_path}")
    (tmp_path / "empty" / "broken.png").write_bytes(b"no png")
    (tmp_path / "only" / "ok.png").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot read image"):
        datasets.load(f"imagefolder:{tmp_path}")
