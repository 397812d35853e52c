from pathlib import Path

from failfade.pipeline import stage_gallery
from failfade.workflow import stage

with stage(snakemake, "gallery") as cfg:
    stage_gallery(cfg, list(snakemake.input.queries), snakemake.input.db, snakemake.output.gallery,
                  Path(snakemake.input.card).parent)
