"""Data: manifests and cards, EXIF, cropping, splits and the prepared-array cache."""
