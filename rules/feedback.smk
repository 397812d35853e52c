rule feedback:
    input:
        unpack(feedback_inputs),
        db=f"{R}/{{experiment}}/landscape/landscape.duckdb",
    output:
        plan=f"{R}/{{experiment}}/feedback/plan.json",
    log:
        "logs/{experiment}/feedback.log",
    benchmark:
        "benchmarks/runs/{experiment}/feedback.tsv"
    params:
        cfg=feedback_cfg,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/feedback.py"
