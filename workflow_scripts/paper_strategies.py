from pathlib import Path

from failfade.paper import stage_strategies
from failfade.workflow import stage

with stage(snakemake, "paper_strategies") as cfg:
    stage_strategies(cfg, snakemake.params.paper, Path(snakemake.input.card).parent, Path(snakemake.input.truth),
                     Path(snakemake.output.csv))
