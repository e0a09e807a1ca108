"""An experiment: the images a user works through, what they painted or accepted, roles and statuses.

A folder of images is an experiment, laid out as MIA keeps its training folder and as the command line
reads it (``napari-mia train --images DIR --labels DIR/labels`` trains on exactly what was painted)::

    DIR/<images>                      tif/tiff/png/jpg, natural order, stacks allowed
    DIR/labels/<name>.tif             labels the user painted or accepted (the only training labels)
    DIR/predictions/<name>.tif        the model's predictions (and the user's corrections of them), until
                                      the user accepts them
    DIR/uncertainty/<name>.tif        how unsure the model was of each pixel of them (float32, 0 to 1)
    DIR/napari-mia.json               role, status and uncertainty score of every image; the runs
    DIR/napari-mia-model.safetensors  the model in use (the best run, unless the user chose another)
    DIR/models/run-NNN.safetensors    every run trained on the experiment, with its score

An image's name is its file's stem, or its whole file name where two images share a stem (``a.png`` and
``a.tif``), so that no two images share labels.

Every file is written atomically (see :func:`files.write_atomically`). Images already open in napari join
the same experiment as in-memory entries (:meth:`Experiment.add_array`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import threading
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .annotations import TABLES
from .auto import Example
from .config import TrainingConfig
from .data import DataError, Sample, check_classes, make_samples, split_train_validation
from .events import ImagePredicted
from .files import list_images, read_image, read_labels, read_map, write_atomically, write_labels, write_map
from .uncertainty import image_score

ROLES = ("train", "validation", "test")
# An entry's status: unlabelled (nothing yet), predicted (the model's labels wait for the user), labelled
# (the user painted) or accepted (the user accepted, and maybe corrected, a prediction). Only the last two
# teach the network.
ANNOTATED = ("labelled", "accepted")
ORDERS = ("file order", "most uncertain")  # where Next goes
STATE_FILE = "napari-mia.json"
MODEL_FILE = "napari-mia-model.safetensors"
RUNS_FOLDER = "models"


@dataclass(frozen=True)
class Run:
    """A training run kept in the experiment folder: its number and file, its score (the headline
    ``metric`` on its ``validation`` images; None without any), and the images it learnt from."""

    number: int
    path: Path
    metric: str | None
    score: float | None
    images: tuple[str, ...]
    validation: tuple[str, ...]

    def to_dict(self, folder: Path) -> dict:
        return {"number": self.number, "file": self.path.relative_to(folder).as_posix(), "metric": self.metric,
                "score": self.score, "images": list(self.images), "validation": list(self.validation)}

    @classmethod
    def from_dict(cls, record: dict, folder: Path) -> Run:
        return cls(int(record["number"]), folder / record["file"], record.get("metric"), record.get("score"),
                   tuple(record.get("images", ())), tuple(record.get("validation", ())))

    def describe(self) -> str:
        scored = "not scored" if self.score is None else f"{self.metric} {self.score:.3f}"
        return f"run {self.number}: {scored}, {len(self.images)} image(s)"


def count_objects(labels: np.ndarray) -> int:
    """How many distinct ids above 0 ``labels`` holds (objects, where they are object ids). Every autosave
    counts, so ids no larger than the image are tallied in one pass rather than by sorting every labelled
    pixel."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return 0
    integers = labels.dtype == bool or np.issubdtype(labels.dtype, np.integer)
    if integers and 0 <= labels.min() <= labels.max() <= labels.size:
        return int(np.count_nonzero(np.bincount(labels.ravel().astype(np.intp, copy=False))[1:]))
    return len(np.unique(labels[labels > 0]))


@dataclass
class Entry:
    """One image of the experiment. File entries read their image and labels when needed; in-memory
    entries (napari layers) hold them."""

    name: str
    path: Path | None = None
    image: np.ndarray | None = None
    channel_axis: int | None = None
    labels: np.ndarray | None = None
    role: str = "train"
    status: str = "unlabelled"
    annotated: int = 0  # labelled pixels (points in a table), for the table
    objects: int | None = None  # distinct object ids of its labels, for an instance experiment's table
    predicted: int | None = None  # objects (or points) in its last prediction, the user's corrections included
    trained: bool = False  # a finished training run used its labels (else it is new: ``new_image_share``)
    uncertainty: float | None = None  # of its last prediction (see core.uncertainty); None: not predicted
    scale: float | None = None  # the scale its last prediction saw it at (its frames' median; data.frame_scale)
    corrected: bool = False  # the user edited its prediction (kept; it teaches once accepted)

    def count_labels(self, labels: np.ndarray) -> None:
        """The table's counts of ``labels``: labelled pixels, and distinct ids (objects, where ids are objects)."""
        self.annotated, self.objects = int(np.count_nonzero(labels)), count_objects(labels)

    @property
    def table_status(self) -> str:
        """Its status as the dock's table shows it: a prediction the user edited is "corrected"."""
        return "corrected" if self.status == "predicted" and self.corrected else self.status

    @property
    def teaches(self) -> bool:
        return self.status in ANNOTATED and self.role != "test"


class Experiment:
    """The entries of one experiment and the files that keep them. Methods that write are safe to call
    from worker threads (each file is replaced atomically; the state file under a lock)."""

    def __init__(self, folder: str | Path | None = None, label_folder: str | Path | None = None,
                 annotations: str = "labels", table: str | Path | None = None):
        self.folder = None if folder is None else Path(folder)
        # Points and image classes live in one table for the folder (annotations.py); labels in files.
        self.annotations = annotations
        kind = TABLES.get(annotations)
        self.table = None if kind is None else kind(Path(table) if table else (
            None if self.folder is None else self.folder / kind.file_name))
        self.predicted_table = None if kind is None else kind(
            None if self.folder is None else self.folder / "predictions" / kind.file_name, scored=True)
        self.label_folder = Path(label_folder) if label_folder else (
            None if self.folder is None else self.folder / "labels")
        self.entries: list[Entry] = []
        self._label_files: dict[str, Path] = {}
        self.last_used: list[Entry] = []  # the entries the last ``samples`` call drew from
        self.last_validation: list[Entry] = []  # those of them it validated on
        self.runs: list[Run] = []
        self.run_in_use: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, folder: str | Path, label_folder: str | Path | None = None, annotations: str = "labels",
             table: str | Path | None = None) -> Experiment:
        """The images of ``folder`` with the annotations (label images, or the points or classes table:
        ``annotations``), roles and statuses saved beside them."""
        experiment = cls(folder, label_folder, annotations, table)
        record = experiment._read_state()
        state = record.get("images", {})
        experiment.runs = [Run.from_dict(r, experiment.folder) for r in record.get("runs", [])]
        experiment.run_in_use = record.get("run_in_use")
        with contextlib.suppress(FileNotFoundError):  # no label folder yet, or nothing in it
            # Labels written elsewhere may be png; the .tif the dock writes wins over an older one.
            experiment._label_files = {p.stem: p for p in sorted(
                list_images(experiment.label_folder), key=lambda p: p.suffix.lower() == ".tif")}
        paths = list_images(folder)
        names = entry_names(paths)
        for table in (experiment.table, experiment.predicted_table):
            if table is not None:
                table.lookup(names)
        for path, name in zip(paths, names):
            saved = state.get(name, {})
            entry = Entry(name, path, role=saved.get("role", "train"), annotated=saved.get("annotated", 0),
                          objects=saved.get("objects"), predicted=saved.get("predicted"),
                          trained=saved.get("trained", False),
                          uncertainty=saved.get("uncertainty"), scale=saved.get("scale"),
                          corrected=saved.get("corrected", False))
            status = saved.get("status")
            if experiment._has_annotation(entry, status):
                entry.status = status if status in ANNOTATED else "labelled"
            else:
                entry.status = "predicted" if experiment._has_prediction(entry) else "unlabelled"
            experiment.entries.append(entry)
        return experiment

    def _has_annotation(self, entry: Entry, status: str | None) -> bool:
        """The label file decides (one written by hand, or by a crashed session, counts); in a table, a row,
        or the state's word for an image accepted with no point."""
        if self.table is None:
            return entry.name in self._label_files
        return self.table.has(entry.name) or status in ANNOTATED

    def _has_prediction(self, entry: Entry) -> bool:
        if self.predicted_table is None:
            return self.prediction_path(entry).is_file()
        return self.predicted_table.has(entry.name)

    def _read_state(self) -> dict:
        path = self.folder / STATE_FILE
        if not path.is_file():
            return {}
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
            return record
        except ValueError as error:
            raise DataError(f"{path}: not a napari-mia experiment file ({error}); move it away to start "
                            "afresh") from error

    def save_state(self) -> None:
        if self.folder is None:
            return
        with self._lock:
            state = {"version": 1, "images": {
                e.name: {"role": e.role, "status": e.status, "annotated": e.annotated, "objects": e.objects,
                         "predicted": e.predicted, "trained": e.trained,
                         "uncertainty": e.uncertainty, "scale": e.scale, "corrected": e.corrected}
                for e in self.entries if e.path is not None},
                "runs": [run.to_dict(self.folder) for run in self.runs], "run_in_use": self.run_in_use}
            text = json.dumps(state, indent=1)
            write_atomically(self.folder / STATE_FILE, lambda file: file.write_text(text))

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __getitem__(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    @property
    def model_path(self) -> Path | None:
        return None if self.folder is None else self.folder / MODEL_FILE

    def describe(self, entry: Entry) -> str:
        """How messages name ``entry``: its label file, or its name for an image open in napari."""
        return entry.name if entry.path is None else str(self.labels_path(entry))

    # ---- runs ----------------------------------------------------------------------------------------
    def next_run_number(self) -> int:
        return max((run.number for run in self.runs), default=0) + 1

    def run(self, number: int) -> Run:
        for run in self.runs:
            if run.number == number:
                return run
        raise DataError(f"{self.folder}: no run {number} (runs: {', '.join(str(r.number) for r in self.runs)})")

    def keep_run(self, number: int, model, config: TrainingConfig, history, score: float | None,
                 metric: str | None, images: list[str], validation: list[str], in_use: bool) -> Run:
        """Save a run as ``models/run-NNN.safetensors`` (a resumed run replaces its own file); with
        ``in_use`` it becomes the experiment's model."""
        from .io import save_model

        run = Run(number, self.folder / RUNS_FOLDER / f"run-{number:03d}.safetensors", metric, score,
                  tuple(images), tuple(validation))
        save_model(run.path, model, config, history)
        self.runs = [r for r in self.runs if r.number != number] + [run]
        if in_use:
            self.use_run(run, model, config, history)
        else:
            self.save_state()
        return run

    def use_run(self, run: Run, model, config: TrainingConfig, history) -> None:
        """``run`` (its ``model``) becomes the model the experiment opens with."""
        from .io import history_csv_path, save_model, write_history_csv

        save_model(self.model_path, model, config, history)
        write_history_csv(history_csv_path(self.model_path), history)
        self.run_in_use = run.number
        self.save_state()

    def images_of_model_in_use(self) -> set[str] | None:
        """The images the model in use learnt from, or None where no run says (a model from elsewhere)."""
        if self.run_in_use is None:
            return None
        with contextlib.suppress(DataError):
            return set(self.run(self.run_in_use).images)
        return None

    def add_array(self, name: str, image: np.ndarray, channel_axis: int | None = None,
                  labels: np.ndarray | None = None, role: str = "train") -> Entry:
        """An image open in napari (and its labels) joins the experiment; a name already there is replaced."""
        self.entries = [e for e in self.entries if e.name != name]
        entry = Entry(name, image=image, channel_axis=channel_axis, role=role)
        self.entries.append(entry)
        if labels is not None:
            self.save_labels(entry, labels)
        return entry

    # ---- files -------------------------------------------------------------------------------------
    def labels_path(self, entry: Entry) -> Path | None:
        """The label file of ``entry`` found when the folder was opened, else the one it is saved to."""
        if entry.path is None:
            return None
        return self._label_files.get(entry.name, self.label_folder / f"{entry.name}.tif")

    def prediction_path(self, entry: Entry) -> Path | None:
        return None if entry.path is None else self.folder / "predictions" / f"{entry.name}.tif"

    def uncertainty_path(self, entry: Entry) -> Path | None:
        return None if entry.path is None else self.folder / "uncertainty" / f"{entry.name}.tif"

    def read_image(self, entry: Entry) -> tuple[np.ndarray, int | None]:
        if entry.image is not None:
            return entry.image, entry.channel_axis
        return read_image(entry.path)

    def read_labels(self, entry: Entry) -> np.ndarray | None:
        """The user's labels of ``entry`` (painted or accepted), or None."""
        if entry.labels is not None or entry.path is None:
            return entry.labels
        path = self.labels_path(entry)
        return read_labels(path) if path.is_file() else None

    def read_prediction(self, entry: Entry) -> np.ndarray | None:
        path = self.prediction_path(entry)
        return read_labels(path) if path is not None and path.is_file() else None

    def read_uncertainty(self, entry: Entry) -> np.ndarray | None:
        """The per-pixel uncertainty of ``entry``'s last prediction, or None."""
        path = self.uncertainty_path(entry)
        return read_map(path) if path is not None and path.is_file() else None

    def save_labels(self, entry: Entry, labels: np.ndarray, status: str = "labelled") -> None:
        """Keep what the user painted (or accepted, with ``status="accepted"``): it teaches from now on. A
        test image the user paints becomes a training image, as a corrected test image does in MIA."""
        labels = np.array(labels)  # a copy: the layer goes on changing while this is written
        if entry.path is None:
            entry.labels = labels
        else:  # always a TIFF: a png label file found at opening is left as it was
            self._label_files[entry.name] = write_labels(self.label_folder / f"{entry.name}.tif", labels)
        entry.count_labels(labels)
        entry.status = "accepted" if "accepted" in (status, entry.status) else "labelled"  # touched up after Accept
        if entry.role == "test":
            entry.role = "train"
        self.save_state()

    def accept(self, entry: Entry, labels: np.ndarray) -> None:
        """The user's corrected prediction becomes the image's labels and joins the training set."""
        self.save_labels(entry, labels, status="accepted")

    def save_corrected_prediction(self, entry: Entry, labels: np.ndarray) -> None:
        """Keep the user's corrections of ``entry``'s prediction: they come back with the image, Predict all
        leaves them, and they teach once the user accepts them (not before)."""
        labels = np.array(labels)
        if entry.path is not None:
            write_labels(self.prediction_path(entry), labels)
        entry.corrected = True
        if entry.status == "unlabelled":
            entry.status = "predicted"
        self.save_state()

    def save_prediction(self, entry: Entry, labels: np.ndarray, uncertainty: np.ndarray | None = None,
                        scale: float | None = None) -> None:
        """Keep the model's labels of ``entry`` (how unsure it was of each pixel, the scale it saw it at)
        until the user accepts them; they never teach."""
        entry.corrected, entry.scale = False, scale
        if entry.path is not None:
            write_labels(self.prediction_path(entry), labels)
            if uncertainty is not None:
                write_map(self.uncertainty_path(entry), uncertainty)
            else:  # an older map would describe another prediction
                self.uncertainty_path(entry).unlink(missing_ok=True)
        entry.uncertainty = None if uncertainty is None else image_score(uncertainty)
        if entry.status == "unlabelled":
            entry.status = "predicted"
        self.save_state()

    def mark_trained(self, entries: list[Entry]) -> None:
        """A training run used these entries' labels: from now on they are no longer new."""
        for entry in entries:
            entry.trained = True
        self.save_state()

    def next_entry(self, current: Entry | None, order: str = "file order") -> Entry | None:
        """Where Next goes from ``current``: the next image in the folder's order, or ("most uncertain")
        the image not yet labelled or accepted whose prediction the model was least sure of (then, when
        none is scored, the next in the folder's order)."""
        if order not in ORDERS:
            raise DataError(f"the order must be one of {', '.join(ORDERS)}, not {order!r}")
        if order == "most uncertain":
            scored = [e for e in self.entries
                      if e is not current and e.status not in ANNOTATED and e.uncertainty is not None]
            if scored:
                return max(scored, key=lambda e: e.uncertainty)  # the first of equal scores
        index = -1 if current is None else self.entries.index(current)
        return self.entries[index + 1] if index + 1 < len(self.entries) else None

    def set_role(self, entry: Entry, role: str) -> None:
        if role not in ROLES:
            raise DataError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        entry.role = role
        self.save_state()

    # ---- training ----------------------------------------------------------------------------------
    def annotated_entries(self, role: str | None = None) -> list[Entry]:
        return [e for e in self.entries if e.teaches and (role is None or e.role == role)]

    def entries_to_predict(self) -> list[Entry]:
        """What Predict all predicts: the images with neither labels nor a prediction the user corrected."""
        return [e for e in self.entries if e.status not in ANNOTATED and not e.corrected]

    # ---- points and classes (annotations.py) -----------------------------------------------------------
    def read_annotation(self, entry: Entry):
        """What the user gave ``entry``: its label image, or its row of the points or classes table."""
        return self.read_labels(entry) if self.table is None else self.table.read(entry.name)

    def save_annotation(self, entry: Entry, value, status: str = "labelled") -> None:
        """Keep what the user clicked or chose for ``entry`` (labels: ``save_labels``): it teaches from now
        on; ``None`` in a table takes the image out of training."""
        if self.table is None:
            self.save_labels(entry, value, status)
            return
        self.table.write(entry.name, value)
        entry.annotated = 0 if value is None else self.table.count(value)
        if value is None:
            entry.status = "predicted" if self._has_prediction(entry) else "unlabelled"
        else:
            entry.status = "accepted" if "accepted" in (status, entry.status) else "labelled"
            entry.role = "train" if entry.role == "test" else entry.role
        self.save_state()

    def read_predicted(self, entry: Entry):
        """The model's prediction of ``entry`` (with the user's corrections): a label image, or its row."""
        return self.read_prediction(entry) if self.predicted_table is None else self.predicted_table.read(entry.name)

    def save_predicted(self, entry: Entry, value, uncertainty: np.ndarray | None = None,
                       corrected: bool = False, scale: float | None = None) -> None:
        entry.predicted = count_objects(value) if self.predicted_table is None else self.predicted_table.count(value)
        if self.predicted_table is None:
            if corrected:
                self.save_corrected_prediction(entry, value)
            else:
                self.save_prediction(entry, value, uncertainty, scale)
            return
        self.predicted_table.write(entry.name, value)
        entry.corrected = corrected
        if entry.status == "unlabelled":
            entry.status = "predicted"
        self.save_state()

    def count_table(self) -> tuple[list[str], list[list]]:
        """Every image's count of objects (label images of object ids) or points, per class for points:
        ``(header, rows)``, each row the image, its status, whose count it is (``you``: annotated or accepted;
        ``model``: its prediction, your corrections included; empty: neither yet) and the counts. Files not
        yet counted are read."""
        if self.annotations == "classes":
            raise ValueError("a classification experiment gives each image a class, not a count")
        counted = [(entry, *self._counted(entry)) for entry in self.entries]
        classes = sorted({name for _, _, found in counted if found is not None for name in found})
        header = ["image", "status", "counted_by", "points" if self.table is not None else "objects"]
        if self.table is not None:
            header += classes
        rows = []
        for entry, whose, found in counted:
            row = [entry.name, entry.table_status, whose, "" if found is None else sum(found.values())]
            if self.table is not None:
                row += ["" if found is None else found.get(name, 0) for name in classes]
            rows.append(row)
        return header, rows

    def _counted(self, entry: Entry) -> tuple[str, dict[str, int] | None]:
        """Whose count ``entry`` has, and its count per class name (objects of label images: one "class")."""
        whose = "you" if entry.status in ANNOTATED else "model" if self._has_prediction(entry) else ""
        if not whose:
            return whose, None
        if self.table is not None:
            value = (self.table if whose == "you" else self.predicted_table).read(entry.name)
            return whose, dict(Counter(value[1]))
        known = entry.objects if whose == "you" else entry.predicted
        if known is None:
            known = count_objects(self.read_labels(entry) if whose == "you" else self.read_prediction(entry))
        return whose, {"objects": known}

    def write_count_table(self, path: str | Path) -> int:
        """:meth:`count_table` as a CSV file (written atomically); returns how many images it counts."""
        header, rows = self.count_table()
        text = io.StringIO()
        csv.writer(text).writerows([header, *rows])
        write_atomically(Path(path), lambda file: file.write_text(text.getvalue()))
        return sum(row[2] != "" for row in rows)

    def class_names(self) -> list[str]:
        """The class names the annotations use (points' classes, images' classes), sorted."""
        values = (self.table.read(e.name) for e in self.annotated_entries())
        return sorted({name for value in values if value is not None for name in self.table.class_names(value)})

    def highest_label(self) -> int:
        return max((int(self.read_labels(e).max()) for e in self.annotated_entries()), default=0)

    def auto_examples(self) -> Iterator[Example]:
        """The painted and accepted images with their labels, one at a time, for the "auto" settings."""
        for entry in self.annotated_entries():
            image, channel_axis = self.read_image(entry)
            if self.table is not None:
                yield self.table.example(image, channel_axis, self.table.read(entry.name) or ((), (), ()),
                                         self.describe(entry))
            else:
                yield Example(image, channel_axis, labels=self.read_labels(entry), name=self.describe(entry))

    def entry_samples(self, entry: Entry, config: TrainingConfig, binarize: bool = False) -> list[Sample]:
        image, channel_axis = self.read_image(entry)
        try:
            if self.table is not None:  # an image with no point teaches that it holds none
                value = self.table.read(entry.name) or (np.zeros((0, 2)), [], np.zeros(0))
                samples = self.table.samples(image, channel_axis, value, config)
            else:
                labels = self.read_labels(entry)
                if binarize:
                    labels = (labels > 0).astype(np.uint8)
                # an image accepted with no object teaches that it holds none
                samples = make_samples(image, labels, config, channel_axis,
                                       keep_empty_frames=entry.status == "accepted")
        except ValueError as error:
            raise DataError(f"{entry.name}: {error}") from error
        for sample in samples:
            sample.new = not entry.trained
        return samples

    def samples(self, config: TrainingConfig, binarize: bool = False) -> tuple[list[Sample], list[Sample]]:
        """(training, validation) samples from every image the user painted or accepted, of any size.

        Validation is by whole images: those whose role is validation, else a ``validation_fraction``
        of the annotated images (of the frames when there is only one image)."""
        training = self.annotated_entries("train")
        validation = self.annotated_entries("validation")
        drawn = not validation and len(training) > 1 and config.validation_fraction > 0
        if drawn:
            count = min(len(training) - 1, max(1, round(config.validation_fraction * len(training))))
            chosen = set(map(id, sorted(training, key=lambda e: _draw(e.name, config.seed))[:count]))
            validation = [e for e in training if id(e) in chosen]
            training = [e for e in training if id(e) not in chosen]
        train_samples = [s for e in training for s in self.entry_samples(e, config, binarize)]
        validation_samples = [s for e in validation for s in self.entry_samples(e, config, binarize)]
        if drawn and _lacks_what_training_needs(train_samples, config):
            # A few images: the drawn split took the only image of a class (or every object). All train,
            # none validates, rather than a run refused for a split the user did not make.
            training, validation = training + validation, []
            train_samples, validation_samples = train_samples + validation_samples, []
        self.last_used, self.last_validation = training + validation, validation
        if len(training) == 1 and not validation:
            return split_train_validation(train_samples, config.validation_fraction, config.seed)
        return train_samples, validation_samples


def _lacks_what_training_needs(samples: list[Sample], config: TrainingConfig) -> bool:
    try:
        check_classes(samples, config)
    except DataError:
        return True
    return False


def entry_names(paths: list[Path]) -> list[str]:
    """Each image's name: its stem, or its file name where images share a stem (``a.png``, ``a.tif``)."""
    stems = Counter(path.stem for path in paths)
    return [path.stem if stems[path.stem] == 1 else path.name for path in paths]


def _draw(name: str, seed: int) -> str:
    """A stable draw per image: the validation images of a random split stay validation images as the
    experiment grows, so that runs are compared on images none of them learnt from."""
    return hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()


def predict_all(model, config: TrainingConfig, experiment: Experiment, entries: list[Entry],
                device="cpu") -> Generator[ImagePredicted, None, int]:
    """Predict ``entries`` one by one, each saved (atomically, with its uncertainty) as soon as it is done;
    stopping between two images leaves every finished one saved. Returns how many were predicted."""
    for done, entry in enumerate(entries, start=1):
        prediction, uncertainty = predict_entry(model, config, experiment, entry, device)
        yield ImagePredicted(entry.name, done, len(entries), prediction, uncertainty)
    return len(entries)


def predict_entry(model, config: TrainingConfig, experiment: Experiment, entry: Entry, device="cpu", read=None):
    """Predict ``entry`` and save the prediction: (label image and its uncertainty) or (row of its table,
    None)."""
    from .infer import run

    prediction, uncertainty, scale = run(iter_predict_entry(model, config, experiment, entry, device, read))
    experiment.save_predicted(entry, prediction, uncertainty, scale=scale)
    return prediction, uncertainty


def iter_predict_entry(model, config: TrainingConfig, experiment: Experiment, entry: Entry, device="cpu",
                       read=None):
    """:func:`predict_entry` without the saving: ``(prediction, uncertainty, the scale the image was seen
    at)``; yields progress (``TileDone``) between tiles of a label image, where a consumer may stop.
    ``read``: the entry's ``(image, channel axis)`` where the caller has read them already."""
    from .infer import iter_predict_with_uncertainty

    image, channel_axis = read or experiment.read_image(entry)
    if experiment.table is not None:
        return experiment.table.predict(model, image, config, channel_axis, device), None, None
    scales = []
    prediction, uncertainty = yield from iter_predict_with_uncertainty(model, image, config, channel_axis, device,
                                                                       scales=scales)
    return prediction, uncertainty, float(np.median(scales)) if scales else None
