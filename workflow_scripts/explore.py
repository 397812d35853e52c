from pathlib import Path

from failfade.pipeline import stage_explore
from failfade.workflow import outcome_cache, stage

with stage(snakemake, snakemake.rule) as cfg:
    stage_explore(cfg, Path(snakemake.input.card).parent, snakemake.output.queries, snakemake.output.learning,
                  snakemake.output.curve, cache_dir=outcome_cache(snakemake),
                  shard=snakemake.params.shard)
