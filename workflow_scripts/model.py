from pathlib import Path

from failfade.pipeline import stage_model
from failfade.workflow import stage

with stage(snakemake, "model") as cfg:
    key = f"experiments.{snakemake.wildcards.experiment}.model.source"
    stage_model(cfg, Path(snakemake.output.card).parent, Path(snakemake.params.resources_dir), key=key)
