# The same exploration (same seed, same budget) on the mitigated model.
use rule explore as reexplore with:
    input:
        card=f"{R}/{{experiment}}/mitigate/model.json",
    output:
        queries=f"{R}/{{experiment}}/reexplore/queries.parquet",
        learning=f"{R}/{{experiment}}/reexplore/learning.csv",
        curve=report(
            f"{R}/{{experiment}}/reexplore/learning_curve.png",
            caption="../report/learning_curve.rst",
            category="3. Restructure",
            subcategory="{experiment}",
        ),
    log:
        "logs/{experiment}/reexplore.log",
    benchmark:
        "benchmarks/runs/{experiment}/reexplore.tsv"


# explore.shards = K: shards 1..K-1, each with the full budget and its own seed (one job per GPU)
use rule reexplore as reexplore_shard with:
    output:
        queries=f"{R}/{{experiment}}/reexplore/shard{{shard}}/queries.parquet",
        learning=f"{R}/{{experiment}}/reexplore/shard{{shard}}/learning.csv",
        curve=f"{R}/{{experiment}}/reexplore/shard{{shard}}/learning_curve.png",
    log:
        "logs/{experiment}/reexplore_shard{shard}.log",
    benchmark:
        "benchmarks/runs/{experiment}/reexplore_shard{shard}.tsv"
