from pathlib import Path

from failfade.pipeline import stage_rating_sheet
from failfade.workflow import stage

with stage(snakemake, "rating_sheet") as cfg:
    stage_rating_sheet(cfg, Path(snakemake.input.card).parent, snakemake.input.db, Path(snakemake.output.sheet).parent)
