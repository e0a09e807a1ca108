"""The one dataclass that describes a training run.

It is validated on construction, saved inside every model file, and rebuilt on load, so a reloaded
model preprocesses and predicts exactly as it did when it was trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .optimizers import OPTIMIZERS

CONFIG_VERSION = 1
# Color / Mono, Down Scaling and Object Size may be "auto": chosen from the training data when a run starts
# (auto.py), so a saved model always holds the values it was trained with.
AUTO = "auto"


@dataclass(frozen=True)
class Application:
    """What an application trains from and predicts. The registries (``APPLICATIONS`` here, ``OPTIMIZERS``
    in optimizers.py, the losses in losses.py, ``ARCHITECTURES``) are the only places that list the names
    of the choices: the config, the dock and the command line offer their keys."""

    title: str  # as the dock names it
    annotations: str  # what the user gives: "labels" (label images), "points" or "classes"
    default_classes: tuple[str, ...]
    # Prediction averages the four flips by default where benchmarks showed it pays for its time.
    test_time_augmentation: bool = False
    min_classes: int = 2  # the fewest classes it learns a difference from
    sparse_labels: bool = False  # trains from sparse labels (0 = unlabelled) too
    object_ids: bool = False  # its label images hold an id per object, not class ids

    @property
    def label_images(self) -> bool:
        """Trains on and predicts label images, 0 being background (semantic, instance)."""
        return self.annotations == "labels"

    @property
    def points(self) -> bool:
        """Trains on and predicts points with a class (detection, counting)."""
        return self.annotations == "points"

    @property
    def image_classes(self) -> bool:
        """Trains on and predicts a class per image or frame (classification)."""
        return self.annotations == "classes"

    @property
    def prediction_suffix(self) -> str:
        """``<image> <suffix>``: the layer its predictions go to."""
        return "detections" if self.points else "prediction"

    @property
    def use_prediction_text(self) -> str:
        """The dock's button that makes a corrected prediction training annotations."""
        return {"points": "Use as training points", "classes": "Use as frame classes"}.get(
            self.annotations, "Use as training labels")


APPLICATIONS = {
    "semantic": Application("Semantic segmentation", "labels", ("background", "foreground"), sparse_labels=True),
    "instance": Application("Instance segmentation", "labels", ("background", "object"), test_time_augmentation=True,
                            object_ids=True),
    "detection": Application("Object detection / counting", "points", ("object",), min_classes=1),
    "classification": Application("Classification", "classes", ("class 1", "class 2")),
}
# smp's architectures (what each takes is read from smp: models.build_model).
ARCHITECTURES = ("Unet", "UnetPlusPlus", "FPN", "Linknet", "PSPNet", "DeepLabV3Plus", "MAnet")
# MIA's classifier: backbone + global average pooling + one dense layer.
CLASSIFICATION_ARCHITECTURES = ("Standard",)
BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet-b0",
    "efficientnet-b1",
    "efficientnet-b2",
    "efficientnet-b3",
    "mobilenet_v2",
    "tu-efficientnet_lite0",
    # timm's test network (a hundred thousand weights): a model in seconds, to try the loop and for tests
    "tu-test_efficientnet",
)
COLOR_MODES = (AUTO, "mono", "color")
# The backbone a new run gets: the ImageNet encoder that learns most per CPU minute here (docs/results.md),
# whose weights ship in a pip package (a dependency): trained from them when they are on the machine.
DEFAULT_BACKBONE = "tu-efficientnet_lite0"
LR_SCHEDULES = ("constant", "cosine", "step", "plateau")
# Instance models learn three maps: what separates touching objects is the boundary class.
INSTANCE_TARGETS = ("background", "interior", "boundary")
CLASS_WEIGHTING = ("off", "auto", "manual")
DEVICES = ("auto", "cpu", "cuda", "mps")

# Distinct, colour-blind friendly class colours (Okabe-Ito), background transparent-ish black.
DEFAULT_COLORS = (
    "#000000",
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
)


# Settings a trained network is built or taught with: they stay as the model has them (read-only in the
# dock while a model exists, as in MIA; Reset model unlocks them).
FIXED_BY_MODEL = {"fixed_by_model": True}


class ConfigError(ValueError):
    """A training setting is out of range or unknown; the message names the field and the fix."""


def architectures_for(application: str) -> tuple[str, ...]:
    return CLASSIFICATION_ARCHITECTURES if APPLICATIONS[application].annotations == "classes" else ARCHITECTURES


def losses_for(application: str) -> tuple[str, ...]:
    from .losses import losses_for as registered  # losses.py builds them (and imports this module)

    return tuple(registered(application))


def default_classes(application: str) -> list[str]:
    """Semantic and instance classes start with background; points and image classes do not."""
    return list(APPLICATIONS[application].default_classes)


@dataclass
class Augmentations:
    """MIA's Augmentations dialog plus the intensity changes microscopy needs.

    Probabilities are per patch; geometric ones move image and labels together. The defaults are the
    ones measured to train fastest here (flips, 90-degree turns, mild brightness/contrast); MIA's blur,
    piecewise/elastic, dropout and affine are available and off by default.
    """

    enabled: bool = True
    flip_horizontal: bool = True
    flip_vertical: bool = True
    rotate90: bool = True
    blur_probability: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 3.0)
    elastic_probability: float = 0.0
    dropout_probability: float = 0.0
    affine_probability: float = 0.0
    scale: tuple[float, float] = (0.8, 1.2)
    translate: tuple[float, float] = (-0.2, 0.2)
    shear: tuple[float, float] = (-16.0, 16.0)
    rotate: tuple[float, float] = (-45.0, 45.0)
    brightness_contrast_probability: float = 0.3
    brightness_limit: float = 0.1
    contrast_limit: float = 0.1
    gamma_probability: float = 0.0
    gamma_limit: tuple[float, float] = (80.0, 120.0)
    noise_probability: float = 0.0
    noise_std: tuple[float, float] = (0.01, 0.05)
    # Colour images: each stain's amount (haematoxylin, eosin, DAB) scaled and shifted in optical density.
    stain_probability: float = 0.0
    stain_limit: float = 0.1
    # Dark objects on a bright ground and bright on dark, as brightfield and fluorescence show them.
    invert_probability: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (list, tuple)):
                value = tuple(float(v) for v in value)
                setattr(self, f.name, value)
                if len(value) != 2 or value[0] > value[1]:
                    raise ConfigError(f"augmentations.{f.name}: need a (min, max) pair, got {value}")
            elif f.name.endswith("probability") and not 0 <= value <= 1:
                raise ConfigError(f"augmentations.{f.name}: must be between 0 and 1, got {value}")


@dataclass
class TrainingConfig:
    """MIA's Training window (and Settings) as one validated record.

    Field names follow MIA's labels: Deep Learning Architecture, Model Backbone, Pretrained Net,
    Classes, Color/Mono, Input Channels, Batch Size, Epochs, Learning Rate, Down Scaling.
    """

    application: str = field(default="semantic", metadata=FIXED_BY_MODEL)
    # None: the application's default (Unet; Standard for classification)
    architecture: str | None = field(default=None, metadata=FIXED_BY_MODEL)
    backbone: str = field(default=DEFAULT_BACKBONE, metadata=FIXED_BY_MODEL)
    # None: ImageNet weights when they are on this machine for the backbone (weights.py), else from scratch
    pretrained: bool | None = None
    pretrained_path: str | None = None
    decoder_channels: tuple[int, ...] | None = field(default=(128, 64, 32, 16, 16), metadata=FIXED_BY_MODEL)
    classes: list[str] | None = field(default=None, metadata=FIXED_BY_MODEL)  # None: the application's default
    class_colors: list[str] | None = None
    color_mode: str = field(default=AUTO, metadata=FIXED_BY_MODEL)
    input_channels: int | None = field(default=None, metadata=FIXED_BY_MODEL)
    batch_size: int = 16
    epochs: int = 100
    learning_rate: float = 3e-3
    downscale: float | str = field(default=AUTO, metadata=FIXED_BY_MODEL)
    # Instance segmentation with Down Scaling "auto": every image is rescaled so that its median object is
    # this many pixels wide (twice its inscribed radius) at the model's scale (training: measured on its
    # labels; prediction: on a first pass), so objects 10 or 100 px wide all reach the network at the size it
    # learned. None: every image is scaled by Down Scaling alone (a number given, sparse labels, models saved
    # before).
    object_diameter: float | None = field(default=None, metadata=FIXED_BY_MODEL)
    patch_size: int = 128
    validation_fraction: float = 0.15
    sparse_labels: bool = field(default=False, metadata=FIXED_BY_MODEL)
    optimizer: str = "adam"
    lr_schedule: str = "cosine"
    loss: str | None = None  # None: the application's default
    class_weighting: str = "off"
    class_weights: list[float] | None = None
    lr_factor: float = 0.5
    lr_patience: int = 5
    lr_step_every: int = 25
    min_learning_rate: float = 1e-6
    warmup_fraction: float = 0.03
    # Retraining (the loop): a model that goes on training starts from a lower learning rate, so that it
    # keeps what it learned, and images new since its last run get at least this share of the patches,
    # so that a few corrected images count among many old ones.
    retrain_lr_factor: float = 0.3  # chosen by benchmarks/hitl.py (docs/results.md)
    new_image_share: float = 0.5
    # A colour model trained on colour and grey images (stained tissue among fluorescence) draws each look
    # half the time, whatever their numbers and areas (docs/results.md: DSB2018's colour images).
    balance_looks: bool = True
    early_stopping_patience: int = 0
    # An epoch covers the images once, so a handful of small images makes epochs of one batch and Epochs
    # alone stops early: a run from untrained weights takes at least this many batches (its epochs
    # extended; continuing a trained model keeps Epochs, so that a round of the loop stays short).
    # 0: Epochs alone (the default until measured on every few-image path: docs/results.md).
    min_batches: int = 0
    keep_best: bool = True
    preview_every: int = 0
    mixed_precision: bool = True
    augmentations: Augmentations = field(default_factory=Augmentations)
    foreground_sampling: float = 0.7
    normalize_percentiles: tuple[float, float] = field(default=(1.0, 99.8), metadata=FIXED_BY_MODEL)
    # Instance segmentation: watershed from interior seeds inside the foreground, small objects dropped.
    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    # One seed per maximum of the distance to the background at least this high (pixels at the model's scale):
    # higher merges more, lower splits more (docs/results.md: 1 against 0.5 on DSB2018's stained nuclei).
    seed_height: float = 1.0
    min_object_size: int = 20
    # Object detection (MIA's "Object Size"): typical object diameter in image pixels; it sets the
    # Gaussian heatmap width and, unless given, the minimum distance between detected peaks.
    object_size: float | str = AUTO
    # Object Size auto with several classes: each class's median blob diameter (in ``classes`` order); it sets
    # that class's minimum distance between peaks. None: Object Size for every class.
    class_object_sizes: list[float] | None = field(default=None, metadata=FIXED_BY_MODEL)
    peak_threshold: float = 0.3
    # Per class, chosen on the validation frames when detection training ends (None: peak_threshold).
    peak_thresholds: list[float] | None = None
    # Points per image: while the peak thresholds were chosen on fewer validation frames than this, each class's
    # strongest peaks, as many as its heatmap's mass holds objects (the mass of one object measured on the
    # labelled frames when detection training ends); from this many frames on, the thresholds. 0: thresholds.
    mass_below_frames: int = 10
    mass_per_object: list[float] | None = None
    threshold_frames: int = 0  # the validation frames the peak thresholds were chosen on
    min_peak_distance: float | None = None
    tile_size: int = 1536
    # Prediction averages the four flips of every tile; None: the application's default
    test_time_augmentation: bool | None = None
    tile_overlap: int = 64
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        _choice("application", self.application, APPLICATIONS)
        self.architecture = self.architecture or architectures_for(self.application)[0]
        self.loss = self.loss or losses_for(self.application)[0]
        self.classes = list(self.classes or default_classes(self.application))
        self.normalize_percentiles = tuple(float(p) for p in self.normalize_percentiles)
        if self.decoder_channels is not None:
            self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        if self.input_channels is None and self.color_mode != AUTO:
            self.input_channels = 1 if self.color_mode == "mono" else 3
        if self.pretrained is None:
            from .weights import find_weights

            self.pretrained = find_weights(self.backbone) is not None
        if self.test_time_augmentation is None:
            self.test_time_augmentation = self.kind.test_time_augmentation
        # Colours are cosmetic: classes added or removed get default colours rather than an error.
        colors = list(self.class_colors or [])[: len(self.classes)]
        defaults = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(self.classes))]
        self.class_colors = colors + defaults[len(colors) :]
        if isinstance(self.augmentations, dict):
            self.augmentations = _augmentations_from_dict(self.augmentations)
        if self.class_weights is not None:
            self.class_weights = [float(w) for w in self.class_weights]
        if self.peak_thresholds is not None:
            self.peak_thresholds = [float(t) for t in self.peak_thresholds]
        if self.mass_per_object is not None:
            self.mass_per_object = [float(m) for m in self.mass_per_object]
        if self.class_object_sizes is not None:
            self.class_object_sizes = [float(size) for size in self.class_object_sizes]
        self.validate()

    @property
    def kind(self) -> Application:
        """What the application trains from and predicts (its entry of ``APPLICATIONS``)."""
        return APPLICATIONS[self.application]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        """Channels of the network's output."""
        return len(INSTANCE_TARGETS) if self.kind.object_ids else self.n_classes

    @property
    def has_background(self) -> bool:
        return self.kind.label_images

    def validate(self) -> None:
        _choice("application", self.application, APPLICATIONS)
        _choice("architecture", self.architecture, architectures_for(self.application))
        _choice("backbone", self.backbone, BACKBONES)
        _choice("color_mode", self.color_mode, COLOR_MODES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("loss", self.loss, losses_for(self.application))
        _choice("device", self.device.split(":")[0], DEVICES)
        application = self.kind
        if len(self.classes) < application.min_classes:
            need = "one class" if application.min_classes == 1 else (
                "2 (background and one class)" if self.has_background else "2")
            raise ConfigError(f"classes: need at least {need}")
        if application.object_ids and self.n_classes != 2:
            raise ConfigError("classes: instance segmentation takes background and one object class")
        if self.sparse_labels and not application.sparse_labels:
            raise ConfigError("sparse_labels: only semantic segmentation trains from sparse labels")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes: names must be unique, got {self.classes}")
        if self.input_channels is not None or self.color_mode != AUTO:
            _in_range("input_channels", self.input_channels, 1, 64)
        if self.color_mode == "color" and self.input_channels != 3:
            raise ConfigError("input_channels: Color mode uses 3 channels; choose Mono for other counts")
        _in_range("batch_size", self.batch_size, 1, 2048)
        _in_range("epochs", self.epochs, 1, 100_000)
        if not 0 < self.learning_rate <= 1:
            raise ConfigError(f"learning_rate: must be in (0, 1], got {self.learning_rate}")
        if self.downscale != AUTO and not 0.1 <= self.downscale <= 1.0:
            raise ConfigError(f"downscale: Down Scaling must be between 0.1 and 1, got {self.downscale}")
        if self.object_diameter is not None and not self.object_diameter >= 2:
            raise ConfigError(f"object_diameter: must be at least 2 pixels or None, got {self.object_diameter}")
        if self.patch_size < 32 or self.patch_size % 32:
            raise ConfigError(f"patch_size: must be a multiple of 32 and at least 32, got {self.patch_size}")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction: must be in [0, 1), got {self.validation_fraction}")
        if not 0 < self.retrain_lr_factor <= 1:
            raise ConfigError(f"retrain_lr_factor: must be in (0, 1], got {self.retrain_lr_factor}")
        if not 0 <= self.new_image_share < 1:
            raise ConfigError(f"new_image_share: must be in [0, 1), got {self.new_image_share}")
        if not 0 <= self.foreground_sampling <= 1:
            raise ConfigError(f"foreground_sampling: must be in [0, 1], got {self.foreground_sampling}")
        low, high = self.normalize_percentiles
        if not 0 <= low < high <= 100:
            raise ConfigError(f"normalize_percentiles: need 0 <= low < high <= 100, got {self.normalize_percentiles}")
        if self.tile_size < 32 or self.tile_size % 32:
            raise ConfigError(f"tile_size: must be a multiple of 32 and at least 32, got {self.tile_size}")
        if self.tile_overlap < 0 or self.tile_overlap % 32 or self.tile_overlap >= self.tile_size:
            raise ConfigError(f"tile_overlap: must be a multiple of 32 below tile_size, got {self.tile_overlap}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"max_minutes: must be positive, got {self.max_minutes}")
        _in_range("num_workers", self.num_workers, 0, 64)
        _choice("class_weighting", self.class_weighting, CLASS_WEIGHTING)
        if self.class_weighting == "manual" and (
            self.class_weights is None or len(self.class_weights) != self.n_classes
            or min(self.class_weights) < 0 or max(self.class_weights) <= 0
        ):
            raise ConfigError(f"class_weights: manual weighting needs {self.n_classes} non-negative weights")
        if not 0 < self.lr_factor < 1:
            raise ConfigError(f"lr_factor: must be between 0 and 1, got {self.lr_factor}")
        _in_range("lr_patience", self.lr_patience, 1, 10_000)
        _in_range("lr_step_every", self.lr_step_every, 1, 100_000)
        if not 0 < self.min_learning_rate <= self.learning_rate:
            raise ConfigError(f"min_learning_rate: must be positive and at most the learning rate, "
                              f"got {self.min_learning_rate}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction: must be in [0, 1), got {self.warmup_fraction}")
        _in_range("early_stopping_patience", self.early_stopping_patience, 0, 100_000)
        _in_range("min_batches", self.min_batches, 0, 100_000)
        _in_range("preview_every", self.preview_every, 0, 100_000)
        _in_range("mass_below_frames", self.mass_below_frames, 0, 10**9)
        _in_range("threshold_frames", self.threshold_frames, 0, 10**9)
        for name in ("foreground_threshold", "seed_threshold", "peak_threshold"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be between 0 and 1, got {getattr(self, name)}")
        _in_range("min_object_size", self.min_object_size, 0, 10**9)
        if not self.seed_height > 0:
            raise ConfigError(f"seed_height: must be above 0 pixels, got {self.seed_height}")
        if self.object_size != AUTO and not self.object_size >= 1:
            raise ConfigError(f"object_size: must be at least 1 pixel, got {self.object_size}")
        if self.peak_thresholds is not None and (
            len(self.peak_thresholds) != self.n_classes or not all(0 < t < 1 for t in self.peak_thresholds)
        ):
            raise ConfigError(f"peak_thresholds: need {self.n_classes} values between 0 and 1")
        if self.mass_per_object is not None and (
            len(self.mass_per_object) != self.n_classes or not all(m >= 0 for m in self.mass_per_object)
        ):
            raise ConfigError(f"mass_per_object: need {self.n_classes} values of at least 0")
        if self.class_object_sizes is not None and (
            len(self.class_object_sizes) != self.n_classes or not all(size >= 1 for size in self.class_object_sizes)
        ):
            raise ConfigError(f"class_object_sizes: need {self.n_classes} diameters of at least 1 pixel")
        if self.min_peak_distance is not None and self.min_peak_distance < 1:
            raise ConfigError(f"min_peak_distance: must be at least 1 pixel, got {self.min_peak_distance}")

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        record["normalize_percentiles"] = list(self.normalize_percentiles)
        if self.decoder_channels is not None:
            record["decoder_channels"] = list(self.decoder_channels)
        record["config_version"] = CONFIG_VERSION
        return record

    @classmethod
    def from_dict(cls, record: dict) -> TrainingConfig:
        record = dict(record)
        version = record.pop("config_version", CONFIG_VERSION)
        if version > CONFIG_VERSION:
            raise ConfigError(
                f"this model was saved by a newer napari-mia (config version {version}); upgrade napari-mia"
            )
        if record.pop("count_by_mass", True) is False:  # a model of 2026-12-05 that counted by thresholds
            record.setdefault("mass_below_frames", 0)
        _refuse_unknown(cls, record, "")
        return cls(**record)

    def replace(self, **changes) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def require_resolved(self) -> None:
        """Samples, training and prediction need the values "auto" stands for."""
        if self.unresolved:
            names = ", ".join(self.unresolved)
            raise ConfigError(f"{names}: 'auto' is chosen from the training data; resolve it first "
                              "(napari_mia.core.auto.resolve(config, examples)) or give a value")

    @property
    def unresolved(self) -> list[str]:
        """The settings still "auto": a run resolves them from its data (auto.resolve) before training."""
        names = ("color_mode", "downscale") + (("object_size",) if self.kind.points else ())
        return [name for name in names if getattr(self, name) == AUTO]


FIELDS_FIXED_BY_MODEL = tuple(f.name for f in dataclasses.fields(TrainingConfig) if f.metadata.get("fixed_by_model"))


def _refuse_unknown(cls, record: dict, prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(record) - known)
    if unknown:
        raise ConfigError(f"unknown settings {[prefix + u for u in unknown]}; not written by this napari-mia")


def _augmentations_from_dict(record: dict) -> Augmentations:
    _refuse_unknown(Augmentations, record, "augmentations.")
    return Augmentations(**record)


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(options)}")


def _in_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name}: must be an integer from {low} to {high}, got {value!r}")
