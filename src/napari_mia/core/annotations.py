"""Annotations an experiment keeps in one table for the whole folder: points with a class (detection,
counting) in ``points.csv`` and a class per image (classification) in ``classes.csv``; the files the
command line reads (``napari-mia train --points DIR/points.csv``, ``--classes DIR/classes.csv``).

Each table is kept in memory by image name and written whole, atomically, on every change. The
model's predictions are kept in a table of the same kind under ``predictions/`` (with a score column),
until the user accepts them. ``TABLES`` maps an application's annotation kind to its table.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .auto import Example
from .config import TrainingConfig
from .data import DataError, Sample, make_class_samples, make_point_samples, one_frame_stack
from .files import write_atomically


def _stem(name: str) -> str:
    return Path(name.strip()).stem


class _Table:
    """Rows by image name, read from and written to one CSV file."""

    file_name = ""
    columns: tuple[str, ...] = ()

    def __init__(self, path: Path | None, scored: bool = False):
        self.path, self.scored = path, scored
        self.rows: dict[str, object] = {}
        if path is not None and path.is_file():
            self._load()

    def _read_rows(self, required: tuple[str, ...]) -> list[dict]:
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        missing = [c for c in required if rows and c not in rows[0]]
        if missing:
            raise DataError(f"{self.path}: needs columns {', '.join(required)}; missing {', '.join(missing)}")
        return rows

    def lookup(self, known: list[str]) -> None:
        """Key the rows by the experiment's image names: a table written by hand may name files
        (``a.png``) where the experiment names images by stem (``a``)."""
        by_name = {**{_stem(n): n for n in known}, **{n: n for n in known}}
        self.rows = {by_name.get(name) or by_name.get(_stem(name)) or name: v for name, v in self.rows.items()}

    def has(self, name: str) -> bool:
        return name in self.rows

    def read(self, name: str):
        return self.rows.get(name)

    def write(self, name: str, value) -> None:
        if value is None:
            self.rows.pop(name, None)
        else:
            self.rows[name] = value
        if self.path is not None:
            text = self._text()
            write_atomically(self.path, lambda file: file.write_text(text))

    def _text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.columns + (("score",) if self.scored else ()))
        for name, value in self.rows.items():
            writer.writerows(self._rows_of(name, value))
        return out.getvalue()


class PointTable(_Table):
    """Points (N, D: the last two y, x, a leading one the frame of a stack) with their class names (and,
    for predictions, scores) per image."""

    file_name = "points.csv"
    columns = ("image", "y", "x", "class")

    def _load(self) -> None:
        grouped: dict[str, list[dict]] = {}
        for row in self._read_rows(("image", "y", "x")):
            grouped.setdefault(row["image"].strip(), []).append(row)
        for name, rows in grouped.items():
            frame = [[float(r["frame"])] for r in rows] if rows and rows[0].get("frame") not in (None, "") else None
            positions = np.array([[float(r["y"]), float(r["x"])] for r in rows]).reshape(-1, 2)
            if frame is not None:
                positions = np.hstack([np.array(frame), positions])
            classes = [(r.get("class") or "object").strip() for r in rows]
            scores = np.array([float(r.get("score") or 1.0) for r in rows])
            self.rows[name] = (positions, classes, scores)

    def _rows_of(self, name: str, value) -> list[tuple]:
        positions, classes, scores = value
        positions = np.asarray(positions, np.float64)
        if positions.ndim == 2 and positions.shape[1] > 3:
            raise DataError(f"{name}: points on stacks of more than one leading axis cannot be saved")
        rows = []
        for point, name_of_class, score in zip(positions, classes, scores):
            row = (name, f"{point[-2]:.2f}", f"{point[-1]:.2f}", name_of_class)
            row += (f"{float(score):.4f}",) if self.scored else ()
            rows.append(row + ((f"{point[0]:g}",) if len(point) == 3 else ()))
        return rows

    def _text(self) -> str:
        stacked = any(np.asarray(v[0]).ndim == 2 and np.asarray(v[0]).shape[1] == 3 for v in self.rows.values())
        text = super()._text()
        if not stacked:
            return text
        header, _, rest = text.partition("\r\n")
        return header + ",frame\r\n" + rest

    @staticmethod
    def count(value) -> int:
        return len(value[0])

    @staticmethod
    def class_names(value) -> set[str]:
        return set(value[1])

    @staticmethod
    def samples(image, channel_axis, value, config: TrainingConfig) -> list[Sample]:
        positions, classes, _ = value
        unknown = sorted(set(classes) - set(config.classes))
        if unknown:
            raise DataError(f"point classes {unknown} are not among the classes {config.classes}")
        ids = np.array([config.classes.index(c) for c in classes], np.int64)
        return make_point_samples(image, positions, ids, config, channel_axis)

    @staticmethod
    def example(image, channel_axis, value, name: str) -> Example:
        positions, classes, _ = value
        return Example(image, channel_axis, points=positions, point_classes=tuple(classes), name=name)

    @staticmethod
    def predict(model, image, config: TrainingConfig, channel_axis, device):
        from .infer import iter_predict_points, run

        points, classes, scores = run(iter_predict_points(model, image, config, channel_axis, device))
        return np.asarray(points), [config.classes[c] for c in classes], np.asarray(scores)


class ClassTable(_Table):
    """One class name per image (and, for predictions, its score)."""

    file_name = "classes.csv"
    columns = ("image", "class")

    def _load(self) -> None:
        for row in self._read_rows(("image", "class")):
            name = row["image"].strip()
            if row["class"].strip():
                self.rows[name] = (row["class"].strip(), float(row.get("score") or 1.0))

    def _rows_of(self, name: str, value) -> list[tuple]:
        class_name, score = value
        return [(name, class_name) + ((f"{score:.4f}",) if self.scored else ())]

    @staticmethod
    def count(value) -> int:
        return 1

    @staticmethod
    def class_names(value) -> set[str]:
        return {value[0]}

    @staticmethod
    def samples(image, channel_axis, value, config: TrainingConfig) -> list[Sample]:
        class_name = value[0]
        if class_name not in config.classes:
            raise DataError(f"class {class_name!r} is not among the classes {config.classes}")
        stack, axis = one_frame_stack(image, channel_axis)
        return make_class_samples(stack, [config.classes.index(class_name)], config, axis)

    @staticmethod
    def example(image, channel_axis, value, name: str) -> Example:
        return Example(image, channel_axis, name=name)

    @staticmethod
    def predict(model, image, config: TrainingConfig, channel_axis, device):
        from .infer import predict_classes

        stack, axis = one_frame_stack(image, channel_axis)
        (class_id,), (score,) = predict_classes(model, stack, config, axis, device)
        return config.classes[class_id], float(score)


# An application's annotation kind -> the table that keeps it (label images are files of their own).
TABLES = {"points": PointTable, "classes": ClassTable}
