"""The dock's predictions: of the chosen image (or its frame, or the visible region) into layers of their
own, shown as they finish, and accepted into the user's annotations when asked."""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_error

from ..core.config import APPLICATIONS
from ..core.events import TileDone
from ..core.session import SessionBusy
from . import layers
from .background import create_background_worker


class PredictionActions:
    """Predict, show, Use as training labels: a part of :class:`~napari_mia.gui.widget.MiaWidget`."""

    def start_prediction(self, *_) -> None:
        """Predict the chosen image (or its current frame) into new layers of its own: `<image> prediction`
        (labels), `<image> detections` (points), `<objects> classes` or predicted frame classes."""
        from ..core import infer

        image_layer = self.image_layer.value
        if self.model is None or image_layer is None:
            show_error("Train or load a model, and choose an image layer, before predicting.")
            return
        config = self.model_config.replace(test_time_augmentation=self.test_time_augmentation.value)
        device = next(self.model.parameters()).device
        objects = self.objects_layer.value
        application = config.kind
        if application.image_classes:
            image, channel_axis = layers.image_array(image_layer)
            if objects is not None:
                job = (infer.predict_object_classes, self.model, image, np.asarray(objects.data), config,
                       channel_axis, device)
                shown = lambda result: self._show_object_classes(image_layer, objects, result)  # noqa: E731
            else:
                job = (infer.predict_classes, self.model, image, config, channel_axis, device)
                shown = self._show_frame_classes
        else:
            image, channel_axis, index = self._current_frame(image_layer, self.visible_region_only.value)
            if application.points:
                job = (infer.iter_predict_points, self.model, image, config, channel_axis, device)
                shown = lambda result: self._show_points(image_layer, result, index)  # noqa: E731
            else:
                job = (_labels_and_confidence, self.model, image, config, channel_axis, device)
                shown = lambda result: self._show_prediction(image_layer, *result, index)  # noqa: E731
        connections = {"returned": shown, "errored": self._on_worker_error, "finished": self.on_prediction_finished}
        if not application.image_classes:  # tiled predictions report progress per tile
            connections["yielded"] = self._on_tile
        self.start_prediction_job(create_background_worker(*job, _connect=connections, _start_thread=False),
                                  f"Predicting '{image_layer.name}'…")

    def start_prediction_job(self, worker, status: str) -> bool:
        """Start a prediction worker: Stop cancels it at the next tile (or image). False (and a message)
        when another job runs."""
        try:
            self.session.begin("predicting")
        except SessionBusy as error:
            show_error(str(error))
            return False
        self.worker = worker
        self.set_running(True)
        self._start_job(worker, status)
        return True

    def label_colors(self):
        """Class colours for class-id labels; None (napari's colours for ids) for instance labels, and
        before there is a model."""
        config = self.model_config
        return None if config is None or config.kind.object_ids else config.class_colors

    def _show_points(self, image_layer, result, index: tuple[int, ...]) -> None:
        points, classes, scores = result
        frame = tuple(i for i in index if not isinstance(i, slice))
        offset = [s.start or 0 for s in index if isinstance(s, slice)]
        if offset:  # a visible region was predicted: back to image coordinates
            points = points + np.array([0.0] * (points.shape[1] - 2) + offset)
        if frame:  # one frame of a stack was predicted: put the points on that frame
            points = np.hstack([np.tile(np.asarray(frame, np.float64), (len(points), 1)), points])
        config = self.model_config
        panel = self.experiment_panel
        if panel.experiment is not None and panel.shows(image_layer, None):  # into the folder's detections layer
            panel.show_table_prediction((points, [config.classes[c] for c in classes], scores))
        else:
            layers.write_points(self.viewer, image_layer, points, classes, scores, config.classes,
                                config.class_colors)
        self._predicted_index = index
        counts = ", ".join(f"{name} {int((classes == i).sum())}" for i, name in enumerate(config.classes))
        self.status.value = f"{len(points)} objects detected ({counts}) in '{image_layer.name} detections'."

    def _show_frame_classes(self, result) -> None:
        classes, scores = result
        names = [self.model_config.classes[c] for c in classes]
        self.predicted_frame_classes = ", ".join(names)
        self.status.value = "Predicted frame classes: " + ", ".join(
            f"{name} ({score:.2f})" for name, score in zip(names, scores))

    def _show_object_classes(self, image_layer, objects, result) -> None:
        ids, classes, scores = result
        config = self.model_config
        layers.write_object_classes(self.viewer, image_layer, objects, ids, classes, scores, config.classes,
                                    config.class_colors)
        counts = ", ".join(f"{name} {int((classes == i).sum())}" for i, name in enumerate(config.classes))
        self.status.value = f"{len(ids)} objects classified ({counts}) in '{objects.name} classes'."

    def on_prediction_finished(self) -> None:
        self.worker = None
        self.session.end()
        if self._cancelled:
            self.status.value, self._cancelled = "Prediction cancelled.", False
        self.set_running(False)

    def _on_tile(self, event: TileDone) -> None:
        self._show_status(f"predicting: tile {event.done} of {event.total}", event.done, event.total,
                          now=event.done == event.total)

    def _show_prediction(self, image_layer, labels: np.ndarray, confidences, index: tuple[int, ...]) -> None:
        try:
            layer = layers.write_prediction(self.viewer, image_layer, labels, index, self.label_colors())
        except (KeyError, ValueError) as error:
            show_error(f"Cannot show the prediction of '{image_layer.name}': {error}")
            return
        ids, confidence = confidences  # of the objects (or classes) just predicted: napari's tools sort by it
        layer.features = {"index": ids, "confidence": confidence}
        self._predicted_index = index
        self.status.value = f"Prediction written to '{image_layer.name} prediction'. Correct it, then retrain."

    def prediction_layer(self):
        image_layer = self.image_layer.value
        if image_layer is None:
            return None
        name = f"{image_layer.name} {APPLICATIONS[self.application.value].prediction_suffix}"
        if name in self.viewer.layers and layers.is_prediction_layer(self.viewer.layers[name]):
            return self.viewer.layers[name]
        return None

    def use_prediction_as_labels(self, *_) -> None:
        """Accept the prediction (after the user corrected it) as training annotations: an explicit action.
        Labels: the predicted frame (or region) is copied into the chosen labels layer, the rest of the
        user's labels stay; in an experiment, the image's labels become the prediction (Accept)."""
        application = APPLICATIONS[self.application.value]
        if application.image_classes:
            if self.predicted_frame_classes:
                self.frame_classes.value = self.predicted_frame_classes
            return
        layer = self.prediction_layer()
        if layer is None:
            return
        if application.points:
            self._merge_points(layer)
        elif self._open_experiment() is not None and self.experiment_panel.current is not None:
            self.experiment_panel.accept()
        elif self.labels_layer.value is not None and self._predicted_index is not None:
            target, index = self.labels_layer.value, self._predicted_index
            if target.data.shape != layer.data.shape:
                show_error(f"'{layer.name}' and '{target.name}' differ in shape; choose the labels of this image")
                return
            target.data[index] = layer.data[index]
            target.refresh()
            self.status.value = f"'{layer.name}' copied into '{target.name}': it trains from the next Train."


    def _merge_points(self, detections) -> None:
        """The detections of the predicted frame (or region) replace the user's points there; the user's
        points elsewhere stay, and training stays on the user's layer."""
        target, index = self.points_layer.value, self._predicted_index
        if target is None:  # no points of the user's yet: a copy of the detections becomes them
            target = self.viewer.add_points(np.asarray(detections.data), name=f"{self.image_layer.value.name} points",
                                            features={"class": list(detections.features["class"])},
                                            scale=detections.scale, translate=detections.translate)
            self.points_layer.value = target
        else:
            names = self.model_config.classes
            positions, class_ids = layers.point_annotations(target, names)
            keep = ~layers.points_within(positions, index or ())
            detected = np.asarray(detections.data, np.float64)
            classes = [names[c] for c in class_ids[keep]] + [str(c) for c in detections.features["class"]]
            target.data = np.concatenate([positions[keep], detected.reshape(-1, positions.shape[1])])
            target.features = {"class": classes}
        self.status.value = f"'{detections.name}' copied into '{target.name}': it trains from the next Train."


def _labels_and_confidence(model, image, config, channel_axis, device):
    """Worker: the label image of ``image`` and the confidence of each of its objects (or classes)."""
    from ..core.data import spatial_shape
    from ..core.infer import iter_predict
    from ..core.uncertainty import object_confidence

    uncertainty = np.zeros(spatial_shape(image, channel_axis), np.float32)
    labels = yield from iter_predict(model, image, config, channel_axis, device, uncertainty=uncertainty)
    return labels, object_confidence(labels, uncertainty)
