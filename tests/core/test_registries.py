"""The choices of a run are listed once, in their registries; everything else offers the registries' keys."""

import ast
from pathlib import Path

import pytest

import napari_mia
from napari_mia.core import losses
from napari_mia.core.cli import build_parser
from napari_mia.core.config import APPLICATIONS, ARCHITECTURES, CLASSIFICATION_ARCHITECTURES, TrainingConfig
from napari_mia.core.optimizers import OPTIMIZERS

SOURCE = Path(napari_mia.__file__).parent
KINDS = {  # kind: (names, the registry module allowed to list them)
    "application": (set(APPLICATIONS), "core/config.py"),
    "architecture": (set(ARCHITECTURES) | set(CLASSIFICATION_ARCHITECTURES), "core/config.py"),
    "optimizer": (set(OPTIMIZERS), "core/optimizers.py"),
    "loss": (set(losses.all_loss_names()), "core/losses.py"),
}


def _displays(tree):
    """Every tuple, list or set written out, and every dict's keys, as the strings they hold."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [key for key in node.keys if key is not None]
        else:
            continue
        yield node.lineno, {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}


def test_no_module_outside_the_registries_lists_names_of_choices_by_hand():
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        where = path.relative_to(SOURCE).as_posix()
        for line, strings in _displays(ast.parse(path.read_text())):
            for kind, (names, registry) in KINDS.items():
                listed = strings & names
                if len(listed) >= 2 and where != registry:
                    found.append(f"{where}:{line} lists {kind} names {sorted(listed)}: use {registry}")
    assert not found, "\n".join(found)


def test_the_static_check_finds_a_hand_written_list():
    tree = ast.parse('if config.application in ("semantic", "instance"):\n    pass\n')
    assert any({"semantic", "instance"} <= strings for _, strings in _displays(tree))


def _name_comparisons(tree, names):
    """Lines that compare something with one of ``names`` (``x == "detection"``, ``x != "semantic"``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            sides = [node.left, *node.comparators]
            if any(isinstance(side, ast.Constant) and side.value in names for side in sides):
                yield node.lineno


def test_no_module_asks_an_application_for_its_name():
    """What an application does is asked of its object (``config.kind.points``), never of its key."""
    found = [f"{path.relative_to(SOURCE).as_posix()}:{line}" for path in sorted(SOURCE.rglob("*.py"))
             for line in _name_comparisons(ast.parse(path.read_text()), set(APPLICATIONS))]
    assert not found, "compares an application's name: " + ", ".join(found)
    assert list(_name_comparisons(ast.parse('if config.application == "detection":\n    pass\n'), set(APPLICATIONS)))


def test_the_command_line_and_the_config_offer_the_registries_keys():
    options = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert list(options["application"].choices) == list(APPLICATIONS)
    assert list(options["optimizer"].choices) == list(OPTIMIZERS)
    assert sorted(options["loss"].choices) == losses.all_loss_names()
    for name, application in APPLICATIONS.items():
        config = TrainingConfig(application=name)
        assert config.classes == list(application.default_classes)
        assert config.loss == next(iter(losses.losses_for(name)))  # the registry's first is the default
        assert config.has_background == application.label_images


@pytest.mark.parametrize("name", sorted(losses.all_loss_names()))
def test_every_registered_loss_builds_for_the_applications_that_list_it(name):
    for application in APPLICATIONS:
        if name in losses.losses_for(application):
            config = TrainingConfig(application=application, loss=name,
                                    classes=["object"] if application == "detection" else None)
            assert callable(losses.build_loss(config))
