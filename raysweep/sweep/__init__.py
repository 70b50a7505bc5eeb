"""The pieces behind `python -m raysweep.search`: spaces, resources, the Tune trainable, results."""
