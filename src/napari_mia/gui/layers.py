"""Layers <-> arrays. The only module that reads or writes napari layers."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap

PREDICTION_KEY = "napari_mia_prediction"


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


def class_colormap(colors: list[str]) -> DirectLabelColormap:
    color_dict = {None: "transparent", 0: "transparent"}
    color_dict.update({i: color for i, color in enumerate(colors) if i > 0})
    return DirectLabelColormap(color_dict=color_dict)


def is_prediction_layer(layer) -> bool:
    return isinstance(layer, Labels) and bool(layer.metadata.get(PREDICTION_KEY))


def write_prediction(viewer, image_layer: Image, labels: np.ndarray, index: tuple[int, ...], colors,
                     suffix: str = "prediction") -> Labels:
    """Put ``labels`` into ``<image> <suffix>``; only a layer napari-mia made itself is ever updated.

    ``index`` selects the frame of a stack that ``labels`` holds (empty for the whole image).
    """
    name = f"{image_layer.name} {suffix}"
    shape = spatial_shape(image_layer)
    existing = viewer.layers[name] if name in viewer.layers else None
    if is_prediction_layer(existing) and existing.data.shape == shape:
        existing.data[index] = labels
        existing.refresh()
        return existing
    data = np.zeros(shape, dtype=np.uint16)
    data[index] = labels
    layer = viewer.add_labels(
        data,
        name=name,
        metadata={PREDICTION_KEY: True},
        scale=image_layer.scale[-len(shape) :],
        translate=image_layer.translate[-len(shape) :],
        colormap=class_colormap(colors),
        opacity=0.5,
    )
    return layer
