"""CPU denormal floats: flushed to zero while classifying, kept (IEEE, torch's default) elsewhere.

Perturbed images (low contrast, blur) produce denormal floats, which CPUs compute 10-100x slower,
so the classification family flushes them to zero (no prediction changes). torch's setting is
global to the process and has no getter: once a classifier had been built, a summarizer trained or
scored later in the same process computed differently from the workflow's own stage, which runs in
a process of its own. The same config and seed then gave another model: the summarization
default's tiny T5 trained after the digits CNN was built read held-out ROUGE-L 0.9328 (0.936 in
the discovery benchmark's copy), in a fresh process 0.9378, as `failfade run` trains it. So the
text and generation families compute with denormals kept, whatever was set before them, and put
the setting back afterwards (`keeps_denormals`).
"""

from __future__ import annotations

import functools
import inspect
import sys
from contextlib import contextmanager

_NORMAL = 1e-38  # the smallest normal float32 is 1.18e-38: this over 1e3 is denormal


def flushing() -> bool:
    """Whether this thread's CPU arithmetic flushes denormals to zero now (torch has no getter).
    Without torch imported nothing has set it (and reading a config stays free of torch)."""
    if "torch" not in sys.modules:
        return False
    import torch

    return bool((torch.tensor([_NORMAL], dtype=torch.float32) / 1e3).item() == 0.0)


_POOL_WARM = False


def flush_denormals() -> None:
    """Flush denormals to zero from now on, in this process (the classification family's setting).

    torch's intra-op worker threads take the setting of the thread that creates them, and keep it:
    a pool first started while flushing went on flushing after `denormals_kept` turned it off (half
    of a 2-thread op's results were still flushed), and the tiny T5 trained after the digits CNN
    came out the flushed model again. So the pool is started, with denormals kept, before the first
    flush; workers started that way follow the calling thread's setting (tests/test_numerics.py)."""
    import torch

    global _POOL_WARM
    if not _POOL_WARM:
        with denormals_kept():
            torch.full((1 << 22,), 1.0) / 3.0  # a parallel region: the workers start now, not flushing
        _POOL_WARM = True
    torch.set_flush_denormal(True)


@contextmanager
def denormals_kept():
    """The block computes with IEEE denormals; a flush set before it is restored after it."""
    was = flushing()
    if was:
        import torch

        torch.set_flush_denormal(False)
    try:
        yield
    finally:
        if was:
            torch.set_flush_denormal(True)


def keeps_denormals(obj):
    """Decorate a function, or every public method (and `__call__`) of a class, to run inside
    `denormals_kept()`."""
    if inspect.isclass(obj):
        for name, member in list(vars(obj).items()):
            if inspect.isfunction(member) and (not name.startswith("_") or name == "__call__"):
                setattr(obj, name, keeps_denormals(member))
        return obj

    @functools.wraps(obj)
    def kept(*args, **kwargs):
        with denormals_kept():
            return obj(*args, **kwargs)

    return kept
