# Optional (explore.groundtruth: true): every cell on every held-out input, and how well the
# exploration recovered that landscape (recall, precision, MAE, queries to 90% recall).
rule groundtruth:
    input:
        card=f"{R}/{{experiment}}/model/model.json",
        queries=shard_queries("explore"),
    output:
        queries=f"{R}/{{experiment}}/groundtruth/queries.parquet",
        json=f"{R}/{{experiment}}/groundtruth/discovery.json",
        curve=f"{R}/{{experiment}}/groundtruth/discovery_curve.csv",
    log:
        "logs/{experiment}/groundtruth.log",
    benchmark:
        "benchmarks/runs/{experiment}/groundtruth.tsv"
    params:
        cfg=groundtruth_cfg,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/groundtruth.py"
