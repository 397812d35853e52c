from pathlib import Path

from failfade.paper import stage_scalability
from failfade.workflow import stage

with stage(snakemake, "paper_scalability") as cfg:
    stage_scalability(cfg, snakemake.params.paper, Path(snakemake.input.card).parent, Path(snakemake.output.csv))
