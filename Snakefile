# failfade: Discover → Summarize → Restructure, as a cache-aware DAG.
# This file is a table of contents; each stage lives in rules/<stage>.smk.
from snakemake.utils import min_version

min_version("9.0")


# `--configfile F` replaces the default config instead of extending it: only F's experiments run.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/model.smk"
include: "rules/explore.smk"
include: "rules/landscape.smk"
include: "rules/rating_sheet.smk"
include: "rules/audit.smk"
include: "rules/feedback.smk"
include: "rules/mitigate.smk"
include: "rules/reexplore.smk"
include: "rules/probes.smk"
include: "rules/shift.smk"
include: "rules/groundtruth.smk"
include: "rules/paper.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
