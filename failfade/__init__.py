"""failfade: find, summarize and fade the failures of vision and language models."""

__version__ = "0.1.0"


class FailfadeError(Exception):
    """An error caused by the user's input (config, feedback, model files); the message names it."""
