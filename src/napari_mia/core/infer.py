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
import torch.nn.functional as F

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
def iter_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> Generator[TileDone, None, np.ndarray]:
    """Class probabilities ``(K, H, W)`` of a prepared ``(C, H, W)`` image; yields progress per batch."""
    if tile % _STRIDE or overlap % _STRIDE or overlap >= tile:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of 32 with overlap < tile")
    height, width = image.shape[1:]
    padded = _pad_to_multiple(image)
    padded_height, padded_width = padded.shape[1:]
    tile_y, tile_x = min(tile, padded_height), min(tile, padded_width)
    corners = [(y, x) for y in tile_starts(padded_height, tile_y, overlap)
               for x in tile_starts(padded_width, tile_x, overlap)]
    model.eval()
    output = None
    weight_sum = np.zeros((padded_height, padded_width), np.float32)
    for first in range(0, len(corners), batch_size):
        batch_corners = corners[first : first + batch_size]
        tiles = np.stack([padded[:, y : y + tile_y, x : x + tile_x] for y, x in batch_corners])
        logits = model(torch.from_numpy(tiles).to(device))
        probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
        if output is None:
            output = np.zeros((probabilities.shape[1], padded_height, padded_width), np.float32)
        for (y, x), tile_probabilities in zip(batch_corners, probabilities):
            weight = np.outer(
                _edge_ramp(tile_y, overlap, y == 0, y + tile_y == padded_height),
                _edge_ramp(tile_x, overlap, x == 0, x + tile_x == padded_width),
            )
            output[:, y : y + tile_y, x : x + tile_x] += tile_probabilities * weight
            weight_sum[y : y + tile_y, x : x + tile_x] += weight
        yield TileDone(min(first + batch_size, len(corners)), len(corners))
    output /= weight_sum
    return output[:, :height, :width]


def run(generator: Generator):
    """Drain a generator and return its return value (for callers that need no progress)."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def upscale_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Undo Down Scaling on probabilities (bilinear), so class boundaries stay smooth."""
    if probabilities.shape[1:] == tuple(shape):
        return probabilities
    tensor = torch.from_numpy(probabilities)[None]
    return F.interpolate(tensor, size=tuple(shape), mode="bilinear", align_corners=False)[0].numpy()


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
) -> Generator[TileDone, None, np.ndarray]:
    """Label image (same spatial shape as ``image``, channel axis removed) for every frame of ``image``."""
    frames = split_frames(image, channel_axis)
    spatial = frames[0].shape[1:]
    results = []
    for frame in frames:
        prepared = prepare_image(frame, config)
        probabilities = yield from iter_probabilities(
            model, prepared, tile=max(tile, config.patch_size), overlap=config.tile_overlap,
            batch_size=config.batch_size, device=device,
        )
        results.append(probabilities_to_labels(upscale_probabilities(probabilities, spatial), config))
    image_shape = np.shape(image)
    if channel_axis is not None:
        image_shape = tuple(np.delete(image_shape, channel_axis))
    return np.stack(results).reshape(image_shape)


def predict(model, image, config, channel_axis=None, device="cpu", tile=512) -> np.ndarray:
    return run(iter_predict(model, image, config, channel_axis, device, tile))
