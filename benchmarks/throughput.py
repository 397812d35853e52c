"""Throughput benchmark: model queries per second of failfade's exploration vs two baselines.

    .venv/bin/python benchmarks/throughput.py [--device cpu|cuda] [--models digits,resnet18] [--num-agents 1024]
        [--threads 2|auto] [--busy N] [--precision fp32|bf16|fp16] [--repeats 5]

For each model under test, in one run on the same machine:
  failfade     explore(): native PufferEnv + PPO learner + one batched scoring call per step
  pure         the same concept transforms and scoring in plain batches, no env, no learner:
               the physical limit on this hardware
  paper-style  one environment, one input per step, PIL per-image transforms, the paper's Q-network
               on the raw-image observation and one model forward pass per step, by hand
  SB3 DQN      the paper's own stack: Stable-Baselines3 2.2.1 DQN, as the official code runs it,
               driving the same per-query work (needs the `bench` extra; skipped without it)
Models: the default experiment's digits CNN (32 px), a torchvision ResNet-18 with random
weights on 224-px inputs, (`reports`) the summarization default's tiny T5, whose paper-style
loop perturbs and summarizes one document per step, and (`t2i`) the text-to-image default's
builtin diffusion model with its judge, whose paper-style loop generates one image per step as
the paper's SD loop did (a query = one image; their SB3 columns are left empty: the paper's stack
took image observations). Writes the section `throughput-<device>` of benchmarks/RESULTS.md,
suffixed by `--models`, `--precision` and `--num-agents` where they differ from the default
(`-<models>`, `-<precision>`, `-<explorers>`) and by `-busy<N>-threads<T>` under `--busy` (a run that
changes only `--threads` or `--repeats` rewrites the unsuffixed section), under a `Command:` line
that reruns it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command, default_experiment, digits_model, write_section  # noqa: E402

from failfade.concepts import ConceptSpace  # noqa: E402
from failfade.explore.search import explore  # noqa: E402
from failfade.tasks.classification import models  # noqa: E402
from failfade.tasks.classification.data import load_splits  # noqa: E402
from failfade.tasks.classification.task import ClassificationTask  # noqa: E402
from failfade.tasks.classification.transforms import TRANSFORMS  # noqa: E402
from failfade.threads import usable_threads  # noqa: E402


def build_default(name: str, device: str):
    """A default experiment's task as the workflow builds it (`reports`: the tiny T5; `t2i`: the
    builtin diffusion model and its judge, where a query generates one image and judges it); the
    model stage runs once under benchmarks/out/."""
    from common import ROOT, model_dir

    from failfade.config import load
    from failfade.pipeline import build_task

    exp = load(ROOT / "config" / "config.yaml")["experiments"][name]
    exp["device"] = device
    if name == "t2i" and device != "cpu":
        exp["model"]["batch_size"] = 4096  # on a GPU, one pipeline call takes a whole step's images
    return build_task(exp, model_dir(name, exp))


def build(name: str, exp: dict, device: str, precision: str = "fp32"):
    if name in ("reports", "t2i"):
        return build_default(name, device)
    space = ConceptSpace.from_config(exp["concepts"], TRANSFORMS)
    if name == "digits":
        mut = models.load_model(digits_model(exp), device, precision)
        inputs = load_splits("builtin:digits", 32, 0.3, exp["seed"]).heldout
    else:
        torch.manual_seed(exp["seed"])  # random weights, the same in every run
        module, card = models.resolve_source(models.ModelSource.parse(f"torchvision:{name}:none"), Path("resources"))
        mut = models.ModelUnderTest(module, card, torch.device(device), precision)
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


def _sync(task):
    if task.mut.device.type == "cuda":
        torch.cuda.synchronize()


def breakdown(task, n: int, batch: int, seed: int = 0) -> dict:
    """Where a batched query's time goes: the concept transforms alone, then the model's forward
    pass alone on the transformed batches (µs per query, device synchronised around each), in the
    chunks that `score` renders and scores: each call of `batch` queries cut at the task's
    batch_size (on a 2-core CPU the digits CNN's forward pass costs over twice as much per image in
    chunks of 1,024 as in score's 256)."""
    rng = np.random.default_rng(seed)
    ids, cells = rng.integers(0, task.n_inputs, n), rng.integers(0, task.n_cells, n)
    bounds = [(t, min(t + task.batch_size, s + batch, n))
              for s in range(0, n, batch) for t in range(s, min(s + batch, n), task.batch_size)]
    chunks = [(ids[a:b], cells[a:b]) for a, b in bounds]
    with torch.inference_mode():
        task.logits(task.render(*chunks[0]))  # warm-up
        _sync(task)
        t0 = time.perf_counter()
        xs = [task.render(i, c) for i, c in chunks]
        _sync(task)
        t1 = time.perf_counter()
        for x in xs:
            task.logits(x)
        _sync(task)
        t2 = time.perf_counter()
        out = {"transforms_us": 1e6 * (t1 - t0) / n, "forward_us": 1e6 * (t2 - t1) / n}
        if task.mut.device.type == "cuda" and not torch.backends.cudnn.benchmark:
            # what cuDNN's autotuner would give (failfade leaves it off: its choice can vary by run)
            torch.backends.cudnn.benchmark = True
            for x in xs[:2]:
                task.logits(x)
            _sync(task)
            t3 = time.perf_counter()
            for x in xs:
                task.logits(x)
            _sync(task)
            out["forward_us_autotuned"] = 1e6 * (time.perf_counter() - t3) / n
            torch.backends.cudnn.benchmark = False
    return out


def disagreement(task, reference, n: int = 8192, seed: int = 1) -> tuple[int, int]:
    """How many of n random (input, cell) failure decisions differ between a low-precision task and
    the fp32 `reference` on the same model and queries: (differing, n)."""
    rng = np.random.default_rng(seed)
    ids, cells = rng.integers(0, task.n_inputs, n), rng.integers(0, task.n_cells, n)
    return int((task.score(ids, cells).failure != reference.score(ids, cells).failure).sum()), n


def failfade_explore(task, n: int, batch: int, seed: int = 0) -> float:
    t0 = time.perf_counter()
    q, _ = explore(task, n, batch, seed, "ppo", {}, progress=False)
    return q.height / (time.perf_counter() - t0)


class PaperStyleQueries:
    """What the official code does per query: PIL transforms on one image, then one forward pass.

    `observation(i)` is the paper's observation: the raw image, un-normalised 0-255 floats, flattened
    (its MlpPolicy sees 150,528 numbers for a 224-px RGB input). `query(i, cell)` returns the paper's
    reward: 10·|ln(p/(1−p))| of the top-1 confidence p on a mistake, −1 otherwise.
    """

    def __init__(self, task):
        import copy

        import torchvision.transforms.functional as TF

        self.TF, self.task = TF, task
        self.pil = [TF.to_pil_image(img) for img in task.inputs.images]
        self.obs = [np.asarray(img, dtype=np.float32).ravel() for img in self.pil]
        # plain PyTorch, as the official code runs it: the default memory layout, which is also the
        # faster one for a single image (channels_last only pays off on batches)
        self.model = copy.deepcopy(task.mut.module).to(memory_format=torch.contiguous_format).eval()
        self.mut = task.mut

    def observation(self, i: int) -> np.ndarray:
        return self.obs[i]

    @staticmethod
    def _occlude(img, fraction: float):
        """A black centred square, `fraction` of each side (failfade's occlude: pixel centres within it)."""
        from PIL import ImageDraw

        img = img.copy()
        w, h = img.size
        xs = [x for x in range(w) if abs(x + 0.5 - w / 2) < fraction * w / 2]
        ys = [y for y in range(h) if abs(y + 0.5 - h / 2) < fraction * h / 2]
        if xs and ys:
            ImageDraw.Draw(img).rectangle([xs[0], ys[0], xs[-1], ys[-1]], fill=0)
        return img

    def query(self, i: int, cell: int) -> float:
        img = self.pil[i]
        for axis, lvl in zip(self.task.space.axes, self.task.space.coords([cell])[0]):
            v = axis.levels[lvl]
            t = axis.transform
            if t in ("rotate", "rotation"):
                img = self.TF.rotate(img, v)
            elif t in ("gaussian_blur", "blur"):
                if v > 0:
                    k = 2 * int(np.ceil(3 * v)) + 1
                    img = self.TF.gaussian_blur(img, [k, k], [v, v])
            elif t == "contrast":
                img = self.TF.adjust_contrast(img, v)
            elif t == "darken":
                img = self.TF.adjust_brightness(img, 1.0 - v)
            elif t in ("saturation", "saturate"):
                img = self.TF.adjust_saturation(img, v)
            elif t in ("occlude", "occlusion"):
                img = self._occlude(img, v) if v > 0 else img
            else:
                raise ValueError(f"paper-style loop: no PIL version of transform {t!r}")
        x = self.TF.to_tensor(img)[None].to(self.mut.device)  # one host-to-device copy per query, as the paper
        with torch.no_grad():
            x = x.expand(-1, self.mut.channels, -1, -1) if x.shape[1] != self.mut.channels else x
            p = torch.softmax(self.model((x - self.mut.mean) / self.mut.std), 1)[0]
        top = int(p.argmax())
        if top == int(self.task.labels[i]):
            return -1.0
        c = float(p[top])
        return 10.0 * abs(np.log(c / (1.0 - c + 1e-7)))


_PAPER: dict[int, PaperStyleQueries] = {}


def paper_queries(task) -> PaperStyleQueries:
    """One PaperStyleQueries per task (building the PIL images is set-up, not per-query work)."""
    if id(task) not in _PAPER:
        _PAPER[id(task)] = PaperStyleQueries(task)
    return _PAPER[id(task)]


def paper_style(task, n: int, seed: int = 0) -> float:
    """The minimal paper-style loop, by hand: one env, one input per step, the paper's Q-network
    (MLP [64, 64] on the raw-image observation) and its ε = 0.6 random actions, no learning.
    For a text task: one document perturbed and summarized per step."""
    if not hasattr(task, "mut"):
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        for _ in range(n):
            task.score([int(rng.integers(0, task.n_inputs))], [int(rng.integers(0, task.n_cells))])
        return n / (time.perf_counter() - t0)
    pq = paper_queries(task)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    d = len(pq.observation(0))
    qnet = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, task.n_cells))
    t0 = time.perf_counter()
    for _ in range(n):
        i = int(rng.integers(0, task.n_inputs))
        with torch.no_grad():
            q = qnet(torch.from_numpy(pq.observation(i))[None])
        cell = int(q.argmax()) if rng.random() > 0.6 else int(rng.integers(0, task.n_cells))
        pq.query(i, cell)
    return n / (time.perf_counter() - t0)


def paper_stack(task, n: int, seed: int = 0) -> float | None:
    """The paper's own stack: Stable-Baselines3 2.2.1 DQN (MlpPolicy, one DummyVecEnv, buffer 10,000,
    learning_starts 50,000, ε 1.0 -> 0.6) on a one-step gymnasium env that runs `PaperStyleQueries`.
    None when stable-baselines3 is not installed (`pip install -e .[bench]`)."""
    if not hasattr(task, "mut"):
        return None  # the paper's SB3 stack observed images; no text version to compare with
    try:
        import gymnasium
        from stable_baselines3 import DQN
    except ImportError:
        return None
    pq = paper_queries(task)
    d = len(pq.observation(0))

    class OneStepEnv(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(0.0, 1.0, (d,), np.float32)  # declared (0, 1), fed 0-255, as the paper
        action_space = gymnasium.spaces.Discrete(task.n_cells)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.i = int(self.np_random.integers(0, task.n_inputs))
            return pq.observation(self.i), {}

        def step(self, action):
            return pq.observation(self.i), pq.query(self.i, int(action)), True, False, {}

    agent = DQN("MlpPolicy", OneStepEnv(), buffer_size=min(10_000, n + 1), learning_starts=50_000,
                exploration_final_eps=0.6, seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    agent.learn(total_timesteps=n)
    return n / (time.perf_counter() - t0)


METHODS = ("pure", "failfade", "paper", "sb3")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digits,resnet18")
    ap.add_argument("--num-agents", type=int, default=1024, help="explorers per env step = scoring batch")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", default="2", help="torch threads, or `auto`: as many as cores are free of other "
                    "work when the run starts (failfade's scoring stages do the same, failfade/threads.py)")
    ap.add_argument("--busy", type=int, default=0, help="start this many busy-loop processes for the run: the "
                    "benchmark under load")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                    help="forward-pass autocast for failfade and pure (config `precision`); the paper-style "
                         "loops stay fp32, as the official code ran")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; medians are reported")
    args = ap.parse_args(argv)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        threads = usable_threads(os.cpu_count() or 1) if args.threads == "auto" else int(args.threads)
        print(f"torch threads: {threads}" + (f" (auto, {args.busy} busy process(es) running)" if args.threads == "auto" else ""),
              flush=True)
        torch.set_num_threads(threads)
        run_models(args, threads, command(__file__, ap, args, keep=("device",)))
    finally:
        for p in busy:
            p.kill()


def run_models(args, threads: int, cmd: str):
    exp = default_experiment()
    rows = []
    for name in args.models.split(","):
        task = build(name, exp, args.device, args.precision)
        big = name == "digits" and args.device == "cpu"
        batch = args.num_agents if (big or args.device != "cpu") else 64
        n = 16 * batch if (big or args.device != "cpu") else 8 * batch
        n_paper = 1000 if big else 64
        run = {"pure": lambda m: pure(task, m, batch), "failfade": lambda m: failfade_explore(task, m, batch),
               "paper": lambda m: paper_style(task, m), "sb3": lambda m: paper_stack(task, m)}
        size = {"pure": n, "failfade": n, "paper": n_paper, "sb3": n_paper}
        # warm-up, every method alike: one-time costs (lazy imports, allocator growth; torch.optim's
        # first use imports torch._dynamo, ~1.5 s) are not throughput
        for m in METHODS:
            run[m](min(size[m], 4 * batch) if m in ("pure", "failfade") else 16)
        reps = {m: [] for m in METHODS}
        for _ in range(args.repeats):  # interleaved, so a noisy moment hits every method alike
            for m in METHODS:
                reps[m].append(run[m](size[m]))
        if reps["sb3"][0] is None:
            reps["sb3"] = [float("nan")]
        r = {"model": name, "batch": batch, **{m: float(np.median(v)) for m, v in reps.items()}}
        if hasattr(task, "mut"):  # image classification: where a query's time goes
            r.update(breakdown(task, n, batch))
            print(f"{name}: per query, transforms {r['transforms_us']:.1f} µs, forward pass {r['forward_us']:.1f} µs"
                  + (f" ({r['forward_us_autotuned']:.1f} µs with cudnn.benchmark)" if "forward_us_autotuned" in r else ""), flush=True)
        if args.precision != "fp32":  # decisions against fp32 on the same model and queries
            reference = build(name, exp, args.device, "fp32")  # the same weights (trained or seeded), scored at fp32
            ours, theirs = task.mut.module.state_dict(), reference.mut.module.state_dict()
            assert all(torch.equal(ours[k], theirs[k]) for k in ours), "fp32 reference built with other weights"
            r["differ"], r["checked"] = disagreement(task, reference)
            print(f"{name}: {args.precision} vs fp32 failure decisions differ on {r['differ']} of {r['checked']} queries", flush=True)
        # paired ratio: each repetition's failfade against the pure run just before it, on the same machine state
        paired = np.array(reps["failfade"]) / np.array(reps["pure"])
        r["ratio"], r["ratio_lo"], r["ratio_hi"] = float(np.median(paired)), float(paired.min()), float(paired.max())
        rows.append(r)
        print(f"{name}: pure {r['pure']:.0f} q/s, failfade {r['failfade']:.0f} q/s, paper-style {r['paper']:.1f} q/s, "
              f"SB3 {r['sb3']:.1f} q/s; failfade/pure {r['ratio']:.2f} (per repetition {np.round(paired, 2).tolist()}), "
              f"failfade/paper-style {r['failfade'] / r['paper']:.1f}x, failfade/SB3 {r['failfade'] / r['sb3']:.1f}x", flush=True)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"CPU ({platform.processor() or platform.machine()}, {threads} threads"
        + (" chosen by --threads auto" if args.threads == "auto" else "")
        + (f", {args.busy} busy-loop process(es) beside it" if args.busy else "") + ")")
    dev += f", {args.precision}" if args.precision != "fp32" else ""
    lines = [f"## Throughput: model queries per second ({dev})", "",
             f"Command: `{cmd}`. All methods measured in one "
             f"process after a warm-up each, interleaved, {args.repeats} repetitions; q/s are medians; failfade / pure is "
             "the median over repetitions of failfade's rate over the pure run just before it (range in brackets). "
             "*pure* = the same concept transforms and scoring in plain batches (no env, no learner); *paper-style* = "
             "one env, one input per step, PIL transforms, one forward pass and the paper's Q-network on the raw-image "
             "observation, by hand; *SB3 DQN* = the paper's own stack (Stable-Baselines3 2.2.1 DQN, settings as "
             "shipped) driving the same per-query work.", "",
             "| model | batch (explorers) | pure batched q/s | failfade q/s | paper-style q/s | SB3 DQN q/s | failfade / pure | "
             "failfade / paper-style | failfade / SB3 DQN | transforms / forward µs per query |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        has_sb3 = r["sb3"] == r["sb3"]  # NaN: no SB3 run for this model
        sb3_rate = f"{r['sb3']:.1f}" if has_sb3 else "—"
        vs_sb3 = f"{r['failfade'] / r['sb3']:.1f}×" if has_sb3 else "—"
        lines.append(f"| {r['model']} | {r['batch']} | {r['pure']:.0f} | {r['failfade']:.0f} | {r['paper']:.1f} | {sb3_rate} | "
                     f"{r['ratio']:.2f} ({r['ratio_lo']:.2f}–{r['ratio_hi']:.2f}) | {r['failfade'] / r['paper']:.1f}× | {vs_sb3} | "
                     + (f"{r['transforms_us']:.1f} / {r['forward_us']:.1f} |" if "transforms_us" in r else "— |"))
    if args.precision != "fp32":
        lines += ["", f"{args.precision} autocast against fp32 on the same weights and the same random queries: the failure "
                  "decision differs on " + ", ".join(f"{r['model']} {r['differ']} of {r['checked']} "
                  f"({100 * r['differ'] / r['checked']:.2f}%)" for r in rows) + "."]
    suffix = "" if args.models == "digits,resnet18" else "-" + args.models.replace(",", "-")
    suffix += "" if args.precision == "fp32" else "-" + args.precision
    suffix += "" if args.num_agents == 1024 else f"-{args.num_agents}"
    suffix += "" if not args.busy else f"-busy{args.busy}-threads{args.threads}"
    write_section(f"throughput-{args.device}{suffix}", "\n".join(lines))


if __name__ == "__main__":
    main()
