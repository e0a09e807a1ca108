"""GUI-free core of napari-mia: never imports Qt, napari or magicgui."""

from .config import ConfigError, TrainingConfig
from .data import DataError, Sample, make_samples, split_train_validation
from .events import BatchEnd, EpochEnd, TileDone, TrainingDone
from .infer import iter_predict, predict
from .io import ModelFileError, load_model, save_model
from .train import Trainer, evaluate

__all__ = [
    "BatchEnd",
    "ConfigError",
    "DataError",
    "EpochEnd",
    "ModelFileError",
    "Sample",
    "TileDone",
    "Trainer",
    "TrainingConfig",
    "TrainingDone",
    "evaluate",
    "iter_predict",
    "load_model",
    "make_samples",
    "predict",
    "save_model",
    "split_train_validation",
]
