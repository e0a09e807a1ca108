"""``napari-mia-gui``: open napari with the MIA Training dock and the nuclei sample loaded."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-mia-gui", description=__doc__)
    parser.add_argument("--no-sample", action="store_true", help="open without the nuclei sample")
    parser.add_argument("--experiment", action="store_true",
                        help="open the sample experiment (six nuclei images, a folder the dock works through) "
                             "instead of the one nuclei image")
    parser.add_argument("--quit-after", type=float, metavar="SECONDS",
                        help="close napari this long after its window is up, and say what it showed "
                             "(for smoke tests and scripted screenshots)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import napari

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    viewer = napari.Viewer()
    if args.experiment:
        viewer.open_sample("napari-mia", "experiment")  # opens the dock with the folder
    elif not args.no_sample:
        viewer.open_sample("napari-mia", "nuclei")
    viewer.window.add_plugin_dock_widget("napari-mia", "MIA Training")
    if args.quit_after is not None:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(round(args.quit_after * 1000), lambda: _report_and_close(viewer))
    napari.run()
    return 0


def _report_and_close(viewer) -> None:
    import qtpy

    docks = ", ".join(viewer.window.dock_widgets)
    layers = ", ".join(layer.name for layer in viewer.layers)
    print(f"napari-mia-gui: window up on {qtpy.API_NAME}; docks: {docks}; layers: {layers}", flush=True)
    viewer.close()


if __name__ == "__main__":
    raise SystemExit(main())
