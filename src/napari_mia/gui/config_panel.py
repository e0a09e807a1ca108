"""Config dataclass fields <-> magicgui widgets, for the Settings and Augmentations sections."""

from __future__ import annotations

import dataclasses
import math

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, PushButton, SpinBox, TupleEdit

from ..core.config import CLASS_WEIGHTING, LR_SCHEDULES, OPTIMIZERS, Augmentations, TrainingConfig, losses_for

SETTINGS_LABELS = {
    "optimizer": "Optimizer",
    "lr_schedule": "Learning Rate Schedule",
    "lr_factor": "Reduction Factor",
    "lr_patience": "Plateau for x epochs",
    "lr_step_every": "Reduce every x epochs",
    "min_learning_rate": "Minimum Learning Rate",
    "warmup_fraction": "Warm-up (fraction of run)",
    "retrain_lr_factor": "Retrain: learning rate factor",
    "new_image_share": "Retrain: share of new images",
    "balance_looks": "Colour and grey images: half the patches each",
    "loss": "Loss",
    "class_weighting": "Class Weighting",
    "class_weights": "Class weights (manual)",
    "early_stopping_patience": "Early stopping patience (0 = off)",
    "min_batches": "Minimum batches (from untrained weights)",
    "keep_best": "Keep best weights",
    "mass_below_frames": "Count points by mass below x validation frames",
    "preview_every": "Predict an image every x epochs",
    "mixed_precision": "Mixed precision (bf16: CUDA, AMX CPUs)",
    "num_workers": "Data-loading workers",
    "max_minutes": "Time budget, minutes (0 = none)",
}
SETTINGS_CHOICES = {
    "optimizer": tuple(OPTIMIZERS),
    "lr_schedule": LR_SCHEDULES,
    "loss": losses_for(TrainingConfig().application),  # the dock's follow its application
    "class_weighting": CLASS_WEIGHTING,
}
AUGMENTATION_LABELS = {
    "enabled": "Augmentations",
    "flip_horizontal": "Flip horizontal",
    "flip_vertical": "Flip vertical",
    "rotate90": "Rotate 90°",
    "blur_probability": "Blur (probability)",
    "blur_sigma": "Blur sigma (min, max)",
    "elastic_probability": "Elastic / piecewise (probability)",
    "dropout_probability": "Dropout (probability)",
    "affine_probability": "Apply Affine (probability)",
    "scale": "Scale (min, max)",
    "translate": "Translate (min, max, fraction)",
    "shear": "Shear (min, max, degrees)",
    "rotate": "Rotation (min, max, degrees)",
    "brightness_contrast_probability": "Brightness/contrast (probability)",
    "brightness_limit": "Brightness limit",
    "contrast_limit": "Contrast limit",
    "gamma_probability": "Gamma (probability)",
    "gamma_limit": "Gamma (min, max, percent)",
    "noise_probability": "Gaussian noise (probability)",
    "noise_std": "Noise std (min, max)",
    "stain_probability": "Stain jitter, colour (probability)",
    "stain_limit": "Stain jitter limit",
    "invert_probability": "Invert (probability)",
}
_SMALL_FLOATS = {"min_learning_rate": 1e-6}


def toggle_section(section: Container, button: PushButton, shown: bool | None = None) -> None:
    """Show or hide (by default: switch) a folding section; its button's arrow says which."""
    shown = section.native.isHidden() if shown is None else shown
    section.visible = shown
    button.text = button.text[:-1] + ("▾" if shown else "▸")


def _widget_for(name: str, value, label: str, choices=None):
    if choices is not None:
        return ComboBox(name=name, label=label, choices=choices, value=value)
    if isinstance(value, bool):
        return CheckBox(name=name, text=label, value=value)
    if isinstance(value, int):
        return SpinBox(name=name, label=label, value=value, min=0, max=100_000)
    if isinstance(value, float):
        step = _SMALL_FLOATS.get(name, 0.01)
        spin = FloatSpinBox(name=name, label=label, min=0.0, max=1000.0, step=step)
        spin.native.setDecimals(max(2, round(-math.log10(step))))
        spin.value = value
        return spin
    if isinstance(value, tuple):
        edit = TupleEdit(name=name, label=label, value=value)
        for part in edit:
            part.min, part.max, part.step = -1000.0, 1000.0, 0.01
        edit.value = value
        return edit
    return LineEdit(name=name, label=label, value="" if value is None else ", ".join(map(str, value)))


def settings_panel(config: TrainingConfig, choices: dict | None = None) -> Container:
    """``choices`` replaces a setting's fixed choices, e.g. by a function of the dock's application: napari
    resets every dock's choices when a layer is added, and fixed ones would then be the first application's."""
    choices = {**SETTINGS_CHOICES, **(choices or {})}
    widgets = [
        _widget_for(name, _shown(name, getattr(config, name)), label, choices.get(name))
        for name, label in SETTINGS_LABELS.items()
    ]
    return Container(widgets=widgets)


def augmentations_panel(augmentations: Augmentations) -> Container:
    widgets = [_widget_for(f.name, getattr(augmentations, f.name), AUGMENTATION_LABELS[f.name])
               for f in dataclasses.fields(augmentations)]
    return Container(widgets=widgets)


def _shown(name: str, value):
    return 0.0 if name == "max_minutes" and value is None else value


def settings_values(panel: Container) -> dict:
    values = {widget.name: widget.value for widget in panel}
    weights = values["class_weights"].strip()
    values["class_weights"] = [float(w) for w in weights.split(",")] if weights else None
    values["max_minutes"] = values["max_minutes"] or None
    return values


def augmentation_values(panel: Container) -> Augmentations:
    return Augmentations(**{widget.name: widget.value for widget in _field_widgets(panel, Augmentations)})


def _field_widgets(panel: Container, source) -> list:
    names = {f.name for f in dataclasses.fields(source)}
    return [widget for widget in panel if widget.name in names]


def show_values(panel: Container, source) -> None:
    for widget in _field_widgets(panel, source):
        value = getattr(source, widget.name)
        if widget.name == "class_weights":
            value = "" if value is None else ", ".join(map(str, value))
        widget.value = _shown(widget.name, value)
