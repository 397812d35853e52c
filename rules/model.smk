rule model:
    output:
        weights=f"{R}/{{experiment}}/model/model.safetensors",
        card=f"{R}/{{experiment}}/model/model.json",
        history=f"{R}/{{experiment}}/model/training.csv",
    log:
        "logs/{experiment}/model.log",
    benchmark:
        "benchmarks/runs/{experiment}/model.tsv"
    params:
        cfg=model_cfg,
        resources_dir=config["resources"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/model.py"
