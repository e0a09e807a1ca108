"""Where a training epoch's time goes on this machine: loading and augmenting a batch, a training step,
validating a whole frame. Meant for a GPU machine (is the data loader the bottleneck?) as much as a CPU.

    python benchmarks/epoch_time.py [--images DIR --labels DIR] [--workers N]

Default data: the DSB2018 training images of the shared data (instance segmentation, the defaults).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from napari_mia.core.auto import resolve
from napari_mia.core.cli import _auto_examples, _load_examples, _samples, _training_config, build_parser
from napari_mia.core.train import Trainer, evaluate

DSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_nuclei" / "train"
WARM_UP, TIMED, FRAMES = 10, 10, 12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", default=str(DSB / "images"))
    parser.add_argument("--labels", default=str(DSB / "labels"))
    parser.add_argument("--workers", type=int, default=0)
    options = parser.parse_args()
    args = build_parser().parse_args(["train", "--application", "instance", "--images", options.images,
                                      "--labels", options.labels, "--out", "unused.safetensors"])
    examples = _load_examples(args, args.images, args.labels)
    config, _ = resolve(_training_config(args, examples, None), _auto_examples(examples))
    config.num_workers = options.workers
    train, validation = _samples(examples, config, args)
    trainer = Trainer(config, train, validation)
    synchronize = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    print(f"device {trainer.device}, batch {config.batch_size} of {config.patch_size}² patches, "
          f"{options.workers} loader workers", flush=True)

    clock = time.perf_counter()
    batches = []
    for batch in trainer._loader():
        batches.append(batch)
        if len(batches) == WARM_UP + TIMED:
            break
    data_ms = (time.perf_counter() - clock) / len(batches) * 1000
    for images, labels in batches[:WARM_UP]:
        trainer._train_step(images, labels)
    synchronize()
    clock = time.perf_counter()
    for images, labels in batches[WARM_UP:]:
        trainer._train_step(images, labels)
    synchronize()
    step_ms = (time.perf_counter() - clock) / TIMED * 1000
    clock = time.perf_counter()
    evaluate(trainer.model, validation[:FRAMES], config, trainer.device)
    synchronize()
    frame_ms = (time.perf_counter() - clock) / min(FRAMES, len(validation)) * 1000
    ratio = step_ms / data_ms
    print(f"data_ms_per_batch {data_ms:.0f}\nstep_ms {step_ms:.0f}\nvalidation_ms_per_frame {frame_ms:.0f}")
    print(f"step_over_data {ratio:.2f} >=1 {'pass' if ratio >= 1 else 'fail'} "
          "(under 1: the loader holds the model up; raise --workers)")


if __name__ == "__main__":
    main()
