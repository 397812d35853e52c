# The same exploration (same seed, same budget) on the mitigated model.
rule reexplore:
    input:
        weights=f"{R}/{{experiment}}/mitigate/model.safetensors",
        card=f"{R}/{{experiment}}/mitigate/model.json",
    output:
        queries=f"{R}/{{experiment}}/reexplore/queries.parquet",
        learning=f"{R}/{{experiment}}/reexplore/learning.csv",
        curve=report(
            f"{R}/{{experiment}}/reexplore/learning_curve.png",
            caption="../report/learning_curve.rst",
            category="3. Restructure",
            subcategory="{experiment}",
        ),
    log:
        "logs/{experiment}/reexplore.log",
    benchmark:
        "benchmarks/runs/{experiment}/reexplore.tsv"
    params:
        cfg=explore_cfg,
        cache_dir=cache_dir,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/explore.py"
