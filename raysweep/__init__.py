"""raysweep: predict the CIELAB colour of a skin patch from a photo and its camera metadata."""

__version__ = "0.1.0"
