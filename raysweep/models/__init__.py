"""Models: backbone registry, conditioning encoder, fusions, heads and `build_model`."""

from raysweep.models.build import ColorModel, build_model

__all__ = ["ColorModel", "build_model"]
