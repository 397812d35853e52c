# The modes' audit: each failure mode scored again on fresh (held-out input, cell) pairs drawn
# uniformly from it, for an unbiased rate beside the landscape's (failfade/audit.py).
rule audit:
    input:
        card=f"{R}/{{experiment}}/model/model.json",
        db=f"{R}/{{experiment}}/landscape/landscape.duckdb",
    output:
        csv=report(
            f"{R}/{{experiment}}/landscape/modes_audit.csv",
            caption="../report/modes_audit.rst",
            category="2. Summarize",
            subcategory="{experiment}",
        ),
    log:
        "logs/{experiment}/audit.log",
    benchmark:
        "benchmarks/runs/{experiment}/audit.tsv"
    params:
        cfg=audit_cfg,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/audit.py"
