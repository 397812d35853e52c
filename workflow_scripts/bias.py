from failfade.pipeline import stage_bias
from failfade.workflow import stage

with stage(snakemake, "bias") as cfg:
    stage_bias(cfg, list(snakemake.input.queries), snakemake.output.bias)
