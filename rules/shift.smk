rule shift:
    input:
        pre=shard_queries("explore"),
        post=shard_queries("reexplore"),
        plan=f"{R}/{{experiment}}/feedback/plan.json",
        pre_card=f"{R}/{{experiment}}/model/model.json",
        post_card=f"{R}/{{experiment}}/mitigate/model.json",
        probes=f"{R}/{{experiment}}/shift/probes.csv",
        targeted=f"{R}/{{experiment}}/shift/targeted.csv",
        inputs=f"{R}/{{experiment}}/shift/targeted_inputs.csv",
        other=f"{R}/{{experiment}}/shift/other_pairs.csv",
    output:
        json=f"{R}/{{experiment}}/shift/shift.json",
        md=report(
            f"{R}/{{experiment}}/shift/shift.md",
            caption="../report/shift.rst",
            category="3. Restructure",
            subcategory="{experiment}",
        ),
        cells=f"{R}/{{experiment}}/shift/cells.csv",
        figure=report(
            f"{R}/{{experiment}}/shift/before_after.png",
            caption="../report/before_after.rst",
            category="3. Restructure",
            subcategory="{experiment}",
        ),
    log:
        "logs/{experiment}/shift.log",
    benchmark:
        "benchmarks/runs/{experiment}/shift.tsv"
    params:
        cfg=shift_cfg,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/shift.py"
