"""The settings the unit tests were written for: fixed values instead of the data-driven "auto" ones and
the ImageNet encoder, so that a test's tiny image decides nothing behind its back and the tests stay fast.
The defaults themselves are tested in tests/core/test_auto.py and tests/core/test_config.py."""

from napari_mia.core import TrainingConfig

FIXED = {"backbone": "resnet18", "pretrained": False, "color_mode": "mono", "downscale": 1.0, "object_size": 12.0}


def fixed_config(**settings) -> TrainingConfig:
    return TrainingConfig(**{**FIXED, **settings})

# A network of about a hundred thousand weights (timm's test EfficientNet): for tests whose subject is the
# loop, not accuracy.
TINY_NETWORK = {"backbone": "tu-test_efficientnet", "pretrained": False, "decoder_channels": (16, 16, 16, 16, 16)}
