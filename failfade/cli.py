"""The `failfade` command: run the workflow and read its results.

Every entry point answers a bad input with one line that names the file, line or key (never a
traceback): library errors (FailfadeError) become click errors in `Group.invoke`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click
import polars as pl

from failfade import FailfadeError

NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # the config's rule for experiment names (config.schema.yaml)
PIDFILE = "failfade-run.pid"  # beside Snakemake's locks, in its state folder
LOCK_GRACE_S = 600  # a run's snakemake takes its lock within this long of failfade recording the run


def _results_root(results: str | None, configfile: str = "config/config.yaml") -> str:
    """The results folder: --results when given, else the config's `results:` (what the workflow
    wrote to), else `results`. The config is only read for that key here: commands that need the
    whole of it validate it themselves."""
    if results is not None:
        return results
    try:
        import yaml

        raw = yaml.safe_load(Path(configfile).read_text(encoding="utf-8"))
    except Exception:  # no config, or not readable YAML: the default (`failfade run` names the error)
        raw = None
    value = raw.get("results") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and value else "results"


RESULTS_HELP = "Results folder (default: the config's `results:`, else results)."
# the reading commands take the config a run was given, so that its `results:` is where they look
configfile_option = click.option("--configfile", default="config/config.yaml", show_default=True,
                                 help="The config whose `results:` holds the experiment (as given to `failfade run`).")


def _results(results: str | None, experiment: str, *parts: str, configfile: str = "config/config.yaml") -> Path:
    results = _results_root(results, configfile)
    if not NAME.match(experiment):
        raise click.ClickException(f"experiment {experiment!r}: a name is letters, digits, '_' and '-' (as in the config)")
    p = Path(results, experiment, *parts)
    if not Path(results, experiment).is_dir():
        have = sorted(d.name for d in Path(results).iterdir() if d.is_dir()) if Path(results).is_dir() else []
        raise click.ClickException(f"no results for experiment {experiment!r} under {results}/"
                                   + (f" (experiments with results: {', '.join(have)})" if have else
                                      ": run `failfade run` (or snakemake) first"))
    if not p.exists():
        raise click.ClickException(f"{p} does not exist yet: run `failfade run` (or snakemake) first")
    return p


def _out_file(ctx, param, value):
    """An output file's folder must exist: said as such, not as a missing result."""
    if value is not None and not Path(value).resolve().parent.is_dir():
        raise click.BadParameter(f"the folder {Path(value).parent} does not exist; create it or write elsewhere")
    return value


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FailfadeError as e:
            raise click.ClickException(str(e)) from None
        except FileNotFoundError as e:
            raise click.ClickException(f"{e.filename or e}: not found: run `failfade run` (or snakemake) first") from None


@click.group(cls=_Group)
@click.version_option(package_name="failfade")
def main():
    """Find, summarize and fade the failures of a model under test."""


def _alive(pid: int, since: float | None = None) -> bool:
    """Whether process `pid` runs. A zombie does not: killed with -9 along with failfade, a run's
    snakemake stays one until something reaps it (in a container whose init reaps nothing, for good).
    With `since` (when the run was recorded, epoch seconds), neither does a process that started
    after it: the pid was reused by another program after a crash or a reboot."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:  # "pid (comm) state ...": comm may hold spaces or parentheses
            fields = fh.read().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return False
        if since is not None:
            with open("/proc/stat") as fh:
                boot = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
            started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks
            return started <= since + 5  # the record is written after its process starts
        return True
    except (OSError, IndexError, ValueError, StopIteration):  # not Linux, or gone meanwhile
        return True


def _snakemake(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def _directory(args: tuple[str, ...]) -> Path:
    """The working directory of the run that `args` describe (snakemake's --directory, else here),
    in every spelling snakemake takes: `-d X`, `-dX`, `--directory X`, `--directory=X`, and the
    abbreviations its argument parser allows (`--dir X`, `--direc=X`)."""
    for i, a in enumerate(args):
        name, eq, value = a.partition("=")
        if name.startswith("--") and len(name) >= 5 and "--directory".startswith(name):
            if eq:
                return Path(value)
            if i + 1 < len(args):
                return Path(args[i + 1])
        if a == "-d" and i + 1 < len(args):
            return Path(args[i + 1])
        if a.startswith("-d") and not a.startswith("--") and len(a) > 2:
            return Path(a[2:])
    return Path(".")


def _state(args: tuple[str, ...]) -> Path:
    """Snakemake's state folder (locks, incomplete markers) of the run that `args` describe."""
    return _directory(args) / ".snakemake"


def _unlock(state: Path) -> None:
    """What `snakemake --unlock` does: remove the lock files (only called when their owner is dead)."""
    shutil.rmtree(state / "locks", ignore_errors=True)


def _free_the_folder(state: Path) -> None:
    """Refuse when another run works in this folder; remove the lock of one that was killed.

    `failfade run` records its pid beside Snakemake's locks. A lock with a live recorded pid is a
    running job: refused. A lock whose recorded run is dead was left by kill -9 or a crash: it is
    removed and `--rerun-incomplete` redoes what that run left half-done. A lock with no record
    comes from a plain `snakemake` call that failfade cannot see: refused, with the command that
    removes it."""
    locks = state / "locks"
    if not (locks.is_dir() and any(locks.iterdir())):
        return
    record = state / PIDFILE
    try:  # failfade's pid, then its snakemake's (written once started)
        pids = [int(x) for x in record.read_text().split()]
        pid, recorded = pids[0], record.stat().st_mtime
    except (OSError, ValueError, IndexError):
        pids, pid, recorded = [], None, None
    live = [p for p in pids if p != os.getpid() and _alive(p, recorded)]
    if live:  # failfade, or its snakemake alone (failfade killed with -9 leaves it running)
        also = "" if live[0] == pid else f"; its snakemake, pid {live[0]}, still runs"
        raise click.ClickException(f"another `failfade run` (pid {pid}{also}) is working in this folder: wait for it or stop it")
    # a lock made well after the record's run started is not that run's: a plain snakemake's
    newest_lock = max((f.stat().st_mtime for f in locks.iterdir()), default=0.0)
    if pid is not None and newest_lock > record.stat().st_mtime + LOCK_GRACE_S:
        pid = None
    if pid is None:
        raise click.ClickException("this folder is locked by a Snakemake run that failfade did not start: if none is "
                                   "running any more, remove the lock with `failfade run --unlock`")
    click.echo(f"failfade: removing the lock left by an interrupted run (pid {pid}); its unfinished jobs are redone",
               err=True)
    _unlock(state)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--configfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Config file (default config/config.yaml). It replaces the default config: only its experiments run.")
@click.option("--cores", default="all", show_default=True, help="CPU cores Snakemake may use.")
@click.option("--profile", default=None, help="Snakemake profile, e.g. slurm.")
@click.argument("snakemake_args", nargs=-1, type=click.UNPROCESSED)
def run(configfile, cores, profile, snakemake_args):
    """Run the workflow (extra arguments go to snakemake, e.g. `-n`, `--until landscape`, a target file).

    The config is validated first (a bad key, YAML error or unknown transform is named before any
    job runs); jobs left incomplete by a killed run are redone (`--rerun-incomplete`), and the lock
    such a run leaves is removed when its process is gone."""
    from failfade import config as cfgmod

    args = tuple(snakemake_args)
    # without --configfile, snakemake reads the Snakefile's config/config.yaml in its working directory
    cfgmod.load(configfile or str(_directory(args) / "config" / "config.yaml"))
    extra = ((f"--configfile={configfile}",) if configfile else ()) + (("--profile", profile) if profile else ())
    cmd = _snakemake("--cores", str(cores), "--rerun-incomplete", *extra, *args)
    click.echo("$ " + " ".join(cmd[2:]), err=True)
    # `-np`: short flags run together (snakemake's -n among them) are a dry run too
    clustered = any(re.fullmatch(r"-[A-Za-z]*[nS][A-Za-z]*", a) for a in args)
    if clustered or {"--dry-run", "--dryrun", "--unlock", "--lint", "--summary"} & set(args):
        raise SystemExit(subprocess.call(cmd))  # takes no lock
    state = _state(args)
    _free_the_folder(state)
    state.mkdir(parents=True, exist_ok=True)
    (state / PIDFILE).write_text(str(os.getpid()))
    proc = subprocess.Popen(cmd)  # list argv, no shell; same process group, so Ctrl-C reaches snakemake
    (state / PIDFILE).write_text(f"{os.getpid()} {proc.pid}")  # snakemake holds the lock: record it too
    # Ctrl-C: snakemake gets it from the terminal and cleans up (incomplete outputs removed, lock
    # released); failfade waits for that instead of dying first. SIGTERM is passed on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    rc = proc.wait()
    if rc < 0:  # snakemake itself was killed (e.g. -9): it could not release its lock
        _unlock(state)
    (state / PIDFILE).unlink(missing_ok=True)
    raise SystemExit(rc if rc >= 0 else 128 - rc)


def _audit_of(path: Path, modes: pl.DataFrame) -> tuple[dict | None, str]:
    """The modes' audit (modes_audit.csv) by selector, when it exists and audited these very modes
    (same selectors, same explored rates); else None and why not, for the line under the table."""
    import numpy as np

    from failfade.audit import COLUMNS

    if not path.is_file():
        return None, "not written yet: `failfade run` writes it"
    try:
        audit = pl.read_csv(path, schema=COLUMNS)
    except Exception as e:  # not UTF-8, wrong columns, or values that are not numbers
        from failfade import unreadable

        raise unreadable(path, e, "a modes' audit table (CSV)") from None
    if audit.height == 0:
        return None, "empty: `audit.queries_per_mode` is 0, or there was no mode to audit"
    same = (audit["selector"].to_list() == modes["selector"].to_list()
            and np.allclose(audit["explored_rate"].to_numpy(), modes["failure_rate"].to_numpy(), rtol=0, atol=1e-9))
    if not same:
        return None, "from an earlier landscape: `failfade run` redoes it"
    return {r["selector"]: r for r in audit.iter_rows(named=True)}, ""


@main.command()
@click.argument("experiment")
@click.option("--results", default=None, help=RESULTS_HELP)
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="How many modes to show.")
@configfile_option
def modes(experiment, results, top, configfile):
    """Print an experiment's failure modes: each a slice (a conjunction of level ranges) with its
    failure rate and interval, size, how much of the failure it covers, words and selector."""
    from rich.console import Console
    from rich.table import Table

    path = _results(results, experiment, "landscape", "failure_modes.csv", configfile=configfile)
    try:
        df = pl.read_csv(path)
        shown = df.select("mode", "n_cells", "failing_cells", "failure_rate", "rate_lo", "rate_hi", "cum_failing_cells",
                          "cum_failures", "description", "selector")
        blank = next((c for c in shown.columns if shown[c].null_count()), None)
        if blank is not None:  # printed as a rate, a blank one raised a TypeError
            raise ValueError(f"column {blank!r} has blank values")
    except Exception as e:  # truncated, not UTF-8, blank, or not the table failfade wrote
        from failfade import unreadable

        raise unreadable(path, e, "a failure-mode table (CSV)") from None
    audit, why_not = _audit_of(Path(path).with_name("modes_audit.csv"), df)
    table = Table(title=f"{experiment}: {df.height} failure mode(s)")
    for col in ("mode", "explored rate (95% CI)", *(("audited rate (95% CI)",) if audit else ()), "cells (failing)",
                "covers, with those above: failing cells / failing queries", "description", "selector (for the feedback CSV)"):
        table.add_column(col, overflow="fold")
    shown = df.head(top)
    for r in shown.iter_rows(named=True):
        a = audit.get(r["selector"]) if audit else None
        audited = (() if not audit else
                   ("—",) if a is None else
                   (f"{a['audit_rate']:.0%} [{a['audit_lo']:.0%}, {a['audit_hi']:.0%}], "
                    + (f"all {a['audit_queries']} pairs" if a["exact"] else f"{a['audit_queries']} queries")
                    + ("" if a["confirmed"] else ", not confirmed"),))
        table.add_row(str(r["mode"]), f"{r['failure_rate']:.0%} [{r['rate_lo']:.0%}, {r['rate_hi']:.0%}]", *audited,
                      f"{r['n_cells']} ({r['failing_cells']})", f"{_share(r['cum_failing_cells'])} / {_share(r['cum_failures'])}",
                      r["description"], r["selector"])
    console = Console()
    console.print(table)
    if audit:
        console.print("Explored rates come from the exploration's own queries and read a few points high; audited rates "
                      "score pairs drawn uniformly from each mode, independently of any outcome (modes_audit.csv): "
                      "read those.")
    else:
        console.print("Explored rates come from the exploration's own queries and read a few points high; the `audit` "
                      f"stage measures each mode on fresh queries (modes_audit.csv, {why_not}).")
    if shown.height:
        last = shown.row(-1, named=True)
        if _share(last["cum_failing_cells"]) == "n/a":  # a mode pools its cells' queries: it needs no failure cell
            console.print(f"These {shown.height} mode(s) cover {_share(last['cum_failures'])} of the failing queries; "
                          "no single cell is a failure cell; the rest is in cells.csv.")
        else:
            console.print(f"These {shown.height} mode(s) cover {_share(last['cum_failing_cells'])} of the failure cells "
                          f"and {_share(last['cum_failures'])} of the failing queries; the rest is in cells.csv.")
    else:
        console.print("No failure mode: no slice fails confidently at or above the threshold.")


def _share(x) -> str:
    """A share as a percentage; n/a where it is undefined (NaN: of no failure cell at all)."""
    return "n/a" if x is None or x != x else f"{x:.0%}"


@main.command()
@click.argument("experiment")
@click.option("--results", default=None, help=RESULTS_HELP)
@click.option("--out", type=click.Path(dir_okay=False), default=None, callback=_out_file,
              help="Where to write (default: stdout).")
@configfile_option
def template(experiment, results, out, configfile):
    """Write a feedback template for an experiment's failure modes (fill in `decision`)."""
    from failfade.landscape import feedback_template, read_table

    text = feedback_template(read_table(_results(results, experiment, "landscape", "landscape.duckdb",
                                                        configfile=configfile), "failure_modes")).write_csv()
    if out:
        try:
            Path(out).write_text(text)
        except OSError as e:  # a FileNotFoundError here is not a missing result (_Group's reading)
            raise click.ClickException(f"{out}: cannot write it ({e.strerror or type(e).__name__})") from None
        click.echo(f"wrote {out}: set each row's decision to fix or accept", err=True)
    else:
        click.echo(text, nl=False)


@main.command("check-feedback")
@click.argument("experiment")
@click.argument("feedback_csv", type=click.Path(dir_okay=False))
@click.option("--configfile", default="config/config.yaml", show_default=True,
              help="The config that defines the experiment (its concepts, and `results:`, where its landscape is read).")
@click.option("--results", default=None, help=RESULTS_HELP)
def check_feedback(experiment, feedback_csv, configfile, results):
    """Validate a feedback CSV against an explored landscape, without running anything."""
    from failfade import config as cfgmod
    from failfade.pipeline import feedback_plan

    try:
        cfg = cfgmod.load(configfile)
        if experiment not in cfg["experiments"]:
            raise FailfadeError(f"{configfile}: no experiment {experiment!r}")
        db = _results(results if results is not None else cfg["results"], experiment, "landscape", "landscape.duckdb")
        plan = feedback_plan(cfg["experiments"][experiment], Path(feedback_csv), db)
    except FailfadeError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{feedback_csv}: valid; {len(plan['fix'])} cell(s) to fix, {len(plan['accept'])} accepted")
    if plan.get("kind") == "ratings":  # a text-to-image ratings file: the rule it was read by
        r = plan["ratings"]
        click.echo(f"  {r['ratings']} rating(s) of {r['images']} image(s) in {r['cells']} cell(s) by {len(r['raters'])} "
                   f"rater(s); {r['rule']}")
    for o in plan.get("overlaps", []):
        click.echo(f"  lines {o['fix_line']} (fix) and {o['accept_line']} (accept) share {o['cells']} cell(s): they are fixed")
    for r in plan["rows"]:
        if r.get("cells_not_explored"):
            click.echo(f"  line {r['line']}: {r['cells_not_explored']} of its {r['n_cells']} cell(s) were never explored: "
                       f"left out of the plan (no evidence they fail)")


@main.command("standin-ratings")
@click.argument("experiment")
@click.option("--out", required=True, type=click.Path(dir_okay=False), callback=_out_file, help="ratings CSV to write")
@click.option("--raters", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many stand-in raters (attribute classifiers, each trained with its own seed).")
@click.option("--configfile", default="config/config.yaml", show_default=True,
              help="The config that defines the experiment (and `results:`, where its model and rating sheet are read).")
@click.option("--results", default=None, help=RESULTS_HELP)
def standin_ratings(experiment, out, raters, configfile, results):
    """Write a ratings CSV by automatic stand-in raters (classifiers with their own seeds, not
    people) for a text-to-image experiment's rating sheet: how the shipped example was made."""
    from failfade import config as cfgmod
    from failfade.tasks.generation.ratings import standin_ratings as write

    try:
        cfg = cfgmod.load(configfile)
        if experiment not in cfg["experiments"] or cfg["experiments"][experiment]["task"] != "generation":
            raise FailfadeError(f"{configfile}: no text-to-image experiment {experiment!r}")
        table = write(cfg["experiments"][experiment], _results(results if results is not None else cfg["results"], experiment, "model"),
                      Path(out), raters)
    except FailfadeError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{out}: {table.height} ratings of {table['image_id'].n_unique()} images by {raters} stand-in raters")


@main.command()
@click.argument("experiment")
@click.option("--results", default=None, help=RESULTS_HELP)
@click.option("--check", is_flag=True, help="Only the no-new-failures guard: exit 1 when it tripped and shift.guard is fail.")
@configfile_option
def shift(experiment, results, check, configfile):
    """Print an experiment's before/after summary."""
    import json

    from failfade import unreadable

    path = _results(results, experiment, "shift", "shift.json" if check else "shift.md", configfile=configfile)
    try:
        text = path.read_bytes().decode("utf-8")
        if not check:
            click.echo(text)
            return
        guard = json.loads(text)["guard"]
        tripped, mode = guard["tripped"], guard["mode"]
        if not isinstance(tripped, bool) or mode not in ("fail", "warn"):
            raise ValueError(f"guard.tripped {tripped!r}, guard.mode {mode!r}")
        broken = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, v))}" for k, v in guard.items()
                           if isinstance(v, list) and v)
    except (OSError, ValueError, KeyError, TypeError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise unreadable(path, e, "a shift summary with a guard" if check else "a shift report (UTF-8 text)") from None
    if not tripped:
        click.echo(f"{experiment}: guard passed: no new failure cells; no untargeted cell, probe or "
                   "sample of the untargeted cells significantly worse")
        return
    click.echo(f"{experiment}: guard tripped ({mode}): {broken}", err=True)
    raise SystemExit(1 if mode == "fail" else 0)


if __name__ == "__main__":
    main()
