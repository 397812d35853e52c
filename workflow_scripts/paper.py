from pathlib import Path

from failfade.paper import stage_collect
from failfade.workflow import stage

with stage(snakemake, "paper") as cfg:
    stage_collect(cfg, snakemake.params.experiments, Path(snakemake.params.results), Path(snakemake.output.html).parent)
