from pathlib import Path

from failfade.pipeline import stage_model
from failfade.workflow import resources_dir, stage

with stage(snakemake, "model") as cfg:
    key = f"experiments.{snakemake.wildcards.experiment}.model.source"
    stage_model(cfg, Path(snakemake.output.card).parent, resources_dir(snakemake), key=key)
