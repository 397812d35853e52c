"""failfade: find, summarize and fade the failures of vision and language models."""

__version__ = "0.1.0"


class FailfadeError(Exception):
    """An error caused by the user's input (config, feedback, model files); the message names it."""


def unreadable(path, error: Exception, what: str) -> FailfadeError:
    """A result file that exists but cannot be read (truncated, corrupt): name it and the command
    that rebuilds it (Snakemake's --forcerun takes the file itself)."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return FailfadeError(f"{path}: cannot be read as {what} ({type(error).__name__}: {first}); "
                         f"rebuild it with `failfade run --forcerun {path}`")
