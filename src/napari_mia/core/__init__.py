"""GUI-free core of napari-mia: never imports Qt, napari or magicgui.

Its names are imported when first used, so that ``napari-mia --help`` or a bad argument answers before
PyTorch's model libraries load."""

import importlib

_HOMES = {
    "ConfigError": "config", "TrainingConfig": "config",
    "DataError": "data", "Sample": "data", "make_samples": "data", "split_train_validation": "data",
    "BatchEnd": "events", "EpochEnd": "events", "TileDone": "events", "TrainingDone": "events",
    "iter_predict": "infer", "predict": "infer",
    "ModelFileError": "io", "load_model": "io", "save_model": "io",
    "Trainer": "train", "evaluate": "train",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
