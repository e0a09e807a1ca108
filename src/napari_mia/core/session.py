"""One user's work, without Qt: the experiment, the model and its frozen config, the training history and
what is running.

The dock and the command line are views of a :class:`Session`: they show its state and send it the user's
clicks. It is the only thing that starts a run, and it refuses what would break one: a second job while
one runs, a new model or a change of the fields a model fixes while training builds it. Jobs run as
generators of typed events (:mod:`core.events`), consumed by a thread worker in the dock and by a
progress bar in the CLI.

A run in an experiment folder is kept in the folder (``models/run-NNN.safetensors``, with its score on
the experiment's validation images). A run that scores worse than the model it started from, on the same
validation images, is kept beside it and the better model stays in use.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import FIELDS_FIXED_BY_MODEL, TrainingConfig
from .events import EpochEnd
from .experiment import Experiment, Run

IDLE = "idle"
JOBS = ("training", "predicting", "exporting", "opening")


class SessionBusy(ValueError):
    """A job runs: the request would start a second one or change what the running one uses."""


@dataclass(frozen=True)
class TrainerReady:
    """The run built its samples and trainer (in the worker); ``choices`` are the settings left "auto",
    as chosen from the data (core/auto.py)."""

    trainer: object
    choices: list


@dataclass(frozen=True)
class RunKept:
    """A run in an experiment folder was saved as ``run``; ``in_use`` says whether it is now the
    experiment's model (it is not when it scored worse than the model it started from)."""

    run: Run
    previous_score: float | None
    in_use: bool

    @property
    def message(self) -> str:
        run = self.run
        if run.score is None:
            return f"Run {run.number} saved and in use (no validation images to score it on)."
        scored = f"{run.metric} {run.score:.3f} on {len(run.validation)} validation image(s)"
        if self.previous_score is None:
            return f"Run {run.number} saved and in use: {scored}."
        if self.in_use:
            return f"Run {run.number} saved and in use: {scored}, the model before it {self.previous_score:.3f}."
        return (f"Run {run.number} scored {scored}, below the model before it ({self.previous_score:.3f}): "
                f"the better model stays in use; run {run.number} is kept in {run.path.parent}.")


SampleBuilder = Callable[[], tuple[TrainingConfig, list, list, list]]


class Session:
    """The experiment, the model and what runs. Methods that start a job mark the session busy at once
    (on the caller's thread) and return the generator that does the work (in a worker)."""

    def __init__(self) -> None:
        self.experiment: Experiment | None = None
        self.model = None
        self.config: TrainingConfig | None = None
        self.history: list[EpochEnd] = []
        self.trainer = None
        self.state = IDLE
        self.stopped = False  # the last run was stopped by the user: Resume goes on with it
        self._history_before: list[EpochEnd] = []  # the model's history before the current run
        self._model_of_experiment = False  # the model is the experiment's (the runs know what it learnt from)
        self._run: _RunRecord | None = None
        # Changes whenever the model's weights may have: a prediction made ahead with an older one is outdated.
        self.model_version = 0
        self._ahead: dict[str, int] = {}  # images predicted ahead, not yet shown -> the model version that did
        self._ahead_stop = threading.Event()
        self._ahead_lock = threading.Lock()  # held while the look-ahead copies the model

    # ---- state ----------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.state != IDLE

    def begin(self, job: str) -> None:
        """Mark ``job`` as running; refuse it while another runs."""
        if job not in JOBS:
            raise ValueError(f"unknown job {job!r}")
        if self.busy:
            raise SessionBusy(f"Cannot start {job}: {self.state} is running; stop it or wait for it to end.")
        self.stop_look_ahead()
        self.state = job

    def end(self) -> None:
        self.state = IDLE

    def _refuse_while_busy(self, what: str) -> None:
        if self.busy:
            raise SessionBusy(f"Cannot {what} while {self.state} is running; stop it or wait for it to end.")

    # ---- the experiment -------------------------------------------------------------------------------
    def open_folder(self, folder: str | Path, device="cpu", annotations: str = "labels") -> Experiment:
        """Open ``folder`` as the experiment of an application that annotates with ``annotations`` (label
        images, points or classes: ``Application.annotations``), with the model it uses (if any)."""
        self._refuse_while_busy("open a folder")
        from .io import load_model

        experiment = Experiment.open(folder, annotations=annotations)
        self.stop_look_ahead()
        self.experiment, self._ahead = experiment, {}
        if experiment.model_path.is_file():
            model, config, history = load_model(experiment.model_path, device)
            if config.kind.annotations == annotations:  # the folder's model of this kind
                self.set_model(model, config, history)
                self._model_of_experiment = True
        return experiment

    def close_folder(self) -> None:
        """Close the experiment; the model stays (it can predict images open in napari)."""
        self._refuse_while_busy("close the folder")
        self.stop_look_ahead()
        self.experiment, self._ahead = None, {}

    # ---- the model ------------------------------------------------------------------------------------
    def load_model(self, path: str | Path, device="cpu") -> None:
        from .io import load_model

        self._refuse_while_busy("load a model")
        if str(path).endswith(".zip"):
            from .bioimageio import load_bioimageio

            model, config, history = load_bioimageio(path, device)
        else:
            model, config, history = load_model(path, device)
        self.set_model(model, config, history)

    def set_model(self, model, config: TrainingConfig, history=()) -> None:
        self._refuse_while_busy("change the model")
        self.stop_look_ahead()
        self.model, self.config, self.history = model, config, list(history)
        self.trainer, self.stopped, self._model_of_experiment = None, False, False
        self.model_version += 1

    def reset_model(self) -> None:
        """Forget the model (as MIA's Reset): the fields it fixed are free again."""
        self._refuse_while_busy("reset the model")
        self.stop_look_ahead()
        self.model, self.config, self.history, self.trainer, self.stopped = None, None, [], None, False
        self._model_of_experiment = False
        self.model_version += 1

    def check_change(self, field: str) -> None:
        """Refuse a change of a field the model fixes while a run is building or training it."""
        if field in FIELDS_FIXED_BY_MODEL and self.state == "training":
            raise SessionBusy(f"Cannot change {field} while training runs: stop it first.")

    def save_model(self, path: str | Path) -> Path:
        from .io import save_model

        return save_model(path, self.model, self.config, self.history)

    # ---- training -------------------------------------------------------------------------------------
    def start_training(self, build_samples: SampleBuilder, preview_image=None) -> Generator:
        """A new run on what ``build_samples`` returns (config, "auto" choices, training and validation
        samples), continuing from the model if there is one. Busy from now on."""
        self.begin("training")
        self.stopped = False
        return self._train(build_samples, preview_image)

    def resume_training(self) -> Generator:
        """Go on with the run the user stopped."""
        if self.trainer is None or not self.stopped:
            raise SessionBusy("Nothing to resume: Train starts a new run.")
        self.begin("training")
        self.stopped = False
        return self._train(None, None)

    def request_stop(self) -> None:
        if self.trainer is not None:
            self.trainer.request_stop()

    def _train(self, build_samples: SampleBuilder | None, preview_image) -> Generator:
        self.model_version += 1
        try:
            if build_samples is not None:
                yield self._new_run(build_samples, preview_image)
            done = yield from self.trainer.run()
            self.model, self.config = self.trainer.model, self.trainer.config
            self.history = self._history_before + self.trainer.history
            self.stopped = done.reason == "stopped"
            if self.experiment is not None and self.experiment.folder is not None and not done.message:
                yield self._keep_run()
            return done
        finally:
            self.model_version += 1
            self.end()

    def _new_run(self, build_samples: SampleBuilder, preview_image) -> TrainerReady:
        from .train import Trainer

        config, choices, train_samples, validation_samples = build_samples()
        trainer = Trainer(config, train_samples, validation_samples, model=self.model, preview_image=preview_image)
        self._run = _RunRecord.start(self, trainer)
        self.trainer, self._history_before = trainer, list(self.history)
        self.model, self.config = trainer.model, trainer.config
        return TrainerReady(trainer, choices)

    def _keep_run(self) -> RunKept:
        """Save the run into the experiment; put back the model it started from if that scores better."""
        record, experiment = self._run, self.experiment
        experiment.mark_trained(record.used)  # no longer new: the next run weighs the images added after it
        score = record.score(self.model, self.config, self.trainer)
        better = record.previous_score is None or score is None or score >= record.previous_score
        validation = [e.name for e in record.validation]
        learnt_from = [e.name for e in record.used if e.name not in validation]
        run = experiment.keep_run(record.number, self.model, self.config, self.history, score, record.metric,
                                  learnt_from, validation, in_use=better)
        if not better:
            self.model.load_state_dict(record.previous_weights)
            self.config, self.history = record.previous_config, record.previous_history
            self.trainer, self.stopped = None, False
        self._model_of_experiment = True
        return RunKept(run, record.previous_score, better)

    def use_run(self, number: int, device="cpu") -> None:
        """Make run ``number`` of the experiment its model (the user prefers it to the one in use)."""
        self._refuse_while_busy("change the model")
        experiment = self.experiment
        run = experiment.run(number)
        self.load_model(run.path, device)
        experiment.use_run(run, self.model, self.config, self.history)
        self._model_of_experiment = True

    # ---- predicting the next image ahead ------------------------------------------------------------------
    def needs_prediction(self, entry) -> bool:
        """Whether ``entry`` is to be predicted before it is shown: it has neither labels nor a prediction,
        or only a prediction made ahead by a model that has changed since (and not corrected)."""
        made_by = self._ahead.get(entry.name, self.model_version)
        return entry.status == "unlabelled" or (
            entry.status == "predicted" and not entry.corrected and made_by != self.model_version)

    def shown(self, entry) -> None:
        """The user saw ``entry``: its prediction is theirs now, as any other (never made again unasked)."""
        self._ahead.pop(entry.name, None)

    def look_ahead(self, current, order: str) -> tuple[object, Generator] | None:
        """``(entry, generator)`` predicting, in the background, the image Next goes to from ``current`` (in
        ``order``), so that Next shows it at once; None when there is nothing to predict. Not a job: the
        session stays idle, and any job that begins stops it between two tiles, before it saves anything. It
        predicts with a copy of the model: a run that starts meanwhile changes the model, not the copy."""
        experiment = self.experiment
        if self.busy or self.model is None or experiment is None or experiment.folder is None:
            return None
        entry = experiment.next_entry(current, order)
        if entry is None or not self.needs_prediction(entry):
            return None
        self.stop_look_ahead()
        self._ahead_stop = stop = threading.Event()
        return entry, self._predict_ahead(entry, stop)

    def stop_look_ahead(self) -> None:
        with self._ahead_lock:  # a copy of the model under way ends first: the job may change the model next
            self._ahead_stop.set()

    def _predict_ahead(self, entry, stop: threading.Event) -> Generator:
        from .experiment import iter_predict_entry

        with self._ahead_lock:
            if stop.is_set():
                return None
            model, config, version, experiment = copy.deepcopy(self.model), self.config, self.model_version, (
                self.experiment)
        steps = iter_predict_entry(model, config, experiment, entry, next(model.parameters()).device)
        while True:
            try:
                yield next(steps)
            except StopIteration as done:
                prediction, uncertainty, scale = done.value
                break
            if stop.is_set():
                return None
        if stop.is_set():
            return None
        experiment.save_predicted(entry, prediction, uncertainty, scale=scale)
        self._ahead[entry.name] = version
        return entry

    # ---- export ---------------------------------------------------------------------------------------
    def export(self, file_format: str, path: str | Path, **options) -> Generator:
        """Export a copy of the model (the model in use stays where it is); busy until done."""
        self.begin("exporting")
        return self._export(file_format, path, options)

    def _export(self, file_format, path, options):
        from .export import export

        try:
            return export(self.model, self.config, file_format, path, history=self.history, **options)
        finally:
            self.end()
        yield  # a generator like the other jobs: the worker runs it


@dataclass
class _RunRecord:
    """What a run in an experiment needs to decide, at its end, whether it is better than the model it
    started from: the images it used and validated on, the model before it and its score."""

    number: int
    used: list
    validation: list
    metric: str | None
    previous_score: float | None
    previous_weights: dict | None
    previous_config: TrainingConfig | None
    previous_history: list

    @classmethod
    def start(cls, session: Session, trainer) -> _RunRecord:
        from .metrics import headline_metric

        experiment = session.experiment
        used = [] if experiment is None else list(experiment.last_used)
        validation = [] if experiment is None else list(experiment.last_validation)
        number = 0 if experiment is None or experiment.folder is None else experiment.next_run_number()
        record = cls(number, used, validation, None, None, None, session.config, list(session.history))
        if session.model is None or not trainer.validation_samples or not session._model_of_experiment:
            return record
        # The model in use is compared only on images it did not learn from.
        trained_on = experiment.images_of_model_in_use()
        if trained_on is None or trained_on & {e.name for e in validation}:
            return record
        record.previous_weights = {k: v.detach().cpu().clone() for k, v in session.model.state_dict().items()}
        metrics = _evaluate(session.model, session.config, trainer)
        record.metric = headline_metric(metrics)
        record.previous_score = metrics.get(record.metric)
        return record

    def score(self, model, config: TrainingConfig, trainer) -> float | None:
        from .metrics import headline_metric

        if not trainer.validation_samples:
            return None
        metrics = _evaluate(model, config, trainer)
        self.metric = self.metric or headline_metric(metrics)
        value = metrics.get(self.metric)
        return None if value is None or not np.isfinite(value) else float(value)


def _evaluate(model, config: TrainingConfig, trainer) -> dict:
    from .train import evaluate

    model.eval()
    return evaluate(model, trainer.validation_samples, config, trainer.device)
