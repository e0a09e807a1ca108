"""Tiled, blended, batched prediction for images of any size.

Tiles are fitted to the image, start on the 32-pixel grid of the image reflect-padded to a multiple
of 32 (so every tile sees the pixel grid of a whole-image forward), and are read and prepared one at a
time. Neighbouring tiles overlap by at least ``overlap`` pixels and are blended with weights that ignore
the outer quarter of the overlap (the pixels with the least context) and ramp across its middle half.
Finished bands of rows leave as soon as no later tile touches them, so memory is bounded by a band of
tiles, not by the image.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import numpy as np
import torch
from skimage.measure import regionprops

from .config import TrainingConfig
from .data import (
    classification_input,
    frame_scale,
    prepare_image,
    resize_labels,
    spatial_shape,
    split_frames,
    tile_preparation,
)
from .events import TileDone
from .models import bf16_autocast, channels_last, uses_bf16
from .postprocess import config_instances, config_points
from .uncertainty import pixel_uncertainty

_STRIDE = 32
# Pixels per forward: on a CPU batching tiles gains nothing and a second 1024² tile costs ~0.4 GB of
# activations (it decided whether a 20000² image fits in 2 GB); a GPU keeps busier with more.
_BATCH_PIXELS = {"cpu": 2**20, "accelerator": 2**22}
_YIELD_ROWS = 256  # finished (or upscaled) rows leave in chunks of this many


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Fewest tile starts (multiples of 32) covering ``length`` with overlaps of at least ``overlap``,
    spread evenly so no tile is wasted on a sliver at the end."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    while True:
        starts = [int((i * (length - tile)) // (count - 1)) // _STRIDE * _STRIDE for i in range(count)]
        if all(b - a <= tile - overlap for a, b in zip(starts, starts[1:])):
            return starts
        count += 1


def fit_tile(length: int, tile: int, overlap: int) -> int:
    """The smallest tile (multiple of 32, at most ``tile``) that covers ``length`` with as few tiles as
    ``tile`` needs: 4096 px with 1536-px tiles becomes 3 tiles of 1408, not 3 of 1536 overlapping by 768."""
    if length <= tile:
        return length
    count = math.ceil((length - overlap) / (tile - overlap))
    return min(tile, -(-(length + (count - 1) * overlap) // (count * _STRIDE)) * _STRIDE)


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


class _TileReader:
    """Tiles of a ``(C, H, W)`` array-like (numpy, zarr, dask) as if it were reflect-padded to a multiple
    of 32, read and converted (``transform``, e.g. normalisation) one tile at a time, so neither a
    padded nor a normalised copy of the whole image is ever made."""

    def __init__(self, image, transform=None):
        self.image, self.transform = image, transform
        self.height, self.width = image.shape[-2:]
        self.pad_y, self.pad_x = -self.height % _STRIDE, -self.width % _STRIDE
        self.padded_shape = (self.height + self.pad_y, self.width + self.pad_x)
        small = min(self.height, self.width) <= max(self.pad_y, self.pad_x)
        self.mode = "symmetric" if small else "reflect"

    def read(self, y: int, x: int, tile_y: int, tile_x: int) -> np.ndarray:
        below, right = max(0, y + tile_y - self.height), max(0, x + tile_x - self.width)
        inside_y, inside_x = tile_y - below, tile_x - right
        if (below and inside_y <= below) or (right and inside_x <= right):
            region = self._padded_region(y, x, tile_y, tile_x)  # too few pixels to mirror: a tiny image
        else:
            region = np.asarray(self.image[:, y : y + inside_y, x : x + inside_x])
            if below or right:
                region = np.pad(region, ((0, 0), (0, below), (0, right)), mode=self.mode)
        region = region if self.transform is None else self.transform(region)
        return np.asarray(region, dtype=np.float32)

    def _padded_region(self, y, x, tile_y, tile_x):
        whole = np.pad(np.asarray(self.image), ((0, 0), (0, self.pad_y), (0, self.pad_x)), mode=self.mode)
        return whole[:, y : y + tile_y, x : x + tile_x]


@torch.inference_mode()
def iter_bands(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    transform=None,
    activation: str = "softmax",
    flips: bool = False,
    bf16: bool = False,
) -> Generator[TileDone | tuple[int, np.ndarray], None, None]:
    """Blended class probabilities of a ``(C, H, W)`` image, one finished band of rows at a time.

    ``image`` is prepared already, or ``transform`` prepares each tile as it is read (then ``image`` may
    be any array-like, e.g. zarr). ``activation`` is "softmax" (classes) or "sigmoid" (heatmaps);
    ``flips`` averages over the four flips of every tile (test-time augmentation, 4x the compute);
    ``bf16`` runs the network under bf16 autocast (see :func:`~napari_mia.core.models.uses_bf16`).
    Yields :class:`TileDone` progress and ``(first_row, probabilities (K, rows, W))`` bands in order.
    Only one band of tiles is held at once, so memory grows with the image width, not its area.
    """
    if tile % _STRIDE or overlap % _STRIDE or overlap >= tile:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of 32 with overlap < tile")
    reader = _TileReader(image, transform)
    height, width = reader.height, reader.width
    padded_height, padded_width = reader.padded_shape
    tile_y, tile_x = fit_tile(padded_height, tile, overlap), fit_tile(padded_width, tile, overlap)
    rows, columns = tile_starts(padded_height, tile_y, overlap), tile_starts(padded_width, tile_x, overlap)
    total, done = len(rows) * len(columns), 0
    model = channels_last(model, device).eval()
    band = weights = None
    band_top = 0
    for row_index, y in enumerate(rows):
        if band is not None:  # keep the rows the next tile row still overlaps, in place (no band-sized copies)
            kept = tile_y - (y - band_top)
            band[:, :kept] = band[:, tile_y - kept :].copy()
            band[:, kept:] = 0
            weights[:kept] = weights[tile_y - kept :].copy()
            weights[kept:] = 0
        band_top = y
        y_ramp = _edge_ramp(tile_y, overlap, y == 0, y + tile_y == padded_height)
        for first in range(0, len(columns), batch_size):
            batch_columns = columns[first : first + batch_size]
            tiles = np.stack([reader.read(y, x, tile_y, tile_x) for x in batch_columns])
            tiles = channels_last(torch.from_numpy(tiles).to(device), device)
            probabilities = _forward(model, tiles, activation, flips, bf16).cpu().numpy()
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
        for first in range(0, max(0, finished_rows), _YIELD_ROWS):  # row chunks keep the normalised copy small
            last = min(first + _YIELD_ROWS, finished_rows)
            yield band_top + first, band[:, first:last, :width] / weights[first:last, :width]


def _forward(model, tiles: torch.Tensor, activation: str, flips: bool, bf16: bool) -> torch.Tensor:
    def probabilities(batch):
        with bf16_autocast(batch.device.type, bf16):
            logits = model(batch).float()
        return torch.softmax(logits, dim=1) if activation == "softmax" else torch.sigmoid(logits)

    if not flips:
        return probabilities(tiles)
    total = probabilities(tiles)
    for dims in ((2,), (3,), (2, 3)):
        total += torch.flip(probabilities(torch.flip(tiles, dims)), dims)
    return total / 4


def iter_probabilities(model: torch.nn.Module, image: np.ndarray, **options) -> Generator[TileDone, None, np.ndarray]:
    """Class probabilities ``(K, H, W)`` of a prepared ``(C, H, W)`` image; yields progress.
    ``options`` are those of :func:`iter_bands` (tile, overlap, batch_size, device)."""
    output = None
    for item in iter_bands(model, image, **options):
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


def prediction_options(config: TrainingConfig, device, tile: int | None = None) -> dict:
    tile = tile or config.tile_size
    batch_pixels = _BATCH_PIXELS["cpu" if torch.device(device).type == "cpu" else "accelerator"]
    return dict(tile=tile, overlap=min(config.tile_overlap, tile - _STRIDE), device=device,
                batch_size=max(1, min(config.batch_size, batch_pixels // tile**2)),
                activation="sigmoid" if config.kind.points else "softmax",
                flips=config.test_time_augmentation, bf16=uses_bf16(device, config.mixed_precision))


def frame_probabilities(model, frame: np.ndarray, config: TrainingConfig, device, tile=None, scale=None):
    """Probabilities (or heatmaps) of one raw (C, H, W) frame at the model's scale (or ``scale``); yields
    progress."""
    return (yield from iter_probabilities(model, prepare_image(frame, config, scale),
                                          **prediction_options(config, device, tile)))


# Scale per image: a pass whose objects are this far (as a ratio) from the learned size is made again, up to
# this many passes in all (objects far larger than learned come out in pieces: the first pass underestimates).
_RESCALE_BEYOND = 1.2
_MAX_PASSES = 3
# A pass that calls this much of the frame foreground has no background between objects to measure their
# width by (a network early in training does this): the frame keeps the scale it has.
_MEASURABLE_BELOW = 0.9


def frame_instances(model, frame: np.ndarray, config: TrainingConfig, device, tile=None):
    """``(probabilities, object ids at the model's scale, the scale used)`` of one raw (C, H, W) frame.
    A model that scales per image predicts first at Down Scaling, measures the objects it found, and
    predicts again at the scale that brings them to the size it learned, while that differs enough."""
    scale = config.downscale
    for passes in range(1, _MAX_PASSES + 1):
        probabilities = yield from frame_probabilities(model, frame, config, device, tile, scale)
        instances = config_instances(probabilities, config, scale)
        if passes == _MAX_PASSES or np.count_nonzero(instances) >= _MEASURABLE_BELOW * instances.size:
            break
        fitting = frame_scale(instances, config, scale)
        if max(fitting / scale, scale / fitting) <= _RESCALE_BEYOND:
            break
        scale = fitting
    return probabilities, instances, scale


def iter_predict_instances(model, image, config: TrainingConfig, channel_axis=None, device="cpu", tile=None,
                           out=None, uncertainty=None, scales=None) -> Generator[TileDone, None, np.ndarray]:
    """Object ids for every frame of ``image``; ids are unique across the frames of a stack.
    ``uncertainty``: see :func:`iter_predict`; ``scales``: a list given gets the scale of every frame."""
    frames, shape = split_frames(image, channel_axis), spatial_shape(image, channel_axis)
    out = np.zeros(shape, np.uint32) if out is None else out
    next_id = 0
    for index, frame in zip(np.ndindex(*shape[:-2]), frames):
        probabilities, instances, scale = yield from frame_instances(model, frame, config, device, tile)
        if scales is not None:
            scales.append(scale)
        instances = resize_labels(instances, shape[-2:])
        out[index] = np.where(instances > 0, instances + next_id, 0)
        next_id += int(instances.max())
        if uncertainty is not None:
            uncertainty[index] = _full_size(pixel_uncertainty(probabilities), shape[-2:])
    return out


def _full_size(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (h, w) map at the model's scale resized (bilinear) to the image's ``shape``."""
    return plane if plane.shape == tuple(shape) else upscale_rows(plane[None], shape, 0, shape[0])[0]


def iter_predict_points(model, image, config: TrainingConfig, channel_axis=None, device="cpu", tile=None):
    """Detected points of every frame: ``(points (N, D) in image coordinates, the leading ones the frame,
    class ids (N,), scores (N,))``; yields progress."""
    frames, shape = split_frames(image, channel_axis), spatial_shape(image, channel_axis)
    found = []
    for index, frame in zip(np.ndindex(*shape[:-2]), frames):
        heatmaps = yield from frame_probabilities(model, frame, config, device, tile)
        positions, classes, scores = config_points(heatmaps, config)
        positions = (positions + 0.5) * np.divide(frame.shape[1:], heatmaps.shape[1:]) - 0.5
        leading = np.tile(np.asarray(index, np.float64), (len(positions), 1))
        found.append((np.hstack([leading, positions]), classes, scores))
    points = np.vstack([f[0] for f in found]) if found else np.zeros((0, len(shape)))
    return points, np.concatenate([f[1] for f in found]), np.concatenate([f[2] for f in found])


@torch.inference_mode()
def classify(model, inputs: list[np.ndarray], config: TrainingConfig, device="cpu") -> np.ndarray:
    """Class probabilities (N, K) of prepared (C, S, S) classifier inputs, in batches of the config's size."""
    model = channels_last(model, device).eval()
    batch_size, bf16 = config.batch_size, uses_bf16(device, config.mixed_precision)
    probabilities = []
    for first in range(0, len(inputs), batch_size):
        batch = channels_last(torch.from_numpy(np.stack(inputs[first : first + batch_size])).to(device), device)
        with bf16_autocast(batch.device.type, bf16):
            logits = model(batch).float()
        probabilities.append(torch.softmax(logits, dim=1).cpu().numpy())
    return np.concatenate(probabilities) if probabilities else np.zeros((0, 0), np.float32)


def predict_classes(model, image, config: TrainingConfig, channel_axis=None, device="cpu"):
    """Class id and score of every frame of ``image``."""
    inputs = [classification_input(frame, config) for frame in split_frames(image, channel_axis)]
    probabilities = classify(model, inputs, config, device)
    return probabilities.argmax(1), probabilities.max(1)


def predict_object_classes(model, image, instances: np.ndarray, config: TrainingConfig, channel_axis=None,
                           device="cpu", margin: float = 0.15):
    """Class of every object of a 2D ``instances`` label image, from a square crop around it:
    ``(object ids, class ids, scores)``."""
    (frame,) = split_frames(image, channel_axis)
    if instances.shape != frame.shape[1:]:
        raise ValueError(f"objects {instances.shape} and image {frame.shape[1:]} do not cover the same pixels")
    ids, crops = [], []
    for region in regionprops(instances.astype(np.int64)):
        top, left, bottom, right = region.bbox
        side = int(max(bottom - top, right - left) * (1 + 2 * margin)) + 1
        centre_y, centre_x = (top + bottom) // 2, (left + right) // 2
        y0, x0 = max(0, centre_y - side // 2), max(0, centre_x - side // 2)
        crop = frame[:, y0 : centre_y + side // 2 + 1, x0 : centre_x + side // 2 + 1]
        ids.append(region.label)
        crops.append(classification_input(crop, config))
    probabilities = classify(model, crops, config, device)
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.array(ids), probabilities.argmax(1), probabilities.max(1)


def iter_predict(
    model: torch.nn.Module,
    image: np.ndarray,
    config: TrainingConfig,
    channel_axis: int | None = None,
    device: torch.device | str = "cpu",
    tile: int | None = None,
    out=None,
    uncertainty=None,
    scales=None,
) -> Generator[TileDone, None, np.ndarray]:
    """Label image for every frame of ``image`` (its spatial shape, channel axis removed): class ids,
    or object ids for an instance model.

    Labels are written band by band into ``out`` (a new uint16 array, or any array-like such as a
    zarr array of the right shape), so memory is bounded by a band of tiles, not by the image. Given an
    ``uncertainty`` array of the same shape (float32), each pixel's uncertainty is written into it too
    (:mod:`~napari_mia.core.uncertainty`). Given a list, ``scales`` gets the scale each frame was seen at.
    """
    if config.kind.object_ids:
        return (yield from iter_predict_instances(model, image, config, channel_axis, device, tile, out,
                                                  uncertainty, scales))
    if not config.kind.label_images:
        raise ValueError(f"{config.application} models predict points or classes, not a label image")
    frames, shape = split_frames(image, channel_axis), spatial_shape(image, channel_axis)
    out = np.zeros(shape, np.uint16) if out is None else out
    options = prediction_options(config, device, tile)
    for index, frame in zip(np.ndindex(*shape[:-2]), frames):
        if scales is not None:
            scales.append(config.downscale)
        if config.downscale == 1:  # normalise tile by tile: no full-size float copy of the image
            for item in iter_bands(model, frame, transform=tile_preparation(frame, config), **options):
                if isinstance(item, TileDone):
                    yield item
                    continue
                top, band = item
                _write_rows(out, uncertainty, (*index, slice(top, top + band.shape[1])), band, config)
            continue
        probabilities = yield from iter_probabilities(model, prepare_image(frame, config), **options)
        for top in range(0, shape[-2], _YIELD_ROWS):
            bottom = min(top + _YIELD_ROWS, shape[-2])
            rows = upscale_rows(probabilities, shape[-2:], top, bottom)
            _write_rows(out, uncertainty, (*index, slice(top, bottom)), rows, config)
    return out


def _write_rows(out, uncertainty, where: tuple, probabilities: np.ndarray, config: TrainingConfig) -> None:
    out[where] = probabilities_to_labels(probabilities, config)
    if uncertainty is not None:
        uncertainty[where] = pixel_uncertainty(probabilities)


def predict(model, image, config, channel_axis=None, device="cpu", tile=None, out=None,
            uncertainty=None) -> np.ndarray:
    return run(iter_predict(model, image, config, channel_axis, device, tile, out, uncertainty))


def predict_with_uncertainty(model, image, config, channel_axis=None, device="cpu", tile=None):
    """``(labels, per-pixel uncertainty)`` of :func:`predict`: both of the image's spatial shape."""
    return run(iter_predict_with_uncertainty(model, image, config, channel_axis, device, tile))


def iter_predict_with_uncertainty(model, image, config, channel_axis=None, device="cpu", tile=None, scales=None):
    """:func:`predict_with_uncertainty`, yielding progress between tiles (``scales``: see :func:`iter_predict`)."""
    uncertainty = np.zeros(spatial_shape(image, channel_axis), np.float32)
    labels = yield from iter_predict(model, image, config, channel_axis, device, tile, uncertainty=uncertainty,
                                     scales=scales)
    return labels, uncertainty
