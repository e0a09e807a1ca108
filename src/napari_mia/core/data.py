"""From user arrays to normalised training samples and random patches.

Images arrive as numpy arrays from napari layers or files: 2D grey (H, W), 2D with channels (a channel
axis given explicitly, e.g. RGB(A) with ``channel_axis=-1``), or stacks whose leading axes hold 2D frames.
Every frame becomes a ``(C, H, W)`` float32 array, normalised per channel by percentiles and resized by
the Down Scaling factor. Labels become ``(H, W)`` int16 class ids with :data:`IGNORE` for pixels the loss
must skip (unlabelled pixels in sparse mode, padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries
from skimage.transform import resize

from .config import TrainingConfig

IGNORE = -1
_MAX_SEED_PIXELS = 50_000


class DataError(ValueError):
    """The image or labels cannot be used; the message says what is wrong and how to fix it."""


@dataclass
class Sample:
    """One training frame, as the network sees it (normalised, down scaled).

    ``image`` is (C, H, W) float32. ``labels`` is what the loss compares with: (H, W) int16 class ids
    (semantic; instance: background/interior/boundary), (K, H, W) float32 heatmaps (detection), or a
    0-d int class id (classification). ``truth`` keeps what the validation metric needs: instance ids
    (H, W) or points (N, 3: y, x, class).
    """

    image: np.ndarray
    labels: np.ndarray
    truth: np.ndarray | None = None
    new: bool = False  # from an image added since the model's last run (see ``new_image_share``)
    scale: float | None = None  # instance samples: the scale the image was resized by (``frame_scale``)


class LazyFrame:
    """One (C, H, W) frame of an array that is not in memory (zarr, dask, a TIFF opened as zarr): only
    the regions sliced are read, so a 20000² image is predicted tile by tile."""

    def __init__(self, array, index: tuple[int, ...], channel_axis: int | None):
        self.array, self.index = array, index
        self.channel_axis = None if channel_axis is None else channel_axis % array.ndim
        spatial = [axis for axis in range(array.ndim) if axis != self.channel_axis]
        self.y_axis, self.x_axis = spatial[-2:]
        channels = 1 if self.channel_axis is None else array.shape[self.channel_axis]
        self.shape = (channels, array.shape[self.y_axis], array.shape[self.x_axis])
        self.ndim, self.dtype = 3, array.dtype

    def __getitem__(self, key) -> np.ndarray:
        channel, rows, columns = key
        leading = iter(self.index)
        selection = []
        for axis in range(self.array.ndim):
            if axis == self.channel_axis:
                selection.append(channel)
            elif axis in (self.y_axis, self.x_axis):
                selection.append(rows if axis == self.y_axis else columns)
            else:
                selection.append(next(leading))
        region = np.asarray(self.array[tuple(selection)])
        if self.channel_axis is None:
            return region[np.newaxis][channel]
        return np.moveaxis(region, 0 if self.channel_axis < self.y_axis else -1, 0)

    def __array__(self, dtype=None, copy=None):
        whole = self[slice(None), slice(None), slice(None)]
        return whole if dtype is None else whole.astype(dtype)


def one_frame_stack(image: np.ndarray, channel_axis: int | None) -> tuple[np.ndarray, int | None]:
    """``image`` as a stack of one frame, and its channel axis there: how a whole image is classified."""
    return image[np.newaxis], None if channel_axis is None else channel_axis % image.ndim + 1


def split_frames(image: np.ndarray, channel_axis: int | None = None) -> list[np.ndarray]:
    """Split an image into 2D frames of shape (C, H, W); leading axes are frames. Arrays that are not
    in memory (zarr, dask) give :class:`LazyFrame` views that read only what is sliced."""
    if not isinstance(image, np.ndarray) and hasattr(image, "shape") and len(image.shape) >= 2:
        leading = spatial_shape(image, channel_axis)[:-2]
        return [LazyFrame(image, index, channel_axis) for index in np.ndindex(*leading)]
    image = np.asarray(image)
    if channel_axis is not None:
        image = np.moveaxis(image, channel_axis, -1)
    else:
        image = image[..., np.newaxis]
    if image.ndim < 3 or 0 in image.shape:
        raise DataError(f"image must be at least 2D and non-empty, got shape {image.shape}")
    frames = image.reshape((-1, *image.shape[-3:]))
    return [np.moveaxis(frame, -1, 0) for frame in frames]


def spatial_shape(image, channel_axis: int | None) -> tuple[int, ...]:
    """The shape of ``image`` without its channel axis (leading frame axes, then y, x)."""
    shape = list(np.shape(image))
    if channel_axis is not None:
        del shape[channel_axis % len(shape)]
    return tuple(shape)


def is_colour(image: np.ndarray, channel_axis: int | None) -> bool:
    """Three or four channels that differ (a grey image saved as RGB is not colour)."""
    if channel_axis is None or image.shape[channel_axis] not in (3, 4):
        return False
    channels = np.moveaxis(np.asarray(image), channel_axis, 0)[:3]
    return not (np.array_equal(channels[0], channels[1]) and np.array_equal(channels[1], channels[2]))


def split_label_frames(labels: np.ndarray) -> list[np.ndarray]:
    labels = np.asarray(labels)
    if labels.ndim < 2 or 0 in labels.shape:
        raise DataError(f"labels must be at least 2D and non-empty, got shape {labels.shape}")
    return list(labels.reshape((-1, *labels.shape[-2:])))


def to_model_channels(frame: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """Drop alpha, convert colour to grey (Mono) or grey to colour (Color) to match the model input."""
    config.require_resolved()
    if frame.shape[0] == 4 and config.input_channels != 4:
        frame = frame[:3]
    channels = frame.shape[0]
    if config.color_mode == "mono" and config.input_channels == 1 and channels == 3:
        return frame.astype(np.float32).mean(axis=0, keepdims=True)
    if config.color_mode == "color" and channels == 1:
        return np.repeat(frame, 3, axis=0)
    if channels != config.input_channels:
        raise DataError(
            f"image has {channels} channel(s) but the model expects {config.input_channels}; "
            "set Input Channels to match or choose Color/Mono"
        )
    return frame


def normalization(frame, percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, scale) from percentiles of a strided subsample: as good as the full image,
    much faster, and it reads only a subsample of a lazy (zarr/dask) image."""
    step = max(1, int(math.sqrt(frame.shape[-2] * frame.shape[-1] / 1_000_000)))
    sample = np.asarray(frame[:, ::step, ::step], dtype=np.float32).reshape(frame.shape[0], -1)
    if not np.isfinite(sample).all():
        raise DataError("image contains NaN or infinite values; replace them before training or prediction")
    low, high = np.percentile(sample, percentiles, axis=1)
    scale = np.where(high - low > 1e-8, high - low, 1.0)
    return low.astype(np.float32), scale.astype(np.float32)


def normalize(frame: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Per-channel percentile normalisation to roughly [0, 1]; robust to outliers and bit depth."""
    frame = frame.astype(np.float32, copy=False)
    if not np.isfinite(frame).all():
        raise DataError("image contains NaN or infinite values; replace them before training or prediction")
    low, scale = normalization(frame, percentiles)
    return (frame - low[:, None, None]) / scale[:, None, None]


def tile_preparation(frame, config: TrainingConfig):
    """A function preparing any region of ``frame`` exactly as :func:`prepare_image` prepares the
    whole frame at Down Scaling 1 (same channels, same normalisation constants)."""
    low, scale = normalization(LazyChannels(frame, config), config.normalize_percentiles)

    def prepare(region: np.ndarray) -> np.ndarray:
        region = to_model_channels(np.asarray(region), config).astype(np.float32)
        if not np.isfinite(region).all():
            raise DataError("image contains NaN or infinite values; replace them before prediction")
        return (region - low[:, None, None]) / scale[:, None, None]

    return prepare


class LazyChannels:
    """``frame`` with :func:`to_model_channels` applied on slicing (for subsampled statistics)."""

    def __init__(self, frame, config: TrainingConfig):
        self.frame, self.config = frame, config
        self.shape = (config.input_channels, *frame.shape[-2:])

    def __getitem__(self, key):
        return to_model_channels(np.asarray(self.frame[key]), self.config)


def scaled_shape(shape: tuple[int, int], downscale: float) -> tuple[int, int]:
    return tuple(max(1, round(size * downscale)) for size in shape)


def resize_image(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if frame.shape[1:] == tuple(shape):
        return frame
    return resize(frame, (frame.shape[0], *shape), order=1, anti_aliasing=True, preserve_range=True).astype(
        np.float32
    )


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if labels.shape == tuple(shape):
        return labels
    return resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)


def prepare_image(frame: np.ndarray, config: TrainingConfig, scale: float | None = None) -> np.ndarray:
    """A raw (C, H, W) frame as the network sees it: channels matched, normalised, resized by ``scale``
    (Down Scaling unless given: see :func:`frame_scale`)."""
    frame = to_model_channels(frame, config)
    frame = normalize(frame, config.normalize_percentiles)
    return resize_image(frame, scaled_shape(frame.shape[1:], config.downscale if scale is None else scale))


# Scale per image: how far an image may be shrunk to bring its objects to the learned size. Never enlarged,
# as Down Scaling never is: enlarging images of small objects lost AP@0.5 on DSB2018 (docs/results.md).
SCALE_RANGE = (0.1, 1.0)


def frame_scale(instances: np.ndarray, config: TrainingConfig, scale: float | None = None) -> float:
    """The scale at which the objects of ``instances`` (object ids, seen at ``scale``; at image scale
    unless given) reach the model's ``object_diameter`` (their median width: ``auto.median_width``); Down
    Scaling where the model has none or no object is there to measure."""
    from .auto import median_width

    width = None if config.object_diameter is None else median_width(instances)
    if width is None:
        return config.downscale
    image_diameter = width / (1.0 if scale is None else scale)
    return round(float(np.clip(config.object_diameter / image_diameter, *SCALE_RANGE)), 3)


def check_label_values(labels: np.ndarray, ids: str = "class ids") -> None:
    """Label images hold non-negative integers (``ids`` says which: class or object ids)."""
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise DataError(f"labels must be integers ({ids}), got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        start = "class ids start at 0" if ids == "class ids" else f"{ids} start at 1, background is 0"
        raise DataError(f"labels contain negative values; {start}")


def prepare_labels(labels: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """Class-id labels as training targets; in sparse mode 0 means unlabelled and classes start at 1."""
    check_label_values(labels)
    labels = labels.astype(np.int32)
    if config.sparse_labels:
        labels = labels - 1  # 0 (unlabelled) becomes IGNORE = -1
    highest = int(labels.max())
    if highest >= config.n_classes:
        raise DataError(
            f"labels contain class id {highest + int(config.sparse_labels)} but only "
            f"{config.n_classes} classes are defined ({', '.join(config.classes)}); add classes or fix the labels"
        )
    labels = labels.astype(np.int16)
    return resize_labels(labels, scaled_shape(labels.shape, config.downscale))


CONTACT_WIDTH = 2  # px of boundary on each side where two objects touch


def instance_targets(instances: np.ndarray) -> np.ndarray:
    """Object ids as background (0), interior (1) and boundary (2): the inner rim of every object,
    widened to ``CONTACT_WIDTH`` px where it touches another object, so the seeds of touching objects
    are kept apart by a band the network learns to see. (Merged neighbours were most of the missed
    DSB2018 nuclei with a 1-px rim.)"""
    objects = instances > 0
    targets = objects.astype(np.int16)
    targets[find_boundaries(instances, mode="inner") & objects] = 2
    window = 2 * CONTACT_WIDTH + 1
    highest_near = ndimage.maximum_filter(instances, window)
    lowest_object_near = ndimage.minimum_filter(np.where(objects, instances, np.iinfo(instances.dtype).max), window)
    targets[objects & ((highest_near != instances) | (lowest_object_near != instances))] = 2
    return targets


def prepare_instances(labels: np.ndarray, config: TrainingConfig, scale: float | None = None) -> np.ndarray:
    check_label_values(labels, "object ids")
    scale = config.downscale if scale is None else scale
    return resize_labels(labels.astype(np.int32), scaled_shape(labels.shape, scale))


def make_samples(
    image: np.ndarray,
    labels: np.ndarray,
    config: TrainingConfig,
    channel_axis: int | None = None,
    keep_empty_frames: bool = False,
) -> list[Sample]:
    """Pair every frame of ``image`` with its labels (class ids; object ids for instance segmentation).

    A frame whose labels are all 0 was never painted: it is left out, not taught as background (a stack
    with a few painted frames teaches only those). ``keep_empty_frames`` keeps them, for an image the
    user accepted as holding no object."""
    image_frames = split_frames(image, channel_axis)
    label_frames = split_label_frames(labels)
    if len(label_frames) == 1 and len(image_frames) > 1:
        label_frames = label_frames * len(image_frames)
    if len(image_frames) != len(label_frames) or image_frames[0].shape[1:] != label_frames[0].shape:
        raise DataError(
            f"image frames {len(image_frames)} x {image_frames[0].shape[1:]} do not match labels "
            f"{len(label_frames)} x {label_frames[0].shape}; image and labels must cover the same pixels"
        )
    samples = []
    for frame, frame_labels in zip(image_frames, label_frames):
        scale = None
        if config.kind.object_ids:
            check_label_values(frame_labels, "object ids")
            scale = frame_scale(frame_labels, config)
        prepared = prepare_image(frame, config, scale)  # first, so that bad data is named even in an empty frame
        if scale is not None:
            instances = prepare_instances(frame_labels, config, scale)
            if keep_empty_frames or instances.any():
                samples.append(Sample(prepared, instance_targets(instances), instances, scale=scale))
            continue
        target = prepare_labels(frame_labels, config)
        if keep_empty_frames or (target > (IGNORE if config.sparse_labels else 0)).any():
            samples.append(Sample(prepared, target))
    return samples


def heatmap_sigma(config: TrainingConfig) -> float:
    """Gaussian width at model scale for MIA's Object Size (a diameter in image pixels)."""
    return max(1.0, config.object_size * config.downscale / 6)


def points_heatmaps(points: np.ndarray, shape: tuple[int, int], n_classes: int, sigma: float) -> np.ndarray:
    """(K, H, W) targets: a Gaussian of peak 1 at every point (y, x, class), the maximum where they meet."""
    heatmaps = np.zeros((n_classes, *shape), np.float32)
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)
    for y, x, class_id in np.round(points).astype(int):
        if not (0 <= y < shape[0] and 0 <= x < shape[1]):
            continue
        top, left = max(0, y - radius), max(0, x - radius)
        bottom, right = min(shape[0], y + radius + 1), min(shape[1], x + radius + 1)
        patch = kernel[top - y + radius : bottom - y + radius, left - x + radius : right - x + radius]
        view = heatmaps[class_id, top:bottom, left:right]
        np.maximum(view, patch, out=view)
    return heatmaps


def make_point_samples(
    image: np.ndarray,
    points: np.ndarray,
    point_classes: np.ndarray | None,
    config: TrainingConfig,
    channel_axis: int | None = None,
) -> list[Sample]:
    """Pair every frame of ``image`` with its points; ``points`` (N, D) in layer coordinates, the last
    two being y, x and any leading ones the frame (as in a napari Points layer on a stack). Every frame
    of the image is used: a frame without points teaches that it holds no object."""
    frames = split_frames(image, channel_axis)
    spatial = spatial_shape(image, channel_axis)
    points = np.asarray(points, np.float64).reshape(-1, len(spatial)) if np.size(points) else np.zeros(
        (0, len(spatial)))
    classes = np.zeros(len(points), np.int64) if point_classes is None else np.asarray(point_classes, np.int64)
    if len(classes) != len(points):
        raise DataError(f"{len(points)} points but {len(classes)} point classes")
    if len(classes) and (classes.min() < 0 or classes.max() >= config.n_classes):
        raise DataError(f"point classes must be 0 to {config.n_classes - 1} ({', '.join(config.classes)})")
    leading = np.round(points[:, :-2]).astype(np.int64)
    inside = np.all((leading >= 0) & (leading < np.array(spatial[:-2], np.int64)), axis=1)
    frame_of_point = np.ravel_multi_index(tuple(leading[inside].T), spatial[:-2]) if len(spatial) > 2 else (
        np.zeros(int(inside.sum()), np.int64))
    points, classes = points[inside], classes[inside]
    sigma = heatmap_sigma(config)
    samples = []
    for index, frame in enumerate(frames):
        prepared = prepare_image(frame, config)
        scale = np.divide(prepared.shape[1:], frame.shape[1:])
        mine = frame_of_point == index
        truth = np.column_stack([points[mine, -2:] * scale, classes[mine]])
        samples.append(Sample(prepared, points_heatmaps(truth, prepared.shape[1:], config.n_classes, sigma), truth))
    return samples


def make_class_samples(
    image: np.ndarray, frame_classes, config: TrainingConfig, channel_axis: int | None = None
) -> list[Sample]:
    """Every frame resized to the input size (Patch Size) with its class id; frames whose class is
    None (not yet assigned) are left out."""
    frames = split_frames(image, channel_axis)
    frame_classes = list(frame_classes)
    if len(frame_classes) != len(frames):
        raise DataError(f"{len(frames)} frames but {len(frame_classes)} frame classes")
    samples = []
    for frame, class_id in zip(frames, frame_classes):
        if class_id is None:
            continue
        if not 0 <= int(class_id) < config.n_classes:
            raise DataError(f"class id {class_id} is not one of 0 to {config.n_classes - 1}")
        samples.append(Sample(classification_input(frame, config), np.array(int(class_id), np.int64)))
    return samples


def classification_input(frame: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """A (C, H, W) frame normalised and resized to the square input of the classifier."""
    frame = normalize(to_model_channels(frame, config), config.normalize_percentiles)
    return resize_image(frame, (config.patch_size, config.patch_size))


def check_classes(samples: list[Sample], config: TrainingConfig) -> None:
    """Training needs labelled pixels of at least two classes (or images of two classes, or points)."""
    if not samples:
        raise DataError({"points": "no frames to train on; add an image and points",
                         "classes": "no images with a class to train on; assign classes first"}.get(
            config.kind.annotations, "no labelled pixels to train on; paint some labels first"))
    if config.kind.points:
        if not any(len(s.truth) for s in samples):
            raise DataError("no points to train on; add points on the objects to detect")
        return
    if config.kind.image_classes:
        present = {int(s.labels) for s in samples}
        if len(present) < 2:
            raise DataError("every image has the same class; assign at least two classes to learn a difference")
        return
    if config.kind.object_ids:
        if not any((s.labels > 0).any() for s in samples):
            raise DataError("labels contain no objects; paint some objects (each with its own id)")
        if not any((s.labels == 0).any() for s in samples):
            raise DataError("labels contain no background; leave some pixels 0 so the network learns a difference")
        return
    present = set()
    for sample in samples:
        present.update(np.unique(sample.labels[sample.labels != IGNORE]).tolist())
    if not present:
        raise DataError("no labelled pixels to train on; paint some labels first")
    if len(present) == 1:
        (only,) = present
        raise DataError(
            f"labels contain only class {only + int(config.sparse_labels)} ({config.classes[only]}); paint "
            "some pixels of another class (e.g. background) so the network can learn a difference"
        )


def split_train_validation(
    samples: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Random split by whole frames (never by pixels, so validation is honest)."""
    if fraction <= 0 or len(samples) < 2:
        return list(samples), []
    order = np.random.default_rng(seed).permutation(len(samples))
    n_validation = min(len(samples) - 1, max(1, round(fraction * len(samples))))
    return [samples[i] for i in order[n_validation:]], [samples[i] for i in order[:n_validation]]


class PatchDataset:
    """Random square patches for one epoch, drawn preferentially around labelled objects.

    Each epoch holds as many patches as it takes to cover every frame once (MIA's rule); with
    probability ``foreground_sampling`` a patch is centred near a labelled non-background pixel.
    Frames smaller than the patch are padded: the image by reflection, the labels with IGNORE, so
    padding never invents objects (MIA reflects the labels too).
    """

    def __init__(self, samples: list[Sample], config: TrainingConfig, transform=None):
        if not samples:
            raise DataError("no labelled frames to train on; draw some labels first")
        self.samples = samples
        self.patch = config.patch_size
        self.foreground_sampling = config.foreground_sampling
        self.seed = config.seed
        self.transform = transform
        self.epoch = 0
        colour = np.array([is_colour(s.image, 0) for s in samples]) if config.balance_looks else None
        # colour frames drawn half the time (told by the command line): only where both looks are there
        self.colour_frames = int(colour.sum()) if colour is not None and not colour.all() else 0
        self.frame_weights = frame_weights(samples, config.new_image_share, colour)
        self.seed_pixels = [self._seed_pixels(s.labels, i) for i, s in enumerate(samples)]
        covering = sum(math.ceil(s.image.shape[1] / self.patch) * math.ceil(s.image.shape[2] / self.patch)
                       for s in samples)
        self.length = max(covering, config.batch_size)  # at least one full batch (BatchNorm needs 2+)

    def _seed_pixels(self, labels: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of object pixels and of labelled pixels, subsampled to keep memory small."""
        rng = np.random.default_rng(self.seed + index)
        found = []
        if labels.ndim == 3:  # heatmaps: objects are near their peaks, every pixel is labelled
            masks = (labels.max(axis=0) >= 0.5, np.ones(labels.shape[1:], bool))
        else:
            masks = (labels > 0, labels != IGNORE)
        for mask in masks:
            flat = np.flatnonzero(mask)
            if flat.size > _MAX_SEED_PIXELS:
                flat = rng.choice(flat, _MAX_SEED_PIXELS, replace=False)
            found.append(flat)
        return found[0], found[1]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        frame = rng.choice(len(self.samples), p=self.frame_weights)
        sample = self.samples[frame]
        objects, labelled = self.seed_pixels[frame]
        height, width = sample.image.shape[1:]
        if objects.size and rng.random() < self.foreground_sampling:
            centre = np.unravel_index(rng.choice(objects), (height, width))
        elif labelled.size < height * width and labelled.size:
            centre = np.unravel_index(rng.choice(labelled), (height, width))
        else:
            centre = (rng.integers(height), rng.integers(width))
        jitter = rng.integers(-self.patch // 4, self.patch // 4 + 1, size=2)
        image, labels = crop_patch(sample, np.add(centre, jitter), self.patch)
        if self.transform is not None:
            image, labels = self.transform(image, labels)
        dtype = np.float32 if labels.ndim == 3 else np.int64
        return np.ascontiguousarray(image), np.ascontiguousarray(labels, dtype=dtype)


def frame_weights(samples: list[Sample], new_share: float, colour: np.ndarray | None = None) -> np.ndarray:
    """How often each frame is drawn: by area; given which frames are ``colour``, colour and grey frames half
    the time each (a few stained-tissue images among many fluorescence ones would otherwise hardly be
    learned); then the new frames at least ``new_share`` of the time together (a few corrected images
    among hundreds would otherwise hardly be seen)."""
    weights = np.array([s.image[0].size for s in samples], dtype=np.float64)
    weights /= weights.sum()
    if colour is not None:
        weights = _with_share(weights, colour, 0.5)
    new = np.array([s.new for s in samples])
    if weights[new].sum() < new_share:
        weights = _with_share(weights, new, new_share)
    return weights


def _with_share(weights: np.ndarray, chosen: np.ndarray, share: float) -> np.ndarray:
    """Normalised ``weights`` rescaled so that the ``chosen`` frames hold ``share`` of the total (unless
    they are none or all of the frames)."""
    if not chosen.any() or chosen.all():
        return weights
    natural = weights[chosen].sum()
    return np.where(chosen, weights * share / natural, weights * (1 - share) / (1 - natural))


def crop_patch(sample: Sample, centre, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size patch around ``centre``, clamped inside the frame, padded if the frame is small."""
    height, width = sample.image.shape[1:]
    top = int(np.clip(centre[0] - size // 2, 0, max(0, height - size)))
    left = int(np.clip(centre[1] - size // 2, 0, max(0, width - size)))
    image = sample.image[:, top : top + size, left : left + size]
    labels = sample.labels[..., top : top + size, left : left + size]
    pad_y, pad_x = size - image.shape[1], size - image.shape[2]
    if pad_y or pad_x:
        mode = "reflect" if min(image.shape[1:]) > max(pad_y, pad_x) else "symmetric"
        image = np.pad(image, ((0, 0), (0, pad_y), (0, pad_x)), mode=mode)
        labels = np.pad(labels, ((0, 0),) * (labels.ndim - 2) + ((0, pad_y), (0, pad_x)), constant_values=IGNORE)
    return image, labels


class ClassificationDataset:
    """One augmented sample per image per epoch (MIA's rule), the whole image at the input size."""

    colour_frames = 0  # every image once an epoch: no look is drawn more often

    def __init__(self, samples: list[Sample], config: TrainingConfig, transform=None):
        if not samples:
            raise DataError("no labelled images to train on; assign classes first")
        self.samples, self.transform, self.epoch = samples, transform, 0
        self.length = max(len(samples), config.batch_size)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.samples[index % len(self.samples)]
        image = sample.image
        if self.transform is not None:
            image, _ = self.transform(image, None)
        return np.ascontiguousarray(image, dtype=np.float32), sample.labels


def make_dataset(samples: list[Sample], config: TrainingConfig, transform=None):
    dataset_class = ClassificationDataset if config.kind.image_classes else PatchDataset
    return dataset_class(samples, config, transform)
