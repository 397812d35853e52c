rule landscape:
    input:
        queries=shard_queries("explore"),
    output:
        db=f"{R}/{{experiment}}/landscape/landscape.duckdb",
        cells=f"{R}/{{experiment}}/landscape/cells.csv",
        modes=report(
            f"{R}/{{experiment}}/landscape/failure_modes.csv",
            caption="../report/failure_modes.rst",
            category="2. Summarize",
            subcategory="{experiment}",
        ),
        template=f"{R}/{{experiment}}/landscape/feedback_template.csv",
        heatmap=report(
            f"{R}/{{experiment}}/landscape/heatmap.png",
            caption="../report/heatmap.rst",
            category="2. Summarize",
            subcategory="{experiment}",
        ),
    log:
        "logs/{experiment}/landscape.log",
    benchmark:
        "benchmarks/runs/{experiment}/landscape.tsv"
    params:
        cfg=landscape_cfg,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/landscape.py"


# a rule of its own: it runs the model (text-to-image draws its images, a summarizer regenerates its
# summaries), and asking for more examples (`landscape.gallery_per_mode`) must not rerun what the
# landscape's database feeds (feedback, fine-tuning, re-exploration)
rule gallery:
    input:
        queries=shard_queries("explore"),
        db=f"{R}/{{experiment}}/landscape/landscape.duckdb",
        card=f"{R}/{{experiment}}/model/model.json",
    output:
        gallery=report(
            f"{R}/{{experiment}}/landscape/gallery.png",
            caption="../report/gallery.rst",
            category="2. Summarize",
            subcategory="{experiment}",
        ),
    log:
        "logs/{experiment}/gallery.log",
    benchmark:
        "benchmarks/runs/{experiment}/gallery.tsv"
    params:
        cfg=gallery_cfg,
    threads: 1
    # a GPU stage (on SLURM too)
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/gallery.py"


# text-to-image with `model.bias` only (rules/common.smk: final_outputs): per cell, how far the
# classes the CLIP judge answers are from the target; from the queries alone, no model
rule bias:
    input:
        queries=shard_queries("explore"),
    output:
        bias=f"{R}/{{experiment}}/landscape/bias.csv",
    wildcard_constraints:
        experiment=BIASED,
    log:
        "logs/{experiment}/bias.log",
    benchmark:
        "benchmarks/runs/{experiment}/bias.tsv"
    params:
        cfg=bias_cfg,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/bias.py"
