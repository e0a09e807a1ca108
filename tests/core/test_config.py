import pytest

from napari_mia.core.config import ConfigError, TrainingConfig


def test_defaults_are_valid_and_follow_color_mode():
    assert TrainingConfig(color_mode="mono").input_channels == 1
    assert TrainingConfig(color_mode="color").input_channels == 3
    assert TrainingConfig().input_channels is None  # Color/Mono auto: chosen with the data
    assert len(TrainingConfig(classes=["a", "b", "c"]).class_colors) == 3


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"downscale": 0.05}, "downscale"),
        ({"downscale": 1.5}, "downscale"),
        ({"patch_size": 100}, "patch_size"),
        ({"architecture": "Transformer"}, "architecture"),
        ({"backbone": "vgg99"}, "backbone"),
        ({"classes": ["only"]}, "classes"),
        ({"classes": ["a", "a"]}, "classes"),
        ({"color_mode": "color", "input_channels": 2}, "input_channels"),
        ({"epochs": 0}, "epochs"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"max_minutes": 0}, "max_minutes"),
    ],
)
def test_out_of_range_settings_are_rejected_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        TrainingConfig(**changes)


def test_round_trip_through_dict():
    config = TrainingConfig(classes=["bg", "nucleus", "cell"], downscale=0.5, color_mode="color",
                            decoder_channels=(64, 32, 16, 16, 8))
    assert TrainingConfig.from_dict(config.to_dict()) == config


def test_a_model_saved_with_count_by_mass_keeps_its_counting_rule():
    record = {key: value for key, value in TrainingConfig().to_dict().items() if key != "mass_below_frames"}
    assert TrainingConfig.from_dict({**record, "count_by_mass": True}).mass_below_frames > 0  # by mass
    assert TrainingConfig.from_dict({**record, "count_by_mass": False}).mass_below_frames == 0  # thresholds


def test_unknown_or_newer_settings_are_refused():
    record = TrainingConfig().to_dict()
    with pytest.raises(ConfigError, match="unknown settings"):
        TrainingConfig.from_dict({**record, "surprise": 1})
    with pytest.raises(ConfigError, match="newer"):
        TrainingConfig.from_dict({**record, "config_version": 999})
