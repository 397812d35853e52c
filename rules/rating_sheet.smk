# Text-to-image experiments only: the images people rate, grouped by the landscape's failure modes
# (failfade/tasks/generation/ratings.py). A ratings CSV given as feedback is checked against the
# sheet's image ids and compared with the judge's verdicts on the same images.
rule rating_sheet:
    input:
        card=f"{R}/{{experiment}}/model/model.json",
        db=f"{R}/{{experiment}}/landscape/landscape.duckdb",
    output:
        sheet=report(
            f"{R}/{{experiment}}/landscape/rating_sheet.html",
            caption="../report/rating_sheet.rst",
            category="2. Summarize",
            subcategory="{experiment}",
        ),
        template=f"{R}/{{experiment}}/landscape/ratings_template.csv",
        judged=f"{R}/{{experiment}}/landscape/sheet_judged.csv",
    wildcard_constraints:
        experiment=GENERATION,
    log:
        "logs/{experiment}/rating_sheet.log",
    benchmark:
        "benchmarks/runs/{experiment}/rating_sheet.tsv"
    params:
        cfg=rating_sheet_cfg,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/rating_sheet.py"
