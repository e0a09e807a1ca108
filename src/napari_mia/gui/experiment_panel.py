"""MIA's training folder in the dock: open a folder, step through its images, paint, accept predictions.

The panel is a view of the session's :class:`~napari_mia.core.experiment.Experiment`. One image is open at
a time, as in MIA: its Image layer, ``<image> labels`` (what the user paints: saved on every edit) and
``<image> prediction`` (empty until the image is predicted; what Accept makes the image's labels; the
user's corrections of it are saved on every edit too, and teach once accepted). The three layers are made
once and given each image's data in turn: adding a layer to napari's window stalls it far longer than new
data. Files are read, predicted and written in workers; the GUI thread only copies a layer when an edit
has settled.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, Table
from napari.layers import Image, Labels, Points
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QSignalBlocker, Qt, QTimer
from qtpy.QtWidgets import QHeaderView, QSizePolicy, QStyledItemDelegate

from ..core.config import APPLICATIONS
from ..core.events import ImagePredicted
from ..core.experiment import ANNOTATED, ORDERS, ROLES, Entry, Experiment, count_objects, predict_entry
from . import layers
from .background import TURN_MS, create_background_worker
from .config_panel import toggle_section

ACCEPT_KEY, TRAIN_KEY = "Shift-Enter", "Shift-T"  # beside MIA's A and D
AUTOSAVE_MS = 500  # an edit is saved once the user has stopped painting this long
_LOOK_AHEAD_AFTER_MS = 300
LABELS_SUFFIX = "labels"
PREDICTION_SUFFIX = "prediction"
POINTS_SUFFIX, DETECTIONS_SUFFIX = "points", "detections"
# The open image's layers by annotation kind: (what the user annotates, what the model predicted).
_LAYER_SUFFIXES = {"labels": (LABELS_SUFFIX, PREDICTION_SUFFIX), "points": (POINTS_SUFFIX, DETECTIONS_SUFFIX),
                   "classes": (None, None)}
_ANNOTATION_COLUMN = {"labels": "Labelled", "points": "Points", "classes": "Class"}
OBJECTS_COLUMN = "Objects"  # instead of Labelled where the label images hold an id per object
_COUNT_COLUMNS = (OBJECTS_COLUMN, _ANNOTATION_COLUMN["points"])  # columns that count objects or points
_FIRST_STEP = {"labels": "Paint a few objects on this image", "points": "Click a few objects on this image",
               "classes": "Give a few images their Class"}
_WATCHED = "napari_mia_edits_saved"  # a prediction layer whose edits the panel saves
# Short: every column in view at the dock's width; the headers' tooltips say more.
_COLUMNS = ("Image", "Role", "Status", "Labelled", "Unsure", "Scale")
_COLUMN_TIPS = {
    "Labelled": "How many pixels of the image are labelled (counted when its labels are saved or opened)",
    OBJECTS_COLUMN: "How many objects the image's labels hold; in brackets, how many the model found on an image "
                    "not annotated yet (your corrections included)",
    "Points": "How many points you clicked on the image; in brackets, how many the model found on an image not "
              "annotated yet (your corrections included)",
    "Unsure": "How unsure the model was of its last prediction of the image (0 to 1): Next can go to the most unsure",
    "Scale": "The scale the model saw the image at when it predicted it: with Down Scaling auto, an instance model "
             "brings each image's objects to the size it learned (0.5: shrunk by half)",
}
UNCERTAINTY_SUFFIX = "uncertainty"


class ExperimentPanel(Container):
    def __init__(self, dock):
        super().__init__(labels=False)
        self.dock, self.viewer = dock, dock.viewer
        self.current: Entry | None = None
        self._shapes: dict[str, str] = {}
        self._pending: tuple[Entry, np.ndarray, str] | None = None  # labels to write, and their status
        self._pending_correction: tuple[Entry, np.ndarray] | None = None  # an edited prediction to write
        self._edited: dict[str, object] = {}  # the open image's layers edited since their last copy, by suffix
        self._uncertainty: np.ndarray | None = None  # per-pixel, of the open image's prediction
        self._unsure: list[tuple[int, float, tuple]] | None = None  # (id, confidence, centre), least sure first
        self._unsure_step = 0
        self._save_lock = threading.Lock()
        self._setting_labels = False  # the panel itself writes into the labels layer: no autosave
        self._save_timer = QTimer(self.native)  # parented: it goes with the panel, never outlives Qt
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(AUTOSAVE_MS)
        self._save_timer.timeout.connect(self.save_soon)
        self._ahead_worker = None  # predicting the image Next goes to, while the user corrects this one
        self._ahead_entry: Entry | None = None
        self._ahead_failed: set[str] = set()  # not tried again: Next predicts it and says what went wrong
        self._open_after_ahead: int | None = None  # Next came before the look-ahead ended: it opens then
        self._showing = False  # an image read is being shown, a layer per turn: its job ends after
        # The look-ahead starts a moment after the dock went idle: napari first draws what the job changed.
        self._ahead_timer = QTimer(self.native)
        self._ahead_timer.setSingleShot(True)
        self._ahead_timer.setInterval(_LOOK_AHEAD_AFTER_MS)
        self._ahead_timer.timeout.connect(self._look_ahead)

        self.open_button = PushButton(text="Open folder…")
        self.open_button.tooltip = "A folder of images: labels, predictions and the model are saved beside them"
        self.close_button = PushButton(text="Close folder", enabled=False)
        self.close_button.tooltip = "Save what is pending and close the folder (to train on layers open in napari)"
        self.table = Table(value=_table_value([]))
        self.table.read_only = True
        self.table.native.setMinimumHeight(140)
        # Long file names (DSB2018's are 64 characters) are elided in the middle, as napari's layer list does;
        # the Image column takes the width the others leave, so every column stays in view.
        self.table.native.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.native.setWordWrap(False)
        # Numbers as written ("0.08"): magicgui's cells would show 8.000e-02.
        for column in ("Unsure", "Scale"):
            self.table.native.setItemDelegateForColumn(_COLUMNS.index(column), QStyledItemDelegate(self.table.native))
        self.previous_button = PushButton(text="◀ Previous (A)", enabled=False)
        self.previous_button.tooltip = "The image before this one (key: A, as in MIA)"
        self.next_button = PushButton(text="Next (D) ▶", enabled=False)
        self.next_button.tooltip = "The next image; an unlabelled one is predicted first, ready to correct (key: D)"
        self.accept_button = PushButton(text="Accept (⇧↵)", enabled=False)
        self.accept_button.tooltip = ("The corrected prediction becomes this image's labels and trains from now on "
                                      f"(key: {ACCEPT_KEY})")
        self.predict_all_button = PushButton(text="Predict all", enabled=False)
        self.predict_all_button.tooltip = "Predict every image not yet labelled, saved in predictions/"
        self.export_counts_button = PushButton(text="Export counts…", enabled=False, visible=False)
        self.export_counts_button.tooltip = ("Every image's count of objects or points (per class), yours where you "
                                             "annotated or accepted it, else the model's, into a CSV table")
        self.role = ComboBox(label="Role", choices=ROLES, value="train", enabled=False)
        self.class_choice = ComboBox(label="Class", choices=lambda _: ["", *self.dock.class_names()], visible=False)
        self.class_choice.tooltip = ("Classification: this image's class (saved in classes.csv). Points: the class of "
                                     "new points and of the selected ones")
        self._showing_class = False  # the panel sets the choice: not the user's
        self._run_choices: list[tuple[str, int]] = []
        self.runs = ComboBox(label="Model", choices=lambda _: self._run_choices, enabled=False)
        self.runs.tooltip = ("Every run trained on this folder, with its score on the validation images; a run that "
                             "scores worse than the model in use is kept, not used. Choose one to use it.")
        self._showing_runs = False  # the panel sets the choice: not the user's
        self.order = ComboBox(label="Next", choices=ORDERS, value=ORDERS[0])
        self.order.tooltip = ("Where Next goes: the next image of the folder, or the image not yet labelled or "
                              "accepted whose prediction the model is least sure of (after Predict all)")
        self.show_uncertainty = CheckBox(text="Show uncertainty", value=False)
        self.show_uncertainty.tooltip = "A layer '<image> uncertainty': 0 where the model is sure, 1 where unsure"
        self.unsure_button = PushButton(text="Least sure object ▶", enabled=False)
        self.unsure_button.tooltip = ("Centre on the predicted objects one by one, least confident first "
                                      "(confidence: 1 - the object's mean uncertainty)")
        self.summary = Label(value="Open a folder of images (MIA's training folder), or train on layers below.")
        self.summary.native.setWordWrap(True)
        # The panel's width, wrapped (magicgui's labels are Fixed): a 64-character file name never widens the dock.
        fills = self.summary.native.sizePolicy()
        fills.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
        self.summary.native.setSizePolicy(fills)
        self.folder_options_button = PushButton(text="Role, order, runs ▸")
        self.folder_options_button.tooltip = ("This image's role (train, validation, skip), where Next goes, the "
                                              "model's uncertainty, and the runs trained on this folder")
        self.folder_options = Container(widgets=[
            self.role, self.order,
            Container(widgets=[self.show_uncertainty, self.unsure_button], layout="horizontal", labels=False),
            self.runs,
        ], visible=False)
        self.extend([
            Container(widgets=[self.open_button, self.close_button], layout="horizontal", labels=False),
            self.table,
            Container(widgets=[self.previous_button, self.next_button, self.accept_button], layout="horizontal",
                      labels=False),
            Container(widgets=[self.class_choice, self.predict_all_button, self.export_counts_button],
                      layout="horizontal"),
            self.summary,
            self.folder_options_button,
            self.folder_options,
        ])
        self.open_button.changed.connect(self._ask_folder)
        self.folder_options_button.changed.connect(
            lambda: toggle_section(self.folder_options, self.folder_options_button))
        self.close_button.changed.connect(self.close_folder)
        self.previous_button.changed.connect(lambda: self.step(-1))
        self.next_button.changed.connect(lambda: self.step(1))
        self.accept_button.changed.connect(self.accept)
        self.predict_all_button.changed.connect(self.predict_all)
        self.export_counts_button.changed.connect(self._ask_counts)
        self.role.changed.connect(self._on_role)
        self.order.changed.connect(self._on_order)
        self.class_choice.changed.connect(self._on_class_chosen)
        self.runs.changed.connect(self._on_run_chosen)
        self.show_uncertainty.changed.connect(lambda _: self._show_uncertainty_layer())
        self.unsure_button.changed.connect(self.next_unsure_object)
        self.table.native.cellClicked.connect(lambda row, _: self.show_entry(row))
        for key, step in (("a", -1), ("d", 1)):  # MIA's keys for the previous and next image
            self.viewer.bind_key(key, lambda _viewer, step=step: self.step(step), overwrite=True)
        self.viewer.bind_key(ACCEPT_KEY, lambda _viewer: self.accept(), overwrite=True)

    # ---- opening ------------------------------------------------------------------------------------
    def _ask_folder(self, *_) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(None, "Open a folder of images")
        if folder:
            self.open_folder(folder)

    @property
    def experiment(self) -> Experiment | None:
        return self.dock.session.experiment

    def open_folder(self, folder: str | Path) -> None:
        """Open ``folder`` as the experiment, with its saved labels, roles, statuses and the model it uses."""
        from ..core.models import resolve_device

        if self.dock.session.busy:
            show_error(f"Cannot open {folder} while {self.dock.session.state} runs: stop it or wait for it first.")
            return
        self.close_experiment()
        try:
            experiment = self.dock.session.open_folder(folder, resolve_device(), self.dock.annotation_kind())
        except (ValueError, OSError) as error:
            show_error(f"Cannot open the folder {folder}: {error}")
            return
        self._shapes = {}
        self.dock.watch_for_close()  # napari closing ends the jobs, the look-ahead and the showing of an image
        if self.dock.model is not None:
            self.dock.show_model(f"{experiment.folder.name}: its model loaded")
        self.dock.show_open_layers(False)
        self.refresh()
        self.show_entry(0)

    def reopen_for(self, annotations: str) -> None:
        """The application changed: the open folder is read again for its annotations (labels, points or
        classes); what is pending is saved first. Between semantic and instance labels only the table's
        count changes (pixels or objects)."""
        experiment = self.experiment
        if experiment is None or experiment.annotations == annotations or self.dock.session.busy:
            if experiment is not None:
                self.refresh()
            return
        folder = experiment.folder
        self.close_experiment()
        self.dock.session.close_folder()
        self.open_folder(folder)

    def close_folder(self, *_) -> None:
        """Save what is pending, take the open image's layers out and close the experiment."""
        if self.experiment is None:
            return
        if self.dock.session.busy:
            show_error(f"Cannot close the folder while {self.dock.session.state} runs: stop it or wait for it.")
            return
        self.close_experiment()
        self.dock.session.close_folder()
        self.dock.show_open_layers(True)
        self.refresh()
        self.summary.value = "Folder closed. Open a folder of images, or train on layers below."

    def close_experiment(self) -> None:
        """Save what is pending and take the open image's layers out of the viewer."""
        self.save_now()
        self.stop_look_ahead()
        self._ahead_failed = set()
        self.close_experiment_layers()
        self.current = None

    def shows(self, image_layer, annotation_layer) -> bool:
        """Whether these are the open image's Image and Labels (or Points) layers (what a folder trains from)."""
        annotated, _ = _LAYER_SUFFIXES[self.experiment.annotations]
        # By name (unique in a viewer): a dock napari made holds its viewer through a proxy, whose layers are
        # proxies too, never the layer objects the dock's choices hold.
        name = None if self.current is None else self.current.name
        return name is not None and image_layer.name == name and (
            annotation_layer is None or annotated is None or annotation_layer.name == f"{name} {annotated}")

    def _layer_names(self) -> list[str]:
        if self.current is None:
            return []
        name = self.current.name
        return [name, f"{name} {LABELS_SUFFIX}", f"{name} prediction", f"{name} preview",
                f"{name} {UNCERTAINTY_SUFFIX}", f"{name} {POINTS_SUFFIX}", f"{name} {DETECTIONS_SUFFIX}"]

    # ---- the table ----------------------------------------------------------------------------------
    def _fit_columns(self) -> None:
        table = self.table.native
        header = table.horizontalHeader()
        header.setMinimumSectionSize(24)
        for column in range(table.columnCount()):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch if column == 0
                                        else QHeaderView.ResizeMode.ResizeToContents)
        for column, header_text in enumerate(self.table.column_headers):
            header_item = table.horizontalHeaderItem(column)
            if header_item is not None and header_text in _COLUMN_TIPS:
                header_item.setToolTip(_COLUMN_TIPS[header_text])

    def _set_name_tips(self) -> None:
        table = self.table.native
        for row in range(table.rowCount()):
            item = table.item(row, 0)
            if item is not None:  # the whole name, where the cell elides it, and the size once it was read
                shape = self._shapes.get(item.text())
                tip = item.text() + (f" ({shape} px)" if shape else "")
                if item.toolTip() != tip:
                    item.setToolTip(tip)

    def _set_rows(self, value: dict) -> None:
        """The table's cells: where its rows and columns stay, only the cells that changed (a save after
        every few brush strokes refreshes the table, and rebuilding it froze the window); else a new table."""
        table = self.table
        if table.shape[0] != len(value["data"]) or list(table.column_headers) != value["columns"]:
            table.value = value
            self._fit_columns()
        else:
            with QSignalBlocker(table.native):
                for row, cells in enumerate(value["data"]):
                    for column, cell in enumerate(cells):
                        if table.data[row, column] != cell:
                            table.data[row, column] = cell
        self._set_name_tips()

    def refresh(self) -> None:
        """Redraw the table and the buttons from the experiment (cheap: no file is read)."""
        experiment = self.experiment
        has, column = experiment is not None, self._annotation_column()
        rows = [] if not has else [
            [e.name, e.role, e.table_status, self._annotation_cell(e, column),
             "" if e.uncertainty is None else f"{e.uncertainty:.2f}", "" if e.scale is None else f"{e.scale:.2f}"]
            for e in experiment]
        self._set_rows(_table_value(rows, column))
        current = None if self.current is None else experiment.entries.index(self.current)
        if current is not None:
            self.table.native.selectRow(current)
        idle = not self.dock.session.busy
        self.close_button.enabled = has and idle
        self.previous_button.enabled = has and idle and bool(current)
        self.next_button.enabled = has and idle and current is not None and current < len(experiment) - 1
        self.accept_button.enabled = has and idle and self.current is not None
        self.predict_all_button.enabled = has and idle and self.dock.model is not None
        self.export_counts_button.visible = column in _COUNT_COLUMNS
        self.export_counts_button.enabled = has and idle
        self.role.enabled = self.current is not None
        self.unsure_button.enabled = has and self._uncertainty is not None
        self._show_runs(idle)
        if has:
            self.summary.value = self._next_step()
            if idle:
                self._ahead_timer.start()

    def _next_step(self) -> str:
        """Where the folder stands, and what to do next, in the user's words."""
        experiment, current = self.experiment, self.current
        teaching = len(experiment.annotated_entries())
        predicted = sum(e.status == "predicted" for e in experiment)
        counts = f"{len(experiment)} images: {teaching} annotated or accepted (they train), {predicted} predicted."
        if current is not None and current.status == "predicted":
            guess = experiment.read_predicted(current) if experiment.annotations == "classes" else None
            todo = (f"Predicted: {guess[0]} ({guess[1]:.2f}). " if guess else "") + (
                "Correct this prediction, then Accept (Shift+Enter); Train again after a few.")
        elif not teaching:
            todo = _FIRST_STEP[experiment.annotations] + ", then Train (Shift+T)."
        elif self.dock.model is None:
            todo = "Train (Shift+T) when you have annotated a few."
        else:
            todo = "Next (D) predicts the next image for you to correct."
        return f"{todo} {counts}"

    # ---- navigation ---------------------------------------------------------------------------------
    def step(self, step: int) -> None:
        """Previous (-1) or next (+1) image: A and D, as in MIA. Next goes where ``order`` says."""
        if self.experiment is None or self.current is None or self.dock.session.busy:
            return
        if step > 0:
            following = self.experiment.next_entry(self.current, self.order.value)
            if following is not None:
                self.show_entry(self.experiment.entries.index(following), predict=True)
            return
        index = self.experiment.entries.index(self.current) + step
        if 0 <= index < len(self.experiment):
            self.show_entry(index)

    def show_entry(self, index: int, predict: bool = False) -> None:
        """Open image ``index`` (its labels and prediction) in a worker; with ``predict``, an image with
        neither is predicted first with the current model, so the user starts from a prediction (most often
        the look-ahead has predicted it already; Next waits for a look-ahead of that very image)."""
        session = self.dock.session
        if self.experiment is None or session.busy or not 0 <= index < len(self.experiment):
            return
        entry = self.experiment.entries[index]
        self._open_after_ahead = None
        if predict and self._ahead_worker is not None and self._ahead_entry is entry:
            self._open_after_ahead = index
            self.summary.value = f"Predicting {entry.name}…"
            return
        self._snapshot()
        model = self.dock.model if predict and session.needs_prediction(entry) else None
        session.begin("opening")
        labels = self.experiment.table is None
        worker = create_background_worker(self._read_entry if labels else self._read_table_entry, entry, model,
                                          _connect={
            "returned": self._show_read_entry if labels else self._show_table_entry, "errored": self._on_error,
            "finished": self._on_job_finished}, _start_thread=False)
        self.dock.worker = worker
        self.refresh()
        self.summary.value = f"Opening {entry.name}" + (" and predicting it…" if model is not None else "…")
        worker.start()

    def _read_entry(self, entry: Entry, model):
        """Worker: save what is pending, read the image, its labels and prediction (made now if asked) and
        how unsure the model was of it."""
        from ..core.uncertainty import object_confidence

        self.write_pending()
        image, channel_axis = self.experiment.read_image(entry)
        labels, prediction = self.experiment.read_labels(entry), self.experiment.read_prediction(entry)
        uncertainty = self.experiment.read_uncertainty(entry)
        if model is not None and labels is None:
            prediction, uncertainty = predict_entry(model, self.dock.model_config, self.experiment, entry,
                                                    next(model.parameters()).device, (image, channel_axis))
        confidences = None
        if prediction is not None and uncertainty is not None and uncertainty.shape == prediction.shape:
            confidences = object_confidence(prediction, uncertainty)
        if labels is not None:  # label files written elsewhere have no count yet
            entry.count_labels(labels)
        elif prediction is not None and entry.predicted is None:  # nor have predictions the command line wrote
            entry.predicted = count_objects(prediction)
        return entry, image, channel_axis, labels, prediction, uncertainty, confidences

    def _show_read_entry(self, result) -> None:
        """Show the image read, one layer per turn of the event loop: napari draws each new layer before
        the next is given its data (in one turn, the three froze the window well over a tenth of a second).
        The job ends, and the user's clicks count again, once the last is shown."""
        entry, image, channel_axis, labels, prediction, uncertainty, confidences = result
        rgb = channel_axis is not None
        spatial = image.shape[:-1] if rgb else image.shape
        labels = np.zeros(spatial, np.uint16) if labels is None else labels.astype(np.uint16, copy=False)
        if prediction is None:
            prediction, uncertainty = np.zeros(spatial, np.uint16), None
        shown = self._reusable_layers(rgb, len(spatial))
        self._showing = True
        self._in_turns([
            lambda: self._show_image(entry, image, rgb, shown),
            lambda: self._show_labels(entry, labels, shown),
            lambda: self._show_prediction(entry, prediction, uncertainty, confidences, shown),
            # What the user corrects: the prediction (Accept takes it) until the image has labels of its own.
            lambda: self._activate(shown[PREDICTION_SUFFIX] if entry.status == "predicted" else shown[LABELS_SUFFIX]),
        ], then=lambda: self._shown(entry, shown))

    def _in_turns(self, steps: list, then) -> None:
        """Run ``steps`` one per turn of the event loop, napari drawing between them; then ``then`` (also
        after a step that failed). A step may return another step, run in the turn after it."""
        def run(index: int) -> None:
            if self.dock.closing:
                return
            try:
                follow_up = steps[index]()
                if follow_up is not None:
                    steps.insert(index + 1, follow_up)
            except Exception as error:  # noqa: BLE001 - said to the user; the job must still end
                self._on_error(error)
                then()
                return
            if index + 1 < len(steps):
                QTimer.singleShot(TURN_MS, lambda: run(index + 1))
            else:
                then()
        run(0)

    def _reusable_layers(self, rgb: bool, spatial_ndim: int) -> dict:
        """The open image's layers that the next image reuses (by suffix; "" the image), the rest taken out.
        Taking a layer out of napari's canvas costs far more than new data: napari collects garbage."""
        annotated, predicted = _LAYER_SUFFIXES[self.experiment.annotations]
        shown = {"": self._open_layer()}
        if annotated == LABELS_SUFFIX:
            shown.update({LABELS_SUFFIX: self._labels_layer(), PREDICTION_SUFFIX: self.dock.prediction_layer(),
                          UNCERTAINTY_SUFFIX: self._open_layer(UNCERTAINTY_SUFFIX)})
        elif annotated is not None:
            shown.update({annotated: self._open_layer(annotated), predicted: self._open_layer(predicted)})
        shown = {suffix: layer for suffix, layer in shown.items()  # points of as many dimensions as the image
                 if layer is not None and (not isinstance(layer, Points) or layer.ndim == spatial_ndim)}
        needed = [suffix for suffix in ("", annotated) if suffix is not None]  # the others are added if missing
        if not all(suffix in shown for suffix in needed) or shown[""].rgb != rgb:
            shown = {}
        self._snapshot()  # edits of the layers taken out
        for layer_name in self._layer_names():
            if layer_name in self.viewer.layers and self.viewer.layers[layer_name] not in shown.values():
                self.viewer.layers.remove(layer_name)
        return shown

    def _show_image(self, entry: Entry, image: np.ndarray, rgb: bool, shown: dict):
        layer, added = shown.get(""), None
        if layer is None:
            layer = self._open_image_layer(entry.name, image, rgb)
            if layer is None:
                layer = added = layers.add_unshown(self.viewer, Image(image, name=entry.name, rgb=rgb))
        else:
            layer.data = image
            layer.reset_contrast_limits()
            layer.name = entry.name
        shown[""] = layer
        return layers.show_step(added)

    def _show_labels(self, entry: Entry, labels: np.ndarray, shown: dict):
        """The image's labels; from now on it is the open image (an edit belongs to the image its layer is
        named after: the labels layer takes the new name and data at once)."""
        self._snapshot()
        layer, added = shown.get(LABELS_SUFFIX), None
        if layer is None:
            layer = added = layers.add_unshown(self.viewer, Labels(labels, name=f"{entry.name} {LABELS_SUFFIX}"))
            self._watch_edits(layer, LABELS_SUFFIX)
        else:
            with self._own_writes():  # new data, not an edit
                # In the layer's own dtype where the ids fit: a new dtype makes napari rebuild the layer's visual.
                kept_dtype = layers.fits(labels, layer.data.dtype)
                layer.data = labels.astype(layer.data.dtype, copy=False) if kept_dtype else labels
            layer.name = f"{entry.name} {LABELS_SUFFIX}"
        shown[LABELS_SUFFIX] = layer
        self.current = entry
        self.dock.session.shown(entry)
        self._shapes[entry.name] = " × ".join(map(str, labels.shape))
        return layers.show_step(added)

    def _show_prediction(self, entry: Entry, prediction: np.ndarray, uncertainty, confidences, shown: dict):
        self._snapshot()
        for suffix in (PREDICTION_SUFFIX, UNCERTAINTY_SUFFIX):  # renamed, then given the new data
            if shown.get(suffix) is not None:
                shown[suffix].name = f"{entry.name} {suffix}"
        before = shown.get(PREDICTION_SUFFIX)
        shown[PREDICTION_SUFFIX] = self._write_prediction(shown[""], prediction, visible=False)
        self._set_uncertainty(uncertainty, shown[PREDICTION_SUFFIX], confidences)
        return layers.show_step(shown[PREDICTION_SUFFIX] if shown[PREDICTION_SUFFIX] is not before else None)

    def _shown(self, entry: Entry, shown: dict) -> None:
        """The last step of opening an image: the dock's layer choices follow, and the job ends."""
        self._showing = False
        if self.dock.closing:
            return
        if "" in shown:
            self.dock.image_layer.value = shown[""]
        for suffix, choice in ((LABELS_SUFFIX, self.dock.labels_layer), (POINTS_SUFFIX, self.dock.points_layer)):
            if suffix in shown:
                choice.value = shown[suffix]
        with contextlib.suppress(ValueError):
            self.role.value = entry.role
        self._end_job()

    def _open_image_layer(self, name: str, image: np.ndarray, rgb: bool):
        """An Image layer of this name already in the viewer (the sample experiment's first image, added with
        it), given the image: shown once, not twice."""
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if not isinstance(layer, Image) or layer.rgb != rgb or layer.data.shape != image.shape:
            return None
        return layer

    def _write_prediction(self, image_layer, prediction: np.ndarray, visible: bool = True):
        """Show the open image's prediction in ``<image> prediction``; the user's edits of that layer are
        saved as they are made. ``visible``: of the layer, if it has to be added."""
        with self._own_writes():  # the model's labels, not an edit
            layer = layers.write_prediction(self.viewer, image_layer, prediction, (), self.dock.label_colors(),
                                            visible=visible)
        if not layer.metadata.get(_WATCHED):
            layer.metadata[_WATCHED] = True
            self._watch_edits(layer, PREDICTION_SUFFIX)
        return layer

    def _watch_edits(self, layer, suffix: str) -> None:
        for event in (layer.events.paint, layer.events.data):  # strokes, fills; new data
            event.connect(lambda *_: self._on_edit(suffix, layer))

    def _activate(self, layer) -> None:
        if layer in self.viewer.layers:
            self.viewer.layers.selection.active = layer

    # ---- points and classes (a table for the folder) ------------------------------------------------
    def _read_table_entry(self, entry: Entry, model):
        """Worker: save what is pending, read the image, its points or class and the prediction (made now
        if asked)."""
        self.write_pending()
        image, channel_axis = self.experiment.read_image(entry)
        annotation, predicted = self.experiment.read_annotation(entry), self.experiment.read_predicted(entry)
        if model is not None and annotation is None:
            predicted, _ = predict_entry(model, self.dock.model_config, self.experiment, entry,
                                         next(model.parameters()).device, (image, channel_axis))
        return entry, image, channel_axis, annotation, predicted

    def _show_table_entry(self, result) -> None:
        """Show the image read and its points (or its class) as ``_show_read_entry`` does, a layer a turn."""
        entry, image, channel_axis, annotation, predicted = result
        rgb = channel_axis is not None
        spatial = image.shape[:-1] if rgb else image.shape
        self._shapes[entry.name] = " × ".join(map(str, spatial))
        shown = self._reusable_layers(rgb, len(spatial))
        self._showing = True
        steps = [lambda: self._show_image(entry, image, rgb, shown)]
        if self.experiment.annotations == "points":
            steps += [
                lambda: self._show_points(entry, POINTS_SUFFIX, annotation, len(spatial), shown),
                lambda: self._show_points(entry, DETECTIONS_SUFFIX, predicted, len(spatial), shown),
                lambda: self._activate(shown[DETECTIONS_SUFFIX if entry.status == "predicted" else POINTS_SUFFIX])]
        else:
            steps += [lambda: self._show_class(entry, annotation, predicted), lambda: self._activate(shown[""])]
        self._in_turns(steps, then=lambda: self._shown(entry, shown))

    def _show_points(self, entry: Entry, suffix: str, value, ndim: int, shown: dict):
        """``<image> points`` (the user's, filled) or ``<image> detections`` (the model's, editable, hollow),
        with a class feature: the open image's layer, renamed and given them, or a layer added; every edit
        from now on is saved as it is made."""
        self._snapshot()
        positions, classes, scores = value if value is not None else (np.zeros((0, ndim)), [], np.zeros(0))
        positions = np.asarray(positions, np.float64).reshape(-1, ndim)
        names = self.dock.class_names()
        defaults = {"class": self.class_choice.value or (names[0] if names else "object"), "score": 1.0}
        layer, added = shown.get(suffix), None
        if layer is None:
            users = suffix == POINTS_SUFFIX
            layer = shown[suffix] = added = layers.add_unshown(self.viewer, Points(
                positions, name=f"{entry.name} {suffix}", features=_point_features(classes, scores),
                feature_defaults=defaults, scale=shown[""].scale, size=8,
                face_color="yellow" if users else "transparent", border_color="yellow" if users else "cyan",
                border_width=0.2))
            for event in (layer.events.data, layer.events.features):
                event.connect(lambda *_: self._on_edit(suffix, layer))
        else:
            layer.name = f"{entry.name} {suffix}"
            with self._own_writes():  # new data, not an edit
                layer.data, layer.features = positions, _point_features(classes, scores)
                layer.feature_defaults = defaults
        if suffix == POINTS_SUFFIX:  # from now on it is the open image
            self.current = entry
            self.dock.session.shown(entry)
        return layers.show_step(added)

    def _show_class(self, entry: Entry, annotation, predicted) -> None:
        """The image's class in Class (empty: none yet); its predicted class in the summary. From now on
        it is the open image."""
        self.current = entry
        self.dock.session.shown(entry)
        self._showing_class = True
        try:
            self.class_choice.reset_choices()
            self.class_choice.value = annotation[0] if annotation else ""
        finally:
            self._showing_class = False
        if predicted is not None and annotation is None:
            self.summary.value = self._next_step()

    def show_table_prediction(self, predicted) -> None:
        """The open image predicted (by Predict all, or when training ended): show it (a class in the summary,
        detections in their layer)."""
        if self.experiment.annotations == "classes":
            self._show_class(self.current, self.experiment.read_annotation(self.current), predicted)
            return
        layer = self._open_layer(DETECTIONS_SUFFIX)
        if layer is not None:
            positions, classes, scores = predicted
            with self._own_writes():
                layer.data = np.asarray(positions, np.float64).reshape(-1, layer.data.shape[1])
                layer.features = _point_features(classes, scores)

    def _on_class_chosen(self, name: str) -> None:
        """Classification: the user's class of the open image, saved at once. Points: the class of new
        points and of the selected ones."""
        if self._showing_class or self.current is None or self.experiment is None:
            return
        if self.experiment.annotations == "points":
            layer = self._open_layer(POINTS_SUFFIX)
            if layer is not None and name:
                layer.feature_defaults = {"class": name, "score": 1.0}
                selected = sorted(layer.selected_data)
                if selected:
                    classes = list(layer.features["class"])
                    for index in selected:
                        classes[index] = name
                    layer.features = _point_features(classes, layer.features["score"])
            return
        self._pending = (self.current, (name, 1.0) if name else None, "labelled")
        self._write_in_worker()

    def _accept_table_entry(self) -> None:
        """Points: the (corrected) detections become the image's points; none: the points as they are.
        Classification: the predicted class, or the one chosen."""
        entry = self.current
        if self.experiment.annotations == "points":
            points, detections = self._open_layer(POINTS_SUFFIX), self._open_layer(DETECTIONS_SUFFIX)
            value = self._layer_value(detections if len(detections.data) else points)
            if len(detections.data):
                with self._own_writes():
                    points.data, points.features = np.asarray(value[0]), _point_features(value[1], value[2])
                    detections.data = np.zeros((0, detections.data.shape[1]))
                self._pending_correction = None
        else:
            chosen = self.class_choice.value
            predicted = self.experiment.read_predicted(entry)
            value = (chosen, 1.0) if chosen else predicted
            if value is None:
                self.summary.value = f"{entry.name}: choose its Class first (no prediction to accept)."
                return
            self._showing_class = True
            try:
                self.class_choice.value = value[0]
            finally:
                self._showing_class = False
        self._save_timer.stop()
        self._edited.clear()
        self._pending = (entry, value, "accepted")
        self._write_in_worker()
        self.summary.value = f"{entry.name} accepted: it trains from now on."

    def _layer_value(self, layer):
        """What a layer the user edits holds, as the experiment keeps it."""
        if isinstance(layer, Points):
            features = layer.features
            count = len(layer.data)
            classes = [str(c) for c in features["class"]] if "class" in features else ["object"] * count
            scores = np.asarray(features["score"], np.float64) if "score" in features else np.ones(count)
            return np.array(layer.data), classes, scores
        return np.array(layer.data)

    def _annotation_column(self) -> str:
        annotations = "labels" if self.experiment is None else self.experiment.annotations
        object_ids = annotations == "labels" and APPLICATIONS[self.dock.application.value].object_ids
        return OBJECTS_COLUMN if object_ids else _ANNOTATION_COLUMN[annotations]

    def _annotation_cell(self, entry: Entry, column: str):
        """The table's annotation ``column``: labelled pixels or objects, points, or the image's class; for an
        image not annotated yet, the model's count of objects or points (or its class) in brackets."""
        annotated = entry.status in ANNOTATED
        if column in _COUNT_COLUMNS and not annotated and entry.predicted is not None:
            return f"({entry.predicted}?)"
        if column == OBJECTS_COLUMN:
            return "" if entry.objects is None or not annotated else entry.objects
        if self.experiment.annotations != "classes":
            return entry.annotated
        annotation = self.experiment.read_annotation(entry)
        if annotation is not None:
            return annotation[0]
        predicted = self.experiment.read_predicted(entry)
        return "" if predicted is None else f"({predicted[0]}?)"

    # ---- uncertainty --------------------------------------------------------------------------------
    def _set_uncertainty(self, uncertainty: np.ndarray | None, prediction_layer, confidences=None) -> None:
        """The open image's per-pixel uncertainty (None: not predicted, or before maps were kept): shown
        when asked, and each predicted object's confidence (``(ids, confidences)``, computed here if not
        given) as a feature of the prediction layer."""
        from ..core.uncertainty import object_confidence

        if uncertainty is not None and uncertainty.shape != prediction_layer.data.shape:
            uncertainty = None  # a map saved for another image of this name
        self._uncertainty, self._unsure, self._unsure_step = uncertainty, None, 0
        if uncertainty is None:
            confidences = ([], [])
        elif confidences is None:
            confidences = object_confidence(prediction_layer.data, uncertainty)
        ids, confidences = confidences
        prediction_layer.features = {"index": np.asarray(ids, np.int64), "confidence": np.asarray(confidences)}
        self._show_uncertainty_layer()

    def _show_uncertainty_layer(self) -> None:
        """``<image> uncertainty`` while Show uncertainty is ticked and the image has a map; made once, then
        given each image's map (or emptied)."""
        if self.current is None:
            return
        name = f"{self.current.name} {UNCERTAINTY_SUFFIX}"
        existing = self._open_layer(UNCERTAINTY_SUFFIX)
        if not self.show_uncertainty.value or self._uncertainty is None:
            if existing is not None:
                self.viewer.layers.remove(existing)
            return
        if existing is not None and existing.data.shape == self._uncertainty.shape:
            existing.data = self._uncertainty
            return
        if existing is not None:
            self.viewer.layers.remove(existing)
        image_layer = self.viewer.layers[self.current.name]
        self.viewer.add_image(self._uncertainty, name=name, colormap="magma", contrast_limits=(0.0, 1.0),
                              opacity=0.5, blending="additive", scale=image_layer.scale[-2:],
                              translate=image_layer.translate[-2:])

    def next_unsure_object(self, *_) -> None:
        """Centre the camera on the next predicted object, least confident first, and say how sure the
        model was of it; the list is made from the prediction as it is at the first click."""
        from scipy import ndimage

        from ..core.uncertainty import least_confident

        prediction = self.dock.prediction_layer()
        if self._uncertainty is None or prediction is None:
            self.summary.value = "No uncertainty for this image: predict it first (Next, or Predict all)."
            return
        if self._unsure is None:
            labels = np.asarray(prediction.data)
            ranked = least_confident(labels, self._uncertainty)
            centres = ndimage.center_of_mass(labels > 0, labels, [i for i, _ in ranked]) if ranked else []
            self._unsure = [(i, c, centre) for (i, c), centre in zip(ranked, centres)]
            self._unsure_step = 0
        if not self._unsure:
            self.summary.value = f"No object predicted in {self.current.name}."
            return
        object_id, confidence, centre = self._unsure[self._unsure_step % len(self._unsure)]
        self.viewer.camera.center = tuple(prediction.data_to_world(centre))
        self.viewer.layers.selection.active = prediction
        prediction.selected_label = object_id  # the brush is ready to correct it
        self.summary.value = (f"Object {object_id} of {self.current.name}: confidence {confidence:.2f} "
                              f"({self._unsure_step % len(self._unsure) + 1} of {len(self._unsure)}, least sure "
                              "first).")
        self._unsure_step += 1

    def close_experiment_layers(self) -> None:
        for name in self._layer_names():
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)

    # ---- saving -------------------------------------------------------------------------------------
    def _open_layer(self, suffix: str = ""):
        """The open image's layer (``suffix`` empty) or its ``<image> <suffix>`` layer, if in the viewer."""
        if self.current is None:
            return None
        name = f"{self.current.name} {suffix}" if suffix else self.current.name
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _labels_layer(self):
        return self._open_layer(LABELS_SUFFIX)

    @contextlib.contextmanager
    def _own_writes(self):
        """The panel itself writes into the open image's layers: not an edit of the user's to save."""
        self._setting_labels = True
        try:
            yield
        finally:
            self._setting_labels = False

    def _on_edit(self, suffix: str, layer) -> None:
        if not self._setting_labels:
            self._edited[suffix] = layer
            self._save_timer.start()  # restarted by every stroke: saved once the edits settle

    def _snapshot(self, settled: bool = False) -> None:
        """GUI thread: copy the layers edited since the last copy (``settled``: the autosave delay is
        over); a worker writes them. An edit belongs to the image the layer is named after when copied: a
        layer takes the next image's name and data together, while the image opens."""
        if not (settled or self._save_timer.isActive()) or self.experiment is None:
            return
        self._save_timer.stop()
        edited, self._edited = self._edited, {}
        annotated, predicted = _LAYER_SUFFIXES[self.experiment.annotations]
        for suffix, layer in edited.items():
            entry = self._entry_of(layer, suffix)
            if entry is None:
                continue
            if suffix == predicted:
                self._pending_correction = (entry, self._layer_value(layer))
                continue
            if self._pending is not None and self._pending[0] is not entry:
                self.write_pending()  # another image's labels, not yet written: never overtaken
            accepted = self._pending is not None and self._pending[2] == "accepted"  # touched up after Accept
            self._pending = (entry, self._layer_value(layer), "accepted" if accepted else "labelled")

    def _entry_of(self, layer, suffix: str) -> Entry | None:
        name = layer.name.removesuffix(f" {suffix}")
        if name == layer.name:
            return None
        with contextlib.suppress(KeyError):
            return self.experiment[name]
        return None

    def write_pending(self) -> None:
        """Any thread: write the last snapshots, if any (one write at a time, the latest labels last)."""
        with self._save_lock:
            pending, self._pending = self._pending, None
            correction, self._pending_correction = self._pending_correction, None
            if correction is not None:
                self.experiment.save_predicted(*correction, corrected=True)
            if pending is not None:
                self.experiment.save_annotation(*pending)

    def save_soon(self) -> None:
        """The edits settled: write them in a worker."""
        self._snapshot(settled=True)
        self._write_in_worker()

    def _write_in_worker(self) -> None:
        if self._pending is not None or self._pending_correction is not None:
            create_background_worker(self.write_pending, _connect={
                "returned": lambda _: self.refresh(), "errored": self._on_error})

    def save_now(self) -> None:
        """Save pending edits before this thread goes on (Train reads the files; napari closes)."""
        if self.experiment is not None:
            self._snapshot()
            self.write_pending()

    def flush_for_training(self) -> None:
        """Snapshot pending edits: the training worker writes them before it reads the labels."""
        self._snapshot()

    # ---- accepting, roles ---------------------------------------------------------------------------
    def accept(self, *_) -> None:
        """The (corrected) prediction becomes the image's labels; without one (an empty prediction layer),
        the labels as they are."""
        if self.current is None:
            return
        if self.experiment.table is not None:
            self._accept_table_entry()
            return
        entry, labels_layer = self.current, self._labels_layer()
        prediction = self.dock.prediction_layer()
        if prediction is not None and not prediction.data.any():
            prediction = None
        accepted = np.array(prediction.data if prediction is not None else labels_layer.data)
        if prediction is not None:
            with self._own_writes():
                labels_layer.data = accepted.astype(np.uint16, copy=False)
            QTimer.singleShot(TURN_MS, lambda: self._empty_accepted_prediction(entry, prediction))
        self._save_timer.stop()
        self._edited.pop(LABELS_SUFFIX, None)
        if prediction is not None:  # the corrections are the labels now
            self._edited.pop(PREDICTION_SUFFIX, None)
            self._pending_correction = None
        self._pending = (entry, accepted, "accepted")  # written in turn with the edits: never overtaken
        self._write_in_worker()
        self.summary.value = f"{entry.name} accepted: it trains from now on."

    def _empty_accepted_prediction(self, entry: Entry, prediction) -> None:
        """The accepted prediction is the labels now: its layer is emptied, kept for the next image (a turn
        after the labels: napari draws those first). Edited in between, it stays as the user left it."""
        if self.dock.closing or self.current is not entry or PREDICTION_SUFFIX in self._edited:
            return
        with self._own_writes():
            prediction.data = np.zeros_like(prediction.data)
        self._set_uncertainty(None, prediction)

    def _show_runs(self, idle: bool) -> None:
        experiment = self.experiment
        runs = [] if experiment is None else experiment.runs
        choices = [(run.describe() + (" (in use)" if run.number == experiment.run_in_use else ""), run.number)
                   for run in runs]
        self.runs.enabled = idle and len(runs) > 1
        in_use = None if experiment is None else experiment.run_in_use
        shown_in_use = in_use in [number for _, number in choices]
        if choices == self._run_choices and (self.runs.value == in_use or not shown_in_use):
            return  # as shown: choices rebuilt would repaint the dock
        self._run_choices = choices
        self._showing_runs = True
        try:
            self.runs.reset_choices()
            if shown_in_use:
                self.runs.value = in_use
        finally:
            self._showing_runs = False

    def _on_run_chosen(self, number) -> None:
        from ..core.models import resolve_device

        if self._showing_runs or number is None or number == self.experiment.run_in_use:
            return
        try:
            self.dock.session.use_run(number, resolve_device())
        except (ValueError, OSError) as error:
            show_error(f"Cannot use run {number}: {error}")
            return
        self.dock.show_model(f"Run {number} of {self.experiment.folder.name} is the model in use.")
        self.refresh()

    def _on_role(self, role: str) -> None:
        if self.current is not None and self.current.role != role:
            self.experiment.set_role(self.current, role)
            self.refresh()

    # ---- predict all --------------------------------------------------------------------------------
    def predict_all(self, *_) -> None:
        """Predict every image not labelled or accepted, in a worker; each is saved as it finishes."""
        from ..core.experiment import predict_all

        dock = self.dock
        if self.experiment is None or dock.model is None or dock.session.busy:
            return
        self.save_now()
        entries = self.experiment.entries_to_predict()
        self._predicted = 0
        worker = create_background_worker(
            predict_all, dock.model, dock.model_config, self.experiment, entries,
            next(dock.model.parameters()).device,
            _connect={"yielded": self._on_image_predicted, "errored": self._on_error,
                      "finished": lambda: self._on_predict_all_finished(entries)}, _start_thread=False)
        if dock.start_prediction_job(worker, f"Predicting {len(entries)} images…"):
            self.refresh()

    # ---- counts --------------------------------------------------------------------------------------
    def _ask_counts(self, *_) -> None:
        from qtpy.QtWidgets import QFileDialog

        if self.experiment is None:
            return
        path, _ = QFileDialog.getSaveFileName(None, "Export counts", str(self.experiment.folder / "counts.csv"),
                                              "CSV (*.csv)")
        if path:
            self.export_counts(path)

    def export_counts(self, path: str | Path) -> None:
        """Write every image's count in a worker (label files not counted yet are read)."""
        self.save_now()
        create_background_worker(self.experiment.write_count_table, path, _connect={
            "returned": lambda counted: show_info(f"Counts of {counted} images written to {path}"),
            "errored": self._on_error})

    def _on_image_predicted(self, event: ImagePredicted) -> None:
        self._predicted = event.done
        self.dock.progress.max, self.dock.progress.value = event.total, event.done
        if self.current is not None and event.name == self.current.name and self.experiment.table is not None:
            self.show_table_prediction(event.labels)
        elif self.current is not None and event.name == self.current.name and self._labels_layer() is not None:
            prediction_layer = self._write_prediction(self.viewer.layers[self.current.name], event.labels)
            self._set_uncertainty(event.uncertainty, prediction_layer)
        self.refresh()

    def _on_predict_all_finished(self, entries: list[Entry]) -> None:
        self.dock.on_prediction_finished()
        stopped = "stopped: " if self._predicted < len(entries) else ""
        found, column = "", self._annotation_column()
        if column in _COUNT_COLUMNS:
            counts = [e.predicted for e in entries[:self._predicted] if e.predicted is not None]
            found = f", {sum(counts)} {column.lower()} found"
        self.summary.value = (f"Predict all {stopped}{self._predicted} of {len(entries)} images predicted{found} "
                              f"(saved in {self.experiment.folder / 'predictions'}).")
        self.dock.status.value = self.summary.value
        self.refresh()

    # ---- predicting the next image ahead -------------------------------------------------------------
    def _look_ahead(self) -> None:
        """Predict the image Next goes to in the background (at low priority), while the user corrects this
        one: Next then shows it with its prediction at once. Any job the user starts stops it."""
        if (self._ahead_worker is not None or self.current is None or self.dock.model is None or self.dock.closing
                or self.experiment is None):
            return
        started = self.dock.session.look_ahead(self.current, self.order.value)
        if started is None or started[0].name in self._ahead_failed:
            return
        self._ahead_entry, run = started
        self._ahead_worker = create_background_worker(_consume, run, _connect={
            "returned": self._on_predicted_ahead, "errored": self._on_ahead_error,
            "finished": self._on_ahead_finished})

    def stop_look_ahead(self) -> None:
        self.dock.session.stop_look_ahead()
        self._open_after_ahead = None

    def _on_order(self, _order: str) -> None:
        """Next goes elsewhere now: the look-ahead follows (a running one ends first, then starts again)."""
        self.dock.session.stop_look_ahead()
        self._look_ahead()

    def shutdown(self) -> None:
        """napari closes: stop the look-ahead (at its next tile; the dock waits for its workers)."""
        self._ahead_timer.stop()
        self.stop_look_ahead()
        worker, self._ahead_worker = self._ahead_worker, None
        if worker is not None:
            for signal in (worker.returned, worker.errored, worker.finished):
                signal.disconnect()  # the widgets these update are being deleted

    def _on_predicted_ahead(self, entry: Entry | None) -> None:
        if entry is not None and self.experiment is not None:
            self.refresh()

    def _on_ahead_error(self, error: Exception) -> None:
        if self._ahead_entry is not None:
            self._ahead_failed.add(self._ahead_entry.name)

    def _on_ahead_finished(self) -> None:
        self._ahead_worker = self._ahead_entry = None
        index, self._open_after_ahead = self._open_after_ahead, None
        if index is not None:
            self.show_entry(index, predict=True)
        elif self.experiment is not None and not self.dock.session.busy:
            self._look_ahead()  # the target may have changed meanwhile (the order, a new model)

    # ---- jobs ---------------------------------------------------------------------------------------
    def _on_job_finished(self) -> None:
        if not self._showing:  # else the last step of showing the image ends the job
            self._end_job()

    def _end_job(self) -> None:
        self.dock.worker = None
        self.dock.session.end()
        self.dock.set_running(False)  # which refreshes the table and buttons

    def _on_error(self, error: Exception) -> None:
        name = "" if self.current is None else f" ({self.current.name})"
        show_error(f"napari-mia experiment{name}: {error}")


def _consume(run):
    return (yield from run)


def _point_features(classes, scores):
    """A Points layer's class (text) and score columns, typed even when empty (pandas would read an
    empty column as numbers, and then refuse the first class name)."""
    import pandas as pd

    return pd.DataFrame({"class": pd.Series(list(classes), dtype=object),
                         "score": pd.Series(np.asarray(scores, np.float64))})


def _table_value(rows: list[list], annotation_column: str = "Labelled") -> dict:
    """Rows for magicgui's Table, numbered from 1 (without "index" it reads the keys as column names)."""
    columns = [annotation_column if c == "Labelled" else c for c in _COLUMNS]
    return {"data": rows, "index": list(range(1, len(rows) + 1)), "columns": columns}
