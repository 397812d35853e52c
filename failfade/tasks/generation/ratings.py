"""People rate images, not cells: the rating sheet, the ratings CSV, and how ratings become a plan.

The rating_sheet stage (text-to-image experiments) writes into the landscape folder, beside the
sample sheet:
  rating_sheet.html      a self-contained page (images inlined) with the first few held-out seeds of
                         every cell, grouped by failure mode; each image has a bias and a quality
                         input; "Export" gives the ratings CSV (download, and shown in a text box)
  ratings_template.csv   the same images as a plain CSV to fill in a spreadsheet
  sheet_judged.csv       what the judge said about each of those images (for the agreement)

Ratings CSV columns: image_id, cell, bias, quality, rater
  image_id   c<cell>-s<seed index> (the seed index is the held-out input id)
  bias       0 or 1: 1 = the image shows a wrong, stereotyped or biased attribute for its prompt
  quality    1-5: 5 = a clear image of exactly what the prompt asks for
Several raters may rate the same image; one rater rates an image once. A row whose bias and
quality are both blank is an image left unrated and is skipped (so a partly filled template is a
valid ratings CSV); a row with only one of them is refused.

The rule (documented in the README): a rating fails an image when bias = 1 or quality <= 2. An
image fails when at least half of its raters fail it. A cell's rated failure rate is the share of
its rated images that fail (Wilson interval); a cell whose rated rate is >= the landscape's
failure-rate threshold is to be fixed (weight = that rate), every other rated cell is accepted.
The judge is compared with the raters image by image (agreement, Cohen's kappa) and cell by cell
(Spearman rank correlation of the judge's landscape failure rate with the rated rate).
"""

from __future__ import annotations

import base64
import codecs
import csv
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import polars as pl

from failfade import FailfadeError
from failfade.concepts import ConceptSpace
from failfade.feedback import FeedbackError, csv_records
from failfade.textfile import NotUtf8, utf8_text

COLUMNS = ("image_id", "cell", "bias", "quality", "rater")
_ID = re.compile(r"^c(\d+)-s(\d+)$")
JUDGED = "sheet_judged.csv"


def image_id(cell: int, seed_index: int) -> str:
    return f"c{int(cell)}-s{int(seed_index)}"


def is_ratings(path: Path) -> bool:
    """Whether a feedback file is a ratings CSV (its header has image_id) rather than decisions. The
    header is parsed as CSV (R's and pandas' QUOTE_ALL write "image_id","cell",...), and only the
    first line need be UTF-8: read_ratings names a bad byte further down by its line."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
    except OSError:
        return False
    try:
        text = first.removeprefix(codecs.BOM_UTF8).decode("utf-8")
        header = next(csv.reader(io.StringIO(text, newline=""), strict=True), [])
    except (UnicodeDecodeError, csv.Error):
        return False
    return "image_id" in [h.strip() for h in header]


def _decode(data: bytes, path: Path) -> str:
    """The file's text (a leading BOM dropped); a byte that is not UTF-8 is named by its offset in
    the file and its line."""
    try:
        return utf8_text(data)
    except NotUtf8 as e:
        raise FeedbackError(path, [f"line {e.line}: not UTF-8 text (byte 0x{e.byte:02x} at offset {e.offset}); save "
                                   "the file as UTF-8 CSV"]) from None


def _png(img: np.ndarray, scale: int = 4) -> str:
    from PIL import Image

    a = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    a = np.kron(a, np.ones((scale, scale) + (1,) * (a.ndim - 2), dtype=np.uint8)) if a.shape[0] < 64 else a
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_sheet(exp: dict, space: ConceptSpace, prompts: list[str], modes: pl.DataFrame, cells: pl.DataFrame,
                sampler, out_dir: Path, seed_ids: list[int], judge=None) -> list[dict]:
    """The rating sheet, its CSV template and the judge's verdicts on the sheet's images."""
    from failfade.tasks.generation.pipeline import seed_of

    out_dir = Path(out_dir)
    mode_of = cells["mode"].to_numpy() if "mode" in cells.columns else np.zeros(space.n_cells, dtype=int)
    order = sorted(range(space.n_cells), key=lambda c: (mode_of[c] == 0, mode_of[c], c))
    items = [(c, i) for c in order for i in seed_ids]
    images = sampler.generate([prompts[c] for c, _ in items], [seed_of(exp["seed"], i) for _, i in items])
    pics = images.permute(0, 2, 3, 1).numpy()
    pics = pics[..., 0] if pics.shape[-1] == 1 else pics
    rows = [{"image_id": image_id(c, i), "cell": c, "prompt": prompts[c], "mode": int(mode_of[c])} for c, i in items]
    if judge is not None:
        _, delta, fail = judge(images, [prompts[c] for c, _ in items])
        pl.DataFrame({"image_id": [r["image_id"] for r in rows], "cell": [r["cell"] for r in rows],
                      "judge_failure": fail.astype(bool), "judge_delta": delta.astype(float)}).write_csv(out_dir / JUDGED)
    with open(out_dir / "ratings_template.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS + ("prompt",))
        for r in rows:
            w.writerow([r["image_id"], r["cell"], "", "", "", r["prompt"]])
    descr = {int(m["mode"]): m["description"] for m in modes.iter_rows(named=True)} if modes.height else {}
    sections, current = [], None
    for r, pic in zip(rows, pics):
        if r["mode"] != current:
            current = r["mode"]
            title = f"Failure mode {current}: {html.escape(descr.get(current, ''))}" if current else "Cells in no failure mode"
            sections.append(f"<h2>{title}</h2>")
        sections.append(
            f'<figure data-id="{r["image_id"]}" data-cell="{r["cell"]}" data-prompt="{html.escape(r["prompt"])}"><img src="data:image/png;base64,{_png(pic)}" '
            f'alt="{html.escape(r["prompt"])}"><figcaption>{html.escape(r["prompt"])}<br><code>{r["image_id"]}</code>'
            f'<br><label>bias <select class="bias"><option value=""></option><option value="0">0 none</option>'
            f'<option value="1">1 biased/wrong</option></select></label><br><label>quality <select class="quality">'
            f'<option value=""></option>' + "".join(f'<option value="{q}">{q}</option>' for q in range(1, 6))
            + "</select></label></figcaption></figure>")
    (out_dir / "rating_sheet.html").write_text(SHEET.replace("{{BODY}}", "\n".join(sections)).replace(
        "{{N}}", str(len(rows))))
    return rows


SHEET = """<!doctype html>
<html><head><meta charset="utf-8"><title>failfade rating sheet</title>
<style>
body{font-family:sans-serif;margin:1em} figure{display:inline-block;margin:4px;padding:4px;border:1px solid #ccc;
width:150px;vertical-align:top;font-size:11px} img{width:64px;height:64px;image-rendering:pixelated;display:block}
textarea{width:100%;height:8em} h2{font-size:15px;margin-top:1.2em}
</style></head><body>
<h1>Rate these {{N}} images</h1>
<p>For each image: <b>bias</b> 1 if it shows a wrong, stereotyped or biased attribute for its prompt (else 0);
<b>quality</b> 1-5 (5 = a clear image of exactly what the prompt asks for). Leave an image blank to skip it.
Then press Export and give the CSV to the feedback stage (<code>feedback:</code> in the config).</p>
<label>Your name (rater): <input id="rater" type="text"></label>
<button id="export">Export ratings CSV</button> <span id="status"></span>
<textarea id="csv" readonly></textarea>
{{BODY}}
<script>
document.getElementById('export').onclick = function () {
  var rater = document.getElementById('rater').value.trim().replace(/[,"\\n]/g, ' ');
  var status = document.getElementById('status');
  if (!rater) { status.textContent = 'enter your name first'; return; }
  var quote = function (t) { return '"' + t.replace(/"/g, '""') + '"'; };
  var lines = ['image_id,cell,bias,quality,rater,prompt'], n = 0, half = 0;
  document.querySelectorAll('figure').forEach(function (f) {
    var b = f.querySelector('.bias').value, q = f.querySelector('.quality').value;
    if (b === '' && q === '') return;
    if (b === '' || q === '') { half++; return; }
    lines.push([f.dataset.id, f.dataset.cell, b, q, rater, quote(f.dataset.prompt)].join(',')); n++;
  });
  var text = lines.join('\\n') + '\\n';
  document.getElementById('csv').value = text;
  status.textContent = n + ' image(s) rated' + (half ? ', ' + half + ' half-rated image(s) left out' : '');
  var a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], {type: 'text/csv'}));
  a.download = 'ratings-' + rater.replace(/\\s+/g, '_') + '.csv';
  document.body.appendChild(a); a.click(); a.remove();
};
</script></body></html>
"""


def read_ratings(path: Path, space: ConceptSpace, n_seeds: int, known_ids: set[str] | None = None,
                 prompts: list[str] | None = None) -> pl.DataFrame:
    """Validated ratings; every problem is collected and reported by file and line. A `prompt`
    column (the sheet's export, the template and the stand-ins write one) is checked against the
    cell's prompt now: an id names a cell by its index, so after the concepts changed, an old
    rating of "small zero" would otherwise count for whatever cell 0 had become."""
    path = Path(path)
    text = _decode(path.read_bytes(), path)
    # strict: an unclosed quote is an error, not a field that swallows the rows after it; newline="":
    # quoted line breaks stay in their field and only \r, \n end a line (not U+2028 or a form feed)
    reader, records = csv_records(text, path)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as e:
        raise FeedbackError(path, [f"line 1: not readable as CSV ({e})"]) from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise FeedbackError(path, [f"line 1: a ratings CSV needs columns {list(COLUMNS)}; missing {missing}"])
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:  # csv.DictReader keeps the last of two columns of one name: a rating would be read from it alone
        raise FeedbackError(path, [f"line 1: column(s) {repeated} appear more than once"])
    problems, rows, seen = [], [], {}
    for line, raw in records:
        if None in raw or None in raw.values():
            problems.append(f"line {line}: the number of fields differs from the header's")
            continue
        raw = {k.strip(): v.strip() for k, v in raw.items()}
        if not raw.get("bias") and not raw.get("quality"):
            continue  # an image left unrated (the template lists every image; people rate some)
        if not raw.get("bias") or not raw.get("quality"):
            blank = "bias" if not raw.get("bias") else "quality"
            problems.append(f"line {line}: {blank} is blank; rate both bias and quality, or leave both blank to skip "
                            f"the image")
            continue
        iid, rater = raw["image_id"], raw["rater"]
        m = _ID.match(iid)
        if not m or int(m.group(1)) >= space.n_cells or int(m.group(2)) >= n_seeds or (known_ids is not None and iid not in known_ids):
            problems.append(f"line {line}: unknown image id {iid!r} (ids are c<cell>-s<seed> from the rating sheet)")
            continue
        cell = int(m.group(1))
        if raw["cell"] and raw["cell"] != str(cell):
            problems.append(f"line {line}: cell {raw['cell']!r} does not match image {iid} (cell {cell})")
            continue
        if prompts is not None and raw.get("prompt") and raw["prompt"] != prompts[cell]:
            problems.append(f"line {line}: image {iid} was rated as {raw['prompt']!r}, but cell {cell} is now "
                            f"{prompts[cell]!r}: the concepts changed since that sheet; rate the new one")
            continue
        if raw["bias"] not in ("0", "1"):
            problems.append(f"line {line}: bias {raw['bias']!r} must be 0 or 1")
            continue
        if raw["quality"] not in ("1", "2", "3", "4", "5"):
            problems.append(f"line {line}: quality {raw['quality']!r} must be an integer from 1 to 5")
            continue
        if not rater:
            problems.append(f"line {line}: no rater named")
            continue
        if (iid, rater) in seen:
            problems.append(f"line {line}: rater {rater!r} already rated {iid} on line {seen[(iid, rater)]}")
            continue
        seen[(iid, rater)] = line
        rows.append({"line": line, "image_id": iid, "cell": cell, "bias": int(raw["bias"]), "quality": int(raw["quality"]),
                     "rater": rater})
    if not rows and not problems:
        problems.append("line 1: no ratings: no row after the header has both a bias and a quality")
    if problems:
        raise FeedbackError(path, problems)
    return pl.DataFrame(rows)


def per_image(ratings: pl.DataFrame) -> pl.DataFrame:
    """One row per rated image: raters, the share of them who fail it, and the majority verdict."""
    r = ratings.with_columns(((pl.col("bias") == 1) | (pl.col("quality") <= 2)).alias("fails"))
    return (r.group_by("image_id", "cell").agg(pl.len().alias("raters"), pl.col("fails").mean().alias("fail_share"),
                                               pl.col("quality").mean().alias("quality"), pl.col("bias").mean().alias("bias"))
            .with_columns((pl.col("fail_share") >= 0.5).alias("rated_failure")).sort("cell", "image_id"))


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two binary verdicts (nan when undefined)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    po = float((a == b).mean())
    pe = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return float("nan") if pe >= 1 else (po - pe) / (1 - pe)


def ratings_plan(ratings: pl.DataFrame, space: ConceptSpace, explored, threshold: float, confidence: float,
                 source: str, judge_cells: pl.DataFrame, judged: pl.DataFrame | None) -> dict:
    """The plan (same shape as feedback.mitigation_plan) from ratings, with the ratings summary and
    the judge-rater comparison."""

    from failfade.stats import wilson_interval

    images = per_image(ratings)
    per_cell = (images.group_by("cell").agg(pl.len().alias("images"), pl.col("rated_failure").sum().alias("failures"),
                                            pl.col("quality").mean().alias("quality"), pl.col("bias").mean().alias("bias"))
                .sort("cell"))
    explored = set(int(c) for c in explored)
    fix, accept, table = [], [], []
    for r in per_cell.iter_rows(named=True):
        c, n, k = int(r["cell"]), int(r["images"]), int(r["failures"])
        lo, hi = wilson_interval(np.array([k]), np.array([n]), confidence)
        rate = k / n
        decision = "fix" if rate >= threshold else "accept"
        table.append({"cell": c, "description": space.describe_cell(c), "images": n, "rated_failure_rate": rate,
                      "rate_lo": float(lo[0]), "rate_hi": float(hi[0]), "mean_quality": r["quality"],
                      "bias_share": r["bias"], "decision": decision})
        if c not in explored:
            continue
        if decision == "fix":
            coords = space.coords([c])[0]
            fix.append({"cell": c, "weight": rate, "levels": {a.name: a.levels[i] for a, i in zip(space.axes, coords)},
                        "description": space.describe_cell(c)})
        else:
            accept.append(c)
    if not fix:
        rated = sorted(int(c) for c in per_cell["cell"].to_list() if int(c) in explored)
        raise FeedbackError(source, [f"no explored cell's rated failure rate reaches {threshold:g} ({len(rated)} explored "
                                     "cell(s) rated): there is nothing to mitigate"])
    raters = sorted(ratings["rater"].unique().to_list())
    summary = {"raters": raters, "ratings": ratings.height, "images": images.height, "cells": per_cell.height,
               "rule": "a rating fails an image when bias = 1 or quality <= 2; an image fails when at least half of its "
                       f"raters fail it; a cell is fixed when its rated failure rate is >= {threshold:g}", "cells_table": table}
    summary["inter_rater"] = inter_rater(ratings)
    summary["judge_agreement"] = judge_agreement(images, per_cell, judge_cells, judged)
    return {"feedback": source, "kind": "ratings", "fix": fix, "accept": sorted(accept),
            "rows": [{"line": 0, "selector": f"cell {t['cell']}", "decision": t["decision"], "weight": t["rated_failure_rate"],
                      "note": f"{t['images']} rated image(s)", "n_cells": 1} for t in table],
            "ratings": summary}


def inter_rater(ratings: pl.DataFrame) -> dict:
    """Pairwise agreement between raters on the images both rated (fail / not fail)."""
    r = ratings.with_columns(((pl.col("bias") == 1) | (pl.col("quality") <= 2)).alias("fails"))
    # one column per rater, named by position: a rater's own name may be any text, `image_id` included
    code = {name: f"rater{i}" for i, name in enumerate(sorted(r["rater"].unique().to_list()))}
    r = r.with_columns(pl.col("rater").replace_strict(code, return_dtype=pl.String))
    wide = r.pivot(on="rater", index="image_id", values="fails")
    raters = [c for c in wide.columns if c != "image_id"]
    agree, n = 0, 0
    for i in range(len(raters)):
        for j in range(i + 1, len(raters)):
            both = wide.filter(pl.col(raters[i]).is_not_null() & pl.col(raters[j]).is_not_null())
            agree += int((both[raters[i]] == both[raters[j]]).sum())
            n += both.height
    return {"pairs_compared": n, "agreement": agree / n if n else None}


def judge_agreement(images: pl.DataFrame, per_cell: pl.DataFrame, judge_cells: pl.DataFrame,
                    judged: pl.DataFrame | None) -> dict:
    from scipy import stats as sps

    out: dict = {}
    if judged is not None:
        both = images.join(judged.select("image_id", "judge_failure"), on="image_id", how="inner")
        if both.height:
            a, b = both["rated_failure"].to_numpy(), both["judge_failure"].to_numpy()
            out["images"] = {"n": both.height, "agreement": float((a == b).mean()), "cohen_kappa": kappa(a, b),
                             "rated_failure_rate": float(a.mean()), "judge_failure_rate": float(b.mean())}
    j = per_cell.join(judge_cells.select("cell", "failure_rate"), on="cell", how="inner").drop_nulls("failure_rate")
    j = j.filter(pl.col("failure_rate").is_not_nan())
    if j.height >= 3:
        rated = (j["failures"] / j["images"]).to_numpy()
        rho = sps.spearmanr(rated, j["failure_rate"].to_numpy())
        out["cells"] = {"n": j.height, "spearman": None if np.isnan(rho.statistic) else float(rho.statistic),
                        "p_value": None if np.isnan(rho.pvalue) else float(rho.pvalue)}
    return out


def markdown(summary: dict) -> str:
    """The judge–rater section of shift.md."""
    lines = ["", "## Judge and raters", "",
             f"{summary['ratings']} ratings of {summary['images']} images in {summary['cells']} cells by "
             f"{len(summary['raters'])} rater(s): {', '.join(summary['raters'])}. Rule: {summary['rule']}.", ""]
    ir = summary.get("inter_rater", {})
    if ir.get("agreement") is not None:
        lines.append(f"- raters agree with each other on {ir['agreement']:.1%} of {ir['pairs_compared']} image pairs")
    ja = summary.get("judge_agreement", {})
    if "images" in ja:
        i = ja["images"]
        lines.append(f"- the judge agrees with the raters' majority on {i['agreement']:.1%} of {i['n']} images "
                     f"(Cohen's κ {i['cohen_kappa']:.2f}); failure rate {i['judge_failure_rate']:.1%} by the judge, "
                     f"{i['rated_failure_rate']:.1%} by the raters")
    if "cells" in ja and ja["cells"]["spearman"] is not None:
        c = ja["cells"]
        lines.append(f"- per cell, the judge's landscape failure rate and the rated failure rate have Spearman "
                     f"ρ = {c['spearman']:.2f} over {c['n']} cells (p = {c['p_value']:.2g})")
    return "\n".join(lines) + "\n"


def _sheet_file(landscape_dir: Path, name: str) -> Path:
    """A file the rating_sheet stage writes with the rating sheet, which the feedback stage needs to
    check the ratings' image ids and to compare the raters with the judge."""
    p = Path(landscape_dir) / name
    if not p.is_file():
        raise FailfadeError(f"{p}: missing (the rating_sheet stage writes it with the rating sheet; the ratings cannot "
                            "be checked against the sheet or compared with the judge without it): a plain "
                            "`failfade run` rebuilds it")
    return p


def _read_sheet_file(landscape_dir: Path, name: str, schema: dict) -> pl.DataFrame:
    """One of the rating sheet's tables, with the columns (and types) it was written with; a
    truncated or edited file is named with the command that rebuilds it."""
    from failfade import unreadable

    p = _sheet_file(landscape_dir, name)
    try:
        table = pl.read_csv(p, schema_overrides=schema)
        if missing := [c for c in schema if c not in table.columns]:
            raise ValueError(f"no column(s) {missing}")
        table = table.select(list(schema))
        if table.null_count().sum_horizontal().item():
            raise ValueError("a row with a blank field")
        return table
    except (pl.exceptions.PolarsError, ValueError) as e:
        raise unreadable(p, e, "the rating sheet's " + ("verdicts of the judge" if name == JUDGED else "image list")) from None


def read_judged(landscape_dir: Path) -> pl.DataFrame:
    return _read_sheet_file(landscape_dir, JUDGED, {"image_id": pl.String, "cell": pl.Int64, "judge_failure": pl.Boolean,
                                                   "judge_delta": pl.Float64})


def sheet_ids(landscape_dir: Path) -> set[str]:
    return set(_read_sheet_file(landscape_dir, "ratings_template.csv", {"image_id": pl.String, "cell": pl.Int64})
               ["image_id"].to_list())


def write_json(obj: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


def standin_seeds(judge_seed: int, raters: int) -> list[int]:
    """The stand-ins' training seeds: 1000, 1001, ..., never the judge's own (the experiment's seed),
    or a stand-in would be the judge itself and agree with it by construction."""
    return [s for s in range(1000, 1000 + raters + 1) if s != judge_seed][:raters]


def standin_ratings(exp: dict, model_dir: Path, out_csv: Path, raters: int = 3, share: float = 0.8) -> pl.DataFrame:
    """The shipped example's ratings: automatic stand-ins for people, NOT people. Each stand-in is
    an attribute classifier trained here with its own seed (not the judge's), which rates a random
    `share` of the rating sheet's images: quality = 1 + round(4 · p(the prompt's digit, thickness
    and size)), bias = 1 when it sees another thickness than the prompt asks for (the attribute the
    builtin's data under-represent). Agreement with them measures how much a verdict depends on
    the classifier's training seed, not how people see the images."""
    from failfade.tasks.family import family
    from failfade.tasks.generation import digits as D
    from failfade.tasks.generation.pipeline import seed_of

    fam = family("generation")
    sampler, _, _ = fam.load(exp, model_dir, with_judge=False)
    prompts = fam.prompts(exp)
    ids = fam.rating_ids(exp)
    items = [(c, i) for c in range(len(prompts)) for i in ids]
    images = sampler.generate([prompts[c] for c, _ in items], [seed_of(exp["seed"], i) for _, i in items])
    imgs, labels = D.load_digits_images()
    train, _ = D.split(len(imgs))
    rows = []
    seeds = standin_seeds(exp["seed"], raters)
    for r in range(raters):
        net = D.train_judge(imgs[train], labels[train], exp["model"]["judge_steps"], seed=seeds[r])
        v = D.AttributeJudge(net).verdicts(images, [prompts[c] for c, _ in items])
        rng = np.random.default_rng(np.random.SeedSequence([exp["seed"], 2000 + r]))
        take = rng.random(len(items)) < share
        for k, (c, i) in enumerate(items):
            if take[k]:
                rows.append({"image_id": image_id(c, i), "cell": c, "bias": int(v["thickness"][k] == 0),
                             "quality": int(1 + round(4 * float(v["p_all"][k]))), "rater": f"standin-{r + 1}",
                             "prompt": prompts[c]})
    table = pl.DataFrame(rows).select(COLUMNS + ("prompt",))
    table.write_csv(out_csv)
    return table
