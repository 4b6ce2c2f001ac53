"""``repro beir`` as a library call: plan the matrix for one dataset, make what is missing, evaluate on the test
split, write the report and optionally check the expected scores.

The caller supplies the :data:`~pyserini_qpeft.repro.execute.CommandRunner` that executes the matrix's
``pyserini-qpeft`` commands (the CLI passes one that runs its click group in-process) and where text goes.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..errors import CheckFailed, InputError, UsageError
from .check import check_rows, evaluate_conditions, expected_for, raise_on_failures
from .execute import CommandRunner, execute
from .matrix import DEFAULT_YAML, Matrix
from .plan import Planner

if TYPE_CHECKING:
    from ..data import BeirDataset


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


@contextlib.contextmanager
def dataset_by_name(folder: Path) -> Iterator[None]:
    """While inside, the dataset name ``folder.name`` finds ``folder``: the matrix's commands name the dataset
    (``--dataset {dataset}``, ``beir-v1.0.0-{dataset}-test``), so a dataset given by its path puts the folder above
    it first on ``$PYSERINI_QPEFT_DATA`` (they found another same-named dataset there, or none). UsageError when
    the name cannot find it (a folder whose name is not a valid dataset name, e.g. with accents or spaces)."""
    from ..data import ENV_VAR, find_dataset

    folder = folder.resolve()
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = os.pathsep.join([str(folder.parent), *([before] if before else [])])
    try:
        try:
            found = find_dataset(folder.name).resolve()
        except InputError:
            found = None
        if found != folder:
            raise UsageError(f"--dataset {folder}: its name {folder.name!r} does not find it on the data search "
                             f"path (found {found}); rename the folder or give it by name")
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


def reproduce_beir(dataset: str, runner: CommandRunner, *, conditions: Sequence[str] = (), profile: str = "full",
                   checkpoint_from: str | None = None, dry_run: bool = False, check: bool = False,
                   as_json: bool = False, baseline: str | None = None, yaml_path: str | Path | None = None,
                   download: bool = False, report_dir: str | Path = "runs", seed_offset: int = 0,
                   share_prefixes: bool = True, out: Callable[[str], None] = print,
                   err: Callable[[str], None] = _stderr
                   ) -> list[dict[str, Any]] | None:
    """Run the reproduction matrix of ``yaml_path`` (default: the packaged ``beir.yaml``) on ``dataset``.

    Args:
        dataset: BEIR dataset name (on ``$PYSERINI_QPEFT_DATA``) or folder.
        runner: executes one ``pyserini-qpeft`` command.
        conditions: only these conditions (default: all).
        profile: a ``profiles`` entry of the matrix.
        checkpoint_from: use checkpoints trained on this dataset (zero-shot transfer).
        dry_run: print the commands, run and evaluate nothing (returns None).
        check: raise :class:`~pyserini_qpeft.errors.CheckFailed` (exit code 5) when a score leaves its tolerance.
        as_json: print the rows as JSON instead of the markdown table (progress always goes to ``err``).
        baseline: condition for per-query wins/losses (None: bm25, when the matrix has it; another name that is
            not a condition is a UsageError, exit 2, as an unknown condition or profile).
        download: download the official BEIR zip when the dataset is not found locally.
        report_dir: where ``repro-<dataset>[-from-<checkpoint_from>]<suffix><seed suffix>.{md,json,png}`` go.
        seed_offset: train the trained conditions with their base seeds + this (a row's second seed; its checkpoints
            and runs are named ``.seed+K``). Expected values are checked with the same tolerance, which is why a
            trained row's tolerance is its seed-to-seed spread.
        share_prefixes: run reranks of the same candidates as one pass (:func:`~.runner.execute`).
        out, err: receive printed lines (stdout, stderr).

    Returns:
        One row per condition (metrics, paths), or None for a dry run: the conditions asked for and every other
        condition whose run exists already (the report never loses a finished row; ``check`` judges the asked).
    """
    from ..data import BeirDataset, find_dataset
    from ..data.beir import DATASET_NAME, DATASET_NAME_RULE

    if checkpoint_from is not None and not DATASET_NAME.match(checkpoint_from):  # it is written into commands
        raise UsageError(f"--checkpoint-from {checkpoint_from!r}: a dataset name ({DATASET_NAME_RULE}), not a path; "
                         f"put the dataset on the data search path")
    matrix = Matrix.load(yaml_path or DEFAULT_YAML)
    unknown = [n for n in (*conditions, *([baseline] if baseline else [])) if n not in matrix.conditions]
    if unknown:
        raise UsageError(f"unknown condition(s) {unknown}; choose from {', '.join(matrix.conditions)}")
    baseline = baseline or "bm25"  # the matrix's BM25 row when it has one (a custom matrix may not)
    chosen = [matrix.conditions[n] for n in (conditions or matrix.conditions)]
    ds = BeirDataset(find_dataset(dataset, download=download))
    with dataset_by_name(ds.path):  # the commands name the dataset: the name must find this folder
        return _reproduce(ds, matrix, chosen, runner, profile=profile,
                          checkpoint_from=checkpoint_from, dry_run=dry_run, check=check, as_json=as_json,
                          baseline=baseline, report_dir=report_dir, seed_offset=seed_offset,
                          share_prefixes=share_prefixes, out=out, err=err)


def _reproduce(ds: "BeirDataset", matrix: Matrix, chosen: list, runner: CommandRunner, *, profile: str,
               checkpoint_from: str | None, dry_run: bool, check: bool, as_json: bool, baseline: str,
               report_dir: str | Path, seed_offset: int, share_prefixes: bool, out: Callable[[str], None],
               err: Callable[[str], None]) -> list[dict[str, Any]] | None:
    """:func:`reproduce_beir` once the dataset, matrix and conditions are known (its arguments)."""
    from ..data import BeirDataset, find_dataset

    splits = tuple(ds.splits())
    if checkpoint_from:
        try:
            source = BeirDataset(find_dataset(checkpoint_from))
        except InputError:
            source = None  # not here (yet): its own steps say so, or download it
        if source is not None and "train" not in source.splits():
            raise InputError(f"--checkpoint-from {checkpoint_from}: it has no train split to train on "
                             f"(splits: {', '.join(source.splits())})", str(source.path))
        splits = tuple(s for s in splits if s != "train") + ("train",)  # the checkpoint dataset has train
    if "test" not in ds.splits():  # the table is scored on test: said before any command runs, not after all
        raise InputError(f"dataset {ds.name} has no test split (splits: {', '.join(ds.splits())}): `repro beir` "
                         f"scores its table on qrels/test.tsv", str(ds.path))
    planner = Planner(matrix, ds.name, profile=profile, train_dataset=checkpoint_from, splits=splits,
                      seed_offset=seed_offset)
    if planner.test_queries and not dry_run:
        topics = len(ds.topics("test"))
        if topics < planner.test_queries:
            raise InputError(f"profile {profile!r} samples {planner.test_queries} test queries (its test_queries) "
                             f"and {ds.name} has {topics}: use another --profile (full uses them all) or a "
                             f"--yaml whose profile samples fewer", str(ds.path))
    skipped = [c.name for c in chosen if not planner.available(c.run)]
    if skipped:
        err(f"# {ds.name} has no train split: skipping {', '.join(skipped)} "
            "(use --checkpoint-from DATASET for zero-shot transfer)")
    execute(planner, chosen, runner, dry_run=dry_run, echo=out if dry_run else err,  # a dry run's result = commands
            share_prefixes=share_prefixes)
    if dry_run:
        if check:  # nothing ran, so nothing was evaluated: a 0 exit must not read as a passed check
            err("# --dry-run: nothing was run or checked (--check judges the rows of a real run)")
        return None
    from .report import write_report

    qrels, scope = ds.qrels("test"), "test"
    if planner.test_queries:
        from ..data import sample_topics
        from .plan import SAMPLE_SEED

        topics = ds.topics("test")
        sample = {q.qid for q in sample_topics(topics, planner.test_queries, SAMPLE_SEED)}
        qrels = {qid: rels for qid, rels in qrels.items() if qid in sample}
        scope = f"test, {len(qrels)} of {len(topics)} queries sampled with seed {SAMPLE_SEED}"
    # The report is the matrix's state: the conditions asked for, plus every other one whose run is already
    # finished (a partial rerun never drops rows from repro-*.md/json); --check judges only those asked for.
    asked = {c.name for c in chosen if c.name not in skipped}
    reported = [c for c in matrix.conditions.values()
                if c.name in asked or (planner.available(c.run) and Path(planner.output(c.run)).is_file())]
    rows = evaluate_conditions(planner, reported, qrels, matrix.metrics)
    transfer = f"-from-{checkpoint_from}" if checkpoint_from else ""  # never overwrites the in-domain report
    stem = Path(report_dir) / (f"repro-{ds.name}{transfer}{matrix.profiles[profile].get('suffix', '')}"
                               f"{planner.variables['seed_suffix']}")
    base_cond = matrix.conditions.get(baseline)
    # Seen / unseen by the dataset's own training qrels (a transferred checkpoint learnt another corpus).
    seen = ds.qrels("train") if "train" in ds.splits() and not checkpoint_from else None
    table = write_report(rows, matrix.metrics, ds.name, qrels, stem, baseline,
                         Path(planner.output(base_cond.run)) if base_cond else None, scope=scope, seen_qrels=seen,
                         compare_to={c.name: c.compare_to for c in matrix.conditions.values()})
    if as_json:
        out(json.dumps(rows, indent=2))
    else:
        out(table)
    err(f"# wrote {stem}.md, {stem}.json, {stem}.png")
    if check:
        xfers = {c.name: planner.run_xfer(c.run) for c in chosen}
        asked_rows = [r for r in rows if r["condition"] in asked]
        profile_only = bool(planner.test_queries)
        unchecked = [r["condition"] for r in asked_rows
                     if not expected_for(matrix.conditions[r["condition"]], ds.name, profile,
                                         xfers.get(r["condition"], ""), profile_only)]
        raise_on_failures(check_rows(asked_rows, matrix.conditions, ds.name, profile, xfers,
                                     profile_only=profile_only))
        where = f"{ds.name}{planner.variables['xfer']}@{profile}"
        if asked_rows and len(unchecked) == len(asked_rows):
            raise CheckFailed(f"--check: no row has an expected score for {where} ({', '.join(unchecked)}): "
                              f"nothing was checked")
        if unchecked:
            err(f"# not checked (no expected score for {where}): {', '.join(unchecked)}")
        err(f"# check passed: {len(asked_rows) - len(unchecked)} rows within their tolerance")
    return rows
