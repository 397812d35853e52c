"""Shared fixtures: where the repository and its tools live."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _flush_to_zero_off_after_each_test():
    """Building a classifier turns on flush-to-zero for the process (failfade.numerics): put torch's
    default back after every test, so that no test sees another's setting (test_numerics asserted
    it off, and failed when a classifier test happened to run before it)."""
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (holds Snakefile, rules/, config/, resources/feedback/)."""
    return REPO


@pytest.fixture(scope="session")
def snakemake_exe() -> Path:
    """The snakemake entry point of the interpreter running the tests (the project's virtualenv)."""
    exe = Path(sys.executable).parent / "snakemake"
    if not exe.exists():
        exe = REPO / ".venv" / "bin" / "snakemake"
    if not exe.exists():
        pytest.skip("snakemake is not installed next to this Python interpreter")
    return exe


@pytest.fixture(scope="module")
def one_torch_thread():
    """The learners' networks are tiny: one intra-op thread is faster, and far faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
