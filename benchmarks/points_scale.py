"""What a scale per image could give the new type's points (issue #28, acceptance 3): a question for the data.

A points model of ``new_types.py --points`` (one Object Size for every image) predicts each test image at
five scales; its points, counted as the model counts them, are matched to the nuclei's centroids as
``new_types.py`` does. Prints F1 and count ratio at scale 1 (what prediction does today), at the scale that
brings each image's median nucleus diameter (from its true masks: an oracle no user has) to the model's
Object Size, and at the best of the five scales per image (an upper bound).

    python benchmarks/points_scale.py W/points-k5-from-model.safetensors --workdir W
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from new_types import centroids, matching_radius

from napari_mia.core.data import split_frames
from napari_mia.core.files import read_image
from napari_mia.core.infer import frame_probabilities, run
from napari_mia.core.io import load_model
from napari_mia.core.metrics import detection_scores, match_points
from napari_mia.core.postprocess import config_points

SCALES = (0.35, 0.5, 0.71, 1.0, 1.41)


def counts_at_scales(model, config, path: Path) -> dict[float, np.ndarray]:
    """Per scale, (true positives, false positives, false negatives) of the image's points."""
    frame = split_frames(*read_image(path))[0]
    truth, radius = centroids(path.stem), matching_radius(path.stem)
    counts = {}
    for scale in SCALES:
        heatmaps = run(frame_probabilities(model, frame, config, "cpu", None, scale * config.downscale))
        positions, _, _ = config_points(heatmaps, config)
        points = (positions + 0.5) * np.divide(frame.shape[1:], heatmaps.shape[1:]) - 0.5
        counts[scale] = np.array(match_points(truth, points, radius))
    return counts


def summary(counts: list[np.ndarray]) -> str:
    tp, fp, fn = np.sum(counts, axis=0)
    return f"F1 {detection_scores(tp, fp, fn)['f1']:.3f}, count ratio {(tp + fp) / max(tp + fn, 1):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--workdir", required=True, help="the workdir of new_types.py (its test/images)")
    args = parser.parse_args()
    model, config, _ = load_model(args.model)
    per_image = {path: counts_at_scales(model, config, path)
                 for path in sorted((Path(args.workdir) / "test" / "images").iterdir())}
    oracle = [counts[min(SCALES, key=lambda s: abs(np.log(s * 2 * matching_radius(path.stem) / config.object_size)))]
              for path, counts in per_image.items()]
    best = [max(counts.values(), key=lambda c: detection_scores(*c)["f1"]) for counts in per_image.values()]
    print(f"points_scale: {len(per_image)} test images, Object Size {config.object_size:g}")
    print(f"  scale 1 (today): {summary([counts[1.0] for counts in per_image.values()])}")
    print(f"  each image's nuclei brought to Object Size (oracle): {summary(oracle)}")
    print(f"  best of {len(SCALES)} scales per image (upper bound): {summary(best)}")


if __name__ == "__main__":
    main()
