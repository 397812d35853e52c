from pathlib import Path

from failfade.pipeline import stage_groundtruth
from failfade.workflow import outcome_cache, stage

with stage(snakemake, "groundtruth") as cfg:
    stage_groundtruth(cfg, Path(snakemake.input.card).parent, Path(snakemake.output.queries), outcome_cache(snakemake))
