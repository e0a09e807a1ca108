import numpy as np
import pytest
import torch

from napari_mia.core import BatchEnd, EpochEnd, Trainer, TrainingDone, make_samples
from napari_mia.core.optimizers import OPTIMIZERS
from napari_mia.core.train import learning_rate_at
from tests.configs import fixed_config

from ..conftest import blobs


def _samples(config, n=2):
    return [s for seed in range(n) for s in make_samples(*blobs(seed=seed), config)]


def test_events_come_in_order_and_end_with_done(tiny_config):
    config = tiny_config.replace(validation_fraction=0.5)
    trainer = Trainer(config, _samples(config), _samples(config, 1))
    events = list(trainer.run())
    assert isinstance(events[0], BatchEnd) and isinstance(events[-1], TrainingDone)
    epoch_ends = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in epoch_ends] == [0, 1]
    assert {"mean_iou", "foreground_iou"} <= set(epoch_ends[0].val_metrics)
    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert len(batches) == config.epochs * trainer.batches_per_epoch
    assert events[-1].reason == "finished"


def test_stop_is_honoured_at_the_next_batch_and_resume_continues_the_run(tiny_config):
    config = tiny_config.replace(epochs=3)
    trainer = Trainer(config, _samples(config))
    run = trainer.run()
    first = next(run)
    trainer.request_stop()
    rest = list(run)
    assert isinstance(first, BatchEnd) and rest[-1].reason == "stopped"
    assert [type(e) for e in rest] in ([TrainingDone], [EpochEnd, TrainingDone])
    optimizer_state = trainer.optimizer.state_dict()["state"]
    assert optimizer_state  # Adam moments exist and are kept for the resumed run
    resumed = list(trainer.run())
    steps = [e.step for e in resumed if isinstance(e, BatchEnd)]
    assert steps[0] == first.step + 1
    assert trainer.step == config.epochs * trainer.batches_per_epoch
    assert resumed[-1].reason == "finished"


def test_time_budget_stops_cleanly(tiny_config):
    config = tiny_config.replace(epochs=1000, max_minutes=0.002)
    events = list(Trainer(config, _samples(config)).run())
    assert events[-1].reason == "time budget"


def test_training_learns_blobs_and_retraining_continues_from_weights():
    config = fixed_config(epochs=12, batch_size=8, patch_size=64, validation_fraction=0, seed=0)
    samples = _samples(config, 3)
    trainer = Trainer(config, samples)
    losses = [e.train_loss for e in trainer.run() if isinstance(e, EpochEnd)]
    assert losses[-1] < 0.6 * losses[0]
    metrics = Trainer(config, samples, samples, model=trainer.model).validate()
    assert metrics["foreground_iou"] > 0.7
    retrainer = Trainer(config.replace(epochs=1), samples, model=trainer.model)
    assert retrainer.model is trainer.model


def test_sparse_labels_train_only_on_labelled_pixels(tiny_config):
    config = tiny_config.replace(sparse_labels=True)
    image, labels = blobs()
    sparse = np.zeros_like(labels)
    sparse[:8] = 1  # a background stroke
    sparse[labels == 1] = 2
    samples = make_samples(image, sparse, config)
    events = list(Trainer(config, samples).run())
    assert all(np.isfinite(e.loss) for e in events if isinstance(e, BatchEnd))


def test_learning_rate_schedules():
    cosine = fixed_config(learning_rate=1e-2, lr_schedule="cosine", warmup_fraction=0.1, min_learning_rate=1e-5)
    assert learning_rate_at(cosine, 0.05, 0) == pytest.approx(5e-3)  # warm-up
    assert learning_rate_at(cosine, 0.1, 0) == pytest.approx(1e-2)
    assert learning_rate_at(cosine, 0.55, 0) == pytest.approx((1e-2 + 1e-5) / 2)
    assert learning_rate_at(cosine, 1.0, 0) == pytest.approx(1e-5)
    assert learning_rate_at(fixed_config(lr_schedule="constant"), 0.7, 9) == pytest.approx(3e-3)
    step = fixed_config(lr_schedule="step", lr_factor=0.1, lr_step_every=10)
    assert [learning_rate_at(step, 0, e) for e in (9, 10, 25)] == pytest.approx([3e-3, 3e-4, 3e-5])


def test_plateau_reduces_after_patience_epochs_without_improvement(tiny_config):
    config = tiny_config.replace(lr_schedule="plateau", lr_patience=2, lr_factor=0.5)
    trainer = Trainer(config, _samples(config, 1))
    for loss in (1.0, 0.9, 0.95, 0.92):  # best at epoch 2, then two epochs without a better one
        trainer.history.append(EpochEnd(len(trainer.history), 10, loss, 0.0, 0.0))
        trainer._update_plateau()
    assert trainer.plateau_scale == 0.5
    trainer.history.append(EpochEnd(4, 10, 0.93, 0.0, 0.0))
    trainer._update_plateau()
    assert trainer.plateau_scale == 0.5  # patience counts again from the reduction


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_is_what_the_config_says(tiny_config, name):
    config = tiny_config.replace(optimizer=name)
    trainer = Trainer(config, _samples(config, 1))
    expected = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd_nesterov": torch.optim.SGD,
                "adamax": torch.optim.Adamax, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta}
    assert type(trainer.optimizer) is expected[name]


def test_data_loading_workers_are_used(tiny_config):
    config = tiny_config.replace(num_workers=1, epochs=1)
    trainer = Trainer(config, _samples(config))
    assert trainer._loader().num_workers == 1
    assert list(trainer.run())[-1].reason == "finished"


def test_a_model_that_goes_on_training_starts_from_the_retrain_learning_rate(blob_pair, tiny_config):

    image, labels = blob_pair
    config = tiny_config.replace(retrain_lr_factor=0.25, lr_schedule="constant")
    samples = make_samples(image, labels, config)
    first = Trainer(config, samples)
    again = Trainer(config, samples, model=first.model)
    assert first.plateau_scale == 1.0 and again.plateau_scale == 0.25
    events = list(again.run())
    assert events[0].learning_rate == pytest.approx(0.25 * config.learning_rate)


def _train_one_of_two_processes(rank, store, results):
    from torch import distributed

    distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        config = fixed_config(epochs=4, batch_size=2, patch_size=64, validation_fraction=0, seed=1,
                              lr_schedule="plateau", lr_patience=1)
        trainer = Trainer(config, _samples(config, 4))
        losses = [e.train_loss for e in trainer.run() if isinstance(e, EpochEnd)]
        weights = float(sum(p.double().sum() for p in trainer.model.parameters()))
        torch.save({"losses": losses, "scale": trainer.plateau_scale, "weights": weights}, f"{results}{rank}.pt")
    finally:
        distributed.destroy_process_group()


def test_processes_of_a_ddp_run_log_one_loss_and_keep_equal_weights(tmp_path):
    """Each process trains on its own patches; the logged loss is the mean over all of them, so the plateau
    schedule lowers every process's learning rate at the same epoch and the weights stay the same."""
    torch.multiprocessing.spawn(_train_one_of_two_processes, args=(tmp_path / "store", tmp_path / "rank"), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    assert len(first["losses"]) == 4 and first["losses"] == second["losses"]
    assert first["scale"] == second["scale"] and first["weights"] == pytest.approx(second["weights"], rel=1e-6)


def test_cudnn_times_its_kernels_for_training_patches_only(tiny_config):
    """Validation frames and prediction tiles change size: cuDNN's benchmark mode would time every new
    shape anew (on a GPU, seconds a frame), so it is on for the training steps alone."""
    config = tiny_config.replace(validation_fraction=0.5, epochs=1)
    trainer = Trainer(config, _samples(config), _samples(config, 1))
    seen = []
    trainer.model.register_forward_hook(
        lambda module, inputs, output: seen.append((module.training, torch.backends.cudnn.benchmark)))
    before = torch.backends.cudnn.benchmark
    list(trainer.run())
    assert {benchmark for training, benchmark in seen if training} == {True}
    assert {benchmark for training, benchmark in seen if not training} == {before} == {False}
    assert torch.backends.cudnn.benchmark is before


def test_a_run_from_untrained_weights_takes_at_least_the_minimum_of_batches(tiny_config):
    config = tiny_config.replace(epochs=2, min_batches=7)
    trainer = Trainer(config, _samples(config))
    epochs = max(2, -(-7 // trainer.batches_per_epoch))
    assert trainer.config.epochs == epochs > 2
    batches = [e for e in trainer.run() if isinstance(e, BatchEnd)]
    assert len(batches) == epochs * trainer.batches_per_epoch >= 7
    # Going on from trained weights (a round of the loop) keeps Epochs; 0 is Epochs alone.
    assert Trainer(config, _samples(config), model=trainer.model).config.epochs == 2
    assert Trainer(config.replace(min_batches=0), _samples(config)).config.epochs == 2
