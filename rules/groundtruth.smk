# Optional (explore.groundtruth: true): every cell on every held-out input (groundtruth, the
# exhaustive truth: it depends on the model, data and concepts alone), and how well the exploration
# recovered that landscape (discovery: recall, precision, MAE, queries to 90% recall). Two rules, so
# that an exploration setting reruns the comparison, never the exhaustive scoring (nor Table A's
# searcher runs, which read the truth).
rule groundtruth:
    input:
        card=f"{R}/{{experiment}}/model/model.json",
    output:
        queries=f"{R}/{{experiment}}/groundtruth/queries.parquet",
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


rule discovery:
    input:
        truth=f"{R}/{{experiment}}/groundtruth/queries.parquet",
        queries=shard_queries("explore"),
    output:
        json=f"{R}/{{experiment}}/groundtruth/discovery.json",
        curve=f"{R}/{{experiment}}/groundtruth/discovery_curve.csv",
    log:
        "logs/{experiment}/discovery.log",
    benchmark:
        "benchmarks/runs/{experiment}/discovery.tsv"
    params:
        cfg=discovery_cfg,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/discovery.py"
