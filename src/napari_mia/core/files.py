"""Reading and writing image files for the command line and scripts."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image(path: str | Path) -> tuple[np.ndarray, int | None]:
    """Return ``(array, channel_axis)``; RGB(A) files get ``channel_axis=-1`` with alpha dropped."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        array = tifffile.imread(path)
    else:
        array = iio.imread(path)
    if array.ndim == 3 and array.shape[-1] in (3, 4) and path.suffix.lower() not in (".tif", ".tiff"):
        return array[..., :3], -1
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] > 4:
        return array[..., :3], -1
    return array, None


def read_labels(path: str | Path) -> np.ndarray:
    array, channel_axis = read_image(path)
    if channel_axis is not None:
        raise ValueError(f"{path}: labels must be a single-channel image of class ids, got colour")
    return array


def pair_by_stem(images: list[Path], label_folder: str | Path) -> list[tuple[Path, Path]]:
    labels = {p.stem: p for p in list_images(label_folder)}
    pairs = [(image, labels[image.stem]) for image in images if image.stem in labels]
    if not pairs:
        raise FileNotFoundError(f"no label image in {label_folder} has the name of an image")
    return pairs


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    tifffile.imwrite(path, labels.astype(np.uint16), compression="zlib")
