from failfade.pipeline import stage_landscape
from failfade.workflow import stage

with stage(snakemake, "landscape") as cfg:
    out = {k: snakemake.output[k] for k in ("db", "modes", "template", "cells", "heatmap")}
    stage_landscape(cfg, list(snakemake.input.queries), out)
