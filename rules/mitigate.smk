rule mitigate:
    input:
        card=f"{R}/{{experiment}}/model/model.json",
        plan=f"{R}/{{experiment}}/feedback/plan.json",
    output:
        card=f"{R}/{{experiment}}/mitigate/model.json",
        history=f"{R}/{{experiment}}/mitigate/training.csv",
    log:
        "logs/{experiment}/mitigate.log",
    benchmark:
        "benchmarks/runs/{experiment}/mitigate.tsv"
    params:
        cfg=mitigate_cfg,
        # text-to-image `mitigate.images`, by signature: replaced pictures or captions rerun it
        images=lambda w: failfade.config.data_folders(config["experiments"][w.experiment], "mitigate"),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/mitigate.py"
