from pathlib import Path

from failfade.pipeline import stage_probes
from failfade.workflow import outcome_cache, stage

with stage(snakemake, "probes") as cfg:
    stage_probes(cfg, Path(snakemake.input.pre_card).parent, Path(snakemake.input.post_card).parent, snakemake.output.csv,
                 snakemake.input.plan, snakemake.output.targeted, snakemake.output.inputs, snakemake.output.other,
                 outcome_cache(snakemake))
