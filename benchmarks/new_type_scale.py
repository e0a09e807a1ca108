"""What a scale per image could give the new type (issue #28, acceptance 3): a question for the data.

A model of ``new_types.py`` (``--points``: one Object Size for every image; instances: a scale chosen per
image by a first pass) predicts each of its test images at five scales, and at the scale that brings the
image's nuclei (their true masks: an oracle no user has) to the size the model learned. Points are counted
as the model counts them and matched to the nuclei's centroids as ``new_types.py`` does (F1 and count ratio,
pooled); instances are matched at IoU 0.5 (AP@0.5, mean per image). Prints the figure at the scale
prediction uses today, at the oracle scale, and at the best of the five scales per image (an upper bound).

    python benchmarks/new_type_scale.py W/points-k5-from-model.safetensors --workdir W
    python benchmarks/new_type_scale.py W/k5-from-model.safetensors --workdir W
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
from new_types import centroids, matching_radius

from napari_mia.core.auto import median_width
from napari_mia.core.data import SCALE_RANGE, resize_labels, split_frames
from napari_mia.core.files import read_image
from napari_mia.core.infer import frame_instances, frame_probabilities, run
from napari_mia.core.io import load_model
from napari_mia.core.metrics import average_precision, detection_scores, instance_iou, match_counts, match_points
from napari_mia.core.postprocess import config_instances, config_points

SCALES = (0.35, 0.5, 0.71, 1.0, 1.41)  # times the model's own scale


def point_counts(model, config, frame: np.ndarray, stem: str, scale: float) -> np.ndarray:
    """(true positives, false positives, false negatives) of the image's points predicted at ``scale``."""
    heatmaps = run(frame_probabilities(model, frame, config, "cpu", None, scale))
    positions, _, _ = config_points(heatmaps, config)
    points = (positions + 0.5) * np.divide(frame.shape[1:], heatmaps.shape[1:]) - 0.5
    return np.array(match_points(centroids(stem), points, matching_radius(stem)))


def instance_counts(truth: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """(true positives, false positives, false negatives) of ``instances`` at IoU 0.5."""
    return np.array(match_counts(instance_iou(truth, resize_labels(instances, truth.shape)), 0.5))


def counts_at_scales(model, config, path: Path, work: Path) -> dict:
    """The image's counts per scale: "today" (what prediction does), "oracle", and the five fixed scales."""
    frame = split_frames(*read_image(path))[0]
    if config.kind.points:
        oracle = config.object_size / (2 * matching_radius(path.stem))  # its median diameter to Object Size
        scales = {scale: point_counts(model, config, frame, path.stem, scale * config.downscale)
                  for scale in (*SCALES, oracle)}
        return {"today": scales[1.0], "oracle": scales[oracle], **scales}
    truth = tifffile.imread(work / "test" / "labels" / f"{path.stem}.tif")
    _, instances, scale = run(frame_instances(model, frame, config, "cpu"))
    oracle = float(np.clip(config.object_diameter / median_width(truth), *SCALE_RANGE))
    scales = {}
    for factor in (*SCALES, None):
        at = oracle if factor is None else float(np.clip(factor * config.downscale, *SCALE_RANGE))
        probabilities = run(frame_probabilities(model, frame, config, "cpu", None, at))
        scales["oracle" if factor is None else factor] = instance_counts(truth, config_instances(probabilities,
                                                                                                  config, at))
    return {"today": instance_counts(truth, instances), **scales}


def summary(counts: list[np.ndarray], points: bool) -> str:
    if not points:
        return f"AP@0.5 per image {np.mean([average_precision(*c) for c in counts]):.3f}"
    tp, fp, fn = np.sum(counts, axis=0)
    return f"F1 {detection_scores(tp, fp, fn)['f1']:.3f}, count ratio {(tp + fp) / max(tp + fn, 1):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--workdir", required=True, help="the workdir of new_types.py (its test/images)")
    args = parser.parse_args()
    model, config, _ = load_model(args.model)
    work = Path(args.workdir)
    per_image = [counts_at_scales(model, config, path, work) for path in sorted((work / "test" / "images").iterdir())]
    points = config.kind.points
    score = (lambda c: detection_scores(*c)["f1"]) if points else (lambda c: average_precision(*c))
    best = [max((counts[scale] for scale in SCALES), key=score) for counts in per_image]
    size = f"Object Size {config.object_size:g}" if points else f"object diameter {config.object_diameter:g}"
    print(f"new_type_scale: {len(per_image)} test images, {size}")
    print(f"  the scale prediction uses today: {summary([c['today'] for c in per_image], points)}")
    print(f"  each image's nuclei brought to the learned size (oracle): "
          f"{summary([c['oracle'] for c in per_image], points)}")
    print(f"  best of {len(SCALES)} scales per image (upper bound): {summary(best, points)}")


if __name__ == "__main__":
    main()
