"""Evaluating a matrix's finished runs and checking them against the expected scores."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import CheckFailed
from .matrix import Condition
from .plan import Planner


def evaluate_conditions(planner: Planner, conditions: list[Condition], qrels: Mapping[str, Mapping[str, int]],
                        metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per condition: names, checkpoint, metric values (None when its run is missing)."""
    from ..evaluation import evaluate
    from ..types import read_run

    rows = []
    for cond in conditions:
        path = Path(planner.output(cond.run))
        row: dict[str, Any] = {"condition": cond.name, "first_stage": cond.first_stage, "reranker": cond.reranker,
                               "checkpoint": planner.output(cond.checkpoint) if cond.checkpoint else None,
                               "run": str(path), "available": planner.available(cond.run)}
        values = evaluate(read_run(path), qrels, metrics) if path.is_file() else {m: None for m in metrics}
        row.update({m: (round(v, 4) if v is not None else None) for m, v in values.items()})
        rows.append(row)
    return rows


def expected_for(condition: Condition, dataset: str, profile: str = "full", xfer: str = "",
                 profile_only: bool = False) -> Mapping[str, Any]:
    """Expected scores for one dataset: ``<dataset><xfer>@<profile>`` (e.g. ``scifact@deep``, needed wherever the
    profile changes the run) wins over ``<dataset><xfer>``; transferred runs (``xfer=".from-X"``) only match keys
    that name the transfer. ``profile_only``: only the profile's own key (a profile evaluated on a sample of the
    test queries is not judged by all-query expectations)."""
    keys = [f"{dataset}{xfer}@{profile}"] + ([] if profile_only else [f"{dataset}{xfer}"])
    for key in keys:
        if key in condition.expected:
            return condition.expected[key] or {}
    return {}


def check_rows(rows: list[dict[str, Any]], conditions: Mapping[str, Condition], dataset: str,
               profile: str = "full", xfers: Mapping[str, str] | None = None, profile_only: bool = False
               ) -> list[str]:
    """Failures: rows whose metric left ``expected ± tolerance`` (conditions without expectations pass).

    ``xfers`` maps a condition to its transfer suffix (:meth:`Planner.run_xfer`; missing = no transfer);
    ``profile_only`` as :func:`expected_for`."""
    failures = []
    for row in rows:
        xfer = (xfers or {}).get(row["condition"], "")
        expected = expected_for(conditions[row["condition"]], dataset, profile, xfer, profile_only)
        if not expected:
            continue
        tolerance = float(expected.get("tolerance", 0.0))
        for metric, value in expected.items():
            if metric == "tolerance":
                continue
            got = row.get(metric)
            if got is None:
                failures.append(f"{row['condition']}: {metric} missing (run not produced)")
            elif abs(got - float(value)) > tolerance + 1e-9:
                failures.append(f"{row['condition']}: {metric} = {got:.4f}, expected {float(value):.4f} ± {tolerance}")
    return failures


def raise_on_failures(failures: list[str]) -> None:
    """CheckFailed (exit code 5) naming every failure, if there is one."""
    if failures:
        raise CheckFailed("; ".join(failures))


def write_rows_json(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` as indented JSON, written atomically."""
    from ..artifacts import write_json

    write_json(path, rows, sort_keys=False)
