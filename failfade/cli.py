"""The `failfade` command: run the workflow and read its results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import polars as pl

from failfade import FailfadeError


def _results(results: str, experiment: str, *parts: str) -> Path:
    p = Path(results, experiment, *parts)
    if not p.exists():
        raise click.ClickException(f"{p} does not exist yet: run `failfade run` (or snakemake) first")
    return p


@click.group()
@click.version_option(package_name="failfade")
def main():
    """Find, summarize and fade the failures of a model under test."""


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--configfile", type=click.Path(dir_okay=False), default=None, help="Config file (default config/config.yaml).")
@click.option("--cores", default="all", show_default=True, help="CPU cores Snakemake may use.")
@click.option("--profile", default=None, help="Snakemake profile, e.g. slurm.")
@click.argument("snakemake_args", nargs=-1, type=click.UNPROCESSED)
def run(configfile, cores, profile, snakemake_args):
    """Run the workflow (extra arguments go to snakemake, e.g. `-n`, `--until landscape`)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores)]
    if configfile:
        cmd += ["--configfile", configfile]
    if profile:
        cmd += ["--profile", profile]
    cmd += list(snakemake_args)
    click.echo("$ " + " ".join(cmd[2:]), err=True)
    raise SystemExit(subprocess.call(cmd))  # list argv, no shell


@main.command()
@click.argument("experiment")
@click.option("--results", default="results", show_default=True)
@click.option("--top", default=10, show_default=True, help="How many modes to show.")
def modes(experiment, results, top):
    """Print an experiment's top failure modes as a table."""
    from rich.console import Console
    from rich.table import Table

    df = pl.read_csv(_results(results, experiment, "landscape", "failure_modes.csv"))
    table = Table(title=f"{experiment}: {df.height} failure mode(s)")
    for col in ("mode", "cells", "queries", "failure rate (95% CI)", "description", "selector"):
        table.add_column(col, overflow="fold")
    for r in df.head(top).iter_rows(named=True):
        table.add_row(str(r["mode"]), str(r["n_cells"]), str(r["queries"]),
                      f"{r['failure_rate']:.0%} [{r['rate_lo']:.0%}, {r['rate_hi']:.0%}]", r["description"], r["selector"])
    Console().print(table)


@main.command()
@click.argument("experiment")
@click.option("--results", default="results", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Where to write (default: stdout).")
def template(experiment, results, out):
    """Write a feedback template for an experiment's failure modes (fill in `decision`)."""
    from failfade.landscape import feedback_template, read_table

    text = feedback_template(read_table(_results(results, experiment, "landscape", "landscape.duckdb"), "failure_modes")).write_csv()
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}: set each row's decision to fix or accept", err=True)
    else:
        click.echo(text, nl=False)


@main.command("check-feedback")
@click.argument("experiment")
@click.argument("feedback_csv", type=click.Path(dir_okay=False))
@click.option("--configfile", default="config/config.yaml", show_default=True)
@click.option("--results", default="results", show_default=True)
def check_feedback(experiment, feedback_csv, configfile, results):
    """Validate a feedback CSV against an explored landscape, without running anything."""
    from failfade import config as cfgmod
    from failfade.pipeline import feedback_plan

    try:
        cfg = cfgmod.load(configfile)
        if experiment not in cfg["experiments"]:
            raise FailfadeError(f"{configfile}: no experiment {experiment!r}")
        db = _results(results, experiment, "landscape", "landscape.duckdb")
        plan = feedback_plan(cfg["experiments"][experiment], Path(feedback_csv), db)
    except FailfadeError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{feedback_csv}: valid; {len(plan['fix'])} cell(s) to fix, {len(plan['accept'])} accepted")


@main.command()
@click.argument("experiment")
@click.option("--results", default="results", show_default=True)
def shift(experiment, results):
    """Print an experiment's before/after summary."""
    click.echo(_results(results, experiment, "shift", "shift.md").read_text())


if __name__ == "__main__":
    main()
