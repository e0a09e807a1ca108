"""Reading and writing image files for the command line and scripts."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
LAZY_BYTES = 2**30  # TIFFs larger than this are read tile by tile instead of loaded whole


def is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (path / "zarr.json").is_file() or (path / ".zarray").is_file() or (
        path / ".zgroup").is_file()


def natural_key(path: Path) -> list:
    """Sort key that puts ``img2`` before ``img10``, as a file browser does."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: str | Path) -> list[Path]:
    """The images of ``folder`` in natural order (hidden files, such as half-written ones, left out)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    files = sorted((p for p in folder.iterdir() if not p.name.startswith(".") and (
        p.suffix.lower() in IMAGE_SUFFIXES or is_zarr(p))), key=natural_key)
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


def open_image(path: str | Path, lazy_bytes: int = LAZY_BYTES):
    """Like :func:`read_image`, but zarr/OME-Zarr stores and TIFFs larger than ``lazy_bytes`` come back
    as zarr arrays that read only the regions asked for (memory bounded by a tile, not the image)."""
    path = Path(path)
    if is_zarr(path):
        import zarr

        store = zarr.open(str(path), mode="r")
        if isinstance(store, zarr.Group):  # OME-Zarr: the full-resolution level of the first image
            datasets = store.attrs.get("multiscales", [{}])[0].get("datasets", [{"path": "0"}])
            store = store[datasets[0]["path"]]
        return store, _rgb_axis(store.shape)
    if path.suffix.lower() in (".tif", ".tiff") and path.stat().st_size > lazy_bytes:
        import zarr

        array = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        return array, _rgb_axis(array.shape)
    return read_image(path)


def _rgb_axis(shape) -> int | None:
    return -1 if len(shape) >= 3 and shape[-1] in (3, 4) and shape[0] > 4 else None


def read_labels(path: str | Path) -> np.ndarray:
    array, channel_axis = read_image(path)
    if channel_axis is not None:
        raise ValueError(f"{path}: labels must be a single-channel image of class ids, got colour")
    return array


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write`` on a hidden file beside ``path``, flush it to disk, then rename it to ``path``: a
    crash or a kill at any moment leaves either the previous file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.partial{path.suffix}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_labels(path: str | Path, labels: np.ndarray) -> Path:
    """A label image as a zlib TIFF (uint16, uint32 for more ids), written atomically."""
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    return write_atomically(path, lambda file: tifffile.imwrite(file, labels.astype(dtype), compression="zlib"))


def read_map(path: str | Path) -> np.ndarray:
    """A float map written by :func:`write_map`."""
    return tifffile.imread(path)


def write_map(path: str | Path, values: np.ndarray) -> Path:
    """A float map (e.g. per-pixel uncertainty) as a float32 zlib TIFF, written atomically."""
    values = np.asarray(values, np.float32)
    return write_atomically(path, lambda file: tifffile.imwrite(file, values, compression="zlib"))
