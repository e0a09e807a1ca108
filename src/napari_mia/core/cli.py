"""``napari-mia train`` and ``napari-mia predict``: the same core as the widget, for servers and clusters."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .config import (
    ARCHITECTURES,
    BACKBONES,
    CLASS_WEIGHTING,
    LOSSES,
    LR_SCHEDULES,
    OPTIMIZERS,
    TrainingConfig,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-mia", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a folder of images and label images")
    train.add_argument("--images", required=True, help="folder of images (tif, png, jpg)")
    train.add_argument("--labels", required=True, help="folder of label images of class ids, same names")
    train.add_argument("--out", required=True, help="model file to write (.safetensors)")
    train.add_argument("--from-model", help="continue training from this model's weights")
    train.add_argument("--architecture", default="Unet", choices=ARCHITECTURES)
    train.add_argument("--backbone", default="resnet18", choices=BACKBONES)
    train.add_argument("--classes", help="comma-separated class names, background first")
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--learning-rate", type=float, default=3e-3)
    train.add_argument("--downscale", type=float, default=1.0, help="Down Scaling, 0.1 to 1")
    train.add_argument("--patch-size", type=int, default=128)
    train.add_argument("--validation-fraction", type=float, default=0.15)
    colour = train.add_mutually_exclusive_group()
    colour.add_argument("--mono", dest="color_mode", action="store_const", const="mono", default="mono")
    colour.add_argument("--color", dest="color_mode", action="store_const", const="color")
    train.add_argument("--sparse", action="store_true", help="0 = unlabelled, classes start at 1")
    train.add_argument("--binarize", action="store_true",
                       help="every non-zero label is foreground (e.g. instance labels)")
    train.add_argument("--no-pretrained", action="store_true", help="train from scratch (default)")
    train.add_argument("--pretrained", metavar="PATH", help="ImageNet encoder weights file")
    train.add_argument("--max-minutes", type=float, help="stop training after this many minutes")
    train.add_argument("--val-images", help="validation images (instead of a random split)")
    train.add_argument("--val-labels", help="validation label images, same names as --val-images")
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES)
    train.add_argument("--loss", choices=LOSSES)
    train.add_argument("--class-weighting", choices=CLASS_WEIGHTING)
    train.add_argument("--early-stopping", type=int, metavar="EPOCHS", help="patience on the validation metric")
    train.add_argument("--config", metavar="JSON",
                       help="any TrainingConfig settings (Settings, Augmentations…) as a JSON object; "
                            "command-line options take precedence")
    train.add_argument("--device", default="auto")
    train.add_argument("--seed", type=int, default=0)

    predict = commands.add_parser("predict", help="predict label images for a folder of images")
    predict.add_argument("--model", required=True)
    predict.add_argument("--images", required=True, help="folder of images, or one image")
    predict.add_argument("--out", required=True, help="folder for <name>.tif label images")
    predict.add_argument("--device", default="auto")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return train_command(args)
        return predict_command(args)
    except KeyboardInterrupt:
        print("napari-mia: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:  # ConfigError, DataError, ModelFileError, missing files
        print(f"napari-mia: error: {error}", file=sys.stderr)
        return 2


def _load_pairs(image_folder, label_folder, binarize: bool):
    from .files import list_images, pair_by_stem, read_image, read_labels

    pairs = []
    for image_path, label_path in pair_by_stem(list_images(image_folder), label_folder):
        image, channel_axis = read_image(image_path)
        labels = read_labels(label_path)
        if binarize:
            labels = (labels > 0).astype(np.uint8)
        pairs.append((image_path.stem, image, labels, channel_axis))
    return pairs


def _samples(pairs, config):
    from .data import make_samples

    samples = []
    for name, image, labels, channel_axis in pairs:
        try:
            samples += make_samples(image, labels, config, channel_axis)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from error
    return samples


def _class_names(args, pairs) -> list[str]:
    if args.classes:
        return [name.strip() for name in args.classes.split(",")]
    highest = max(int(labels.max()) for _, _, labels, _ in pairs)
    count = max(2, highest if args.sparse else highest + 1)
    return ["background", *(f"class {i}" for i in range(1, count))]


def _training_config(args, pairs, previous: TrainingConfig | None) -> TrainingConfig:
    settings = json.loads(Path(args.config).read_text()) if args.config else {}
    given = {
        "optimizer": args.optimizer,
        "lr_schedule": args.lr_schedule,
        "loss": args.loss,
        "class_weighting": args.class_weighting,
        "early_stopping_patience": args.early_stopping,
    }
    settings.update({key: value for key, value in given.items() if value is not None})
    settings.update(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        validation_fraction=args.validation_fraction,
        max_minutes=args.max_minutes,
        device=args.device,
        seed=args.seed,
    )
    if previous is not None:  # the model fixes architecture, classes, channels and scaling
        return previous.replace(pretrained=False, **settings)
    settings.setdefault("classes", _class_names(args, pairs))
    return TrainingConfig.from_dict({
        **settings,
        "architecture": args.architecture,
        "backbone": args.backbone,
        "pretrained": bool(args.pretrained) and not args.no_pretrained,
        "pretrained_path": args.pretrained,
        "color_mode": args.color_mode,
        "downscale": args.downscale,
        "patch_size": args.patch_size,
        "sparse_labels": args.sparse,
    })


def train_command(args) -> int:
    from tqdm import tqdm

    from .data import split_train_validation
    from .events import BatchEnd, EpochEnd, TrainingDone
    from .io import load_model, save_model, write_history_csv
    from .models import resolve_device
    from .train import Trainer, evaluate

    pairs = _load_pairs(args.images, args.labels, args.binarize)
    model, previous = None, None
    if args.from_model:
        model, previous, _ = load_model(args.from_model)
    config = _training_config(args, pairs, previous)
    if args.val_images and args.val_labels:
        train_samples = _samples(pairs, config)
        validation_samples = _samples(_load_pairs(args.val_images, args.val_labels, args.binarize), config)
    else:
        train_samples, validation_samples = split_train_validation(
            _samples(pairs, config), config.validation_fraction, config.seed)
    print(f"napari-mia: {len(train_samples)} training and {len(validation_samples)} validation frames, "
          f"device {resolve_device(config.device)}", file=sys.stderr)
    trainer = Trainer(config, train_samples, validation_samples, model=model)
    bar = tqdm(total=config.epochs * trainer.batches_per_epoch, unit="batch", file=sys.stderr)
    for event in trainer.run():
        if isinstance(event, BatchEnd):
            bar.update(1)
            bar.set_postfix(epoch=event.epoch + 1, loss=f"{event.loss:.4f}", img_s=f"{event.images_per_second:.1f}")
        elif isinstance(event, EpochEnd):
            metrics = " ".join(f"{k}={v:.4f}" for k, v in event.val_metrics.items())
            bar.write(f"epoch {event.epoch + 1}: train_loss={event.train_loss:.4f} val_loss={event.val_loss} {metrics}")
        elif isinstance(event, TrainingDone):
            bar.close()
            print(f"napari-mia: training {event.reason} after {event.steps} batches, {event.seconds:.0f} s",
                  file=sys.stderr)
    path = save_model(args.out, trainer.model, config, trainer.history)
    if event.message:  # out of memory: the last good weights were saved, the run did not finish
        print(f"napari-mia: error: {event.message} (saved to {path})", file=sys.stderr)
        return 3
    write_history_csv(path.with_suffix(".history.csv"), trainer.history)
    if validation_samples:
        final = evaluate(trainer.model, validation_samples, config, trainer.device)
        print("validation: " + " ".join(f"{k}={v:.4f}" for k, v in final.items()))
    print(f"napari-mia: model saved to {path}", file=sys.stderr)
    return 0


def predict_command(args) -> int:
    from tqdm import tqdm

    from .files import list_images, read_image, write_labels
    from .infer import iter_predict, run
    from .io import load_model
    from .models import resolve_device

    device = resolve_device(args.device)
    model, config, _ = load_model(args.model, device)
    source = Path(args.images)
    paths = [source] if source.is_file() else list_images(source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(paths, unit="image", file=sys.stderr):
        image, channel_axis = read_image(path)
        labels = run(iter_predict(model, image, config, channel_axis, device))
        write_labels(out / f"{path.stem}.tif", labels)
    print(f"napari-mia: {len(paths)} label image(s) written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
