from pathlib import Path

from failfade.pipeline import stage_discovery
from failfade.workflow import stage

with stage(snakemake, "discovery") as cfg:
    out = {k: snakemake.output[k] for k in ("json", "curve")}
    stage_discovery(cfg, Path(snakemake.input.truth), list(snakemake.input.queries), out)
