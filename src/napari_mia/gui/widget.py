"""The "MIA Training" dock widget: MIA's Training window as a napari dock, training in a thread worker."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import WorkerBase
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QComboBox, QSizePolicy

from ..core.config import (
    APPLICATIONS,
    AUTO,
    BACKBONES,
    FIELDS_FIXED_BY_MODEL,
    ConfigError,
    TrainingConfig,
    architectures_for,
    default_classes,
    losses_for,
)
from ..core.events import BatchEnd, EpochEnd, Preview, TrainingDone
from ..core.models import available_devices
from ..core.postprocess import counting_rule
from ..core.session import RunKept, Session, SessionBusy, TrainerReady
from ..core.weights import describe, find_weights
from . import config_panel, layers
from .background import TURN_MS, create_background_worker, freeze_startup_objects, prepare_layers
from .experiment_panel import TRAIN_KEY, ExperimentPanel
from .model_files import ModelFileActions
from .prediction import PredictionActions
from .train_plot import TrainDataWindow

logger = logging.getLogger(__name__)
# Seconds between status/progress updates in the dock while a worker runs. Any repaint of napari's window
# recomposites its OpenGL canvas: on a software renderer that takes both cores from PyTorch for 20-50 ms
# and cost 15% of training throughput at 0.5 s. While the Train Data window (its own window) shows a
# training run, the dock does not update at all.
_STATUS_INTERVAL = 3.0
_SETTLE_MS = 200  # a job starts this long after its button is pressed, once the window has repainted


class _CloseWatcher(QObject):
    """Calls ``on_close`` when the window holding ``dock`` closes or the dock is taken out of it."""

    def __init__(self, dock, on_close):
        super().__init__(dock)
        self._dock, self._on_close = dock, on_close
        dock.installEventFilter(self)
        dock.window().installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        undocked = event.type() == QEvent.Type.ParentChange and watched is self._dock and watched.parent() is None
        if event.type() == QEvent.Type.Close or undocked:
            self._on_close()
        return False


class _NarrowestWidth(QObject):
    """Keeps a scroll area at least as wide as its content's minimum (re-read whenever its layout changes,
    e.g. a section unfolds), so that dragging the dock narrower never clips a button; and wide enough that
    the folder table's Image column stays readable."""

    READABLE = 450

    def __init__(self, scroll_area):
        super().__init__(scroll_area)
        self._area = scroll_area
        scroll_area.widget().installEventFilter(self)
        self._fit()

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.LayoutRequest:
            self._fit()
        return False

    def _fit(self) -> None:
        content = self._area.widget().minimumSizeHint().width()
        chrome = self._area.verticalScrollBar().sizeHint().width() + 2 * self._area.frameWidth()
        self._area.setMinimumWidth(max(content + chrome, self.READABLE))


class MiaWidget(PredictionActions, ModelFileActions, Container):
    """Label, train, predict, correct, retrain: the whole loop in one dock."""

    @property
    def native(self):
        """The scroll area around the controls. napari docks ``.native``, which magicgui makes the widget
        inside the scroll area (magicgui#431): the dock then could not scroll, and its 1000-px minimum
        height forced napari's window taller than most screens."""
        return self.root_native_widget

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(scrollable=True, labels=False)  # sections label their own fields; the folder view spans
        self.viewer = napari_viewer
        self.session = Session()  # the user's work: the dock shows it and forwards clicks to it
        self.worker = None  # the thread running the session's job
        self._closing = False
        self._close_watcher = None
        self._training_layer = None
        self._training_subject = ""  # how messages name what the run learns from
        self._run_application = None
        self._preview_index: tuple[int, ...] = ()
        self._last_status_update = -math.inf  # nothing shown yet: the first update always shows
        self._pending_text: str | None = None
        self._pending_step: int | None = None
        self._pending_total: int | None = None
        self._cancelled = False
        self._run_ended_well = False  # the last training run ended without an error (then it predicts)
        self.predicted_frame_classes = ""
        self._predicted_index: tuple | None = None  # the frame (or region) the last prediction covers

        self._make_controls(TrainingConfig())
        # What each control's tooltip says while no model fixes it (set_running restores them).
        self._own_tooltips = {name: control.tooltip for name, control in self._config_controls().items()}
        self._lay_out()
        self._connect_controls()
        self._on_application(self.application.value)
        self.native.setMaximumWidth(560)  # leave the canvas its room
        for choice in self.native.findChildren(QComboBox):  # a 64-character layer name never widens the dock
            choice.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            choice.setMinimumContentsLength(8)
        self._width_keeper = _NarrowestWidth(self.native)
        prepare_layers()  # while the dock opens, not at the first click (see gui/background.py)
        freeze_startup_objects()
        # Status text changes often during training; it must never resize the dock (and so the canvas).
        self.status.native.setWordWrap(True)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.status.native.setMinimumHeight(2 * self.status.native.fontMetrics().height())

    # ---- what the session holds, as the dock shows it ---------------------------------------------------
    @property
    def closing(self) -> bool:
        """napari (or the dock) is closing: what a job left to do in the GUI is not done."""
        return self._closing

    @property
    def model(self):
        return self.session.model

    @property
    def model_config(self) -> TrainingConfig | None:
        return self.session.config

    @property
    def history(self) -> list:
        return self.session.history

    @property
    def trainer(self):
        return self.session.trainer

    def _make_controls(self, defaults: TrainingConfig) -> None:
        """The Training window's controls (MIA's names), the buttons and the panels."""
        self.application = ComboBox(label="Application", value=defaults.application,
                                    choices=[(a.title, name) for name, a in APPLICATIONS.items()])
        self.image_layer = create_widget(annotation=napari.layers.Image, label="Image")
        self.labels_layer = create_widget(annotation=napari.layers.Labels, label="Labels")
        self.points_layer = create_widget(annotation=napari.layers.Points, label="Points")
        self.frame_classes = LineEdit(label="Frame classes", value="")
        self.frame_classes.tooltip = ("Class name of every frame of the image, comma-separated; "
                                      "leave a frame empty to leave it out of training")
        self.objects_layer = create_widget(annotation=napari.layers.Labels | None, label="Objects to classify")
        self.object_size = LineEdit(label="Object Size (px)", value=_to_control("object_size", defaults.object_size))
        self.object_size.tooltip = "Typical object diameter in pixels, or auto: measured around the points"
        self.validation_image = create_widget(annotation=napari.layers.Image | None, label="Validation image")
        self.validation_labels = create_widget(annotation=napari.layers.Labels | None,
                                               label="Validation labels")
        # Choices that follow the application, also when napari resets the dock's choices (a layer added).
        self.architecture = ComboBox(label="Deep Learning Architecture", value=defaults.architecture,
                                     choices=lambda _: architectures_for(self.application.value))
        self.backbone = ComboBox(label="Model Backbone", choices=BACKBONES, value=defaults.backbone)
        self.pretrained = CheckBox(text="Pretrained Net (ImageNet weights)", value=defaults.pretrained)
        self.pretrained_path = LineEdit(label="Weights file", value="")
        self.classes = LineEdit(label="Classes", value="background, foreground")
        self._color_auto_text = AUTO  # "auto (color: 3 of 8 images in colour)" once a run chose
        self.color_mode = ComboBox(label="Color / Mono", value=defaults.color_mode,
                                   choices=lambda _: _color_choices(self._color_auto_text))
        self.color_mode.tooltip = "auto: Color as soon as one training image is colour"
        self.input_channels = SpinBox(label="Input Channels", value=defaults.input_channels or 1, min=1, max=64,
                                      enabled=defaults.color_mode != AUTO)
        self.batch_size = SpinBox(label="Batch Size", value=defaults.batch_size, min=1, max=2048)
        self.epochs = SpinBox(label="Epochs", value=defaults.epochs, min=1, max=100_000)
        self.learning_rate = FloatSpinBox(label="Learning Rate", value=defaults.learning_rate, min=1e-6, max=1.0,
                                          step=1e-4)
        self.learning_rate.native.setDecimals(6)
        self.downscale = LineEdit(label="Down Scaling", value=_to_control("downscale", defaults.downscale))
        self.downscale.tooltip = ("0.1 to 1, or auto: from the median object size of the labels, objects brought "
                                  "towards 30 px across; for instance segmentation auto also rescales every image "
                                  "so that its objects reach the size learned (a number: the same for all images)")
        self.patch_size = SpinBox(label="Patch size", value=defaults.patch_size, min=32, max=2048, step=32)
        self.validation_fraction = FloatSpinBox(label="Validation split", value=defaults.validation_fraction,
                                                min=0.0, max=0.9, step=0.05)
        self.device = ComboBox(label="Device", choices=available_devices(), value=defaults.device)
        self.sparse = CheckBox(text="Sparse labels (0 = unlabelled)", value=defaults.sparse_labels)
        self.predict_after = CheckBox(text="Predict when training ends", value=True)
        self.current_frame_only = CheckBox(text="Predict current frame only (off: all frames)", value=True)
        self.visible_region_only = CheckBox(text="Predict visible region only", value=False)
        self.test_time_augmentation = CheckBox(text="Test-time augmentation (4x slower)",
                                               value=defaults.test_time_augmentation)
        self.test_time_augmentation.tooltip = "The mean of the predictions of 4 flips of the image"
        self.train_button = PushButton(text="Train (⇧T)")
        self.train_button.tooltip = (f"Train on what you annotated (key: {TRAIN_KEY}); a model that exists goes on "
                                     "learning")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.resume_button = PushButton(text="Resume", enabled=False)
        self.predict_button = PushButton(text="Predict", enabled=False)
        self.use_prediction_button = PushButton(text="Use as training labels", enabled=False)
        self.save_button = PushButton(text="Save model", enabled=False)
        self.load_button = PushButton(text="Load model")
        self.export_button = PushButton(text="Export model…", enabled=False)
        self.measure_button = PushButton(text="Export measurements…", enabled=False)
        self.reset_button = PushButton(text="Reset model", enabled=False)
        self.settings = config_panel.settings_panel(
            defaults, choices={"loss": lambda _: losses_for(self.application.value)})
        self.augmentations = config_panel.augmentations_panel(defaults.augmentations)
        self.preview_augmentations_button = PushButton(text="Preview augmentations")
        self.augmentations.append(self.preview_augmentations_button)
        self.settings_button = PushButton(text="Settings ▸")
        self.augmentations_button = PushButton(text="Augmentations ▸")
        self.settings.visible = self.augmentations.visible = False
        # Made now, shown by Train: building its plots would add a twentieth of a second to the click.
        self.train_data = TrainDataWindow(stop=self.stop_training, resume=self.resume_training)
        self.progress = ProgressBar(label="Progress", value=0, max=1)
        self.status = Label(label="Status", value="Label some pixels, then Train.")
        self.experiment_panel = ExperimentPanel(self)
        self.experiment_title = Label(value="<b>Experiment (a folder of images)</b>")

    def _lay_out(self) -> None:
        """The loop on the dock's first screen (Application, Train, the status, the folder); MIA's Training
        Window (the model, the training parameters, Settings, Augmentations, the model files, Start Training)
        in a window of its own; the images already open in napari as a section of their own."""
        self.start_training_button = PushButton(text="Start Training")
        self.start_training_button.tooltip = self.train_button.tooltip
        self.training_window = Container(scrollable=True, widgets=[
            Label(value="<b>Deep Learning Model</b>"),
            self.architecture, self.backbone, self.pretrained, self.pretrained_path,
            Label(value="<b>Training Parameter</b>"),
            self.classes, self.object_size, self.color_mode, self.input_channels, self.batch_size, self.epochs,
            self.learning_rate, self.downscale, self.patch_size, self.validation_fraction, self.device, self.sparse,
            self.settings_button, self.settings, self.augmentations_button, self.augmentations,
            Label(value="<b>Model file</b>"),
            Container(widgets=[self.save_button, self.load_button, self.reset_button, self.export_button],
                      layout="horizontal", labels=False),
            self.start_training_button,
        ])
        self.open_layers = Container(widgets=[
            self.image_layer, self.labels_layer, self.points_layer, self.frame_classes,
            self.objects_layer, self.validation_image, self.validation_labels,
            self.predict_after, self.current_frame_only, self.visible_region_only, self.test_time_augmentation,
            Container(widgets=[self.predict_button, self.use_prediction_button], layout="horizontal",
                      labels=False),
            self.measure_button,
        ])
        self.training_window_button = PushButton(text="Training Window…")
        self.training_window_button.tooltip = ("MIA's Training Window: the model, the training parameters, "
                                               "Settings, Augmentations and the model files")
        self.open_layers_button = PushButton(text="Images open in napari ▸")
        self.open_layers_button.tooltip = "Train on, and predict, one image already open in napari (no folder)"
        self.extend([
            Container(widgets=[self.application]),
            Container(widgets=[self.train_button, self.stop_button, self.resume_button], layout="horizontal",
                      labels=False),
            self.progress, self.status, self.experiment_title, self.experiment_panel,
            self.training_window_button, self.open_layers_button, self.open_layers,
        ])
        self.open_layers.visible = False

    def _connect_controls(self) -> None:
        self.train_button.changed.connect(self.start_training)
        self.stop_button.changed.connect(self.stop_training)
        self.resume_button.changed.connect(self.resume_training)
        self.predict_button.changed.connect(self.start_prediction)
        self.use_prediction_button.changed.connect(self.use_prediction_as_labels)
        self.save_button.changed.connect(self._ask_save)
        self.load_button.changed.connect(self._ask_load)
        self.reset_button.changed.connect(self.reset_model)
        self.export_button.changed.connect(self._ask_export)
        self.measure_button.changed.connect(self._ask_measurements)
        toggle_section = config_panel.toggle_section
        self.settings_button.changed.connect(lambda: toggle_section(self.settings, self.settings_button))
        self.training_window_button.changed.connect(self.show_training_window)
        self.start_training_button.changed.connect(self.start_training)
        self.open_layers_button.changed.connect(lambda: toggle_section(self.open_layers, self.open_layers_button))
        self.augmentations_button.changed.connect(
            lambda: toggle_section(self.augmentations, self.augmentations_button))
        self.preview_augmentations_button.changed.connect(self.preview_augmentations)
        self.color_mode.changed.connect(self._on_color_mode)
        self.backbone.changed.connect(self._on_backbone)
        self._on_backbone(self.backbone.value)
        self.labels_layer.changed.connect(self._classes_from_labels)
        self.points_layer.changed.connect(self._classes_from_labels)
        self.frame_classes.changed.connect(self._classes_from_labels)
        self.application.changed.connect(self._on_application)
        self.viewer.bind_key(TRAIN_KEY, lambda _viewer: self.start_training(), overwrite=True)
        self.viewer.layers.events.inserted.connect(self.reset_choices)
        self.viewer.layers.events.removed.connect(self.reset_choices)

    # ---- settings ---------------------------------------------------------------------------------
    def show_open_layers(self, shown: bool) -> None:
        """The one-pair layer choices fold away while a folder is open (the folder is what trains)."""
        config_panel.toggle_section(self.open_layers, self.open_layers_button, shown)

    def _on_color_mode(self, mode: str) -> None:
        self.input_channels.enabled = mode != AUTO and self.model_config is None
        if mode != AUTO:
            self.input_channels.value = 3 if mode == "color" else 1

    def _on_backbone(self, backbone: str) -> None:
        """Pretrained Net is on for a backbone whose ImageNet weights are on this machine; its tooltip
        names the file."""
        weights = find_weights(backbone)
        self._own_tooltips["pretrained"] = f"ImageNet weights: {weights}" if weights else (
            f"No ImageNet weights for {backbone} on this machine: name a file below, or train from scratch")
        if self.model_config is None:
            self.pretrained.value = weights is not None
            self.pretrained.tooltip = self._own_tooltips["pretrained"]

    def _show_choices(self, config: TrainingConfig, choices: list) -> None:
        """The run's data-driven choices in their fields ("auto (0.55: median object 46 px)") and the weights
        it starts from in the status line; called on the GUI thread once the worker chose them."""
        controls = self._config_controls()
        for choice in choices:
            if choice.field == "color_mode":
                self._color_auto_text = choice.text
                self.color_mode.reset_choices()
            elif choice.field in controls:  # the scale per image is told in Down Scaling's
                controls[choice.field].value = choice.text
        self.input_channels.value = config.input_channels
        extended = "" if config.epochs == self.epochs.value else (
            f" {config.epochs} epochs: at least {config.min_batches} batches (Settings).")
        self._show_status(f"Training {describe(config)}.{extended}", now=True)

    def _on_application(self, application: str) -> None:
        """Show the inputs this application trains from; a new application needs a new model (as in MIA)."""
        if self.session.state == "training":  # the run builds a model of the application it started with
            if application != self._run_application:
                show_error("Cannot change the Application while training runs: stop it first.")
                self.application.value = self._run_application
            return
        if self.model_config is not None and self.model_config.application != application:
            self.reset_model()
        chosen = APPLICATIONS[application]
        label_images = chosen.label_images
        self.labels_layer.visible = self.validation_labels.visible = self.validation_image.visible = label_images
        self.points_layer.visible = self.object_size.visible = chosen.points
        self.frame_classes.visible = self.objects_layer.visible = chosen.image_classes
        self.sparse.visible = chosen.sparse_labels
        self.experiment_panel.reopen_for(APPLICATIONS[application].annotations)
        self.experiment_panel.class_choice.visible = not label_images
        self.sparse.value = self.sparse.value and chosen.sparse_labels
        self.test_time_augmentation.value = APPLICATIONS[application].test_time_augmentation
        self.architecture.reset_choices()
        self.architecture.value = architectures_for(application)[0]
        loss = self.settings["loss"]
        loss.reset_choices()
        loss.value = losses_for(application)[0]
        self.use_prediction_button.text = chosen.use_prediction_text
        self.classes.value = ", ".join(default_classes(application))
        self._classes_from_labels()

    def _classes_from_labels(self, *_) -> None:
        """Offer the classes the annotations use (names stay editable): one per label value, the
        points' class names, or the frame classes."""
        if self.model_config is not None:
            return
        application = APPLICATIONS[self.application.value]
        experiment = self._open_experiment()
        if experiment is not None and experiment.table is not None:
            names = experiment.class_names()
            if len(names) >= application.min_classes:
                self.classes.value = ", ".join(names)
            return
        if application.points:
            layer = self.points_layer.value
            names = layers.point_class_names(layer) if layer is not None else []
            if names:
                self.classes.value = ", ".join(names)
            return
        if application.image_classes:
            names = sorted({n.strip() for n in self.frame_classes.value.split(",") if n.strip()})
            if len(names) >= 2:
                self.classes.value = ", ".join(names)
            return
        layer = self.labels_layer.value
        if layer is None or application.object_ids:
            return
        names = [n.strip() for n in self.classes.value.split(",") if n.strip()]
        highest = int(np.max(layer.data)) if np.size(layer.data) else 0
        needed = max(2, highest + (0 if self.sparse.value else 1))
        names = (names + [f"class {i}" for i in range(len(names), needed)])[:needed]
        self.classes.value = ", ".join(names)

    def _config_controls(self) -> dict:
        """The dock's controls by the config field they show: the one map, read by ``config`` and written
        by ``_show_config`` (the Settings and Augmentations sections map themselves)."""
        return {
            "application": self.application, "object_size": self.object_size,
            "architecture": self.architecture, "backbone": self.backbone, "pretrained": self.pretrained,
            "pretrained_path": self.pretrained_path, "classes": self.classes, "color_mode": self.color_mode,
            "input_channels": self.input_channels, "batch_size": self.batch_size, "epochs": self.epochs,
            "learning_rate": self.learning_rate, "downscale": self.downscale, "patch_size": self.patch_size,
            "validation_fraction": self.validation_fraction, "sparse_labels": self.sparse, "device": self.device,
            "test_time_augmentation": self.test_time_augmentation,
        }

    def config(self) -> TrainingConfig:
        """The Training window's fields as a validated config (raises ConfigError with the field name).
        With a model, the fields fixed by it and those the dock does not show stay as the model has them."""
        values = {name: _from_control(name, control.value) for name, control in self._config_controls().items()}
        if values["color_mode"] == AUTO:
            values["input_channels"] = None  # follows the colour mode the data decides
        values.update(config_panel.settings_values(self.settings),
                      augmentations=config_panel.augmentation_values(self.augmentations))
        if self.model_config is None:
            return TrainingConfig(**values)
        return self.model_config.replace(
            **{name: v for name, v in values.items() if name not in FIELDS_FIXED_BY_MODEL})

    def _show_config(self, config: TrainingConfig) -> None:
        for name, control in self._config_controls().items():  # application first: it sets the choices
            value = _to_control(name, getattr(config, name))
            if not isinstance(control, ComboBox) or value in control.choices:  # e.g. a GPU this machine lacks
                control.value = value
        config_panel.show_values(self.settings, config)
        config_panel.show_values(self.augmentations, config.augmentations)

    def preview_augmentations(self, *_) -> None:
        """Show a batch of augmented training patches (image + labels) as the network sees them."""
        from ..core.augment import build_train_transform, preview_patches
        from ..core.data import IGNORE, make_dataset

        try:
            config = self.config()
            config, _, samples, _ = self._sample_builder(config.replace(validation_fraction=0.0))()
            dataset = make_dataset(samples, config, build_train_transform(config))
        except (ValueError, AttributeError) as error:  # AttributeError: no layer chosen
            show_error(f"Cannot preview augmentations: {error}")
            return
        images, labels = preview_patches(dataset, count=8)
        for name in ("augmentation preview", "augmentation preview labels", "augmentation preview heatmaps"):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.viewer.add_image(images[:, 0] if images.shape[1] == 1 else np.moveaxis(images, 1, -1),
                              name="augmentation preview", rgb=images.shape[1] == 3)
        if labels.ndim == 4:  # detection: the heatmaps the network learns, strongest class
            self.viewer.add_image(np.clip(labels.max(axis=1), 0, 1), name="augmentation preview heatmaps",
                                  colormap="magenta", blending="additive")
        elif labels.ndim == 3:
            shown_labels = np.where(labels == IGNORE, 0, labels + int(config.sparse_labels)).astype(np.uint16)
            self.viewer.add_labels(shown_labels, name="augmentation preview labels")
        else:
            self.status.value = "Augmented frames of classes: " + ", ".join(config.classes[i] for i in labels)

    def _show_status(self, text: str | None = None, step: int | None = None, total: int | None = None,
                     now: bool = False) -> None:
        """Show ``text`` (and move the progress bar to ``step`` of ``total``) at most every
        ``_STATUS_INTERVAL``, and not while Train Data shows a training run; what arrives in between waits
        for the next update, or for ``now``."""
        self._pending_text = text or self._pending_text
        self._pending_step = self._pending_step if step is None else step
        self._pending_total = self._pending_total if total is None else total
        clock = time.perf_counter()
        shown_elsewhere = self.session.state != "predicting" and self.train_data.isVisible()
        if self._pending_text is None or (not now and (
                shown_elsewhere or clock - self._last_status_update < _STATUS_INTERVAL)):
            return
        self._last_status_update = clock
        self.status.value = self._pending_text
        if self._pending_total is not None:
            self.progress.max = self._pending_total
        if self._pending_step is not None:
            self.progress.value = self._pending_step
        self._pending_text = self._pending_step = self._pending_total = None

    # ---- training ---------------------------------------------------------------------------------
    def start_training(self, *_) -> None:
        """Train on every image of the open experiment (semantic, instance), or on a snapshot of the
        chosen layers, continuing from the current weights if any. Samples are built in the worker."""
        image_layer, experiment = self.image_layer.value, self._open_experiment()
        annotations = "the experiment" if experiment is not None else self._annotation_layer_name()
        if image_layer is None or annotations is None:
            show_error(f"Choose an image layer and {self._annotation_kind()} to train on.")
            return
        if experiment is not None and not self.experiment_panel.shows(image_layer, self._annotation_layer()):
            show_error(f"A folder is open ({experiment.folder}): Train learns from its images. Close the folder "
                       f"to train on '{image_layer.name}'.")
            return
        subject = (f"the {len(experiment.annotated_entries())} labelled images of {experiment.folder.name}"
                   if experiment is not None else f"'{image_layer.name}' / {annotations}")
        try:
            config = self.config()
            build_samples = self._sample_builder(config)
            frame, channel_axis, self._preview_index = self._current_frame(image_layer)
            run = self.session.start_training(build_samples, preview_image=(frame, channel_axis))
        except ValueError as error:  # ConfigError, frame classes, a job running
            show_error(f"Cannot train on {subject}: {error}")
            return
        self._training_layer, self._training_subject = image_layer, subject
        self._run_application = config.application
        self.train_data.reset()
        self._run_training(run, subject)
        # A turn later: the click's repaint and a new window's first paint would freeze napari as one.
        QTimer.singleShot(TURN_MS, self._open_train_data)

    def _open_experiment(self):
        """The experiment the dock trains on: the open folder, opened for this application's annotations."""
        experiment = self.experiment_panel.experiment
        if experiment is not None and experiment.annotations == APPLICATIONS[self.application.value].annotations:
            return experiment
        return None

    def _annotation_layer(self):
        """The chosen Labels or Points layer (None for classes)."""
        control = {"labels": self.labels_layer, "points": self.points_layer}.get(self.annotation_kind())
        return None if control is None else control.value

    def annotation_kind(self) -> str:
        """What the chosen application trains from: "labels", "points" or "classes"."""
        return APPLICATIONS[self.application.value].annotations

    def class_names(self) -> list[str]:
        """The names in Classes, as a run would take them."""
        return _from_control("classes", self.classes.value)

    def _annotation_kind(self) -> str:
        return {"points": "a points layer", "classes": "frame classes"}.get(
            APPLICATIONS[self.application.value].annotations, "a labels layer")

    def _annotation_layer_name(self) -> str | None:
        """How the chosen annotations are called in messages, or None if none are chosen."""
        if APPLICATIONS[self.application.value].image_classes:
            return "frame classes" if self.frame_classes.value.strip() else None
        layer = self._annotation_layer()
        return None if layer is None else f"'{layer.name}'"

    def _frame_class_ids(self, config: TrainingConfig, n_frames: int) -> list[int | None]:
        names = [n.strip() for n in self.frame_classes.value.split(",")]
        if len(names) != n_frames:
            raise ValueError(f"Frame classes lists {len(names)} frame(s) but the image has {n_frames}; "
                             "give one class name per frame, empty to leave a frame out")
        unknown = sorted({n for n in names if n} - set(config.classes))
        if unknown:
            raise ValueError(f"Frame classes {unknown} are not in Classes ({', '.join(config.classes)})")
        return [config.classes.index(n) if n else None for n in names]

    def _sample_builder(self, config: TrainingConfig):
        """On the GUI thread, snapshot what training reads (edits made during training apply to the next
        run); return the function that, in a worker, chooses the settings left "auto" from it and builds
        the samples: (config, choices, training samples, validation samples)."""
        from ..core.auto import Example, resolve
        from ..core.data import make_class_samples, make_point_samples, split_frames, split_train_validation
        from ..core.experiment import Experiment

        split = lambda samples, config: split_train_validation(  # noqa: E731
            samples, config.validation_fraction, config.seed)
        experiment = self._open_experiment()
        if experiment is not None:
            self.experiment_panel.flush_for_training()

            def from_experiment():
                self.experiment_panel.write_pending()  # the last edits first
                resolved, choices = resolve(config, experiment.auto_examples())
                return resolved, choices, *experiment.samples(resolved)
            return from_experiment
        image, channel_axis = layers.image_array(self.image_layer.value)
        application = config.kind
        if application.points:
            points, classes = layers.point_annotations(self.points_layer.value, config.classes)

            def from_points():
                names = tuple(config.classes[c] for c in classes)
                resolved, choices = resolve(config, [Example(image, channel_axis, points=points, point_classes=names)])
                return resolved, choices, *split(make_point_samples(image, points, classes, resolved, channel_axis),
                                                 resolved)
            return from_points
        if application.image_classes:
            class_ids = self._frame_class_ids(config, len(split_frames(image, channel_axis)))

            def from_frames():
                resolved, choices = resolve(config, [Example(image, channel_axis)])
                return resolved, choices, *split(make_class_samples(image, class_ids, resolved, channel_axis), resolved)
            return from_frames
        layer_set = Experiment()  # the chosen layers, as an experiment of one or two images
        layer_set.add_array(self.image_layer.value.name, image, channel_axis, self.labels_layer.value.data)
        validation_image, validation_labels = self.validation_image.value, self.validation_labels.value
        if validation_image is self.image_layer.value or (
                validation_labels is not None and validation_labels is self.labels_layer.value):
            raise ValueError(f"the validation pair is the training pair ('{self.image_layer.value.name}'); choose "
                             "another image to validate on, or none (a share of the patches is held out)")
        if validation_image is not None and validation_labels is not None:
            image, channel_axis = layers.image_array(validation_image)
            layer_set.add_array(validation_image.name, image, channel_axis, validation_labels.data,
                                role="validation")

        def from_layers():
            resolved, choices = resolve(config, layer_set.auto_examples())
            return resolved, choices, *layer_set.samples(resolved)
        return from_layers

    def _current_frame(self, image_layer, region: bool = False):
        """(image, channel_axis, index) of what the viewer shows now (the current frame, and with
        ``region`` only its visible part), or of the whole image."""
        image, channel_axis = layers.image_array(image_layer)
        index = ()
        if self.current_frame_only.value or region:
            index = layers.current_frame_index(image_layer, self.viewer.dims.current_step)
        if region:
            index = index + layers.visible_region(self.viewer, image_layer)
        return image[index], channel_axis, index

    def show_training_window(self, *_) -> None:
        """MIA's Training Window, floating over napari like Train Data (double-click its title to dock it)."""
        self.watch_for_close()  # the Training Window goes when the dock goes
        window = self.training_window.root_native_widget
        if window.parent() is None:  # not shown yet, or its dock was closed (napari keeps the widget)
            dock = self.viewer.window.add_dock_widget(window, name="Training Window", area="right")
            dock.setFloating(True)
            dock.resize(420, 720)
        window.parent().show()
        window.parent().raise_()

    def _open_train_data(self) -> TrainDataWindow:
        if self.train_data.parent() is None:  # not shown yet, or its dock was closed (napari keeps the widget)
            dock = self.viewer.window.add_dock_widget(self.train_data, name="Train Data", area="bottom")
            # Floating, like MIA's own Train Data window: docking it would shrink napari's canvas (a full
            # OpenGL redraw) and every plot update would recomposite the OpenGL window. Double-click its
            # title bar to dock it.
            dock.setFloating(True)
        return self.train_data

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Stop training at the next batch and wait for the worker: called when napari or the dock closes."""
        self._closing = True
        self.experiment_panel.save_now()
        self.experiment_panel.shutdown()
        training_window = self.training_window.root_native_widget.parent()
        if training_window is not None:
            training_window.close()
        self.session.request_stop()
        worker, self.worker = self.worker, None
        if worker is not None:
            for name in ("yielded", "returned", "errored", "finished"):  # a function worker yields nothing
                with contextlib.suppress(TypeError, AttributeError):  # TypeError: nothing was connected to it
                    getattr(worker, name).disconnect()  # the widgets these update are being deleted
            worker.quit()
        # Every worker the dock started (a run, an autosave, the look-ahead) ends before napari does.
        WorkerBase.await_workers(msecs=timeout_ms)

    def watch_for_close(self) -> None:
        if self._close_watcher is None:
            self._close_watcher = _CloseWatcher(self.native, self.shutdown)

    def _run_training(self, run, subject: str) -> None:
        """Consume the session's training run in a worker."""
        self.watch_for_close()
        # Connecting "errored" here also stops the worker from re-raising errors in the event loop.
        self.worker = create_background_worker(_train_in_worker, run, subject, _connect={
            "yielded": self._on_training_event,
            "errored": self._on_worker_error,
            "finished": self._on_training_finished,
        }, _start_thread=False)
        self.set_running(True)
        self._start_job(self.worker, f"Training on {subject}: progress in Train Data.")

    def _start_job(self, worker, status: str) -> None:
        """Show ``status`` and start ``worker`` once napari has repainted the new button states (and shown
        Train Data): those repaints are the slowest, and two to three times slower while PyTorch runs."""
        self.status.value, self._last_status_update = status, time.perf_counter()
        QTimer.singleShot(_SETTLE_MS, lambda: self._start_worker(worker))

    def _start_worker(self, worker) -> None:
        if worker is self.worker and not self._closing:
            gc.collect()  # now rather than in the middle of the job (see background.py)
            worker.start()

    def stop_training(self, *_) -> None:
        """Stop: training stops after the current batch; a prediction is cancelled at the next tile."""
        if self.session.state == "predicting" and self.worker is not None:
            self.worker.quit()
            self._cancelled = True
            return
        if self.session.state == "training":
            self.session.request_stop()
            self.status.value = "Stopping after this batch…"

    def resume_training(self, *_) -> None:
        try:
            run = self.session.resume_training()
        except SessionBusy as error:
            show_error(str(error))
            return
        self._run_training(run, self._training_subject)

    def _on_training_event(self, event) -> None:
        if isinstance(event, TrainerReady):
            config = event.trainer.config
            self.progress.max = config.epochs * event.trainer.batches_per_epoch
            self._show_choices(config, event.choices)
            return
        if isinstance(event, RunKept):
            (show_info if event.in_use else show_error)(event.message)
            self.experiment_panel.refresh()
            return
        self.train_data.on_event(event)
        if isinstance(event, BatchEnd):
            self._show_status(f"epoch {event.epoch + 1}, batch {event.batch}/{event.batches_per_epoch}: "
                              f"loss {event.loss:.4f}, {event.images_per_second:.1f} patches/s",
                              min(self.progress.max, event.step))
        elif isinstance(event, EpochEnd):
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in event.val_metrics.items() if k != "pixel_accuracy")
            self._show_status(f"epoch {event.epoch + 1}: train loss {event.train_loss:.4f}" + (
                f", val loss {event.val_loss:.4f}, {metrics}" if event.val_loss is not None else ""))
        elif isinstance(event, Preview):
            image_layer = self._training_layer
            if image_layer in self.viewer.layers:
                layers.write_prediction(self.viewer, image_layer, event.labels, self._preview_index,
                                        self.label_colors(), suffix="preview")
        elif isinstance(event, TrainingDone):
            stopped = event.reason == "stopped"
            self._run_ended_well = not event.message  # out of memory: no prediction after it
            summary = f"Training {event.reason} after {event.steps} batches ({event.seconds:.0f} s)."
            config = self.session.config
            if config is not None and config.kind.points and not event.message:
                rule = counting_rule(config)
                summary += f" {rule[0].upper()}{rule[1:]}."
            if event.message:
                show_error(f"Training on '{self._training_layer.name}' stopped: {event.message}")
            elif not stopped:  # a turn after the status line's repaint: the two were one freeze
                QTimer.singleShot(TURN_MS, lambda: show_info(summary))
            # A Stop the user asked for is said in the status line only: a notification repaints the canvas.
            self._show_status(summary if stopped else None, now=True)

    def _on_training_finished(self) -> None:
        self.worker = None
        if self.session.state == "training":  # a run that never started (napari closed first)
            self.session.end()
        self.set_running(False)
        ended_well, self._run_ended_well = self._run_ended_well, False
        if ended_well and self.predict_after.value and self.image_layer.value is not None and not self._closing:
            self.start_prediction()

    def _on_worker_error(self, error: Exception) -> None:
        if isinstance(error, ValueError):  # a problem with the user's data or settings, named in the message
            show_error(str(error))
            return
        logger.error("napari-mia worker failed", exc_info=error)
        show_error(f"napari-mia: {type(error).__name__}: {error}")

    def set_running(self, running: bool) -> None:
        has_model = self.model is not None
        for name, control in self._config_controls().items():  # as in MIA: Reset model unlocks them
            if name in FIELDS_FIXED_BY_MODEL or name.startswith("pretrained"):
                control.enabled = not has_model and not running and not (
                    name == "input_channels" and self.color_mode.value == AUTO)
                control.tooltip = ("Set by the current model: Reset model to change it" if has_model else
                                   "Fixed while training builds the model" if running else
                                   self._own_tooltips.get(name, ""))
        self.train_button.enabled = self.start_training_button.enabled = self.load_button.enabled = not running
        for button in (self.predict_button, self.save_button, self.reset_button, self.export_button):
            button.enabled = not running and has_model
        self.measure_button.enabled = not running and isinstance(self.prediction_layer(), napari.layers.Labels)
        self.stop_button.enabled = running
        self.resume_button.enabled = not running and self.session.stopped
        self.experiment_panel.refresh()
        self.use_prediction_button.enabled = not running and (
            self.prediction_layer() is not None or bool(self.predicted_frame_classes))



def _from_control(name: str, value):
    """A control's value as the config holds it."""
    if name == "classes":
        return [n.strip() for n in value.split(",") if n.strip()]
    if name == "pretrained_path":
        return value or None
    if name in ("downscale", "object_size"):  # "auto", "auto (0.55: median object 46 px)" or a number
        text = value.strip().lower()
        if text.startswith(AUTO):
            return AUTO
        try:
            return round(float(text), 3)
        except ValueError:
            raise ConfigError(f"{name}: need a number or auto, got {value!r}") from None
    return value


def _to_control(name: str, value):
    if name == "classes":
        return ", ".join(value)
    if name == "pretrained_path":
        return value or ""
    if name in ("downscale", "object_size"):
        return value if value == AUTO else f"{value:g}"
    return value


def _color_choices(auto_text: str = AUTO) -> list[tuple[str, str]]:
    """Color / Mono's choices; the auto one shows what it chose once a run chose it."""
    return [(auto_text, AUTO), ("mono", "mono"), ("color", "color")]


def _train_in_worker(run, subject: str):
    """Worker: the session's training run, its data errors naming what it learns from."""
    try:
        return (yield from run)
    except ValueError as error:  # DataError, ConfigError, missing weights
        raise ValueError(f"Cannot train on {subject}: {error}") from error
