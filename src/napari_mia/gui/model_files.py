"""The dock's model files: save, load (napari-mia, bioimage.io), reset, export, measurements."""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error, show_info

from . import layers


class ModelFileActions:
    """Save, Load, Reset, Export model, Export measurements: a part of
    :class:`~napari_mia.gui.widget.MiaWidget`."""

    def save_model(self, path) -> None:
        from ..core.io import save_model

        try:
            saved = save_model(path, self.model, self.model_config, self.history)
        except OSError as error:  # the model stays in the dock: the user can save elsewhere
            show_error(f"Cannot save the model to {path}: {error.strerror or error}")
            return
        show_info(f"Model saved to {saved}")

    def load_model(self, path) -> None:
        from ..core.io import load_model
        from ..core.models import resolve_device

        try:
            if str(path).endswith(".zip"):
                from ..core.bioimageio import load_bioimageio

                model, config, history = load_bioimageio(path, resolve_device())
            else:
                model, config, history = load_model(path, resolve_device())
        except (ValueError, ImportError) as error:
            show_error(str(error))
            return
        self.model, self.model_config, self.trainer = model, config, None
        self.history = list(history)  # further training adds to it, and Save writes it all
        self._show_config(config)
        self.set_running(False)
        show_info(f"Model loaded from {path}")

    def reset_model(self, *_) -> None:
        self.model, self.model_config, self.trainer, self.history = None, None, None, []
        self.set_running(False)
        self._classes_from_labels()

    def export_model(self, path) -> None:
        """ONNX (.onnx), TorchScript (.pt) or a bioimage.io package (.zip), checked against PyTorch."""
        from ..core.export import export

        file_format = {".onnx": "onnx", ".pt": "torchscript", ".zip": "bioimageio"}.get(Path(path).suffix.lower())
        if file_format is None:
            show_error(f"Cannot export to {path}: use .onnx, .pt (TorchScript) or .zip (bioimage.io)")
            return
        try:
            saved, difference = export(self.model, self.model_config, file_format, path, history=self.history)
        except (ValueError, OSError) as error:  # ExportError names the extra to install
            show_error(f"Cannot export the model: {error}")
            return
        show_info(f"Model exported to {saved} (largest difference from PyTorch {difference:.1e})")

    def export_measurements(self, path) -> None:
        """Per-object measurements of the prediction layer (label, class, area, centroid, mean intensity,
        perimeter) of the current frame, as CSV."""
        from ..core.measure import measure_prediction, write_measurements_csv

        layer, image_layer = self.prediction_layer(), self.image_layer.value
        index = layers.current_frame_index(image_layer, self.viewer.dims.current_step)
        image, channel_axis = layers.image_array(image_layer)
        try:
            rows = measure_prediction(layer.data[index], image[index], self.model_config, channel_axis)
        except ValueError as error:
            show_error(f"Cannot measure '{layer.name}': {error}")
            return
        write_measurements_csv(path, rows, image_name=image_layer.name)
        show_info(f"{len(rows)} objects of '{layer.name}' measured into {path}")

    def _ask_export(self, *_) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(None, "Export model", "model.onnx",
                                              "ONNX (*.onnx);;TorchScript (*.pt);;bioimage.io package (*.zip)")
        if path:
            self.export_model(path)

    def _ask_measurements(self, *_) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(None, "Export measurements", "measurements.csv", "CSV (*.csv)")
        if path:
            self.export_measurements(path)

    def _ask_save(self, *_) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(None, "Save model", "model.safetensors", "Models (*.safetensors)")
        if path:  # a name typed without a suffix gets the filter's, so that Load model lists it
            self.save_model(path if Path(path).suffix else path + ".safetensors")

    def _ask_load(self, *_) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(None, "Load model", "",
                                              "Models (*.safetensors *.zip);;bioimage.io package (*.zip)")
        if path:
            self.load_model(path)
