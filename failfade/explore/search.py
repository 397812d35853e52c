"""Run one searcher on a task for a fixed budget of model queries.

Searchers (`algorithm`): ppo (default), dqn, random, epsilon_greedy, bandit (Thompson), levelset
(sampling where a cell's side of τ is still uncertain), confirm (Thompson draws of the open cell
cheapest to confirm as failing: PPO's default prior on its own), threshold and weighted_inputs (the
paper's threshold and "ε-greedy" input-weighting baselines), and exhaustive (every cell on every
input: the ground truth).
Modes: macroscopic (one-step episodes over the whole grid) and microscopic (walks of ±1 level
from a start cell; ppo, dqn and random only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace

import numpy as np
import polars as pl
import torch

from failfade.explore.baselines import (ConfirmSearcher, EpsilonGreedySearcher, LevelSetSearcher, RandomSearcher,
                                       ThompsonSearcher, ThresholdSearcher, WeightedInputSearcher)
from failfade.explore.dqn import DQNConfig, DQNSearcher
from failfade.explore.env import CONFIRM_SETTLE_STRICTNESS, ConceptEnv
from failfade.explore.micro_env import MicroEnv
from failfade.explore.ppo import PPO, PPOConfig
from failfade.progress import progress as progress_bar
from failfade.puffer import make_native
from failfade.threads import LearnerRunner

ALGORITHMS = ("ppo", "dqn", "random", "epsilon_greedy", "bandit", "levelset", "confirm", "threshold", "weighted_inputs",
              "exhaustive")
MODES = ("macroscopic", "microscopic")
MICRO_ALGORITHMS = ("ppo", "dqn", "random")  # the searchers that walk ±1 level (microscopic mode)


def substream(seed: int, component: int) -> int:
    """An independent child seed per component (env, searcher, ...): equal seeds would give
    correlated draws, e.g. the env's inputs and a random searcher's cells moving in lockstep."""
    return int(np.random.SeedSequence([seed, component]).generate_state(1)[0])


def strict_config(cls, params: dict | None, where: str):
    """A config dataclass from a dict; an unknown key is an error, never silently dropped."""
    params = dict(params or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**params)


def ppo_config(params: dict) -> PPOConfig:
    return strict_config(PPOConfig, params, "explore.ppo")


@dataclass(frozen=True)
class SearchSpec:
    """What every searcher is built from (one signature for all: `SEARCHERS[name](spec, params, seed)`)."""

    n_actions: int  # cells (macroscopic) or moves (microscopic)
    obs_dim: int  # the explorer's observation of a clean input
    n_inputs: int
    num_agents: int
    total_steps: int  # env steps in the budget
    tau: float  # the failure-rate threshold
    mode: str  # macroscopic | microscopic
    device: str = "cpu"  # the model under test's device: where a learner that can acts and learns
    confidence: float = 0.95  # the landscape's interval level (the confirm allocation settles cells by it)


@dataclass
class EpsilonParams:
    epsilon: float = 0.2  # exploration rate


@dataclass
class ThresholdParams:
    successes: int = 5  # non-failures before moving to a new input (the paper's 5)


@dataclass
class WeightedInputParams:
    epsilon: float = 0.1  # weight step per outcome (the paper's classification script)
    floor: float = 0.01  # lowest input weight


@dataclass
class ConfirmParams:
    # a failure cell is settled (stops getting queries) once its lower bound at 1 - (1 - confidence) / this
    # clears τ; 1 = the landscape's own level, as in PPO's prior (optional stopping: see LevelSet.confirm)
    settle_strictness: float = CONFIRM_SETTLE_STRICTNESS


@dataclass
class NoParams:
    pass


def _ppo(spec: SearchSpec, params: dict, seed: int):
    cfg = ppo_config(params)
    if spec.mode != "macroscopic" and cfg.prior != "none":
        if "prior" in params:
            raise ValueError(f"ppo prior {cfg.prior!r} weighs cells: macroscopic mode only (set prior: none)")
        cfg = replace(cfg, prior="none")  # microscopic actions are moves, not cells
    return PPO(spec.obs_dim, spec.n_actions, cfg, seed, tau=spec.tau, device=spec.device, confidence=spec.confidence)


def _dqn(spec: SearchSpec, params: dict, seed: int):
    return DQNSearcher(spec.n_actions, seed, spec.obs_dim, spec.total_steps, strict_config(DQNConfig, params, "explore.dqn"))


def _baseline(cls, params_cls, name: str):
    def make(spec: SearchSpec, params: dict, seed: int):
        p = strict_config(params_cls, params, f"explore ({name})")
        return cls(spec.n_actions, seed, num_agents=spec.num_agents, n_inputs=spec.n_inputs, tau=spec.tau,
                   confidence=spec.confidence, **vars(p))

    return make


SEARCHERS = {
    "ppo": _ppo,
    "dqn": _dqn,
    "random": _baseline(RandomSearcher, NoParams, "random"),
    "epsilon_greedy": _baseline(EpsilonGreedySearcher, EpsilonParams, "epsilon_greedy"),
    "bandit": _baseline(ThompsonSearcher, NoParams, "bandit"),
    "levelset": _baseline(LevelSetSearcher, NoParams, "levelset"),
    "confirm": _baseline(ConfirmSearcher, ConfirmParams, "confirm"),
    "threshold": _baseline(ThresholdSearcher, ThresholdParams, "threshold"),
    "weighted_inputs": _baseline(WeightedInputSearcher, WeightedInputParams, "weighted_inputs"),
}


def explore(task, budget: int, num_agents: int, seed: int, algorithm: str = "ppo", params: dict | None = None,
            progress: bool = True, mode: str = "macroscopic", micro: dict | None = None,
            tau: float = 0.5, confidence: float = 0.95) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Explore `task` with `budget` model queries (rounded down to whole env steps).

    Returns (queries, learning_log). queries has one row per model query: step, explorer,
    input_id (position in the task's input set: the held-out split), label, cell, prediction,
    delta, failure, propensity (π(cell | input) for PPO, DQN's ε-greedy π, else NaN), marginal (PPO
    only: the same policy's probability of the cell averaged over the step's *other* inputs,
    stats.others_marginal, which stabilizes the importance weights; else NaN), one column per
    concept axis (its level value), seed, algorithm.
    learning_log has one row per rollout: queries so far, failure rate, coverage, and the
    learner's statistics (update count, losses, entropy) when it updated.
    `params` holds the learner's hyper-parameters (PPOConfig / DQNConfig fields, or `epsilon`);
    `tau` is the failure-rate threshold that the uncertainty bonus aims at; `confidence` the
    landscape's interval level, by which the confirm allocation (PPO's prior) settles cells.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: {ALGORITHMS}")
    if mode not in MODES:
        raise ValueError(f"unknown exploration mode {mode!r}; known: {MODES}")
    if algorithm == "exhaustive":
        return exhaustive(task, seed, progress)
    if mode == "microscopic" and algorithm not in MICRO_ALGORITHMS:
        raise ValueError(f"microscopic exploration supports {', '.join(MICRO_ALGORITHMS)}, not {algorithm!r}")
    params = dict(params or {})
    torch.manual_seed(seed)
    total_steps = budget // num_agents
    s_env, s_search = substream(seed, 0), substream(seed, 1)
    # the learners' reward bonus (each learner's own config defaults); baselines get none
    defaults = {"ppo": PPOConfig, "dqn": DQNConfig}.get(algorithm)
    novelty = params.get("novelty_coef", defaults.novelty_coef) if defaults else 0.0
    bonus = params.get("bonus", defaults.bonus) if defaults else "none"
    env_cls, extra = (ConceptEnv, {}) if mode == "macroscopic" else (MicroEnv, micro or {})
    env = make_native(env_cls, task=task, num_agents=num_agents, seed=s_env, novelty_coef=novelty, bonus=bonus, tau=tau,
                      **extra)
    spec = SearchSpec(env.single_action_space.n, env.single_observation_space.shape[0], task.n_inputs, num_agents,
                      total_steps, tau, mode, str(getattr(task, "device", "cpu")), confidence)
    searcher = SEARCHERS[algorithm](spec, params, s_search)
    chooser = getattr(searcher, "choose_inputs", None)
    if chooser is not None:
        env.input_chooser = chooser
    obs, _ = env.reset(seed=s_env)
    cols = {k: [] for k in ("step", "explorer", "input_id", "cell", "prediction", "delta", "failure", "propensity",
                            "marginal")}
    # π(cell | input) is only meaningful when the searcher picks cells directly (macroscopic mode)
    contextual = mode == "macroscopic" and algorithm in ("ppo", "dqn")
    log, row_fail, row_n = [], 0, 0
    t0 = time.perf_counter()
    bar = progress_bar(total=total_steps * num_agents, desc=f"explore[{algorithm}]", unit="query", disable=not progress, leave=False)
    with LearnerRunner() as learner:  # the learner on its own fixed threads (threads.set_learner_threads)
        for step in range(total_steps):
            before = obs.copy()
            actions = learner(searcher.act, before, env.input_ids)
            prop = searcher.last_propensity if contextual else np.full(num_agents, np.nan)
            marg = searcher.last_marginal if contextual else np.full(num_agents, np.nan)
            obs, rewards, dones, *_ = env.step(actions)
            ids, cells, out = env.last
            stats = learner(searcher.observe, before, actions, rewards.copy(), out.failure, obs, dones.copy())
            if chooser is not None:
                # the env drew the next inputs before the searcher saw this step's outcomes: ask again
                env.sample_inputs()
                obs = env.observations
            for key, val in (("step", np.full(num_agents, step)), ("explorer", np.arange(num_agents)), ("input_id", ids),
                             ("cell", cells), ("prediction", out.prediction), ("delta", out.delta), ("failure", out.failure),
                             ("propensity", prop), ("marginal", marg)):
                cols[key].append(val)
            row_fail += int(out.failure.sum())
            row_n += num_agents
            bar.update(num_agents)
            last_step = step == total_steps - 1
            if last_step and stats is None and hasattr(searcher, "flush"):
                stats = learner(searcher.flush, obs)
            if stats is not None or (step + 1) % 4 == 0 or last_step:
                log.append({"rollout": len(log), "queries": (step + 1) * num_agents, "failure_rate": row_fail / row_n,
                            "distinct_cells": int((env.visits > 0).sum()), **(stats or {}),
                            "seconds": time.perf_counter() - t0})
                row_fail = row_n = 0
    bar.close()
    return _queries_frame(task, cols, seed, algorithm), pl.DataFrame(log)


def exhaustive(task, seed: int = 0, progress: bool = True, chunk: int = 8192) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every cell on every input: the ground-truth landscape (n_inputs × n_cells queries)."""
    ids = np.repeat(np.arange(task.n_inputs), task.n_cells)
    cells = np.tile(np.arange(task.n_cells), task.n_inputs)
    cols = {k: [] for k in ("step", "explorer", "input_id", "cell", "prediction", "delta", "failure")}
    t0 = time.perf_counter()
    for s in progress_bar(range(0, len(ids), chunk), desc="explore[exhaustive]", disable=not progress, leave=False):
        i, c = ids[s : s + chunk], cells[s : s + chunk]
        out = task.score(i, c)
        for key, val in (("step", np.full(len(i), s // chunk)), ("explorer", np.zeros(len(i), np.int64)),
                         ("input_id", i), ("cell", c), ("prediction", out.prediction), ("delta", out.delta),
                         ("failure", out.failure)):
            cols[key].append(val)
    q = _queries_frame(task, cols, seed, "exhaustive")
    log = pl.DataFrame([{"rollout": 0, "queries": q.height, "failure_rate": float(q["failure"].mean()),
                         "distinct_cells": task.n_cells, "seconds": time.perf_counter() - t0}])
    return q, log


def _queries_frame(task, cols: dict, seed: int, algorithm: str) -> pl.DataFrame:
    cat = lambda k, dt: np.concatenate(cols[k]).astype(dt) if cols[k] else np.zeros(0, dt)  # noqa: E731
    input_ids = cat("input_id", np.int64)
    queries = pl.DataFrame({
        "step": cat("step", np.int32), "explorer": cat("explorer", np.int32), "input_id": input_ids,
        "label": np.asarray(task.labels)[input_ids].astype(np.int64), "cell": cat("cell", np.int32),
        "prediction": cat("prediction", np.int64), "delta": cat("delta", np.float32), "failure": cat("failure", bool),
        "propensity": cat("propensity", np.float64) if cols.get("propensity") else np.full(len(input_ids), np.nan),
        "marginal": cat("marginal", np.float64) if cols.get("marginal") else np.full(len(input_ids), np.nan),
    })
    coords = task.space.coords(queries["cell"].to_numpy())
    return queries.with_columns(
        [pl.Series(a.name, np.asarray(a.levels, dtype=np.float64)[coords[:, k]]) for k, a in enumerate(task.space.axes)]
        + [pl.lit(seed).alias("seed"), pl.lit(algorithm).alias("algorithm")]
    )
