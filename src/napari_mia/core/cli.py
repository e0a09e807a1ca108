"""``napari-mia train`` and ``napari-mia predict``: the same core as the widget, for servers and clusters."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from .config import (
    APPLICATIONS,
    ARCHITECTURES,
    AUTO,
    BACKBONES,
    CLASS_WEIGHTING,
    CLASSIFICATION_ARCHITECTURES,
    LR_SCHEDULES,
    OPTIMIZERS,
    TrainingConfig,
    default_classes,
)
from .losses import all_loss_names

# One source of defaults: the config's (the dock shows the same).
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainingConfig)}


def _auto_or_number(text: str) -> float | str:
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a number or 'auto', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-mia", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a folder of images and their annotations")
    train.add_argument("--application", default=DEFAULTS["application"], choices=APPLICATIONS,
                       help="semantic: --labels of class ids; instance: --labels of object ids; "
                            "detection: --points CSV; classification: --classes CSV")
    train.add_argument("--images", required=True, help="folder of images (tif, png, jpg)")
    train.add_argument("--labels", help="folder of label images (class or object ids), same names as the images")
    train.add_argument("--points", metavar="CSV", help="detection: columns image,y,x[,class] (image = name or stem)")
    train.add_argument("--out", required=True, help="model file to write, named as given (m.safetensors by convention)")
    train.add_argument("--from-model", help="continue training from this model's weights")
    train.add_argument("--architecture", choices=ARCHITECTURES + CLASSIFICATION_ARCHITECTURES)
    train.add_argument("--backbone", default=DEFAULTS["backbone"], choices=BACKBONES,
                       help="Model Backbone (default %(default)s, from ImageNet weights when they are on the machine)")
    train.add_argument("--classes", help="comma-separated class names (background first for segmentation); "
                       "classification: a CSV with columns image,class")
    train.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    train.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    train.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    train.add_argument("--downscale", type=_auto_or_number, default=DEFAULTS["downscale"],
                       help="Down Scaling, 0.1 to 1, or auto (default): objects brought towards 30 px across")
    train.add_argument("--patch-size", type=int, default=DEFAULTS["patch_size"])
    train.add_argument("--validation-fraction", type=float, default=DEFAULTS["validation_fraction"])
    colour = train.add_mutually_exclusive_group()
    colour.add_argument("--mono", dest="color_mode", action="store_const", const="mono", default=DEFAULTS["color_mode"],
                        help="one grey channel (default: Color as soon as one training image is colour)")
    colour.add_argument("--color", dest="color_mode", action="store_const", const="color")
    train.add_argument("--sparse", action="store_true", help="0 = unlabelled, classes start at 1")
    train.add_argument("--binarize", action="store_true",
                       help="every non-zero label is foreground (e.g. instance labels)")
    train.add_argument("--no-pretrained", action="store_true", help="train from scratch")
    train.add_argument("--pretrained", metavar="PATH", help="ImageNet encoder weights file (default: the "
                       "backbone's weights from their pip package or the torch hub cache, when there)")
    train.add_argument("--max-minutes", type=float, help="stop training after this many minutes")
    train.add_argument("--object-size", type=_auto_or_number,
                       help="detection: typical object diameter in image pixels (MIA's Object Size), or auto "
                            "(default): measured around the points")
    train.add_argument("--val-images", help="validation images (instead of a random split)")
    train.add_argument("--val-labels", help="validation label images, same names as --val-images "
                       "(points and classes of validation images come from the same CSV)")
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES)
    train.add_argument("--loss", choices=all_loss_names())
    train.add_argument("--class-weighting", choices=CLASS_WEIGHTING)
    train.add_argument("--early-stopping", type=int, metavar="EPOCHS", help="patience on the validation metric")
    train.add_argument("--config", metavar="JSON",
                       help="any TrainingConfig settings (Settings, Augmentations…) as a JSON object; "
                            "command-line options take precedence")
    train.add_argument("--device", default="auto")
    train.add_argument("--seed", type=int, default=0)

    predict = commands.add_parser("predict", help="predict a folder of images (or one image)")
    predict.add_argument("--model", required=True)
    predict.add_argument("--images", required=True, help="folder of images, or one image")
    predict.add_argument("--out", required=True,
                         help="folder for <name>.tif label images, points.csv (detection) or classes.csv")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--tta", action=argparse.BooleanOptionalAction,
                         help="test-time augmentation: average the four flips (default: as the model was trained "
                              "to predict; on for instance segmentation)")
    predict.add_argument("--tile-size", type=int, help="tile size in pixels (multiple of 32)")
    predict.add_argument("--out-format", choices=("tif", "zarr"),
                         help="label images as TIFF or zarr (default: zarr for zarr inputs and TIFFs over 1 GB, "
                              "written tile by tile)")
    predict.add_argument("--measure", action="store_true",
                         help="also write measurements.csv: label, class, area, centroid, mean intensity, perimeter")
    predict.add_argument("--uncertainty", action="store_true",
                         help="also write <name>_uncertainty.tif (how unsure the model is of each pixel, 0 to 1) "
                              "and uncertainty.csv: the images, most uncertain first (open those first)")

    export = commands.add_parser("export", help="export a model as ONNX, TorchScript or a bioimage.io package")
    export.add_argument("--model", required=True)
    export.add_argument("--format", required=True, choices=("onnx", "torchscript", "bioimageio"))
    export.add_argument("--out", required=True, help="file (.onnx, .pt) or bioimage.io package (.zip)")
    export.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest difference of an output probability from PyTorch's accepted when checking "
                             "the export (plus 0.1%% of the probability)")
    export.add_argument("--author", action="append", default=[],
                        help="bioimage.io: an author of the model (repeat for several; default: your user name)")
    export.add_argument("--license", help="bioimage.io: the model's SPDX license id (default: napari-mia's, "
                                          "BSD-3-Clause)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return train_command(args)
        if args.command == "export":
            return export_command(args)
        return predict_command(args)
    except KeyboardInterrupt:
        print("napari-mia: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:  # ConfigError, DataError, ModelFileError, missing files
        print(f"napari-mia: error: {error}", file=sys.stderr)
        return 2


def _read_table(path, columns: tuple[str, ...]) -> list[dict]:
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in columns if not rows or c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: needs columns {', '.join(columns)}; missing {', '.join(missing)}")
    return rows


def _stem(name: str) -> str:
    return Path(name.strip()).stem


def _load_examples(args, image_folder, label_folder=None):
    """What to train on. Semantic and instance: the experiment of ``image_folder`` (its painted and
    accepted images, with the roles saved beside them, as the dock leaves them). Detection and
    classification: (name, image, annotation, channel_axis) for every annotated image, the annotation
    being a (points (N, 2), class names) pair or a class name."""
    from .experiment import STATE_FILE, Experiment
    from .files import list_images, read_image

    kind = APPLICATIONS[args.application].annotations
    table = {"points": args.points, "classes": args.classes}.get(kind)
    if table and Path(table).is_file() and (Path(image_folder) / STATE_FILE).is_file():
        # A folder the dock wrote: exactly the images the user annotated or accepted, with their roles.
        experiment = Experiment.open(image_folder, annotations=kind, table=table)
        if not experiment.annotated_entries():
            raise ValueError(f"no image of {image_folder} is annotated in {table}")
        return experiment
    if APPLICATIONS[args.application].label_images:
        if not label_folder:
            raise ValueError(f"--labels is needed for {args.application} segmentation")
        if not Path(label_folder).is_dir():
            raise FileNotFoundError(f"{label_folder}: not a folder")
        experiment = Experiment.open(image_folder, label_folder)
        if not experiment.annotated_entries():
            raise FileNotFoundError(f"no label image in {label_folder} has the name of an image")
        return experiment
    if APPLICATIONS[args.application].points:
        if not args.points:
            raise ValueError("--points CSV (columns image,y,x[,class]) is needed for detection")
        rows = _read_table(args.points, ("image", "y", "x"))
        by_image = {}
        for row in rows:
            by_image.setdefault(_stem(row["image"]), []).append(row)

        def annotation(stem):
            mine = by_image.get(stem, [])
            return (np.array([[float(r["y"]), float(r["x"])] for r in mine]).reshape(-1, 2),
                    [(r.get("class") or "object").strip() for r in mine])

        names = None  # every image is used: one without points teaches that it holds no object
    else:
        if not args.classes or not Path(args.classes).is_file():
            raise ValueError("--classes CSV (columns image,class) is needed for classification")
        classes = {_stem(row["image"]): row["class"].strip() for row in _read_table(args.classes, ("image", "class"))}
        annotation, names = classes.get, classes
    examples = []
    for path in list_images(image_folder):
        if names is not None and path.stem not in names:
            continue
        image, channel_axis = read_image(path)
        examples.append((path.stem, image, annotation(path.stem), channel_axis))
    if not examples:
        raise ValueError(f"no image in {image_folder} is named in {args.classes}")
    return examples


def _samples(examples, config, args, validation_given: bool = False):
    """(training, validation) samples; with ``validation_given`` all of them train (validation comes
    from --val-images)."""
    from .data import make_class_samples, make_point_samples, one_frame_stack, split_train_validation
    from .experiment import Experiment

    if validation_given:
        config = config.replace(validation_fraction=0.0)
    if isinstance(examples, Experiment):
        return examples.samples(config, binarize=args.binarize)
    samples = []
    for name, image, annotation, channel_axis in examples:
        try:
            if config.kind.points:
                points, class_names = annotation
                samples += make_point_samples(image, points, _class_ids(class_names, config), config, channel_axis)
            else:
                stack, axis = one_frame_stack(image, channel_axis)
                samples += make_class_samples(stack, _class_ids([annotation], config), config, axis)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from error
    return split_train_validation(samples, config.validation_fraction, config.seed)


_LABELS = {"color_mode": "Color/Mono", "downscale": "Down Scaling", "object_size": "Object Size"}


def _auto_examples(examples):
    """The training images and annotations as the "auto" settings read them, one at a time."""
    from .auto import Example
    from .experiment import Experiment

    if isinstance(examples, Experiment):
        yield from examples.auto_examples()
        return
    for name, image, annotation, channel_axis in examples:
        points, names = annotation if isinstance(annotation, tuple) else (None, ())
        yield Example(image, channel_axis, points=points, point_classes=tuple(names), name=name)


def _class_ids(names, config) -> np.ndarray:
    unknown = sorted(set(names) - set(config.classes))
    if unknown:
        raise ValueError(f"classes {unknown} are not among the model's classes {config.classes}")
    return np.array([config.classes.index(n) for n in names], np.int64)


def _class_names(args, examples) -> list[str]:
    from .experiment import Experiment

    if args.classes and not Path(args.classes).is_file():
        return [name.strip() for name in args.classes.split(",")]
    kind = APPLICATIONS[args.application]
    if isinstance(examples, Experiment) and examples.table is not None:
        return examples.class_names() or default_classes(args.application)
    if kind.points:
        return sorted({name for _, _, (_, names), _ in examples for name in names}) or default_classes(args.application)
    if kind.image_classes:
        return sorted({annotation for _, _, annotation, _ in examples})
    if kind.object_ids:
        return default_classes(args.application)
    highest = 1 if args.binarize else examples.highest_label()
    count = max(2, highest if args.sparse else highest + 1)
    return ["background", *(f"class {i}" for i in range(1, count))]


def _training_config(args, examples, previous: TrainingConfig | None) -> TrainingConfig:
    settings = json.loads(Path(args.config).read_text()) if args.config else {}
    given = {
        "optimizer": args.optimizer,
        "lr_schedule": args.lr_schedule,
        "loss": args.loss,
        "class_weighting": args.class_weighting,
        "early_stopping_patience": args.early_stopping,
        "object_size": args.object_size,
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
    settings.setdefault("classes", _class_names(args, examples))
    return TrainingConfig.from_dict({
        **settings,
        "application": args.application,
        "architecture": args.architecture,
        "backbone": args.backbone,
        "pretrained": False if args.no_pretrained else (True if args.pretrained else None),
        "pretrained_path": args.pretrained,
        "color_mode": args.color_mode,
        "downscale": args.downscale,
        "patch_size": args.patch_size,
        "sparse_labels": args.sparse,
    })


def _start_distributed(args) -> int:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPU), give
    each process its own GPU, and return this process's rank."""
    import os

    import torch
    from torch import distributed

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    use_cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        args.device = f"cuda:{local_rank}"
    elif args.device == "auto":
        args.device = "cpu"
    distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return distributed.get_rank()


def train_command(args) -> int:
    from torch import distributed

    rank = _start_distributed(args)
    try:
        code = _train(args, rank)
        if distributed.is_initialized():  # no process closes its connections while the first still saves
            distributed.barrier()
        return code
    finally:
        if distributed.is_initialized():
            distributed.destroy_process_group()


def _train(args, rank: int) -> int:
    import os

    from tqdm import tqdm

    from .auto import resolve
    from .events import BatchEnd, EpochEnd, TrainingDone
    from .io import history_csv_path, load_model, save_model, write_history_csv
    from .models import resolve_device
    from .postprocess import counting_rule
    from .session import Session
    from .train import evaluate
    from .weights import describe

    session, previous = Session(), None  # the dock's session, headless
    if args.from_model:  # the model's history goes on: its earlier runs, then this one
        model, previous, history = load_model(args.from_model)
        session.set_model(model, previous, history)
        args.application = previous.application
    examples = _load_examples(args, args.images, args.labels)
    config, choices = resolve(_training_config(args, examples, previous), _auto_examples(examples))
    if not rank:
        weights = f"{config.backbone} from {args.from_model}" if args.from_model else describe(config)
        told = [f"{_LABELS[c.field]} {c.text}" for c in choices if c.field in _LABELS]  # the scale: in Down Scaling
        print("napari-mia: " + "; ".join([weights, *told]), file=sys.stderr)
    train_samples, validation_samples = _samples(examples, config, args, validation_given=bool(args.val_images))
    if args.val_images:
        validation_samples = sum(_samples(_load_examples(args, args.val_images, args.val_labels), config, args,
                                          validation_given=True), [])
    run = session.start_training(lambda: (config, choices, train_samples, validation_samples))
    trainer = next(run).trainer  # the first event: TrainerReady
    if rank:  # under torchrun only the first process reports and saves
        for _ in run:
            pass
        return 0
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    epochs, batches = trainer.config.epochs, trainer.batches_per_epoch
    extended = f" (Epochs {config.epochs}: at least {config.min_batches} batches)" if epochs != config.epochs else ""
    colour = trainer.dataset.colour_frames
    looks = f" ({colour} in colour: half the patches)" if colour else ""
    print(f"napari-mia: {len(train_samples)} training{looks} and {len(validation_samples)} validation frames, "
          f"{epochs} epochs of {batches} batch{'es' * (batches > 1)}{extended}, device {resolve_device(config.device)}"
          + (f", {processes} processes (DDP)" if processes > 1 else ""), file=sys.stderr)
    bar = tqdm(total=epochs * batches, unit="batch", file=sys.stderr)
    for event in run:
        if isinstance(event, BatchEnd):
            bar.update(1)
            bar.set_postfix(epoch=event.epoch + 1, loss=f"{event.loss:.4f}", img_s=f"{event.images_per_second:.1f}")
        elif isinstance(event, EpochEnd):
            metrics = " ".join(f"{k}={v:.4f}" for k, v in event.val_metrics.items())
            bar.write(f"epoch {event.epoch + 1}: train_loss={event.train_loss:.4f} val_loss={event.val_loss} {metrics}")
        elif isinstance(event, TrainingDone):
            bar.close()
            precision = "bf16 autocast" if trainer.precision.bf16 else "fp32"
            print(f"napari-mia: training {event.reason} after {event.steps} batches, {event.seconds:.0f} s "
                  f"({precision})", file=sys.stderr)
    history = session.history
    path = save_model(args.out, session.model, session.config, history)
    if event.message:  # out of memory: the last good weights were saved, the run did not finish
        print(f"napari-mia: error: {event.message} (saved to {path})", file=sys.stderr)
        return 3
    write_history_csv(history_csv_path(path), history)
    if validation_samples:
        final = evaluate(session.model, validation_samples, session.config, trainer.device)
        print("validation: " + " ".join(f"{k}={v:.4f}" for k, v in final.items()))
    if session.config.kind.points:
        print(f"napari-mia: {counting_rule(session.config)}", file=sys.stderr)
    print(f"napari-mia: model saved to {path} (training history in {history_csv_path(path)})", file=sys.stderr)
    return 0


def predict_command(args) -> int:
    import csv

    from tqdm import tqdm

    from .annotations import ClassTable
    from .data import spatial_shape
    from .files import list_images, open_image, write_labels, write_map
    from .infer import iter_predict, iter_predict_points, run
    from .io import load_model
    from .models import resolve_device

    device = resolve_device(args.device)
    model, config, _ = load_model(args.model, device)
    if args.tta is not None:
        config = config.replace(test_time_augmentation=args.tta)
    if args.tile_size:
        config = config.replace(tile_size=args.tile_size, tile_overlap=min(config.tile_overlap, args.tile_size // 2
                                                                           // 32 * 32))
    source = Path(args.images)
    paths = [source] if source.is_file() else list_images(source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = {"points": ("points.csv", ("image", "y", "x", "class", "score")),
             "classes": ("classes.csv", ("image", "class", "score"))}.get(config.kind.annotations)
    rows, measurements = [], out / "measurements.csv"
    if args.measure and not config.kind.label_images:
        raise ValueError("--measure measures objects of label images (semantic or instance models)")
    if args.uncertainty and not config.kind.label_images:
        raise ValueError("--uncertainty maps label images (semantic or instance models); detection and "
                         "classification rows already hold each prediction's score")
    uncertainty_rows, scale_rows = [], []
    for path in tqdm(paths, unit="image", file=sys.stderr):
        image, channel_axis = open_image(path)
        in_memory = isinstance(image, np.ndarray)
        # Images too big for memory get 1024-px tiles unless told otherwise: the band of tiles held at
        # once (and the activations) shrink by a third, for ~4 % more overlap to compute.
        image_config = config if in_memory or args.tile_size else config.replace(
            tile_size=min(config.tile_size, 1024))
        if config.kind.points:
            points, classes, scores = run(iter_predict_points(model, image, config, channel_axis, device))
            rows += [(path.stem, f"{p[-2]:.1f}", f"{p[-1]:.1f}", config.classes[c], f"{s:.4f}")
                     for p, c, s in zip(points, classes, scores)]
        elif config.kind.image_classes:
            class_name, score = ClassTable.predict(model, image, config, channel_axis, device)
            rows.append((path.stem, class_name, f"{score:.4f}"))
        else:
            as_zarr = args.out_format == "zarr" or (args.out_format is None and not in_memory)
            target = _zarr_labels(out / f"{path.stem}.zarr", image, channel_axis, config) if as_zarr else None
            uncertainty = None
            if args.uncertainty:
                uncertainty = _zarr_map(out / f"{path.stem}_uncertainty.zarr", target) if as_zarr else np.zeros(
                    spatial_shape(image, channel_axis), np.float32)
            scales = []
            labels = run(iter_predict(model, image, image_config, channel_axis, device, out=target,
                                      uncertainty=uncertainty, scales=scales))
            scale_rows.append((path.stem, float(np.median(scales))))
            if not as_zarr:
                write_labels(out / f"{path.stem}.tif", labels)
            if args.uncertainty:
                if not as_zarr:
                    write_map(out / f"{path.stem}_uncertainty.tif", uncertainty)
                uncertainty_rows.append(_uncertainty_row(path.stem, labels, uncertainty))
            if args.measure:
                _measure(measurements, path.stem, labels, image, channel_axis, config, append=path != paths[0])
    if table:
        with open(out / table[0], "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(table[1])
            writer.writerows(rows)
        print(f"napari-mia: {len(rows)} row(s) for {len(paths)} image(s) written to {out / table[0]}",
              file=sys.stderr)
        if config.kind.points:
            _write_counts(out / "counts.csv", [path.stem for path in paths], rows, config.classes)
    else:
        print(f"napari-mia: {len(paths)} label image(s) written to {out}", file=sys.stderr)
    if config.object_diameter is not None and scale_rows:
        _write_scales(out / "scales.csv", scale_rows, config.object_diameter)
    if args.uncertainty:
        _write_uncertainty_csv(out / "uncertainty.csv", uncertainty_rows)
    return 0


def _write_counts(path: Path, images: list[str], rows: list[tuple], classes: list[str]) -> None:
    """Each image's count per class (a row for every image, found nothing or not), and their sum in words."""
    import csv

    counts = {image: dict.fromkeys(classes, 0) for image in images}
    for image, _, _, class_name, _ in rows:
        counts[image][class_name] += 1
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("image", *classes))
        writer.writerows((image, *found.values()) for image, found in counts.items())
    totals = ", ".join(f"{sum(found[name] for found in counts.values())} {name}" for name in classes)
    print(f"napari-mia: counted {totals} in {len(images)} image(s); per image in {path}", file=sys.stderr)


def _write_scales(path: Path, rows: list[tuple[str, float]], diameter: float) -> None:
    """Each image's scale (the model brings its objects to the width it learned), in a table and in words."""
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("image", "scale"))
        writer.writerows((name, f"{scale:.3f}") for name, scale in rows)
    scales = np.array([scale for _, scale in rows])
    print(f"napari-mia: images seen at scales {scales.min():.2f} to {scales.max():.2f} (median "
          f"{np.median(scales):.2f}), each bringing its objects to the {diameter:g} px the model "
          f"learned; per image in {path}", file=sys.stderr)


UNCERTAINTY_COLUMNS = ("image", "uncertainty", "objects", "mean_object_confidence", "least_object_confidence")


def _uncertainty_row(name: str, labels, uncertainty) -> tuple:
    """One image's line of uncertainty.csv (see core.uncertainty for the definitions)."""
    from .uncertainty import image_score, object_confidence

    _, confidences = object_confidence(labels, uncertainty)
    objects = len(confidences)
    return (name, image_score(uncertainty), objects, float(confidences.mean()) if objects else "",
            float(confidences.min()) if objects else "")


def _write_uncertainty_csv(path: Path, rows: list[tuple]) -> None:
    import csv

    rows = sorted(rows, key=lambda row: -row[1])  # the images to open first, first
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(UNCERTAINTY_COLUMNS)
        writer.writerows([(r[0], f"{r[1]:.4f}", r[2], *(v if v == "" else f"{v:.4f}" for v in r[3:])) for r in rows])
    print(f"napari-mia: uncertainty of {len(rows)} image(s), most uncertain first, in {path}", file=sys.stderr)


def _zarr_labels(path: Path, image, channel_axis, config):
    """An on-disk uint16/uint32 label array of the image's spatial shape, written as prediction goes."""
    import zarr

    from .data import spatial_shape

    shape = spatial_shape(image, channel_axis)
    dtype = "uint32" if config.kind.object_ids else "uint16"
    chunks = (*([1] * (len(shape) - 2)), *(min(1024, s) for s in shape[-2:]))
    return zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype)


def _zarr_map(path: Path, like):
    """A float32 zarr array of the shape and chunks of ``like`` (the labels being written)."""
    import zarr

    return zarr.open_array(str(path), mode="w", shape=like.shape, chunks=like.chunks, dtype="float32")


def _measure(path: Path, name: str, labels, image, channel_axis, config, append: bool) -> None:
    from .measure import measure_prediction, write_measurements_csv

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name}: --measure needs 2D images, got labels of shape {labels.shape}")
    rows = measure_prediction(labels, np.asarray(image), config, channel_axis)
    write_measurements_csv(path, rows, image_name=name, append=append)


def export_command(args) -> int:
    from .export import export
    from .io import load_model

    model, config, history = load_model(args.model, "cpu")
    path, difference = export(model, config, args.format, args.out, args.tolerance, history, args.author,
                              args.license)
    print(f"napari-mia: exported to {path}; largest probability difference from PyTorch {difference:.2e}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
