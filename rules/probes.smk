# Off-grid probes (shift.probes): conditions outside the explored grid, and the cells the feedback
# fixed, scored on every held-out input for the model before and after mitigation; and
# shift.other_pairs pairs drawn at random from the other cells, scored for both models.
rule probes:
    input:
        pre_card=f"{R}/{{experiment}}/model/model.json",
        post_card=f"{R}/{{experiment}}/mitigate/model.json",
        plan=f"{R}/{{experiment}}/feedback/plan.json",
    output:
        csv=f"{R}/{{experiment}}/shift/probes.csv",
        targeted=f"{R}/{{experiment}}/shift/targeted.csv",
        inputs=f"{R}/{{experiment}}/shift/targeted_inputs.csv",
        other=f"{R}/{{experiment}}/shift/other_pairs.csv",
    log:
        "logs/{experiment}/probes.log",
    benchmark:
        "benchmarks/runs/{experiment}/probes.tsv"
    params:
        cfg=probes_cfg,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/probes.py"
