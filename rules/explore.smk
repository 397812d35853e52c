rule explore:
    input:
        card=f"{R}/{{experiment}}/model/model.json",
    output:
        queries=f"{R}/{{experiment}}/explore/queries.parquet",
        learning=f"{R}/{{experiment}}/explore/learning.csv",
        curve=report(
            f"{R}/{{experiment}}/explore/learning_curve.png",
            caption="../report/learning_curve.rst",
            category="1. Discover",
            subcategory="{experiment}",
        ),
    log:
        "logs/{experiment}/explore.log",
    benchmark:
        "benchmarks/runs/{experiment}/explore.tsv"
    params:
        cfg=explore_cfg,
        shard=shard_index,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/explore.py"


# explore.shards = K: shards 1..K-1, each with the full budget and its own seed (one job per GPU)
use rule explore as explore_shard with:
    output:
        queries=f"{R}/{{experiment}}/explore/shard{{shard}}/queries.parquet",
        learning=f"{R}/{{experiment}}/explore/shard{{shard}}/learning.csv",
        curve=f"{R}/{{experiment}}/explore/shard{{shard}}/learning_curve.png",
    log:
        "logs/{experiment}/explore_shard{shard}.log",
    benchmark:
        "benchmarks/runs/{experiment}/explore_shard{shard}.tsv"
