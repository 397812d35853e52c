from pathlib import Path

from failfade.pipeline import stage_groundtruth
from failfade.workflow import outcome_cache, stage

with stage(snakemake, "groundtruth") as cfg:
    out = {k: snakemake.output[k] for k in ("queries", "json", "curve")}
    stage_groundtruth(cfg, Path(snakemake.input.card).parent, list(snakemake.input.queries), out, outcome_cache(snakemake))
