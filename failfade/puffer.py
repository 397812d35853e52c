"""Every pufferlib call in failfade goes through this module, so a pufferlib upgrade touches one file.

pufferlib 2.0.2 is installed with --no-deps (its metadata pins numpy 1.23); its native
`PufferEnv`, `spaces` and `vector` work with numpy 2.x, which is all failfade uses.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import gymnasium

with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
    warnings.simplefilter("ignore")  # pufferlib.spaces imports the deprecated `gym`, which prints a banner
    import pufferlib
    import pufferlib.spaces
    import pufferlib.vector
    from pufferlib.environment import PufferEnv

__all__ = ["PufferEnv", "box", "discrete", "make_native", "pufferlib_version"]

pufferlib_version = getattr(pufferlib, "__version__", "2.0.2")


def box(dim: int):
    import numpy as np

    return gymnasium.spaces.Box(low=-np.inf, high=np.inf, shape=(dim,), dtype=np.float32)


def discrete(n: int):
    return gymnasium.spaces.Discrete(n)


def make_native(env_creator, **kwargs):
    """Native multi-agent vectorization: one env object steps all of its agents at once."""
    return pufferlib.vector.make(env_creator, env_kwargs=kwargs, backend=PufferEnv)
