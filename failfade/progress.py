"""Progress bars: live on a terminal, one line every 10 s when writing to a log file."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(iterable=None, **kwargs):
    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 10.0)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
