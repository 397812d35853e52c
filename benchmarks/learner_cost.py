"""Where failfade's exploration time goes beyond scoring, and whether running the learner beside
the scoring (overlap) buys anything on this machine.

    .venv/bin/python benchmarks/learner_cost.py [--repeats 5] [--num-agents 1024] [--steps 16] [--threads 2]
        [--ppo KEY=VALUE ...] [--section learner-cost]

The default experiment's digits CNN, as `benchmarks/throughput.py` runs it: 1,024 explorers, 16
env steps per repetition (4 PPO updates of 4 epochs x 4 minibatches), 2 torch threads.

`--ppo KEY=VALUE` (repeatable) measures another PPO setting, e.g. `--ppo update_epochs=1`.

1. Breakdown of `explore()` per 1,024-query step, timed inside the run: scoring (the task's
   batched `score`, transforms and forward pass), the PPO prior (the confirm allocation's
   posterior draws), the policy (forward pass on the step's observations, sampling,
   propensities), the update (GAE and the 16 gradient steps, run every 4th step; shown per step),
   the learner's bookkeeping (level-set counts, the rollout), and the rest (the env's counts and
   bonus, the query log), beside pure batched scoring of the same number of queries.
   `ceiling` is what failfade / pure would be if the learner cost nothing: pure / (scoring + rest).
2. Overlap: pure batched scoring of 16 steps alone; the learner's work for 16 steps alone (act
   and observe on real observations with Bernoulli outcomes, so the same 4 updates); one after
   the other; and both at once, the learner in a second Python thread (with the process's 2
   torch threads, or set to 1 in its thread). If a core were idle during scoring, the
   concurrent wall time would be closer to the longer of the two than to their sum. Last, one
   core each: scoring and the learner both on 1 torch thread at once (the issue's "one core
   scores the next rollout while the other updates"), beside scoring alone on one thread. And
   the learner's thread at Linux's SCHED_IDLE priority beside scoring on 2 threads: it then runs
   only on core time scoring leaves idle, so how much of its work it gets done before scoring
   ends measures that idle time directly.
3. What one gradient step of the update costs by minibatch size (64 to 4,096 rows of the digits
   CNN's observations; the real `PPO.update`, timed alone and divided by its gradient steps), and
   the straight line through it: a fixed cost per step (Python and op dispatch, whatever the
   rows) and a cost per row (the matrix products and element-wise work, which grow with the
   rows). The default learner takes 16 gradient steps of `num_agents` rows per 4 env steps, so
   its per-row part alone costs 4 x `num_agents` rows' worth per env step, with no fixed cost
   at all.
Writes the `--section` section of benchmarks/RESULTS.md (default "learner-cost").
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command, default_experiment, write_section  # noqa: E402
from throughput import build, pure  # noqa: E402

from failfade.explore.ppo import PPO  # noqa: E402
from failfade.explore.search import explore, ppo_config  # noqa: E402

PARTS = ("scoring", "prior", "policy", "update", "bookkeeping", "rest")


class Timed:
    """Wall time spent in methods of the PPO class and in the task's `score`, while installed."""

    def __init__(self, task):
        self.task, self.t, self.saved = task, defaultdict(float), []

    def _wrap(self, owner, name: str, key: str):
        orig = getattr(owner, name)
        self.saved.append((owner, name, owner.__dict__.get(name)))

        @functools.wraps(orig)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                self.t[key] += time.perf_counter() - t0

        setattr(owner, name, timed)

    def __enter__(self):
        self._wrap(self.task, "score", "score")
        for name in ("_prior", "act", "observe", "update"):
            self._wrap(PPO, name, name)
        return self

    def __exit__(self, *exc):
        for owner, name, old in reversed(self.saved):
            if old is None:
                delattr(owner, name)
            else:
                setattr(owner, name, old)


def breakdown(task, n: int, batch: int, seed: int = 0, params: dict | None = None) -> dict:
    """Seconds per env step of each part of one explore() run (PPO with `params`), and its total."""
    with Timed(task) as tm:
        t0 = time.perf_counter()
        q, _ = explore(task, n, batch, seed, "ppo", params or {}, progress=False)
        total = time.perf_counter() - t0
    steps, t = q.height / batch, tm.t
    parts = {"scoring": t["score"], "prior": t["_prior"], "policy": t["act"] - t["_prior"], "update": t["update"],
             "bookkeeping": t["observe"] - t["update"]}
    parts["rest"] = total - sum(parts.values())
    return {**{k: v / steps for k, v in parts.items()}, "total": total / steps}


@contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to `n` (None: left as they are) for the block, then put back:
    set in one Python thread, the setting can reach the others."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def learner_work(task, steps: int, batch: int, seed: int = 0, threads: int | None = None,
                 params: dict | None = None) -> float:
    """The learner's work for `steps` env steps without scoring: act on real observations, observe
    Bernoulli(0.3) outcomes; a fresh PPO with `params` (default: the default config). Returns seconds."""
    obs = task.observations
    rng = np.random.default_rng(seed)
    agent = PPO(obs.shape[1], task.n_cells, ppo_config(params or {}), seed)
    o = obs[rng.integers(0, len(obs), batch)]
    with torch_threads(threads):
        t0 = time.perf_counter()
        for _ in range(steps):
            a = agent.act(o)
            fail = rng.random(batch) < 0.3
            nxt = obs[rng.integers(0, len(obs), batch)]
            agent.observe(o, a, fail.astype(np.float32), fail, nxt, np.ones(batch, np.float32))
            o = nxt
        return time.perf_counter() - t0


def gradient_step(task, rows: int, seed: int = 0, params: dict | None = None) -> float:
    """Seconds per gradient step of one `PPO.update` whose minibatches have `rows` rows: a rollout of
    `num_steps` env steps of `rows * num_minibatches / num_steps` explorers on real observations and
    Bernoulli(0.3) outcomes, collected untimed; then only the last `observe`, which runs the update."""
    obs = task.observations
    rng = np.random.default_rng(seed)
    cfg = ppo_config(params or {})
    batch = max(1, rows * cfg.num_minibatches // cfg.num_steps)
    agent = PPO(obs.shape[1], task.n_cells, cfg, seed)
    for step in range(cfg.num_steps):
        o = obs[rng.integers(0, len(obs), batch)]
        a = agent.act(o)
        fail = rng.random(batch) < 0.3
        args = (o, a, fail.astype(np.float32), fail, obs[rng.integers(0, len(obs), batch)], np.ones(batch, np.float32))
        if step < cfg.num_steps - 1:
            agent.observe(*args)
    before = agent.n_updates
    t0 = time.perf_counter()
    agent.observe(*args)
    elapsed = time.perf_counter() - t0
    return elapsed / (agent.n_updates - before)


def concurrent(task, steps: int, batch: int, learner_threads: int | None,
               params: dict | None = None, scoring_threads: int | None = None,
               idle: bool = False) -> tuple[float, float, float]:
    """Pure scoring in this thread and the learner's work in another, started together:
    (scoring seconds, learner seconds, wall seconds until both are done). `scoring_threads`: the
    scoring thread's torch threads (default: as set); with `learner_threads` 1 and `scoring_threads`
    1, each gets one core of two: the issue's "one core scores while the other updates". `idle`:
    the learner's thread runs at Linux's SCHED_IDLE priority, so it gets a core only when scoring
    leaves one idle: what the learner gets done during scoring is the idle core time there is."""
    out: list[float] = []

    def learner():
        if idle:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # this thread only (Linux)
        out.append(learner_work(task, steps, batch, threads=learner_threads, params=params))

    th = threading.Thread(target=learner)
    with torch_threads(scoring_threads):
        t0 = time.perf_counter()
        th.start()
        scoring = steps * batch / pure(task, steps * batch, batch)
        th.join()
        return scoring, out[0], time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-agents", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=16, help="env steps per repetition")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--section", default="learner-cost")
    ap.add_argument("--ppo", action="append", default=[], metavar="KEY=VALUE",
                    help="a PPO setting other than the default (explore.ppo keys), e.g. update_epochs=1; repeatable")
    args = ap.parse_args(argv)
    params = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.ppo)}
    cfg = ppo_config(params)  # an unknown key is an error here, before anything runs
    torch.set_num_threads(args.threads)
    task = build("digits", default_experiment(), "cpu")
    b, n = args.num_agents, args.steps * args.num_agents
    idle_ok = hasattr(os, "SCHED_IDLE")
    pure(task, 4 * b, b), breakdown(task, 4 * b, b, params=params), learner_work(task, 4, b, params=params)  # warm-up
    rows, pures = defaultdict(list), []
    over = {k: [] for k in ("pure", "pure1", "learner", "sequential", "conc2", "conc1", "split", "conc2_pure",
                            "conc1_pure", "split_pure", "idle", "idle_pure", "idle_learner")}
    for _ in range(args.repeats):  # interleaved
        pures.append(n / pure(task, n, b) / args.steps)
        for k, v in breakdown(task, n, b, params=params).items():
            rows[k].append(v)
        p, lw = n / pure(task, n, b), learner_work(task, args.steps, b, params=params)
        over["pure"].append(p)
        over["learner"].append(lw)
        over["sequential"].append(p + lw)
        with torch_threads(1):
            over["pure1"].append(n / pure(task, n, b))  # scoring given one core
        for k, lt, st in (("conc2", None, None), ("conc1", 1, None), ("split", 1, 1)) + ((("idle", 1, None),) if idle_ok else ()):
            s, learner_s, wall = concurrent(task, args.steps, b, lt, params, scoring_threads=st, idle=k == "idle")
            over[k].append(wall)
            over[k + "_pure"].append(s)
            if k == "idle":
                over["idle_learner"].append(learner_s)
    sweep_rows = (64, 256, 1024, 4096)
    grad = {r: [] for r in sweep_rows}
    for r in sweep_rows:
        gradient_step(task, r, params=params)  # warm-up
    for _ in range(args.repeats):
        for r in sweep_rows:
            grad[r].append(gradient_step(task, r, params=params))
    med = {k: float(np.median(v)) for k, v in rows.items()}
    pure_step = float(np.median(pures))
    ms = lambda s: f"{1e3 * s:.2f}"  # noqa: E731
    ceiling = pure_step / (med["scoring"] + med["rest"])
    print("per step (ms): pure " + ms(pure_step) + ", failfade " + ms(med["total"]) + " = "
          + ", ".join(f"{k} {ms(med[k])}" for k in PARTS) + f"; failfade/pure {pure_step / med['total']:.2f}, "
          f"ceiling without the learner {ceiling:.2f}", flush=True)
    o = {k: float(np.median(v)) for k, v in over.items() if v}
    print(f"overlap ({args.steps} steps, s): pure {o['pure']:.3f}, learner {o['learner']:.3f}, sequential "
          f"{o['sequential']:.3f}, concurrent (learner 2 threads) {o['conc2']:.3f} [its scoring {o['conc2_pure']:.3f}], "
          f"concurrent (learner 1 thread) {o['conc1']:.3f} [its scoring {o['conc1_pure']:.3f}], one core each "
          f"{o['split']:.3f} [its scoring {o['split_pure']:.3f}; scoring alone on one thread {o['pure1']:.3f}]", flush=True)
    per_q = lambda s: f"{1e6 * s / b:.1f}"  # noqa: E731
    setting = ", ".join(f"{k} {v}" for k, v in params.items()) or "the default PPO"
    lines = [f"## Learner cost and overlap: digits CNN, {b} explorers, {setting} ({platform.machine()}, {args.threads} threads)",
             "",
             f"Command: `{command(__file__, ap, args)}`"
             f". Medians of {args.repeats} interleaved repetitions of {args.steps} env steps ({n:,} queries, "
             f"{args.steps // cfg.num_steps} PPO updates of {cfg.update_epochs} x {cfg.num_minibatches} gradient steps). Per {b}-query step, timed inside `explore()`:", "",
             "| part | ms per step | µs per query |", "|---|---|---|",
             f"| pure batched scoring (separate run) | {ms(pure_step)} | {per_q(pure_step)} |"]
    lines += [f"| failfade: {k} | {ms(med[k])} | {per_q(med[k])} |" for k in PARTS]
    lines += [f"| failfade: total | {ms(med['total'])} | {per_q(med['total'])} |", "",
              f"failfade / pure {pure_step / med['total']:.2f}; with the learner free (prior, policy, update and "
              f"bookkeeping at zero) it would be {ceiling:.2f}.", "",
              f"Overlap, {args.steps} steps (seconds): pure scoring alone {o['pure']:.3f}; the learner's work alone "
              f"{o['learner']:.3f}; one after the other {o['sequential']:.3f}; both at once with the learner in a second "
              f"thread: {o['conc2']:.3f} (the learner on the process's {args.threads} torch threads; scoring itself took "
              f"{o['conc2_pure']:.3f}) and {o['conc1']:.3f} (the learner's thread set to 1 torch thread; scoring "
              f"{o['conc1_pure']:.3f}). Concurrent / sequential: {o['conc2'] / o['sequential']:.2f} and "
              f"{o['conc1'] / o['sequential']:.2f} (1.00: nothing gained; {max(o['pure'], o['learner']) / o['sequential']:.2f}"
              f": the learner entirely hidden).", "",
              f"One core each (scoring and the learner each on 1 torch thread, at once): {o['split']:.3f} s "
              f"(scoring {o['split_pure']:.3f}), {o['split'] / o['sequential']:.2f} of sequential. Scoring alone on one "
              f"thread took {o['pure1']:.3f} s against {o['pure']:.3f} on {args.threads}: the second core speeds it "
              f"{o['pure1'] / o['pure']:.2f}x, so a loop that gives the learner a core of its own scores at most "
              f"{o['pure'] / o['pure1']:.2f} as fast as pure batched scoring, however little the learner costs."]
    g = {r: float(np.median(v)) for r, v in grad.items()}
    slope, fixed = np.polyfit(np.array(sweep_rows, float), np.array([g[r] for r in sweep_rows]), 1)
    per_rollout = cfg.update_epochs * cfg.num_minibatches  # gradient steps per update
    mb_rows = b * cfg.num_steps // cfg.num_minibatches
    floor = per_rollout * slope * mb_rows / cfg.num_steps  # per env step
    print("gradient step (ms) by minibatch rows: " + ", ".join(f"{r} {ms(g[r])}" for r in sweep_rows)
          + f"; fixed {ms(fixed)} + {ms(slope * 1024)} per 1,024 rows; the per-row part alone {ms(floor)} per env step", flush=True)
    lines += ["", f"One gradient step of `PPO.update` by minibatch rows (median of {args.repeats}): "
              + ", ".join(f"{r:,} rows {ms(g[r])} ms" for r in sweep_rows)
              + f". A straight line through them: {ms(fixed)} ms a step whatever the rows (dispatch) plus "
              f"{ms(slope * 1024)} ms per 1,024 rows (the matrix products and element-wise work). This setting's update "
              f"takes {per_rollout} gradient steps of {mb_rows:,} rows per {cfg.num_steps} env steps: {ms(floor)} ms per env "
              f"step of per-row work even with no fixed cost at all, {floor / pure_step:.0%} of a pure scoring step; with "
              f"the rest of the learner free too, failfade / pure would be at most "
              f"{pure_step / (med['scoring'] + med['rest'] + floor):.2f}."]
    if idle_ok:
        # the learner's work done while scoring ran, in seconds of its solo run: all of it if idle time sufficed
        done = max(0.0, o["learner"] - max(0.0, o["idle_learner"] - o["idle_pure"]))
        lines += ["", f"Idle core time (the learner's thread at SCHED_IDLE, 1 torch thread, so it runs only when scoring "
                  f"leaves a core idle): scoring took {o['idle_pure']:.3f} s (alone {o['pure']:.3f}), the learner ended "
                  f"{max(0.0, o['idle_learner'] - o['idle_pure']):.3f} s after it, against {o['learner']:.3f} s of work alone: "
                  f"about {done:.3f} s of the learner's work ({done / o['learner']:.0%}) fitted into scoring's idle core time."]
    write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
