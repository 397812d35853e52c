from failfade.pipeline import stage_feedback
from failfade.workflow import stage

with stage(snakemake, "feedback") as cfg:
    stage_feedback(cfg, snakemake.input.feedback, snakemake.input.db, snakemake.output.plan)
