"""Throughput benchmark: model queries per second of failfade's exploration vs two baselines.

    .venv/bin/python benchmarks/throughput.py [--models digits,resnet18] [--num-agents 1024]

For each model under test, in one run on the same machine:
  failfade     explore(): native PufferEnv + PPO learner + one batched scoring call per step
  pure         the same concept transforms and scoring in plain batches, no env, no learner:
               the physical limit on this hardware
  paper-style  one environment, one input per step, PIL per-image transforms, a policy forward
               pass and one model forward pass per step (how the official code runs SB3 DQN)
Models: the default experiment's digits CNN (32 px), and a torchvision ResNet-18 with random
weights on 224-px inputs. Writes the "throughput" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import default_experiment, digits_model, write_section  # noqa: E402

from failfade import models  # noqa: E402
from failfade.concepts import ConceptSpace  # noqa: E402
from failfade.data import load_splits  # noqa: E402
from failfade.explore.search import explore  # noqa: E402
from failfade.tasks.classification import ClassificationTask  # noqa: E402


def build(name: str, exp: dict, device: str):
    space = ConceptSpace.from_config(exp["concepts"])
    if name == "digits":
        mut = models.load_model(digits_model(exp), device)
        inputs = load_splits("builtin:digits", 32, 0.3, exp["seed"]).heldout
    else:
        module, card = models.resolve_source(models.ModelSource.parse(f"torchvision:{name}:none"), Path("resources"))
        mut = models.ModelUnderTest(module, card, torch.device(device))
        inputs = load_splits("builtin:digits", 224, 0.3, exp["seed"]).heldout  # 224-px inputs, as in the paper
    return ClassificationTask(mut, inputs, space, batch_size=256 if device == "cpu" else 4096)


def pure(task, n: int, batch: int, seed: int = 0) -> float:
    """The same (input, cell) scoring in plain batches: transforms + model, nothing else."""
    rng = np.random.default_rng(seed)
    ids, cells = rng.integers(0, task.n_inputs, n), rng.integers(0, task.n_cells, n)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        task.score(ids[s : s + batch], cells[s : s + batch])
    return n / (time.perf_counter() - t0)


def failfade_explore(task, n: int, batch: int, seed: int = 0) -> float:
    t0 = time.perf_counter()
    q, _ = explore(task, n, batch, seed, "ppo", {}, progress=False)
    return q.height / (time.perf_counter() - t0)


class PaperStyleLoop:
    """One env, one input per step: PIL transforms on one image, one policy and one model forward."""

    def __init__(self, task, seed: int = 0):
        import torchvision.transforms.functional as TF

        self.TF, self.task = TF, task
        self.rng = np.random.default_rng(seed)
        d = task.observations.shape[1]
        self.policy = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                          torch.nn.ReLU(), torch.nn.Linear(64, task.n_cells))
        self.pil = [TF.to_pil_image(img) for img in task.inputs.images]
        # plain PyTorch, as the official code runs it: the default memory layout, which is also the
        # faster one for a single image (channels_last only pays off on batches)
        import copy

        self.model = copy.deepcopy(task.mut.module).to(memory_format=torch.contiguous_format).eval()
        self.mut = task.mut

    def step(self):
        i = int(self.rng.integers(0, self.task.n_inputs))
        with torch.no_grad():
            q = self.policy(torch.from_numpy(self.task.observations[i : i + 1]))
        cell = int(q.argmax()) if self.rng.random() > 0.6 else int(self.rng.integers(0, self.task.n_cells))
        img = self.pil[i]
        for axis, lvl in zip(self.task.space.axes, self.task.space.coords([cell])[0]):
            v = axis.levels[lvl]
            if axis.transform in ("rotate", "rotation"):
                img = self.TF.rotate(img, v)
            elif axis.transform in ("gaussian_blur", "blur") and v > 0:
                k = 2 * int(np.ceil(3 * v)) + 1
                img = self.TF.gaussian_blur(img, [k, k], [v, v])
            elif axis.transform == "contrast":
                img = self.TF.adjust_contrast(img, v)
        x = self.TF.to_tensor(img)[None]
        with torch.no_grad():
            x = x.expand(-1, self.mut.channels, -1, -1) if x.shape[1] != self.mut.channels else x
            pred = int(self.model((x - self.mut.mean) / self.mut.std).argmax())
        return pred != int(self.task.labels[i])


def paper_style(task, n: int) -> float:
    loop = PaperStyleLoop(task)
    t0 = time.perf_counter()
    for _ in range(n):
        loop.step()
    return n / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digits,resnet18")
    ap.add_argument("--num-agents", type=int, default=1024, help="explorers per env step = scoring batch")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the median is reported")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    exp = default_experiment()
    rows = []
    for name in args.models.split(","):
        task = build(name, exp, args.device)
        big = name == "digits" and args.device == "cpu"
        n = 32768 if big else (1024 if args.device == "cpu" else 16 * args.num_agents)
        n_paper = 2000 if big else 96
        batch = args.num_agents if (big or args.device != "cpu") else 64
        pure(task, min(n, 2 * batch), batch)  # warm-up
        reps = {"pure": [], "failfade": [], "paper": []}
        for _ in range(args.repeats):  # interleaved, so a noisy moment hits every method alike
            reps["pure"].append(pure(task, n, batch))
            reps["failfade"].append(failfade_explore(task, n, batch))
            reps["paper"].append(paper_style(task, n_paper))
        r = {"model": name, "batch": batch, **{k: float(np.median(v)) for k, v in reps.items()}}
        rows.append(r)
        print(f"{name}: pure {r['pure']:.0f} q/s, failfade {r['failfade']:.0f} q/s, paper-style {r['paper']:.1f} q/s; "
              f"failfade/pure {r['failfade'] / r['pure']:.2f}, failfade/paper {r['failfade'] / r['paper']:.1f}x", flush=True)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)"
    lines = [f"## Throughput: model queries per second ({dev})", "",
             f"Command: `.venv/bin/python benchmarks/throughput.py --device {args.device}`. All three measured in one run, "
             f"interleaved, median of {args.repeats}; *pure* = the same concept transforms and scoring in plain batches "
             "(no env, no learner).", "",
             "| model | batch (explorers) | pure batched q/s | failfade q/s | paper-style q/s | failfade / pure | failfade / paper-style |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['pure']:.0f} | {r['failfade']:.0f} | {r['paper']:.1f} | "
                     f"{r['failfade'] / r['pure']:.2f} | {r['failfade'] / r['paper']:.1f}× |")
    write_section(f"throughput-{args.device}", "\n".join(lines))


if __name__ == "__main__":
    main()
