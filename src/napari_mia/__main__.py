from napari_mia.core.cli import main

raise SystemExit(main())
