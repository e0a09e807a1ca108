"""Thin napari layer: widgets, worker glue and layer conversion on top of :mod:`napari_mia.core`."""
