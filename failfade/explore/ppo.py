"""PPO for concept-space exploration, CleanRL-style: one dataclass, one agent, one update.

Advantages use GAE. In macroscopic mode every episode is one step (done after each action), so
the advantage reduces to r − V(s); in microscopic mode episodes run for several moves.

Known simplification: a share `uniform_mix` of the actions is drawn uniformly, so the policy that
acts is μ = mix/n + (1 − mix)·π, but the update's ratio is π_new/π_old over every stored action,
the uniform ones included, as if π had drawn them (their gradient is not importance-weighted by
π/μ). The landscape's propensities are μ's (exact); only the learner's gradient carries this
bias, bounded in macroscopic mode by the actor's ±residual_bound tilt of the prior. Optimizing μ
itself (ratio μ_new/μ_old) is the principled fix. Measured (2026-12-07, the discovery benchmark's
budgets, PPO's defaults, 20 paired seeds), its recall against this ratio's: digits +0.012 (−0.003,
+0.028), reports −0.015 (−0.028, −0.002), the planted model 1.000 both (its 90% recall after 394
queries against 458). No consistent gain, and it changes what the discovery tables measured, so it
is not made here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from failfade.explore.env import BONUSES, LevelSet
from failfade.stats import others_marginal, query_weights, stabilized_propensity


PRIORS = ("confirm", "levelset", "none")


@dataclass
class PPOConfig:
    learning_rate: float = 3e-3  # Adam step size
    num_steps: int = 4  # env steps per rollout (x num_agents queries)
    update_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 4  # minibatches per pass
    gamma: float = 0.9  # discount (irrelevant in one-step episodes)
    gae_lambda: float = 0.95  # GAE λ
    clip_coef: float = 0.2  # PPO ratio clip
    ent_coef: float = 0.3  # entropy bonus: keeps the actor from overriding the prior (and the policy spread)
    vf_coef: float = 0.5  # value-loss weight
    max_grad_norm: float = 0.5  # gradient clip
    hidden: int = 64  # MLP width
    uniform_mix: float = 0.25  # share of proposals drawn uniformly: coverage, and a floor on π (≥ mix/n)
    novelty_coef: float = 1.0  # weight of the exploration bonus in the reward (see env.exploration_bonus)
    bonus: str = "uncertainty"  # exploration bonus: uncertainty (level-set), count, or none
    residual_bound: float = 0.5  # the actor's largest tilt of the prior, in nats (0: unbounded)
    prior: str = "confirm"  # logits = actor(x) + log(prior weight of each cell): confirm (LevelSet.confirm), levelset (its uncertainty), or none

    def __post_init__(self):
        # the workflow's config schema checks these too; this guards the Python API (explore(params=...)),
        # where a misspelt bonus silently meant no bonus and a mix above 1 negative propensities
        if self.bonus not in BONUSES:
            raise ValueError(f"explore.ppo.bonus: unknown bonus {self.bonus!r}; known: {list(BONUSES)}")
        if self.prior not in PRIORS:
            raise ValueError(f"explore.ppo.prior: unknown prior {self.prior!r}; known: {list(PRIORS)}")
        if not 0.0 <= self.uniform_mix <= 1.0:
            raise ValueError(f"explore.ppo.uniform_mix: must lie in [0, 1], got {self.uniform_mix}")


class Agent(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, hidden: int, bound: float = 0.0):
        super().__init__()
        self.bound = float(bound)
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.actor = nn.Linear(hidden, n_actions)
        self.critic = nn.Linear(hidden, 1)
        nn.init.zeros_(self.actor.weight)  # start from the uniform policy: an unbiased first look
        nn.init.zeros_(self.actor.bias)

    def forward(self, obs, prior=None):
        """(log π(· | obs), V(obs)). Plain log-softmax rather than a torch.distributions.Categorical:
        with 1024 explorers its argument validation and multinomial sampling were a third of the
        learner's time. `prior`: log-weights per action, to which the actor adds a residual bounded
        by ±`bound` nats (bound 0: unbounded), so that it can tilt the prior's allocation by at most
        a factor e^bound either way, never override it."""
        h = self.body(obs)
        if prior is None:
            logits = self.actor(h)
        elif self.bound > 0:
            logits = self.bound * torch.tanh(self.actor(h)) + prior
        else:
            logits = self.actor(h) + prior
        return torch.log_softmax(logits, dim=-1), self.critic(h).squeeze(-1)


def sample(logp: torch.Tensor, generator: torch.Generator, fine: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row from the categorical with log-probabilities `logp`, by inverting the CDF, in
    float64: in float32 the CDF near 1 and the uniform draw both move in steps of 6e-8, so a cell of
    probability 1e-6 late in the CDF was drawn up to 10% off the propensity logged for it (uniform_mix
    0; the default mix's floor kept it under 0.3%). The draw is `generator`'s float32 uniform (its
    24 bits) refined by 2^-24 times one of `fine`'s: `generator`'s stream is as before."""
    cdf = logp.double().exp().cumsum(-1)
    u = torch.rand(len(cdf), 1, generator=generator, device=logp.device).double()
    if fine is not None:
        u = u + torch.rand(len(cdf), 1, generator=fine, device=logp.device, dtype=torch.float64) * 2.0**-24
    return torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(-1).clamp_(max=logp.shape[-1] - 1)


class PPO:
    """The searcher interface: act() proposes, observe() stores and updates every `num_steps`.

    `device`: where the agent acts and learns, the model under test's device. On a GPU the rollout,
    the sampling and the update stay there: a step moves the observations in and the actions and
    their propensities out, and an update reads its statistics back once, at its end.
    """

    name = "ppo"

    def __init__(self, obs_dim: int, n_actions: int, cfg: PPOConfig, seed: int, tau: float = 0.5,
                 device: str | torch.device = "cpu", confidence: float = 0.95):
        torch.manual_seed(seed)
        self.cfg = cfg
        self.device = torch.device(device)
        self.agent = Agent(obs_dim, n_actions, cfg.hidden, cfg.residual_bound if cfg.prior != "none" else 0.0).to(self.device)
        self.opt = torch.optim.Adam(self.agent.parameters(), lr=cfg.learning_rate, eps=1e-5, fused=True)
        self.n_updates = 0
        self.n_actions = n_actions
        self.rng = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.fine_rng = torch.Generator(device=self.device).manual_seed(seed + 3)  # sample()'s low bits
        self.roll: dict[str, list] = {k: [] for k in ("obs", "actions", "logprobs", "values", "rewards", "dones", "prior")}
        self._pending = None
        self.levels = LevelSet(n_actions, tau, confidence) if cfg.prior != "none" else None  # actions are cells then
        self.prior_rng = np.random.default_rng(seed + 2)  # the confirm prior's posterior draws

    def _prior(self, rows: int):
        if self.levels is None:
            return None
        # log-weights with a floor, so that no logit is -inf
        w = self.levels.confirm(self.prior_rng) if self.cfg.prior == "confirm" else self.levels.uncertainty()
        log_w = np.log(np.maximum(w, 1e-6))
        return torch.from_numpy(log_w).float().to(self.device).expand(rows, -1)

    def _tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array)).to(self.device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, input_ids=None) -> np.ndarray:
        prior = self._prior(len(obs))
        x = self._tensor(obs)
        if x.data_ptr() == obs.__array_interface__["data"][0]:
            x = x.clone()  # the env reuses its observation buffer: keep this step's rows
        logp_all, value = self.agent(x, prior)
        action = sample(logp_all, self.rng, self.fine_rng)
        mix = self.cfg.uniform_mix
        if mix > 0:
            dev = self.device
            uniform = torch.rand(len(action), generator=self.rng, device=dev) < mix
            action = torch.where(uniform, torch.randint(0, self.n_actions, action.shape, generator=self.rng, device=dev),
                                 action)
        logp = logp_all.gather(1, action[:, None]).squeeze(1)
        self._pending = (x, action, logp, value, prior)
        # the behaviour policy's π(action | input), for importance-weighted (unbiased) landscapes,
        # and the action's marginal over this step's other inputs (explorers), which stabilizes the
        # weights. In float64: the other inputs' share is the marginal less the query's own row, and in
        # float32 that difference cancelled to 0 where one input held nearly all of a cell's mass (the
        # weight then fell back to 1/π, 1.0 where π̄/π was 5e-13; uniform_mix 0 and a sharp policy)
        probs = logp_all.double().exp()
        self.last_propensity = (mix / self.n_actions + (1 - mix) * probs.gather(1, action[:, None]).squeeze(1)).cpu().numpy()
        marginal = mix / self.n_actions + (1 - mix) * probs.mean(0)
        self.last_marginal = others_marginal(marginal[action].cpu().numpy(), self.last_propensity)
        return action.cpu().numpy()

    def observe(self, obs, cells, rewards, failures, next_obs, dones):
        o, a, lp, v, prior = self._pending
        for key, val in zip(("obs", "actions", "logprobs", "values", "prior"), (o, a, lp, v, prior)):
            self.roll[key].append(val)
        if self.levels is not None:  # with the landscape's own (stabilized) importance weights
            p = stabilized_propensity(self.last_propensity, self.last_marginal)
            self.levels.update(cells, failures, query_weights(p, len(cells)))
        self.roll["rewards"].append(self._tensor(np.asarray(rewards, np.float32)))
        self.roll["dones"].append(self._tensor(np.asarray(dones, np.float32)))
        if len(self.roll["obs"]) < self.cfg.num_steps:
            return None
        return self.flush(next_obs)

    def flush(self, next_obs):
        """Learn from the rollout collected so far: a full one, or what is left at the end of the budget."""
        if not self.roll["obs"]:
            return None
        with torch.no_grad():
            next_value = self.agent(self._tensor(next_obs))[1]
        stats = self.update(next_value)
        self.roll = {k: [] for k in self.roll}
        return stats

    def update(self, next_value: torch.Tensor) -> dict:
        cfg, r = self.cfg, self.roll
        rewards, dones, values = torch.stack(r["rewards"]), torch.stack(r["dones"]), torch.stack(r["values"])
        t_len = len(rewards)
        advantages = torch.zeros_like(rewards)
        last = torch.zeros_like(next_value)
        for t in reversed(range(t_len)):
            nxt = next_value if t == t_len - 1 else values[t + 1]
            live = 1.0 - dones[t]  # an episode that ended at t does not bootstrap from the reset obs
            delta = rewards[t] + cfg.gamma * nxt * live - values[t]
            last = delta + cfg.gamma * cfg.gae_lambda * live * last
            advantages[t] = last
        returns = (advantages + values).flatten()
        advantages = advantages.flatten()
        obs = torch.cat(r["obs"])
        actions, logprobs, values = torch.cat(r["actions"]), torch.cat(r["logprobs"]), values.flatten()
        prior = torch.cat(r["prior"]) if r["prior"][0] is not None else None
        n = len(obs)
        mb = max(1, n // cfg.num_minibatches)
        stats = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": [], "clipfrac": []}
        for _ in range(cfg.update_epochs):
            for idx in torch.randperm(n, device=self.device).split(mb):
                logp_all, v = self.agent(obs[idx], None if prior is None else prior[idx])
                new_logp = logp_all.gather(1, actions[idx, None]).squeeze(1)
                ratio = (new_logp - logprobs[idx]).exp()
                adv = advantages[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8) if len(idx) > 1 else adv
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                vl = 0.5 * (v - returns[idx]).pow(2).mean()
                ent = -(logp_all.exp() * logp_all).sum(-1).mean()
                loss = pg + cfg.vf_coef * vl - cfg.ent_coef * ent
                self.opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
                self.opt.step()
                self.n_updates += 1
                with torch.no_grad():  # kept as tensors: read back once, after the update
                    stats["policy_loss"].append(pg.detach())
                    stats["value_loss"].append(vl.detach())
                    stats["entropy"].append(ent.detach())
                    stats["approx_kl"].append(((ratio - 1) - (new_logp - logprobs[idx])).mean())
                    stats["clipfrac"].append(((ratio - 1).abs() > cfg.clip_coef).float().mean())
        var = float(returns.var())
        host = {k: torch.stack(v).cpu().tolist() for k, v in stats.items()}
        out = {k: float(np.mean(v)) for k, v in host.items()}
        out["explained_variance"] = float(1 - (returns - values).var() / var) if var > 0 else 0.0
        out["n_updates"] = self.n_updates
        return out
