"""``napari-mia-gui``: open napari with the MIA Training dock and the nuclei sample loaded."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import napari

    argv = sys.argv[1:] if argv is None else argv
    viewer = napari.Viewer()
    if "--no-sample" not in argv:
        viewer.open_sample("napari-mia", "nuclei")
    viewer.window.add_plugin_dock_widget("napari-mia", "MIA Training")
    napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
