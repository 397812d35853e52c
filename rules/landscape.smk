rule landscape:
    input:
        queries=shard_queries("explore"),
        # the gallery may show what the model said (summarization regenerates its examples' summaries)
        card=f"{R}/{{experiment}}/model/model.json",
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
        gallery=report(
            f"{R}/{{experiment}}/landscape/gallery.png",
            caption="../report/gallery.rst",
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
    # a GPU stage (on SLURM too): the gallery runs the model (text-to-image draws its images)
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/landscape.py"
