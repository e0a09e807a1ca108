"""Tiled, blended, batched prediction for images of any size.

The image is reflect-padded to a multiple of 32 once; tiles start on multiples of 32 so every tile
sees the same pixel grid as a whole-image forward. Neighbouring tiles overlap by ``overlap`` pixels and
are blended with weights that ignore the outer quarter of the overlap (the pixels with the least
context) and ramp linearly across the middle half, so the weights of two tiles always sum to one.
Memory is bounded by the tile batch plus the output array, not by a whole-image forward.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch

from .config import TrainingConfig
from .data import prepare_image, split_frames
from .events import TileDone

_STRIDE = 32


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets (multiples of 32) covering ``length`` with tiles of ``tile``, last one flush."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _edge_ramp(size: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    ramp = np.ones(size, np.float32)
    if overlap == 0:
        return ramp
    position = np.arange(overlap, dtype=np.float32) + 0.5
    rising = np.clip((position - overlap / 4) / (overlap / 2), 0.0, 1.0)
    if not at_start:
        ramp[:overlap] = rising
    if not at_end:
        ramp[-overlap:] = np.minimum(ramp[-overlap:], rising[::-1])
    return ramp


def _pad_to_multiple(image: np.ndarray, multiple: int = _STRIDE) -> np.ndarray:
    height, width = image.shape[1:]
    pad_y, pad_x = -height % multiple, -width % multiple
    if not (pad_y or pad_x):
        return image
    mode = "reflect" if min(height, width) > max(pad_y, pad_x) else "symmetric"
    return np.pad(image, ((0, 0), (0, pad_y), (0, pad_x)), mode=mode)


@torch.inference_mode()
def iter_bands(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> Generator[TileDone | tuple[int, np.ndarray], None, None]:
    """Blended class probabilities of a prepared ``(C, H, W)`` image, one finished band of rows at a time.

    Yields :class:`TileDone` progress and ``(first_row, probabilities (K, rows, W))`` bands in order.
    Only one band of tiles is held at once, so memory grows with the image width, not its area.
    """
    if tile % _STRIDE or overlap % _STRIDE or overlap >= tile:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of 32 with overlap < tile")
    height, width = image.shape[1:]
    padded = _pad_to_multiple(image)
    padded_height, padded_width = padded.shape[1:]
    tile_y, tile_x = min(tile, padded_height), min(tile, padded_width)
    rows, columns = tile_starts(padded_height, tile_y, overlap), tile_starts(padded_width, tile_x, overlap)
    total, done = len(rows) * len(columns), 0
    model.eval()
    band = weights = None
    band_top = 0
    for row_index, y in enumerate(rows):
        if band is not None:  # keep the rows the next tile row still overlaps
            keep = band_top + band.shape[1] - y
            band = np.concatenate([band[:, -keep:], np.zeros_like(band[:, : tile_y - keep])], axis=1)
            weights = np.concatenate([weights[-keep:], np.zeros_like(weights[: tile_y - keep])])
        band_top = y
        y_ramp = _edge_ramp(tile_y, overlap, y == 0, y + tile_y == padded_height)
        for first in range(0, len(columns), batch_size):
            batch_columns = columns[first : first + batch_size]
            tiles = np.stack([padded[:, y : y + tile_y, x : x + tile_x] for x in batch_columns])
            logits = model(torch.from_numpy(tiles).to(device))
            probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
            if band is None:
                band = np.zeros((probabilities.shape[1], tile_y, padded_width), np.float32)
                weights = np.zeros((tile_y, padded_width), np.float32)
            for x, tile_probabilities in zip(batch_columns, probabilities):
                weight = np.outer(y_ramp, _edge_ramp(tile_x, overlap, x == 0, x + tile_x == padded_width))
                band[:, :, x : x + tile_x] += tile_probabilities * weight
                weights[:, x : x + tile_x] += weight
            done += len(batch_columns)
            yield TileDone(done, total)
        finished_to = rows[row_index + 1] if row_index + 1 < len(rows) else padded_height
        finished_rows = min(finished_to, height) - band_top
        if finished_rows > 0:
            yield band_top, band[:, :finished_rows, :width] / weights[:finished_rows, :width]


def iter_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> Generator[TileDone, None, np.ndarray]:
    """Class probabilities ``(K, H, W)`` of a prepared ``(C, H, W)`` image; yields progress."""
    output = None
    for item in iter_bands(model, image, tile, overlap, batch_size, device):
        if isinstance(item, TileDone):
            yield item
            continue
        top, band = item
        if output is None:
            output = np.empty((band.shape[0], *image.shape[1:]), np.float32)
        output[:, top : top + band.shape[1]] = band
    return output


def run(generator: Generator):
    """Drain a generator and return its return value (for callers that need no progress)."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def _bilinear_source(size_out: int, size_in: int, first: int, last: int):
    """Source indices and weights of bilinear resizing (PyTorch's align_corners=False convention)."""
    position = np.clip((np.arange(first, last) + 0.5) * (size_in / size_out) - 0.5, 0, size_in - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (position - low).astype(np.float32)


def upscale_rows(probabilities: np.ndarray, shape: tuple[int, int], first: int, last: int) -> np.ndarray:
    """Rows ``first:last`` of ``probabilities`` resized to ``shape`` (bilinear): undoes Down Scaling one
    chunk at a time, so the full-resolution probabilities never exist at once."""
    low, high, weight = _bilinear_source(shape[0], probabilities.shape[1], first, last)
    rows = probabilities[:, low] * (1 - weight)[None, :, None] + probabilities[:, high] * weight[None, :, None]
    low, high, weight = _bilinear_source(shape[1], probabilities.shape[2], 0, shape[1])
    return rows[:, :, low] * (1 - weight) + rows[:, :, high] * weight


def probabilities_to_labels(probabilities: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """Class ids in the user's label convention (sparse mode: classes start at 1)."""
    labels = probabilities.argmax(axis=0).astype(np.uint16)
    return labels + 1 if config.sparse_labels else labels


def iter_predict(
    model: torch.nn.Module,
    image: np.ndarray,
    config: TrainingConfig,
    channel_axis: int | None = None,
    device: torch.device | str = "cpu",
    tile: int = 512,
    out=None,
    chunk_rows: int = 256,
) -> Generator[TileDone, None, np.ndarray]:
    """Label image for every frame of ``image`` (its spatial shape, channel axis removed).

    Labels are written band by band into ``out`` (a new uint16 array, or any array-like such as a
    zarr array of the right shape), so memory is bounded by a band of tiles, not by the image.
    """
    frames = split_frames(image, channel_axis)
    shape = tuple(np.delete(np.shape(image), channel_axis)) if channel_axis is not None else np.shape(image)
    out = np.zeros(shape, np.uint16) if out is None else out
    options = dict(tile=max(tile, config.patch_size), overlap=config.tile_overlap,
                   batch_size=config.batch_size, device=device)
    for index, frame in zip(np.ndindex(*shape[:-2]), frames):
        prepared = prepare_image(frame, config)
        if prepared.shape[1:] == frame.shape[1:]:
            for item in iter_bands(model, prepared, **options):
                if isinstance(item, TileDone):
                    yield item
                    continue
                top, band = item
                out[(*index, slice(top, top + band.shape[1]))] = probabilities_to_labels(band, config)
            continue
        probabilities = yield from iter_probabilities(model, prepared, **options)
        for top in range(0, shape[-2], chunk_rows):
            bottom = min(top + chunk_rows, shape[-2])
            rows = upscale_rows(probabilities, shape[-2:], top, bottom)
            out[(*index, slice(top, bottom))] = probabilities_to_labels(rows, config)
    return out


def predict(model, image, config, channel_axis=None, device="cpu", tile=512, out=None) -> np.ndarray:
    return run(iter_predict(model, image, config, channel_axis, device, tile, out))
