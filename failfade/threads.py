"""How many threads a torch job may use: what it was given, or fewer while other processes hold cores.

On 2 cores a torch job with more threads than free cores collapses (its threads wait on each other
at every parallel region while one of them is descheduled): with one core busy elsewhere the digits
exploration ran 5,137 queries/s on 2 fixed threads and 10,509 on the 1 chosen from the free cores
(benchmarks/RESULTS.md, sections throughput-cpu-digits-busy1-*). The
free cores are measured from /proc/stat over a short window on the CPUs this process may run on.
"""

from __future__ import annotations

import os
import time

# the thread count a learner (PPO's, DQN's updates and acting) runs on, whatever its stage's scoring
# got: set by the workflow to the rule's threads (workflow.stage). A learner's float results depend
# on the thread count (matrix products split their sums differently), so a stage whose scoring
# follows the free cores must not let its learner follow them too: the same config would then
# give a different failure table on a busy machine. None: leave torch's setting alone (the API).
_learner_threads: int | None = None


def set_learner_threads(n: int | None) -> None:
    global _learner_threads
    _learner_threads = None if n is None else max(1, int(n))


class LearnerRunner:
    """Runs a learner's calls on its fixed thread count (set_learner_threads), in order, one at a time.

    When torch's current count already is that count, calls run inline. Otherwise they run in a
    worker thread of their own whose torch (OpenMP) thread count is the learner's: OpenMP keeps a
    team per calling thread, so neither side pays for resizing the other's (switching the count
    back and forth in one thread cost ~20 ms a switch here, more than the step itself)."""

    def __init__(self):
        import torch

        self.n = _learner_threads
        self.pool = None
        if self.n is not None and self.n != torch.get_num_threads():
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="failfade-learner",
                                           initializer=torch.set_num_threads, initargs=(self.n,))

    def __call__(self, fn, *args, **kwargs):
        if self.pool is None:
            return fn(*args, **kwargs)
        return self.pool.submit(fn, *args, **kwargs).result()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per allowed CPU from /proc/stat."""
    out = {}
    with open("/proc/stat") as fh:
        for line in fh:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            cpu = int(name[3:])
            if cpu in cpus:
                v = [int(x) for x in vals[:8]]
                idle = v[3] + v[4]  # idle + iowait
                out[cpu] = (sum(v) - idle, sum(v))
    return out


def busy_cores(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """Cores' worth of work done by every process between two /proc/stat samples."""
    busy = 0.0
    for cpu, (b1, t1) in after.items():
        b0, t0 = before.get(cpu, (b1, t1))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy


def allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def usable_threads(requested: int, window: float = 0.25) -> int:
    """min(requested, cores free of other work, rounded), at least 1. The caller sleeps for
    `window` seconds while it measures, so what it sees busy is other processes' work. Without
    /proc/stat (not Linux) it returns `requested`."""
    requested = max(1, int(requested))
    cpus = allowed_cpus()
    try:
        before = _cpu_times(cpus)
        time.sleep(window)
        after = _cpu_times(cpus)
    except OSError:
        return requested
    free = len(cpus) - busy_cores(before, after)
    return max(1, min(requested, int(free + 0.5)))
