"""Task families: everything that is specific to one kind of input and model.

The stages in pipeline.py know no task. They ask the experiment's family (config key `task`) for
what differs between, say, image classification and summarization, and do the rest themselves
(exploration, landscape, feedback, shift are the same for every task):

  transforms                 the concept transform names this family knows (an axis's `transform`)
  quality                    the clean-quality metric's name (accuracy, rouge_l, ...); a model card
                             stores it as `heldout_clean_<quality>`
  obtain_model(exp, out_dir, resources, key) -> card
                             get (or train) the model under test and store it in out_dir (errors
                             about the source name `key`)
  build_task(exp, model_dir) -> Task
                             the scoring task on the held-out split (see tasks/__init__.py); the
                             outcome cache is keyed by every file of model_dir that can change an
                             outcome (storage.outcome_digest)
  fine_tune(exp, model_dir, plan, out_dir) -> card
                             the mitigation recipe: fine-tune away from the plan's `fix` cells
  gallery(exp, queries, modes, path, per_mode, model_dir)
                             examples of each failure mode for people to look at (model_dir, when
                             given, is the explored model, for families that show its outputs)
  probe_failures(task, probe_spaces) -> (per probe, whether each held-out input failed; inputs)
                             off-grid probes: every held-out input under each one-cell probe space,
                             scored by the model of `task`: the family's own build_task result,
                             not the outcome cache's wrapper (probes are off the grid), so a
                             stage loads a model once; in the same order for any model (the
                             probes stage pairs the inputs before and after mitigation)
  rating_sheet(exp, cells, modes, out_dir, model_dir)
                             text-to-image only (the rules give the rating_sheet stage to
                             `task: generation` experiments): the images people rate, grouped by
                             the landscape's failure modes
  thread_invariant           True when scoring does not depend on the torch thread count
  level_ranges               {transform: (lowest, highest)} level, where a transform has bounds
  word_transforms            the transforms whose levels are words (the rest take numbers)

A new family is one folder under tasks/, one schema branch and one line in FAMILIES.
"""

from __future__ import annotations

import importlib

from failfade import FailfadeError

FAMILIES = {
    "classification": "failfade.tasks.classification:ClassificationFamily",
    "summarization": "failfade.tasks.summarization:SummarizationFamily",
    "generation": "failfade.tasks.generation:GenerationFamily",
}


class TaskFamily:
    name: str = ""
    quality: str = ""
    transforms: frozenset[str] = frozenset()
    # scoring gave bit-identical outcomes on 1 and 2 threads (tests/test_threads.py; generation's
    # Δ moved by 3e-7, so it keeps its threads): its scoring stages may then use fewer threads than
    # the rule's while other processes hold cores
    thread_invariant: bool = False
    # (lowest, highest) level of the transforms that have one, checked with the config
    level_ranges: dict[str, tuple[float, float]] = {}
    # the transforms whose levels are words (a prompt's slot); every other transform takes numbers
    word_transforms: frozenset[str] = frozenset()

    def obtain_model(self, exp: dict, out_dir, resources, key: str = "model.source") -> dict:
        raise NotImplementedError

    def unused_model_keys(self, exp: dict) -> tuple[str, ...]:
        """The `model:` keys that this experiment's model source (or judge) never reads, such as a
        builtin's training settings beside a pretrained model: the workflow leaves them out of every
        stage's rerun trigger (and of what its scripts see), so editing one reruns nothing."""
        return ()

    def build_task(self, exp: dict, model_dir):
        raise NotImplementedError

    def fine_tune(self, exp: dict, model_dir, plan: dict, out_dir) -> dict:
        raise NotImplementedError

    def gallery(self, exp: dict, queries, modes, path, per_mode: int, model_dir=None) -> None:
        """Draw the gallery of `modes` at `path`. `queries` is a polars LazyFrame over the query
        shards (or a DataFrame): filter it before collecting, since a landscape may hold millions."""
        raise NotImplementedError

    def probe_failures(self, task, probe_spaces) -> tuple[list, int]:
        raise NotImplementedError


_loaded: dict[str, TaskFamily] = {}


def family(name: str, key: str = "task") -> TaskFamily:
    """The registered family called `name` (imported on first use, so light commands stay light)."""
    if name not in FAMILIES:
        raise FailfadeError(f"{key}: unknown task {name!r}; known: {sorted(FAMILIES)}")
    if name not in _loaded:
        module, cls = FAMILIES[name].split(":")
        _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]
