"""Run an exploration: the env, the learner and the query log, for a fixed budget of model queries."""

from __future__ import annotations

import time
from dataclasses import asdict, fields

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from failfade.explore.env import ConceptEnv
from failfade.explore.ppo import PPO, PPOConfig
from failfade.puffer import make_native

ALGORITHMS = ("ppo", "random")


def ppo_config(params: dict) -> PPOConfig:
    known = {f.name for f in fields(PPOConfig)}
    return PPOConfig(**{k: v for k, v in params.items() if k in known})


def explore(task, budget: int, num_agents: int, seed: int, algorithm: str = "ppo", params: dict | None = None,
            progress: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Explore `task` with `budget` model queries (rounded down to whole env steps).

    Returns (queries, learning_log). queries has one row per model query: step, explorer,
    input_id (position in the task's input set: the held-out split), label, cell, prediction,
    delta, failure, one column per concept axis (its level value), seed, algorithm.
    learning_log has one row per learner update (or per rollout for the random searcher).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: {ALGORITHMS}")
    cfg = ppo_config(params or {})
    torch.manual_seed(seed)
    env = make_native(ConceptEnv, task=task, num_agents=num_agents, seed=seed,
                      novelty_coef=cfg.novelty_coef if algorithm == "ppo" else 0.0)
    learner = PPO(task.observations.shape[1], task.n_cells, cfg, seed) if algorithm == "ppo" else None
    rng = np.random.default_rng(seed + 7919)
    obs, _ = env.reset(seed=seed)
    total_steps = budget // num_agents
    cols = {k: [] for k in ("step", "explorer", "input_id", "cell", "prediction", "delta", "failure")}
    log = []
    step = 0
    t0 = time.perf_counter()
    bar = tqdm(total=total_steps * num_agents, desc=f"explore[{algorithm}]", unit="query", disable=not progress, leave=False)
    while step < total_steps:
        roll = {"obs": [], "actions": [], "logprobs": [], "rewards": [], "values": []}
        fails = 0
        n_roll = min(cfg.num_steps, total_steps - step)
        for _ in range(n_roll):
            if learner is not None:
                action, logp, value = learner.act(obs)
                roll["obs"].append(obs.copy())
                roll["logprobs"].append(logp)
                roll["values"].append(value)
            else:
                action = rng.integers(0, task.n_cells, num_agents)
            obs, rewards, *_ = env.step(action)
            ids, cells, out = env.last
            cols["step"].append(np.full(num_agents, step))
            cols["explorer"].append(np.arange(num_agents))
            cols["input_id"].append(ids)
            cols["cell"].append(cells)
            cols["prediction"].append(out.prediction)
            cols["delta"].append(out.delta)
            cols["failure"].append(out.failure)
            fails += int(out.failure.sum())
            if learner is not None:
                roll["actions"].append(action)
                roll["rewards"].append(rewards.copy())
            step += 1
            bar.update(num_agents)
        row = {"rollout": len(log), "queries": step * num_agents, "failure_rate": fails / (n_roll * num_agents),
               "distinct_cells": int((env.visits > 0).sum())}
        if learner is not None:
            row.update(learner.update(roll["obs"], roll["actions"], roll["logprobs"], roll["rewards"], roll["values"]))
        row["seconds"] = time.perf_counter() - t0
        log.append(row)
    bar.close()
    input_ids = np.concatenate(cols["input_id"]) if cols["input_id"] else np.zeros(0, np.int64)
    queries = pl.DataFrame({
        "step": np.concatenate(cols["step"]).astype(np.int32),
        "explorer": np.concatenate(cols["explorer"]).astype(np.int32),
        "input_id": input_ids.astype(np.int64),
        "label": np.asarray(task.labels)[input_ids].astype(np.int64),
        "cell": np.concatenate(cols["cell"]).astype(np.int32),
        "prediction": np.concatenate(cols["prediction"]).astype(np.int64),
        "delta": np.concatenate(cols["delta"]).astype(np.float32),
        "failure": np.concatenate(cols["failure"]).astype(bool),
    })
    coords = task.space.coords(queries["cell"].to_numpy())
    queries = queries.with_columns(
        [pl.Series(a.name, np.asarray(a.levels)[coords[:, k]]) for k, a in enumerate(task.space.axes)]
        + [pl.lit(seed).alias("seed"), pl.lit(algorithm).alias("algorithm")]
    )
    return queries, pl.DataFrame(log)


def ppo_defaults() -> dict:
    return asdict(PPOConfig())
