"""Layers <-> arrays. The only module that reads or writes napari layers."""

from __future__ import annotations

import weakref

import numpy as np
from napari.layers import Image, Labels, Points
from napari.utils.colormaps import DirectLabelColormap, label_colormap

PREDICTION_KEY = "napari_mia_prediction"
COLORS_KEY = "napari_mia_colors"  # the class colours a prediction layer shows (None: napari's for ids)
_UNSHOWN_OVERLAYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> overlays add_unshown hid


def image_array(layer: Image) -> tuple[np.ndarray, int | None]:
    """The layer's data and channel axis (RGB(A) layers carry their channels last)."""
    data = np.asarray(layer.data)
    return data, (-1 if layer.rgb else None)


def spatial_shape(layer: Image) -> tuple[int, ...]:
    data = layer.data
    return tuple(data.shape[:-1]) if layer.rgb else tuple(data.shape)


def current_frame_index(layer: Image, current_step: tuple[int, ...]) -> tuple[int, ...]:
    """Index of the 2D frame shown now, for the leading (non-spatial) axes of the layer."""
    leading = len(spatial_shape(layer)) - 2
    steps = tuple(current_step)[-len(spatial_shape(layer)) :][:leading] if leading else ()
    return tuple(int(s) for s in steps)


def viewer_camera(viewer):
    """The viewer's camera (napari >= 0.9 keeps it in ``viewer.scene``)."""
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def visible_region(viewer, layer: Image, margin: int = 16) -> tuple[slice, slice]:
    """Rows and columns of the layer's last two axes that the canvas shows now, from the camera (so it
    holds before the canvas has drawn), with a margin so tiles at the edge have context."""
    camera = viewer_camera(viewer)
    half = max(viewer.canvas.size) / camera.zoom / 2  # the larger side: never too small a region
    point = np.asarray(viewer.dims.point, np.float64)
    low, high = point.copy(), point.copy()
    low[-2:] = np.asarray(camera.center[-2:]) - half
    high[-2:] = np.asarray(camera.center[-2:]) + half
    corners = np.sort([layer.world_to_data(low)[-2:], layer.world_to_data(high)[-2:]], axis=0)
    shape = spatial_shape(layer)[-2:]
    return tuple(slice(int(np.clip(np.floor(a) - margin, 0, size)), int(np.clip(np.ceil(b) + margin + 1, 0, size)))
                 for a, b, size in zip(corners[0], corners[1], shape))


def class_colormap(colors: list[str]) -> DirectLabelColormap:
    color_dict = {None: "transparent", 0: "transparent"}
    color_dict.update({i: color for i, color in enumerate(colors) if i > 0})
    return DirectLabelColormap(color_dict=color_dict)


def is_prediction_layer(layer) -> bool:
    return isinstance(layer, (Labels, Points)) and bool(layer.metadata.get(PREDICTION_KEY))


def point_annotations(layer: Points, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(positions (N, D), class ids (N,)) of a Points layer; its ``class`` feature may hold class names
    or ids, and without it every point is the first class."""
    positions = np.asarray(layer.data, np.float64)
    if "class" not in layer.features or not len(layer.features):
        return positions, np.zeros(len(positions), np.int64)
    values = list(layer.features["class"])
    if all(isinstance(v, (int, np.integer)) for v in values):
        return positions, np.asarray(values, np.int64)
    unknown = sorted({str(v) for v in values} - set(class_names))
    if unknown:
        raise ValueError(f"points layer '{layer.name}' has classes {unknown} that are not in Classes "
                         f"({', '.join(class_names)})")
    return positions, np.array([class_names.index(str(v)) for v in values], np.int64)


def points_within(points: np.ndarray, index: tuple) -> np.ndarray:
    """Which points (N, D) lie in the frame or region ``index`` selects (an int per leading axis, then
    slices of the last two; empty: the whole image)."""
    inside = np.ones(len(points), bool)
    for axis, part in enumerate(index):
        values = points[:, axis]
        if isinstance(part, slice):
            inside &= (values >= (part.start or 0)) & (values < (np.inf if part.stop is None else part.stop))
        else:
            inside &= np.round(values) == part
    return inside


def point_class_names(layer: Points) -> list[str]:
    if "class" not in layer.features or not len(layer.features):
        return []
    values = layer.features["class"]
    return sorted({str(v) for v in values}) if not np.issubdtype(np.asarray(values).dtype, np.integer) else []


def write_points(viewer, image_layer: Image, points: np.ndarray, classes: np.ndarray, scores: np.ndarray,
                 class_names: list[str], colors: list[str]) -> Points:
    """Detections as a new editable ``<image> detections`` Points layer with class and score features
    (replacing only a layer napari-mia made)."""
    name = f"{image_layer.name} detections"
    if name in viewer.layers and is_prediction_layer(viewer.layers[name]):
        viewer.layers.remove(name)
    features = {"class": [class_names[c] for c in classes], "score": np.asarray(scores, np.float32)}
    dims = points.shape[1] if len(points) else len(spatial_shape(image_layer))
    return viewer.add_points(
        points.reshape(-1, dims), name=name, features=features, metadata={PREDICTION_KEY: True},
        scale=image_layer.scale[-dims:], translate=image_layer.translate[-dims:],
        face_color="class" if len(points) else "white",
        face_color_cycle=colors if len(points) else None,
        border_color="white", size=max(4, min(spatial_shape(image_layer)[-2:]) / 40),
    )


def add_unshown(viewer, layer):
    """Add ``layer`` hidden, not selected, and with its canvas overlays (a Labels layer's brush and polygon
    outlines) not yet built, so that napari's adding, its building of the overlays' visuals (when they
    turn visible) and its first drawing each take a turn of the event loop of their own (``show_step``);
    selecting a layer (napari's layer controls switch to it: another freeze) is the caller's, once for
    all it adds."""
    overlays = [overlay for overlay in getattr(layer, "_overlays", {}).values() if overlay.visible]
    for overlay in overlays:
        overlay.visible = False
    _UNSHOWN_OVERLAYS[layer] = overlays
    layer.visible = False
    selection = viewer.layers.selection
    selected, active = set(selection), selection.active
    with selection.events.blocker_all():  # napari selects what it adds: here the selection stays as it was
        viewer.add_layer(layer)
        selection.clear()
        selection.update(selected)
        if active is not None:
            selection.active = active
    return layer


def show_step(layer):
    """The step that shows a layer added by ``add_unshown`` (None for no layer): its overlays, if it had any,
    and in the step that returns (for the next turn), the layer."""
    if layer is None:
        return None
    overlays = _UNSHOWN_OVERLAYS.pop(layer, [])
    show_layer = lambda: setattr(layer, "visible", True)  # noqa: E731
    if not overlays:
        return show_layer

    def show_overlays():
        for overlay in overlays:
            overlay.visible = True
        return show_layer
    return show_overlays


def write_object_classes(viewer, image_layer: Image, objects: Labels, ids, classes, scores,
                         class_names: list[str], colors: list[str]) -> Labels:
    """Object classes as a new ``<objects> classes`` Labels layer: every object keeps its id, is
    coloured by its class, and carries ``class`` and ``score`` features."""
    name = f"{objects.name} classes"
    if name in viewer.layers and is_prediction_layer(viewer.layers[name]):
        viewer.layers.remove(name)
    data = np.asarray(objects.data)
    highest = int(data.max(initial=0))
    color_of = {None: "transparent", 0: "transparent"}
    for object_id, class_id in zip(ids, classes):
        color_of[int(object_id)] = colors[int(class_id) % len(colors)]
    class_of = np.full(highest + 1, "", dtype=object)
    score_of = np.zeros(highest + 1, np.float32)
    class_of[np.asarray(ids, np.int64)] = [class_names[c] for c in classes]
    score_of[np.asarray(ids, np.int64)] = scores
    features = {"index": np.arange(highest + 1), "class": class_of, "score": score_of}
    return viewer.add_labels(data.copy(), name=name, features=features, metadata={PREDICTION_KEY: True},
                             colormap=DirectLabelColormap(color_dict=color_of), scale=objects.scale,
                             translate=objects.translate, opacity=0.6)


def write_prediction(viewer, image_layer: Image, labels: np.ndarray, index: tuple[int, ...], colors,
                     suffix: str = "prediction", visible: bool = True) -> Labels:
    """Put ``labels`` into ``<image> <suffix>``; only a layer napari-mia made itself is ever updated.

    ``index`` selects the frame of a stack that ``labels`` holds (empty for the whole image). A layer
    that exists is written in place when the labels fit its shape and dtype: adding a layer to napari's
    window stalls it for 0.1-0.2 s here, new data for a few hundredths. A layer added with ``visible``
    False is added by ``add_unshown``.
    """
    name = f"{image_layer.name} {suffix}"
    shape = spatial_shape(image_layer)
    colors = None if colors is None else list(colors)
    existing = viewer.layers[name] if name in viewer.layers else None
    if is_prediction_layer(existing) and existing.data.shape == shape and fits(labels, existing.data.dtype):
        existing.data[index] = labels
        if existing.metadata.get(COLORS_KEY) != colors:  # e.g. made empty before there was a model
            existing.metadata[COLORS_KEY] = colors
            existing.colormap = class_colormap(colors) if colors is not None else label_colormap()
        existing.refresh()
        return existing
    if is_prediction_layer(existing):
        viewer.layers.remove(existing)
    data = np.zeros(shape, dtype=np.uint16 if fits(labels, np.uint16) else labels.dtype)
    data[index] = labels
    colormap = {} if colors is None else {"colormap": class_colormap(colors)}  # None: object ids
    layer = Labels(data, name=name, metadata={PREDICTION_KEY: True, COLORS_KEY: colors},
                   scale=image_layer.scale[-len(shape) :], translate=image_layer.translate[-len(shape) :],
                   opacity=0.5, **colormap)
    return viewer.add_layer(layer) if visible else add_unshown(viewer, layer)


def fits(labels: np.ndarray, dtype) -> bool:
    """Whether every id of ``labels`` can be stored as ``dtype``."""
    return labels.size == 0 or np.can_cast(labels.dtype, dtype) or (
        labels.min() >= 0 and labels.max() <= np.iinfo(dtype).max)
