"""The dock's model files: save, load (napari-mia, bioimage.io), reset, export, measurements."""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error, show_info

from ..core.session import SessionBusy
from . import layers
from .background import create_background_worker


class ModelFileActions:
    """Save, Load, Reset, Export model, Export measurements: a part of
    :class:`~napari_mia.gui.widget.MiaWidget`."""

    def save_model(self, path) -> None:
        try:
            saved = self.session.save_model(path)
        except OSError as error:  # the model stays in the dock: the user can save elsewhere
            show_error(f"Cannot save the model to {path}: {error.strerror or error}")
            return
        show_info(f"Model saved to {saved}")

    def load_model(self, path) -> None:
        from ..core.models import resolve_device

        try:  # further training adds to its history, and Save writes it all
            self.session.load_model(path, resolve_device())
        except (ValueError, ImportError) as error:
            show_error(str(error))
            return
        self.show_model(f"Model loaded from {path}")

    def show_model(self, message: str | None = None) -> None:
        """Show the session's model: its settings in the fields, the buttons it enables."""
        if self.model_config is not None:
            self._show_config(self.model_config)
        self.set_running(False)
        if message:
            show_info(message)

    def reset_model(self, *_) -> None:
        try:
            self.session.reset_model()
        except SessionBusy as error:
            show_error(str(error))
            return
        self.set_running(False)
        self._classes_from_labels()

    def export_model(self, path) -> None:
        """ONNX (.onnx), TorchScript (.pt) or a bioimage.io package (.zip), checked against PyTorch, in a
        worker; the model in use stays where it is (a copy is exported)."""
        file_format = {".onnx": "onnx", ".pt": "torchscript", ".zip": "bioimageio"}.get(Path(path).suffix.lower())
        if file_format is None:
            show_error(f"Cannot export to {path}: use .onnx, .pt (TorchScript) or .zip (bioimage.io)")
            return
        try:
            job = self.session.export(file_format, path)
        except SessionBusy as error:
            show_error(str(error))
            return
        self.worker = create_background_worker(lambda: (yield from job), _connect={
            "returned": self._on_exported, "errored": self._on_export_error, "finished": self._on_job_finished},
            _start_thread=False)
        self.set_running(True)
        self._start_job(self.worker, f"Exporting the model to {path}…")

    def _on_exported(self, result) -> None:
        saved, difference = result
        show_info(f"Model exported to {saved} (largest difference from PyTorch {difference:.1e})")
        self.status.value = f"Model exported to {saved}."

    def _on_export_error(self, error: Exception) -> None:
        if isinstance(error, (ValueError, OSError)):  # ExportError names the extra to install
            show_error(f"Cannot export the model: {error}")
        else:
            self._on_worker_error(error)

    def _on_job_finished(self) -> None:
        self.worker = None
        self.set_running(False)

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
