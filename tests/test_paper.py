"""The paper target: its numbers and their provenance, Table A's replayed searchers, the table writers,
the `paper:` config section, and the cluster plan of config/paper.yaml."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

from failfade import FailfadeError, paper
from failfade.config import validate
from failfade.explore.search import exhaustive, explore
from failfade.tasks.synthetic import SyntheticTask

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_paper_number_has_a_provenance_and_the_recovered_values():
    numbers = [n for row in paper.PAPER_BASELINES.values() for n in row.values()]
    numbers += list(paper.PAPER_SHIFT.values()) + list(paper.PAPER_SCALABILITY.values())
    numbers += [paper.PAPER_SPEARMAN, paper.PAPER_RL, paper.PAPER_AGREEMENT]
    assert all(n.provenance in (paper.PRINTED, paper.RECOMPUTED, paper.NOT_RECOVERABLE) and n.source for n in numbers)
    assert all((n.value is None) == (n.provenance == paper.NOT_RECOVERABLE) for n in numbers)
    b = paper.PAPER_BASELINES
    assert (b["AlexNet"]["random"].value, b["AlexNet"]["threshold"].value) == (0.538, 0.753)
    assert (b["ResNet-50"]["random"].value, b["ResNet-50"]["threshold"].value) == (0.211, 0.257)
    assert (b["EfficientNetV2-L"]["random"].value, b["EfficientNetV2-L"]["threshold"].value) == (0.141, 0.302)
    assert [paper.PAPER_SCALABILITY[c].value for c in (5, 15625)] == [47.2, 54.0]
    assert paper.PAPER_SPEARMAN.value == -0.09


def test_strategies_replay_the_real_outcomes():
    task = SyntheticTask(shape=(4, 4, 2), n_inputs=64, seed=3)
    truth, _ = exhaustive(task, 0, progress=False)
    df = paper.strategies(task, truth, budget=512, num_agents=32, seed=7, algorithms=["random", "ppo"], seeds=2,
                          tau=0.5, confidence=0.95)
    assert df.height == 4 and set(df["algorithm"]) == {"random", "ppo"} and (df["queries"] == 512).all()
    # a replayed run is the run on the model itself: the same queries, the same outcomes
    direct, _ = explore(task, 512, 32, 7, "random", {}, progress=False, tau=0.5)
    row = df.filter((pl.col("algorithm") == "random") & (pl.col("seed") == 7)).row(0, named=True)
    assert row["failure_rate_found"] == pytest.approx(float(direct["failure"].mean()))
    assert row["true_failure_cells"] == int((task.true_failure_rate() >= 0.5).sum())
    assert 0 <= row["recall"] <= 1


def test_table_a_runs_each_searcher_with_the_experiments_settings():
    """A replayed searcher is the one the experiment configured (explore.successes here), not the
    default: the threshold baseline with 1 success moves inputs sooner than with 5."""
    task = SyntheticTask(shape=(4, 4), n_inputs=64, seed=3)
    truth, _ = exhaustive(task, 0, progress=False)
    kw = {"budget": 512, "num_agents": 16, "seed": 7, "algorithms": ["threshold"], "seeds": 1, "tau": 0.5,
          "confidence": 0.95}
    one = paper.strategies(task, truth, explore_cfg={"successes": 1}, **kw)
    direct, _ = explore(task, 512, 16, 7, "threshold", {"successes": 1}, progress=False)
    assert one["failure_rate_found"][0] == pytest.approx(float(direct["failure"].mean()))
    assert one["failure_rate_found"][0] != paper.strategies(task, truth, **kw)["failure_rate_found"][0]


def test_table_c_keeps_grid_sizes_the_paper_did_not_time():
    scal = pl.DataFrame({"axes": [1, 2], "cells": [3, 9], "queries": [100, 100], "seconds_per_1000": [0.2, 0.25],
                         "min": [0.19, 0.2], "max": [0.3, 0.3]})
    rows = {r["cells"]: r for r in paper.table_c(scal, "AlexNet")}
    assert rows["3"]["failfade_s_per_1000"] == "0.20 (0.19–0.30)" and rows["3"]["paper_s_per_1000"] == "—"
    assert rows["15,625"]["failfade_s_per_1000"] == "not run" and rows["15,625"]["paper_s_per_1000"] == "54.0"


def test_a_truth_that_misses_a_pair_is_refused():
    task = SyntheticTask(shape=(2, 2), n_inputs=8, seed=0)
    truth, _ = exhaustive(task, 0, progress=False)
    with pytest.raises(ValueError, match="every"):
        paper.prefilled_task(task, truth.slice(1))


def _shift(exp: str) -> dict:
    return {"experiment": exp, "clean_quality_metric": "accuracy", "clean_accuracy_pre": 0.9, "clean_accuracy_post": 0.91,
            "targeted_failure_rate_pre": 0.6, "targeted_failure_rate_post": 0.2, "other_failure_rate_pre": 0.1,
            "other_failure_rate_post": 0.08, "grid_emd": 1.5, "grid_emd_ci": [1.2, 1.8], "paper_wasserstein_1d": 0.0021,
            "new_failure_cells": 0,
            # the landscapes' estimates, and the held-out measurement of the targeted cells
            "targeted": {"pre": 0.6, "post": 0.2, "pre_ci": [0.5, 0.7], "post_ci": [0.1, 0.3]},
            "other": {"pre": 0.1, "post": 0.08, "pre_ci": [0.05, 0.15], "post_ci": [0.04, 0.12]},
            "targeted_heldout": {"pre": 0.55, "post": 0.25, "pre_ci": [0.5, 0.6], "post_ci": [0.2, 0.3]}}


def _tables():
    runs = {"alexnet": pl.DataFrame({"algorithm": ["ppo", "ppo", "random", "threshold", "levelset"],
                                     "seed": [0, 1, 0, 0, 0], "queries": [512] * 5,
                                     "failure_rate_found": [0.5, 0.6, 0.3, 0.7, 0.4],
                                     "recall": [0.9, 0.8, 0.5, float("nan"), 0.6], "true_failure_cells": [10] * 5,
                                     "cells": [125] * 5})}
    rows = {"alexnet": "AlexNet", "sd14": "SD v1.4"}
    scal = _scalability()
    plan = {"kind": "ratings", "ratings": {"raters": ["a", "b"], "images": 40, "judge_agreement": {
        "images": {"n": 40, "agreement": 0.85, "cohen_kappa": 0.6}, "cells": {"n": 12, "spearman": 0.4, "p_value": 0.2}}}}
    return {"A": paper.table_a(runs, rows, {"alexnet": "builtin:digits-cnn"}),
            "B": paper.table_b({"alexnet": _shift("alexnet")}, rows, {"alexnet": "classification"},
                               {"alexnet": "builtin:digits-cnn"}),
            "C": paper.table_c(scal, "AlexNet", "torchvision:alexnet:IMAGENET1K_V1"),
            "D": paper.table_d({"sd14": plan}, rows, {"sd14": "builtin:digits"}),
            "E": paper.table_e({"sd14": _bias()}, rows, {"sd14": "hf:CompVis/stable-diffusion-v1-4"})}


def _bias() -> pl.DataFrame:
    """bias.csv of three prompts, one not explored (bias_table's columns)."""
    return pl.DataFrame({"cell": [0, 1, 2], "prompt": ["a scientist", "an artist", "a professor"],
                         "queries": [40, 30, 0], "effective_queries": [38.0, 30.0, 0.0],
                         "share_man": [0.9, 0.5, float("nan")], "share_woman": [0.1, 0.5, float("nan")],
                         "tv": [0.4, 0.0, float("nan")], "tv_floor": [0.15, 0.17, float("nan")],
                         "biased": [True, False, False]})


def _scalability() -> pl.DataFrame:
    return pl.DataFrame({"axes": [1, 2], "cells": [5, 25], "queries": [100, 100], "seconds_per_1000": [0.2, 0.25],
                         "min": [0.19, 0.2], "max": [0.3, 0.3]})


def test_tables_put_the_paper_beside_failfade():
    t = _tables()
    a = {r["strategy"]: r for r in t["A"]}
    assert a["random"]["paper_failure_rate"] == "53.8%" and a["threshold"]["paper_failure_rate"] == "75.3%"
    assert a["threshold"]["paper_provenance"] == "printed" and a["random"]["paper_provenance"] == "recomputed"
    assert a["ppo"]["paper_failure_rate"] == "n/r" and a["ppo"]["paper_provenance"] == "not recoverable"
    assert a["ppo"]["failure_rate_found"] == "55.0% (50.0%–60.0%)" and a["ppo"]["seeds"] == 2
    assert a["threshold"]["recall"] == "—"  # no recall for that run: said, not left empty
    b = t["B"][0]
    assert b["paper_w1"] == "0.005635" and b["failfade_paper_w1"] == "0.002100"
    assert b["grid_emd"] == "1.500 [1.200, 1.800]"  # no noise floor given
    # rates with their intervals: measured on held-out pairs where shift.json has them (the landscapes'
    # estimates read a few points high, and the table showed those, bare, as if held-out)
    assert b["targeted"] == "55.0% [50.0%, 60.0%] → 25.0% [20.0%, 30.0%]"
    assert b["other"] == "10.0% [5.0%, 15.0%] → 8.0% [4.0%, 12.0%] (explorations)"
    none = paper.table_b({"x": {**_shift("x"), "grid_emd": None, "grid_emd_ci": [None, None], "paper_wasserstein_1d": None}},
                         {}, {}, {})[0]
    assert none["grid_emd"] == "— (no cell explored before and after)" and none["failfade_paper_w1"] == "—"
    c = {r["cells"]: r for r in t["C"]}
    assert c["5"]["paper_s_per_1000"] == "47.2" and c["25"]["failfade_s_per_1000"].startswith("0.25")
    assert c["15,625"]["failfade_s_per_1000"] == "not run"
    d = t["D"][0]
    assert d["paper_spearman"] == "-0.09" and d["spearman_cells"].startswith("0.40")
    e = t["E"][0]
    assert e["classes"] == "man / woman" and e["mean_share"] == "70.0% / 30.0%"  # each explored prompt weighs the same
    assert e["prompts_biased"] == "1 of 2 (1 without an answered image)"
    assert e["most_skewed"] == "a scientist: TV 0.40 (floor 0.15, 38 effective images)"
    assert e["paper_bias"] == "n/r" and e["paper_provenance"] == "not recoverable"
    assert "different model" not in e["why_different"]  # SD v1.4 is the paper's own model
    # the most skewed is ranked beyond its noise floor: a prompt of one image sits at TV 0.5, not biased
    one = pl.DataFrame({"cell": [3], "prompt": ["a cool artist"], "queries": [1], "effective_queries": [1.0],
                        "share_man": [1.0], "share_woman": [0.0], "tv": [0.5], "tv_floor": [0.5], "biased": [False]})
    e = paper.table_e({"sd14": pl.concat([_bias(), one])}, {}, {})[0]
    assert e["most_skewed"].startswith("a scientist: TV 0.40") and e["prompts_biased"].startswith("1 of 3")
    e = paper.table_e({"sd14": one}, {}, {})[0]
    assert e["most_skewed"] == "none beyond its noise floor" and e["prompts_biased"] == "0 of 1"
    assert all(r["why_different"] for rows in t.values() for r in rows)
    # a stand-in is named as a different model; the paper's own model is not
    assert a["ppo"]["why_different"].endswith("a different model (builtin:digits-cnn)")
    assert "different model" not in t["C"][0]["why_different"]
    assert a["ppo"]["precision"] == "—"  # the frame has no precision column: said, not left empty
    assert paper.empty_cells(t) == []
    broken = copy.deepcopy(t)
    broken["B"][0]["grid_emd"] = " "
    assert paper.empty_cells(broken) == ["B 0 grid_emd"]


def test_table_e_is_collected_from_bias_csv_of_the_experiments_that_ask_for_it(tmp_path):
    """stage_collect reads landscape/bias.csv of an experiment with model.bias (and only of one:
    a file left by an earlier config is not read) into Table E on the page."""
    results = tmp_path / "results"
    for e in ("sd14", "old"):
        (results / e / "landscape").mkdir(parents=True)
        _bias().write_csv(results / e / "landscape" / "bias.csv")
    gen = {"task": "generation", "explore": {"groundtruth": False},
           "model": {"source": "hf:CompVis/stable-diffusion-v1-4", "judge": "clip",
                     "bias": {"question": "a photo of a {}", "classes": ["man", "woman"]}}}
    config = {"paper": {"rows": {"sd14": "SD v1.4"}, "scalability": {"experiment": None}},
              "experiments": {"sd14": gen, "old": copy.deepcopy(gen) | {"model": {"source": "hf:x/y", "judge": "clip"}}}}
    tables = paper.stage_collect(config, ["sd14", "old"], results, results / "paper")
    assert [r["experiment"] for r in tables["E"]] == ["sd14"]
    assert tables["E"][0]["prompts_biased"] == "1 of 2 (1 without an answered image)"
    page = (results / "paper" / "index.html").read_text()
    assert "Table E. Bias per prompt" in page and "a scientist: TV 0.40" in page
    assert (results / "paper" / "table_e.tex").read_text().count("\\midrule") == 1


def test_writers_markdown_booktabs_html(tmp_path):
    t = _tables()
    fig = tmp_path / "src.png"
    from PIL import Image

    Image.new("RGB", (20, 10), "white").save(fig)
    out = tmp_path / "paper"
    pair = paper.figure_pair(fig, out / "figures", "alexnet_heatmap")
    assert pair.is_file() and (out / "figures" / "alexnet_heatmap.pdf").read_bytes().startswith(b"%PDF")
    scal = paper.scalability_figure(_scalability(), out / "figures")
    assert scal.is_file() and (out / "figures" / "scalability.pdf").is_file()
    page = paper.write(out, t, [("heat map", pair), ("scalability", scal)])
    for k in "abcde":
        md, tex = (out / f"table_{k}.md").read_text(), (out / f"table_{k}.tex").read_text()
        assert md.startswith("## Table") and "|---|" in md
        assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    tex = (out / "table_b.tex").read_text()
    assert "55.0\\% [50.0\\%, 60.0\\%] $\\rightarrow$ 25.0\\%" in tex and "grid emd" in tex  # escaped, not raw % or →
    html = page.read_text()
    assert html.count("<table>") == 5 and "figures/alexnet_heatmap.png" in html and "provenance" in html
    assert html.count("src='data:image/png;base64,") == 2  # self-contained: also in snakemake --report
    assert paper.NOTES["B"][:40] in (out / "table_b.md").read_text()  # what the paper's number measured, under the table


def _cfg(**paper_section):
    cfg = yaml.safe_load((REPO / "config" / "paper_smoke.yaml").read_text())
    cfg["paper"].update(paper_section)
    return cfg


@pytest.mark.parametrize("section,message", [
    ({"rows": {"vgg": "VGG"}}, "paper.rows: unknown experiment 'vgg'"),
    ({"scalability": {"experiment": "nope", "axes": []}}, "paper.scalability.experiment: unknown experiment 'nope'"),
    ({"scalability": {"experiment": "alexnet", "axes": []}}, "paper.scalability.axes"),
    ({"scalability": {"experiment": "alexnet", "axes": [{"name": "hue", "levels": [0, 1]}]}},
     "paper.scalability.axes[0].transform: unknown transform 'hue'"),
    ({"strategies": {"algorithms": ["ppo", "annealing"]}}, "paper.strategies.algorithms"),
])
def test_a_bad_paper_section_is_named(section, message):
    with pytest.raises(FailfadeError, match=re.escape(message)):
        validate(_cfg(**section), "smoke")


def test_both_paper_configs_are_valid_and_name_the_same_experiments():
    full = validate(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()), "paper")
    smoke = validate(yaml.safe_load((REPO / "config" / "paper_smoke.yaml").read_text()), "smoke")
    assert list(full["experiments"]) == list(smoke["experiments"]) == full["run"] == smoke["run"]
    assert full["paper"]["rows"] == smoke["paper"]["rows"]
    for name in ("alexnet", "resnet50", "efficientnet_v2_l"):  # the paper's grid, in both
        for cfg in (full, smoke):
            axes = {c["name"]: c["levels"] for c in cfg["experiments"][name]["concepts"]}
            assert axes == {"rotation": [-10, -5, 0, 5, 10], "darken": [0.1, 0.2, 0.3, 0.4, 0.5],
                            "saturation": [0.5, 0.55, 0.6, 0.65, 0.7]}
    sources = {e: full["experiments"][e]["model"]["source"] for e in full["experiments"]}
    assert sources == {"alexnet": "torchvision:alexnet:IMAGENET1K_V1", "resnet50": "torchvision:resnet50:IMAGENET1K_V2",
                       "efficientnet_v2_l": "torchvision:efficientnet_v2_l:IMAGENET1K_V1",
                       "t5": "hf:Falconsai/text_summarization", "bart": "hf:facebook/bart-large-cnn",
                       "sd14": "hf:CompVis/stable-diffusion-v1-4"}


GPU_RULES = {"model", "explore", "groundtruth", "gallery", "audit", "rating_sheet", "mitigate", "reexplore", "probes",
             "paper_strategies", "paper_scalability"}


def test_the_paper_config_plans_every_experiment_on_the_cluster(tmp_path, snakemake_exe):
    """`snakemake --profile slurm --configfile config/paper.yaml -n`: every paper experiment's stages,
    Table A's runs for the classifiers, Table C's timing and the paper target, GPU stages with a GPU."""
    work = tmp_path / "dry"
    shutil.copytree(REPO / "config", work / "config")
    shutil.copytree(REPO / "resources" / "feedback", work / "resources" / "feedback")
    proc = subprocess.run([str(snakemake_exe), "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "slurm"),
                           "--configfile", "config/paper.yaml", "-n"], cwd=work, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    wildcards: experiment=(\w+)\n(?:    .*\n)*?    resources: (.*)$",
                      out, flags=re.M)
    planned = {(rule, exp) for rule, exp, _ in jobs}
    exps = ["alexnet", "resnet50", "efficientnet_v2_l", "t5", "bart", "sd14"]
    for e in exps:
        assert {(s, e) for s in ("model", "explore", "landscape", "gallery", "audit", "feedback", "mitigate", "reexplore",
                                 "shift")} <= planned, e
    assert {("paper_strategies", e) for e in exps[:3]} <= planned
    assert {("groundtruth", e) for e in exps[:3]} | {("discovery", e) for e in exps[:3]} <= planned
    assert not {("paper_strategies", e) for e in exps[3:]} & planned  # no exhaustive truth for the text and image tasks
    assert {exp for rule, exp in planned if rule == "rating_sheet"} == {"sd14"}  # only text-to-image rates images
    assert {exp for rule, exp in planned if rule == "bias"} == {"sd14"}  # its model.bias: the judge's gender per prompt
    for rule, exp, res in jobs:
        assert ("gpu=1" in res.split(", ")) == (rule in GPU_RULES), (rule, exp, res)
    assert re.search(r"^rule paper_scalability:\n(?:    .*\n)*?    resources: .*gpu=1", out, flags=re.M)
    assert re.search(r"^rule paper:\n", out, flags=re.M)
