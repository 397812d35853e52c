from pathlib import Path

from failfade.pipeline import stage_mitigate
from failfade.workflow import stage

with stage(snakemake, "mitigate") as cfg:
    stage_mitigate(cfg, Path(snakemake.input.card).parent, snakemake.input.plan, Path(snakemake.output.card).parent)
