"""Training augmentations. The only module that imports albumentations (unmaintained after 2.0.8),
so it can be replaced without touching the rest."""

from __future__ import annotations

import os

# albumentations asks PyPI for a newer version at import (up to 2 s where the network is closed, and a
# request the user did not ask for): off unless the user turned it on.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2
import numpy as np

from .config import Augmentations, TrainingConfig
from .data import IGNORE


def geometric_transforms(aug: Augmentations) -> list:
    """Transforms that move pixels; labels follow with nearest-neighbour interpolation."""
    reflect = cv2.BORDER_REFLECT_101
    transforms = []
    if aug.flip_horizontal:
        transforms.append(A.HorizontalFlip(p=0.5))
    if aug.flip_vertical:
        transforms.append(A.VerticalFlip(p=0.5))
    if aug.rotate90:
        transforms.append(A.RandomRotate90(p=0.5))
    if aug.affine_probability:
        transforms.append(A.Affine(scale=aug.scale, translate_percent=aug.translate, shear=aug.shear,
                                   rotate=aug.rotate, border_mode=reflect, p=aug.affine_probability))
    if aug.elastic_probability:
        transforms.append(A.ElasticTransform(alpha=30, sigma=6, border_mode=reflect, p=aug.elastic_probability))
    return transforms


def intensity_transforms(aug: Augmentations) -> list:
    """Transforms that change pixel values only (labels untouched)."""
    transforms = []
    if aug.blur_probability:
        transforms.append(A.GaussianBlur(sigma_limit=aug.blur_sigma, p=aug.blur_probability))
    if aug.brightness_contrast_probability:
        transforms.append(A.RandomBrightnessContrast(brightness_limit=aug.brightness_limit,
                                                     contrast_limit=aug.contrast_limit,
                                                     p=aug.brightness_contrast_probability))
    if aug.noise_probability:
        transforms.append(A.GaussNoise(std_range=aug.noise_std, p=aug.noise_probability))
    if aug.dropout_probability:
        # Dropped image pixels keep their labels' meaning unknown, so the loss ignores them.
        transforms.append(A.CoarseDropout(num_holes_range=(1, 6), hole_height_range=(0.03, 0.15),
                                          hole_width_range=(0.03, 0.15), fill=0, fill_mask=IGNORE,
                                          p=aug.dropout_probability))
    return transforms


def stain_jitter(image: np.ndarray, limit: float, rng: np.random.Generator) -> np.ndarray:
    """A (3, H, W) RGB image (normalised to about 0-1) with each stain's optical density scaled by
    1 ± ``limit`` and shifted by ± ``limit`` (Tellez et al. 2018, in the haematoxylin-eosin-DAB space of
    Ruifrok and Johnston that scikit-image uses). No jitter gives the image back."""
    from skimage.color import hed_from_rgb, rgb_from_hed

    density = -np.log(np.clip(np.moveaxis(image, 0, -1), 1 / 255, None))
    stains = density @ hed_from_rgb * rng.uniform(1 - limit, 1 + limit, 3) + rng.uniform(-limit, limit, 3)
    jittered = np.exp(-(stains @ rgb_from_hed))
    return image + np.moveaxis(jittered - np.exp(-density), -1, 0)  # values below 1/255 keep their distance


def build_train_transform(config: TrainingConfig, augmentations: Augmentations | None = None):
    """A callable ``(image (C, H, W), labels (H, W)) -> (image, labels)`` applying the same random
    geometry to both."""
    aug = augmentations or config.augmentations
    if not aug.enabled:
        return None
    compose = A.Compose(geometric_transforms(aug) + intensity_transforms(aug), seed=config.seed)
    rng = np.random.default_rng(config.seed)

    def transform(image: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """``labels``: (H, W) ids, (K, H, W) heatmaps, or None (classification: image only)."""
        targets = {} if labels is None else {"mask": labels if labels.ndim == 2 else np.moveaxis(labels, 0, -1)}
        out = compose(image=np.moveaxis(image, 0, -1), **targets)
        image = np.moveaxis(out["image"], -1, 0)
        if labels is not None:
            labels = out["mask"] if labels.ndim == 2 else np.moveaxis(out["mask"], -1, 0)
        if aug.gamma_probability and rng.random() < aug.gamma_probability:
            # Sign-preserving gamma: normalised images dip below 0, where a plain power is undefined.
            gamma = rng.uniform(*aug.gamma_limit) / 100
            image = np.sign(image) * np.abs(image) ** gamma
        if aug.stain_probability and len(image) == 3 and rng.random() < aug.stain_probability:
            image = stain_jitter(image, aug.stain_limit, rng)
        if aug.invert_probability and rng.random() < aug.invert_probability:
            image = 1 - image  # normalised images run from about 0 to 1
        return image.astype(np.float32, copy=False), labels

    return transform


def preview_patches(dataset, count: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``count`` augmented training patches as the network sees them: images (N, C, H, W), labels (N, H, W)."""
    pairs = [dataset[index] for index in range(count)]  # patches are random per index, any count works
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
