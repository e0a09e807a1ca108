"""Settings that follow the data: Color / Mono, Down Scaling and Object Size set to "auto" are chosen from
the training images and annotations when a run starts, and the reason is shown to the user.

What is chosen is written into the run's config (so the saved model predicts with it) and described in
words (``Choice.text``: "auto (0.55: median object 46 px)"), for the dock's fields and the CLI's first line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .config import TrainingConfig
from .data import DataError, check_label_values, is_colour

# Objects are rescaled towards this diameter, as cellpose rescales cells to its 30-px mean diameter; smaller
# objects are never enlarged (Down Scaling is at most 1).
TARGET_OBJECT_DIAMETER = 30.0
_MAX_IMAGES_MEASURED = 12  # for Object Size: about 1 s each (a 640x480 image, 16 scales) in the worker
_MAX_CLASS_VALUES = 16  # a label image with more distinct values holds object ids, not class ids
_BLOB_SIGMAS = np.geomspace(1.5, 48, 16)  # scales searched around each point: 4-136 px diameters


@dataclass(frozen=True)
class Example:
    """One training image as the auto settings see it: the image and what the user annotated on it
    (a label image, points (N, D: the last two y, x) with their class names, or nothing)."""

    image: np.ndarray
    channel_axis: int | None
    labels: np.ndarray | None = None
    points: np.ndarray | None = None
    point_classes: tuple[str, ...] = ()
    name: str = ""  # the file or layer, for messages


@dataclass(frozen=True)
class Choice:
    field: str
    value: object
    reason: str

    @property
    def text(self) -> str:
        """How the dock and the CLI show it: "auto (0.55: median object 46 px)"."""
        return f"auto ({_shown(self.value)}: {self.reason})"


def resolve(config: TrainingConfig, examples: Iterable[Example]) -> tuple[TrainingConfig, list[Choice]]:
    """``config`` with every "auto" setting replaced by the value chosen from ``examples`` (read once, one
    at a time), and the choices."""
    fields = config.unresolved
    if not fields:
        return config, []
    summary = Summary()
    widths = "downscale" in fields and config.kind.object_ids and not config.sparse_labels
    for example in examples:
        try:
            summary.add(example, measure_points="object_size" in fields, measure_widths=widths)
        except ValueError as error:
            raise DataError(f"{example.name}: {error}" if example.name else str(error)) from error
    choices = []
    if "color_mode" in fields:
        choices.append(summary.color_mode())
    if "object_size" in fields:
        choices += summary.object_size(config.classes)
    if "downscale" in fields:
        if config.kind.image_classes:
            choices.append(Choice("downscale", 1.0, "each frame is resized to the patch size"))
        elif config.kind.points:
            size = next((c.value for c in choices if c.field == "object_size"), config.object_size)
            choices.append(_downscale_for(size, f"object size {size:g} px"))
        elif config.sparse_labels:
            choices.append(Choice("downscale", 1.0, "sparse labels: brush strokes are not objects to measure"))
        else:
            choices.append(summary.downscale())
            diameter = summary.object_diameter(choices[-1].value)  # None unless widths were measured
            if diameter is not None:
                downscale = choices.pop()
                choices += [Choice("downscale", downscale.value, f"{downscale.reason}, then each image rescaled to "
                                   f"bring its median object to {diameter:g} px"),
                            Choice("object_diameter", diameter, "the median object's width at the model's scale")]
    changes = {choice.field: choice.value for choice in choices}
    if "color_mode" in changes:
        changes["input_channels"] = None  # follows the colour mode
    return config.replace(**changes), choices


class Summary:
    """What the auto settings need from the training data, gathered image by image."""

    def __init__(self) -> None:
        self.images = self.colour_images = self.measured_images = 0
        self.diameters: list[np.ndarray] = []
        self.widths: list[float] = []  # per image: median_width
        self.blobs_by_class: dict[str, list[float]] = {}

    def add(self, example: Example, measure_points: bool = False, measure_widths: bool = False) -> None:
        self.images += 1
        self.colour_images += is_colour(example.image, example.channel_axis)
        if example.labels is not None:
            check_label_values(np.asarray(example.labels))
            self.diameters.append(object_diameters(example.labels))
            width = median_width(example.labels) if measure_widths else None
            if width is not None:
                self.widths.append(width)
        has_points = example.points is not None and len(example.points)
        if measure_points and has_points and self.measured_images < _MAX_IMAGES_MEASURED:
            self.measured_images += 1
            diameters = blob_diameters(example.image, example.channel_axis, example.points)
            classes = example.point_classes or ("object",) * len(diameters)
            for name, diameter in zip(classes, diameters):
                self.blobs_by_class.setdefault(name, []).append(float(diameter))

    def color_mode(self) -> Choice:
        """Color as soon as one training image is colour (MIA's advice for mixed sets)."""
        if self.colour_images:
            return Choice("color_mode", "color", f"{self.colour_images} of {self.images} images in colour")
        return Choice("color_mode", "mono", f"no colour among {self.images} images")

    def downscale(self) -> Choice:
        diameters = np.concatenate(self.diameters) if self.diameters else np.zeros(0)
        diameters = diameters[diameters >= 2]  # single stray pixels are brush slips, not objects
        if not diameters.size:
            return Choice("downscale", 1.0, "no labelled object to measure")
        median = float(np.median(diameters))
        return _downscale_for(median, f"median object {median:.0f} px")

    def object_diameter(self, downscale: float) -> float | None:
        """Scale per image (instances): the width every image's median object is brought to, the median of
        the training images' at Down Scaling (about the pixels to compute of one factor for all)."""
        return round(max(2.0, float(np.median(self.widths)) * downscale), 1) if self.widths else None

    def object_size(self, classes: list[str]) -> list[Choice]:
        """Object Size: per class the median blob diameter at the user's points, then the median over
        classes (so that a numerous class does not decide alone); with several classes measured, also each
        class's own (Object Size for a class without points), for the distance between its detections."""
        if not self.blobs_by_class:
            return [Choice("object_size", 12.0, "no point to measure")]
        medians = {name: float(np.median(values)) for name, values in self.blobs_by_class.items()}
        size = float(round(np.median(list(medians.values()))))
        if len(medians) == 1:
            points = len(next(iter(self.blobs_by_class.values())))
            return [Choice("object_size", size, f"median blob at {points} points")]
        per_class = ", ".join(f"{name} {value:.0f}" for name, value in sorted(medians.items()))
        return [Choice("object_size", size, f"median of classes {per_class} px; each class's own spaces its "
                       "detections"),
                Choice("class_object_sizes", [float(round(medians.get(name, size))) for name in classes],
                       "each class's median blob")]


def object_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent diameters (of a disc of the same area) of the objects of a label image: each connected
    region of each label value, so that class labels count their separate objects."""
    from scipy import ndimage

    labels = np.asarray(labels)
    values = np.unique(labels[labels > 0])
    if len(values) > _MAX_CLASS_VALUES:  # object ids: one object each
        return 2 * np.sqrt(np.bincount(labels[labels > 0].ravel())[values] / np.pi)
    areas = []
    for value in values:
        regions, count = ndimage.label(labels == value)
        areas.append(np.bincount(regions.ravel(), minlength=count + 1)[1:])
    areas = np.concatenate(areas) if areas else np.zeros(0)
    return 2 * np.sqrt(areas / np.pi)


def object_widths(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(widths, areas)`` of every connected region of labelled pixels, its width twice its largest
    inscribed radius. Unlike an object's area, the width holds when a prediction cuts one object into pieces
    (objects far larger than the model learned come out so) or merges touching ones."""
    from scipy import ndimage

    mask = np.asarray(labels) > 0
    regions, count = ndimage.label(mask)
    if not count:
        return np.zeros(0), np.zeros(0)
    distance = ndimage.distance_transform_edt(mask)
    index = np.arange(1, count + 1)
    widths = 2 * np.asarray(ndimage.maximum(distance, regions, index), np.float64)
    return widths, np.bincount(regions.ravel(), minlength=count + 1)[1:].astype(np.float64)


def median_width(labels: np.ndarray) -> float | None:
    """What the scale per image measures, on labels and predictions alike: the width of the region that
    holds the median labelled pixel (weighed by area, specks of noise in a prediction do not decide it);
    None where nothing 2 px wide is labelled."""
    widths, areas = object_widths(labels)
    kept = widths >= 2
    if not kept.any():
        return None
    order = np.argsort(widths[kept])
    cumulative = np.cumsum(areas[kept][order])
    return float(widths[kept][order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _downscale_for(diameter: float, described: str) -> Choice:
    return Choice("downscale", round(float(np.clip(TARGET_OBJECT_DIAMETER / diameter, 0.1, 1.0)), 2), described)


def blob_diameters(image: np.ndarray, channel_axis: int | None, points: np.ndarray) -> np.ndarray:
    """The diameter of the blob at each point (points (N, D), the last two y, x, any leading ones the
    frame of a stack): the scale of the strongest scale-normalised Laplacian of Gaussian response there
    (Lindeberg's scale selection), on the image's grey levels."""
    grey = np.asarray(image, np.float32)
    if channel_axis is not None:
        grey = grey.mean(axis=channel_axis)
    points = np.asarray(points, np.float64)
    frames = grey.reshape(-1, *grey.shape[-2:])
    leading = np.clip(np.round(points[:, :-2]).astype(int), 0, np.array(grey.shape[:-2], int) - 1)
    frame_of_point = np.ravel_multi_index(leading.T, grey.shape[:-2]) if grey.ndim > 2 else np.zeros(len(points), int)
    diameters = np.zeros(len(points))
    for frame in np.unique(frame_of_point):
        mine = frame_of_point == frame
        diameters[mine] = _blob_diameters_2d(frames[frame], points[mine, -2:])
    return diameters


def _blob_diameters_2d(grey: np.ndarray, points: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    low, high = np.percentile(grey, (1, 99.8))
    grey = (grey - low) / max(high - low, 1e-6)
    rows, columns = np.clip(np.round(points).astype(int), 0, np.array(grey.shape) - 1).T
    responses = np.stack([np.abs(sigma**2 * ndimage.gaussian_laplace(grey, sigma))[rows, columns]
                          for sigma in _BLOB_SIGMAS])
    return 2 * np.sqrt(2) * _BLOB_SIGMAS[np.argmax(responses, axis=0)]


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
