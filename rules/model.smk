# The model folder is pinned by its card (model.json: every weight file's sha256); later stages take the card.
rule model:
    input:
        # a path: model or judge folder, a jsonl:/csv: data file: replaced under the same path, it reruns the model stage
        local=lambda w: failfade.config.local_sources(config["experiments"][w.experiment]),
    output:
        card=f"{R}/{{experiment}}/model/model.json",
        history=f"{R}/{{experiment}}/model/training.csv",
    log:
        "logs/{experiment}/model.log",
    benchmark:
        "benchmarks/runs/{experiment}/model.tsv"
    params:
        cfg=model_cfg,
        # an imagefolder: data source's files, by signature (path, size, times): replaced pictures rerun it
        images=lambda w: failfade.config.data_folders(config["experiments"][w.experiment], "data"),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/model.py"
