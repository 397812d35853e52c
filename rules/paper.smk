# The paper's artifacts (config `paper:`; failfade/paper.py): Table A's searcher comparison per
# experiment with an exhaustive truth, Table C's timings on one model, and the collection of every
# finished experiment into results/paper/ (tables as Markdown and LaTeX, figures, index.html).


rule paper_strategies:
    input:
        card=f"{R}/{{experiment}}/model/model.json",
        truth=f"{R}/{{experiment}}/groundtruth/queries.parquet",
    output:
        csv=f"{R}/{{experiment}}/paper/strategies.csv",
    log:
        "logs/{experiment}/paper_strategies.log",
    benchmark:
        "benchmarks/runs/{experiment}/paper_strategies.tsv"
    params:
        cfg=strategies_cfg,  # the searchers run as the exploration would: its settings, threshold and interval
        paper=paper_part("strategies"),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpus,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/paper_strategies.py"


rule paper_scalability:
    input:
        card=lambda w: f"{R}/{config['paper']['scalability']['experiment']}/model/model.json",
    output:
        csv=f"{R}/paper/scalability.csv",
    log:
        "logs/paper/scalability.log",
    benchmark:
        "benchmarks/runs/paper/scalability.tsv"
    params:
        cfg=scalability_cfg,
        experiment=lambda w: config["paper"]["scalability"]["experiment"],
        paper=paper_part("scalability"),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=lambda w: config["experiments"][config["paper"]["scalability"]["experiment"]]["gpus"],
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/paper_scalability.py"


rule paper:
    input:
        paper_inputs,
    output:
        html=report(
            f"{R}/paper/index.html",
            caption="../report/paper.rst",
            category="4. The paper's artifacts",
        ),
        tables=[f"{R}/paper/table_{k}.{ext}" for k in "abcde" for ext in ("md", "tex")],
        json=f"{R}/paper/tables.json",
        # remade whole on each run: an experiment dropped from the config leaves no figure behind
        figures=directory(f"{R}/paper/figures"),
    log:
        "logs/paper/paper.log",
    params:
        cfg=lambda w: {"experiments": config["experiments"], "paper": config["paper"]},
        experiments=lambda w: paper_experiments(),
        results=lambda w, output: str(Path(output.html).parent.parent),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/paper.py"
