"""Training augmentations. The only module that imports albumentations (unmaintained after 2.0.8),
so it can be replaced without touching the rest."""

from __future__ import annotations

import albumentations as A
import numpy as np

from .config import TrainingConfig


def build_train_transform(config: TrainingConfig):
    """Geometric and intensity augmentations applied identically to a patch and its labels.

    Returns a callable ``(image (C, H, W), labels (H, W)) -> (image, labels)``.
    """
    compose = A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.3),
        ],
        seed=config.seed,
    )

    def transform(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = compose(image=np.moveaxis(image, 0, -1), mask=labels)
        return np.moveaxis(out["image"], -1, 0), out["mask"]

    return transform
