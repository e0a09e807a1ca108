"""The dock opens with the config's defaults, as the command line does, and shows what the settings left
"auto" chose once a run chose them."""

import numpy as np
import pandas as pd

from napari_mia.core.cli import build_parser
from napari_mia.core.config import DEFAULT_BACKBONE, TrainingConfig
from napari_mia.gui.widget import MiaWidget

from ..core.test_auto import _disks, _gaussian_blobs
from .conftest import wait_until_idle

CLI_OPTIONS = ("application", "backbone", "epochs", "batch_size", "learning_rate", "downscale", "patch_size",
               "validation_fraction", "color_mode", "object_size")


def test_the_dock_opens_with_the_defaults_the_command_line_has(make_napari_viewer):
    widget = MiaWidget(make_napari_viewer())
    opened = widget.config()
    assert opened == TrainingConfig()  # one source: every field, Settings and Augmentations included
    assert (opened.backbone, opened.pretrained) == (DEFAULT_BACKBONE, True) and widget.pretrained.value
    assert widget.downscale.value == widget.object_size.value == widget.color_mode.value == "auto"
    cli = build_parser().parse_args(["train", "--images", "i", "--labels", "l", "--out", "m"])
    cli_values = {name: getattr(cli, name) for name in CLI_OPTIONS}
    cli_values["object_size"] = cli_values["object_size"] or "auto"  # given only for detection
    assert cli_values == {name: getattr(opened, name) for name in CLI_OPTIONS}
    assert widget.pretrained.tooltip.endswith("efficientnet-lite0-57934424.pth")  # which weights
    widget.backbone.value = "resnet50"  # no ImageNet weights for it on this machine: from scratch
    assert not widget.pretrained.value and widget.pretrained.tooltip.startswith("No ImageNet weights for resnet50")
    widget.application.value = "instance"  # test-time augmentation is on where it pays
    assert widget.test_time_augmentation.value and widget.config().test_time_augmentation


def _fast(widget) -> None:
    widget.backbone.value = "resnet18"
    widget.epochs.value, widget.batch_size.value, widget.patch_size.value = 1, 2, 64
    widget.validation_fraction.value = 0.0
    widget.predict_after.value = False


def test_auto_down_scaling_and_color_show_the_values_they_chose(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = MiaWidget(viewer)
    labels = _disks(60)
    image = np.stack([labels * 90, labels * 40, 255 - labels * 90], -1).astype(np.uint8)  # colour
    viewer.add_image(image, name="tissue", rgb=True)
    widget.labels_layer.value = viewer.add_labels((labels > 0).astype(np.uint8), name="tissue labels")
    _fast(widget)
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    assert widget.downscale.value == "auto (0.5: median object 60 px)"
    assert widget.color_mode.native.currentText() == "auto (color: 1 of 1 images in colour)"
    assert widget.input_channels.value == 3
    viewer.add_image(image[..., 0], name="another")  # napari resets the dock's choices: what auto chose stays
    assert widget.color_mode.native.currentText() == "auto (color: 1 of 1 images in colour)"
    assert (widget.model_config.downscale, widget.model_config.color_mode) == (0.5, "color")
    widget.reset_model()  # the controls a model fixed get their own tooltips back, and stay as auto left them
    assert widget.color_mode.tooltip == "auto: Color as soon as one training image is colour"
    assert widget.pretrained.tooltip.startswith("No ImageNet weights for resnet18")
    assert not widget.input_channels.enabled  # Color / Mono is still auto


def test_auto_object_size_shows_the_blob_size_it_measured(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = MiaWidget(viewer)
    centres = [(30, 30), (30, 90), (90, 30), (90, 90)]
    viewer.add_image((_gaussian_blobs(6.0, centres) * 200).astype(np.uint8), name="cells")
    widget.application.value = "detection"
    widget.points_layer.value = viewer.add_points(centres, name="marks",
                                                  features=pd.DataFrame({"class": ["cell"] * 4}))
    # A layer added after choosing the application (here the points) keeps that application's choices:
    # napari's choice reset once put the semantic losses back and training then failed.
    assert widget.settings["loss"].value == "heatmap_focal" and widget.architecture.value == "Unet"
    _fast(widget)
    widget.train_button.clicked()
    wait_until_idle(qtbot, widget)
    # 2√2 times the blobs' sigma of 6
    assert widget.object_size.value == "auto (17: median blob at 4 points)", widget.status.value
    assert widget.model_config.object_size == 17.0
    widget.object_size.value = "25"  # editable: a number overrides auto for the next model
    widget.reset_model()
    assert widget.config().object_size == 25.0
