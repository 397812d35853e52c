from pathlib import Path

from failfade.pipeline import stage_audit
from failfade.workflow import outcome_cache, stage

with stage(snakemake, "audit") as cfg:
    stage_audit(cfg, Path(snakemake.input.card).parent, snakemake.input.db, snakemake.output.csv, outcome_cache(snakemake))
