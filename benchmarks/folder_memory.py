"""Peak memory of exploring a large image folder: the held-out split is read a batch at a time.

    .venv/bin/python benchmarks/folder_memory.py [--images 35000] [--size 224] [--budget 4096] [--threads 2]

Generates a folder of `--images` PNGs (three classes, 64-96 px noise images, so that decoding
resizes them) under benchmarks/out/, then runs the workflow's own model and explore stages
(pipeline.stage_model, pipeline.stage_explore) in a fresh process on it: `imagefolder:` data at
`--size` px, half of it held out, a torchvision MobileNetV3-small with random weights (the
model does not matter to memory; a small one keeps the run short), PPO over the default 125-cell
grid. Reports that process's peak RSS after its imports (VmHWM, reset after the imports) beside what the held-out split would take as
one float tensor, and the time of each stage. Writes the "folder-memory" section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, command, write_section  # noqa: E402

CHILD = r"""
import json, sys, time
from pathlib import Path
def rss(key="VmHWM"):  # MiB (kB / 1024), from /proc/self/status
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024
import torch
from failfade.config import load
from failfade.pipeline import stage_explore, stage_model
cfg, work = Path(sys.argv[1]), Path(sys.argv[2])
exp = load(cfg)["experiments"]["folder"]
torch.set_num_threads(int(sys.argv[3]))
# the peak from here on: reset to the current RSS (Linux >= 4.0), so the imports' transient peak,
# which differs between machines, does not count
open("/proc/self/clear_refs", "w").write("5")
imports = rss("VmRSS")
t0 = time.perf_counter()
stage_model(exp, work / "model", work / "resources")
t1 = time.perf_counter()
q = stage_explore(exp, work / "model", work / "queries.parquet", work / "log.csv", progress=False)
t2 = time.perf_counter()
print(json.dumps({"imports_mb": imports, "peak_mb": rss(), "model_s": t1 - t0, "explore_s": t2 - t1,
                  "queries": q.height}))
"""


CLASSES = ("0", "1", "2")


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    """n noise PNGs of 64-96 px in three class folders (kept between runs: generation is slow),
    named by output index ("0", "1", "2"), as a folder for a 1,000-way ImageNet model must be
    unless it holds all 1,000 classes (data.class_index)."""
    from PIL import Image

    stamp = root / f".complete-{n}-{seed}-indexed"
    if stamp.is_file():
        return root
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
    from failfade.progress import progress

    for i in progress(range(n), desc="generate", unit="img"):
        h, w = 64 + int(rng.integers(0, 33)), 64 + int(rng.integers(0, 33))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / CLASSES[i % 3] / f"{i:06d}.png")
    stamp.touch()
    return root


def measure(root: Path, work: Path, size: int, budget: int, threads: int = 2, model: str = "torchvision:mobilenet_v3_small:none",
            heldout: float = 0.5) -> dict:
    """Run the model and explore stages on `root` in a fresh process; its peak RSS and timings."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    exp = {"task": "classification", "seed": 0,
           "data": {"source": f"imagefolder:{root}", "image_size": size, "heldout_fraction": heldout,
                    "cache_dir": str(work / "cache")},
           "model": {"source": model},
           "concepts": [{"name": "rotation", "transform": "rotate", "levels": [0, 10, 20, 30, 40]},
                        {"name": "blur", "transform": "gaussian_blur", "levels": [0, 1, 1.5, 2, 2.5]},
                        {"name": "contrast", "transform": "contrast", "levels": [1, 0.6, 0.4, 0.3, 0.2]}],
           "explore": {"algorithm": "ppo", "budget": budget, "num_agents": 64, "cache": False},
           "landscape": {"failure_rate_threshold": 0.5},
           "feedback": str(work / "feedback.csv")}  # required by the schema; these stages do not read it
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump({"experiments": {"folder": exp}}))
    out = subprocess.run([sys.executable, "-c", CHILD, str(cfg), str(work), str(threads)], capture_output=True,
                         text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"the stage process failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    n = sum(1 for p in root.rglob("*.png"))
    r.update(images=n, size=size, heldout=round(n * heldout),
             heldout_float_mb=round(n * heldout) * 3 * size * size * 4 / 2 ** 20,
             cache_mb=n * 3 * size * size / 2 ** 20)
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=35000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--budget", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    root = make_folder(OUT / f"folder-{args.images}", args.images)
    work = OUT / f"folder-{args.images}-work"
    shutil.rmtree(work, ignore_errors=True)  # the first run must decode the folder, not find an earlier cache
    runs = []
    for label in ("first run: decodes the folder into the cache", "second run: reads the cache"):
        t0 = time.perf_counter()
        r = measure(root, work, args.size, args.budget, args.threads)
        r["label"], r["wall_s"] = label, time.perf_counter() - t0
        runs.append(r)
        print(json.dumps(r), flush=True)
    lines = [f"## Exploring a {args.images:,}-image folder at {args.size} px ({platform.machine()}, {args.threads} threads)", "",
             f"Command: `{command(__file__, ap, args)}` "
             f"({time.strftime('%Y-%m-%d')}). The workflow's model and explore stages in a fresh process on a generated "
             f"folder of {args.images:,} PNGs, half held out ({runs[0]['heldout']:,} inputs), MobileNetV3-small with random "
             f"weights, PPO, {args.budget:,} queries over 125 cells. Peak RSS is the process's VmHWM, reset to its RSS after the imports; the held-out split "
             f"as one float tensor, as `imagefolder:` held it before, would be {runs[0]['heldout_float_mb'] / 1024:.1f} GiB "
             f"(the uint8 cache file on disk: {runs[0]['cache_mb'] / 1024:.1f} GiB).", "",
             "| run | peak RSS | after imports | model stage | explore stage |", "|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['label']} | {r['peak_mb']:,.0f} MiB | {r['imports_mb']:,.0f} MiB | {r['model_s']:.0f} s | {r['explore_s']:.0f} s |")
    write_section("folder-memory", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
