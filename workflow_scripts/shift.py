from failfade.pipeline import stage_shift
from failfade.workflow import stage

with stage(snakemake, "shift") as cfg:
    out = {k: snakemake.output[k] for k in ("json", "md", "cells", "figure")}
    stage_shift(cfg, snakemake.wildcards.experiment, list(snakemake.input.pre), list(snakemake.input.post), snakemake.input.plan,
                snakemake.input.pre_card, snakemake.input.post_card, out, snakemake.input.probes,
                snakemake.input.targeted, snakemake.input.inputs, snakemake.input.other)
