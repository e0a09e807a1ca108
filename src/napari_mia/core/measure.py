"""Per-object measurements (scikit-image regionprops) for results tables."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import regionprops_table

COLUMNS = ("label", "class", "area", "centroid_y", "centroid_x", "mean_intensity", "perimeter")


def objects_of_classes(class_ids: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Semantic labels as objects: each connected region of one class gets its own id.
    Returns (object ids, {object id: class id})."""
    objects = np.zeros(class_ids.shape, np.int32)
    class_of = {}
    for class_id in np.unique(class_ids[class_ids > 0]):
        regions, count = ndimage.label(class_ids == class_id)
        first = len(class_of)
        objects[regions > 0] = regions[regions > 0] + first
        class_of.update({first + i: int(class_id) for i in range(1, count + 1)})
    return objects, class_of


def measure_objects(objects: np.ndarray, image: np.ndarray | None = None, class_names: list[str] | None = None,
                    class_of: dict[int, int] | None = None, channel_axis: int | None = None) -> list[dict]:
    """One row per object of a 2D label image: label, class, area, centroid, mean intensity (of every
    channel, averaged), perimeter. ``class_of`` maps object ids to class ids (default: class 1)."""
    if objects.ndim != 2:
        raise ValueError(f"measurements need a 2D label image, got shape {objects.shape}")
    intensity = None
    if image is not None:
        intensity = np.asarray(image, np.float32)
        intensity = intensity.mean(axis=channel_axis) if channel_axis is not None else intensity
        if intensity.shape != objects.shape:
            raise ValueError(f"image {intensity.shape} and labels {objects.shape} do not cover the same pixels")
    properties = ["label", "area", "centroid", "perimeter"] + (["intensity_mean"] if intensity is not None else [])
    table = regionprops_table(objects.astype(np.int64), intensity_image=intensity, properties=properties)
    class_names = class_names or ["background", "object"]
    rows = []
    for index, label in enumerate(table["label"]):
        class_id = (class_of or {}).get(int(label), 1)
        rows.append({
            "label": int(label),
            "class": class_names[class_id] if class_id < len(class_names) else str(class_id),
            "area": int(table["area"][index]),
            "centroid_y": round(float(table["centroid-0"][index]), 2),
            "centroid_x": round(float(table["centroid-1"][index]), 2),
            "mean_intensity": round(float(table["intensity_mean"][index]), 4) if intensity is not None else "",
            "perimeter": round(float(table["perimeter"][index]), 2),
        })
    return rows


def measure_prediction(labels: np.ndarray, image, config, channel_axis: int | None = None) -> list[dict]:
    """Measurements of a model's 2D label image: class ids (semantic; each connected region of a class
    is an object) or object ids (instance)."""
    labels = np.asarray(labels)
    if not config.kind.object_ids:
        objects, class_of = objects_of_classes(labels.astype(np.int64) - int(config.sparse_labels))
    else:
        objects, class_of = labels, None
    return measure_objects(objects, image, config.classes, class_of, channel_axis)


def write_measurements_csv(path: str | Path, rows: list[dict], image_name: str | None = None,
                           append: bool = False) -> Path:
    path = Path(path)
    columns = (("image",) if image_name is not None else ()) + COLUMNS
    new_file = not (append and path.exists())
    with open(path, "a" if append else "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if new_file:
            writer.writeheader()
        for row in rows:
            writer.writerow({"image": image_name, **row} if image_name is not None else row)
    return path
