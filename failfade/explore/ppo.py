"""PPO for concept-space exploration, CleanRL-style: one dataclass, one agent, one update.

Episodes are one step long, so the return is the reward and the advantage is r − V(s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical


@dataclass
class PPOConfig:
    learning_rate: float = 3e-3  # Adam step size
    num_steps: int = 4  # env steps per rollout (x num_agents queries)
    update_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 4  # minibatches per pass
    clip_coef: float = 0.2  # PPO ratio clip
    ent_coef: float = 0.01  # entropy bonus: keeps the policy spread over the landscape
    vf_coef: float = 0.5  # value-loss weight
    max_grad_norm: float = 0.5  # gradient clip
    hidden: int = 64  # MLP width
    novelty_coef: float = 0.3  # count-based novelty bonus in the reward (see env)


class Agent(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.actor = nn.Linear(hidden, n_actions)
        self.critic = nn.Linear(hidden, 1)
        nn.init.zeros_(self.actor.weight)  # start from the uniform policy: an unbiased first look
        nn.init.zeros_(self.actor.bias)

    def forward(self, obs):
        h = self.body(obs)
        return Categorical(logits=self.actor(h)), self.critic(h).squeeze(-1)


class PPO:
    def __init__(self, obs_dim: int, n_actions: int, cfg: PPOConfig, seed: int):
        torch.manual_seed(seed)
        self.cfg = cfg
        self.agent = Agent(obs_dim, n_actions, cfg.hidden)
        self.opt = torch.optim.Adam(self.agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.n_updates = 0

    @torch.no_grad()
    def act(self, obs: np.ndarray):
        dist, value = self.agent(torch.from_numpy(obs))
        action = dist.sample()
        return action.numpy(), dist.log_prob(action), value

    def update(self, obs, actions, logprobs, rewards, values) -> dict:
        cfg = self.cfg
        obs = torch.from_numpy(np.concatenate(obs))
        actions = torch.from_numpy(np.concatenate(actions))
        logprobs, values = torch.cat(logprobs), torch.cat(values)
        returns = torch.from_numpy(np.concatenate(rewards)).float()
        advantages = returns - values
        n = len(obs)
        mb = max(1, n // cfg.num_minibatches)
        stats = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": [], "clipfrac": []}
        for _ in range(cfg.update_epochs):
            for idx in torch.randperm(n).split(mb):
                dist, v = self.agent(obs[idx])
                new_logp = dist.log_prob(actions[idx])
                ratio = (new_logp - logprobs[idx]).exp()
                adv = advantages[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8) if len(idx) > 1 else adv
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                vl = 0.5 * (v - returns[idx]).pow(2).mean()
                ent = dist.entropy().mean()
                loss = pg + cfg.vf_coef * vl - cfg.ent_coef * ent
                self.opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
                self.opt.step()
                self.n_updates += 1
                with torch.no_grad():
                    stats["policy_loss"].append(float(pg))
                    stats["value_loss"].append(float(vl))
                    stats["entropy"].append(float(ent))
                    stats["approx_kl"].append(float(((ratio - 1) - (new_logp - logprobs[idx])).mean()))
                    stats["clipfrac"].append(float(((ratio - 1).abs() > cfg.clip_coef).float().mean()))
        var = returns.var()
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["explained_variance"] = float(1 - (returns - values).var() / var) if var > 0 else 0.0
        out["n_updates"] = self.n_updates
        return out

    @torch.no_grad()
    def policy_probs(self, obs: np.ndarray) -> np.ndarray:
        """Mean action distribution over a batch of observations (what the agent believes now)."""
        dist, _ = self.agent(torch.from_numpy(obs))
        return dist.probs.mean(0).numpy()
