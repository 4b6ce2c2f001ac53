"""A small grid of Q-PEFT trainings, selected on dev queries (never on test): ``train qpeft --sweep GRID.yaml``.

The grid file maps setting names to lists of values; every combination is trained into
``OUTPUT/sweep/NN-<settings>/`` with the same training and dev queries, and the combination with the best dev
selection metric (at its own best epoch) is copied to ``OUTPUT/best/``. ``OUTPUT/sweep.{json,md}`` hold the table.
Settings are the fields of :class:`~pyserini_qpeft.qpeft.config.QPeftConfig` (module) and
:class:`~pyserini_qpeft.qpeft.step.QPeftTrainConfig` (training), spelled as fields or as flags::

    margin: [0.2, 0.5, 1.0]
    pointwise-weight: [1.0, 0.1]
    lr: [1.0e-3, 1.0e-2]
    attn_init: [identity, xavier]

A sweep resumes: a combination whose folder holds a finished run is not trained again.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import InputError
from ..training.state import SWEEP_DIR  # OUTPUT/sweep/NN-<settings>/

logger = logging.getLogger(__name__)

# Not sweepable: one sweep trains one variant (its reranker name and checkpoint type), on one dev set judged one way.
FIXED = ("variant", "dev_size", "dev_seed", "dev_carve", "dev_depth", "dev_pool", "negative_policy", "selection_metric")


@dataclass(frozen=True)
class SweepPoint:
    """One combination: ``module`` overrides of QPeftConfig, ``train`` overrides of QPeftTrainConfig."""

    index: int
    module: Mapping[str, Any]
    train: Mapping[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        return {**self.module, **self.train}

    @property
    def name(self) -> str:
        parts = [f"{k.replace('_', '-')}={v}" for k, v in self.settings.items()]
        return f"{self.index:02d}-" + ("_".join(parts) or "base").replace("/", "-")


def load_grid(path: str | Path, module_cls: type, train_cls: type) -> list[SweepPoint]:
    """The combinations of a grid file (YAML mapping of setting -> value or list of values), in file order."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the sweep grid: {exc}", str(path)) from None
    if not isinstance(data, dict) or not data:
        raise InputError("a sweep grid is a non-empty mapping of setting -> list of values", str(path))
    module_fields = {f.name for f in fields(module_cls)} - set(FIXED)
    train_fields = {f.name for f in fields(train_cls)} - set(FIXED)
    types = {f.name: str(f.type) for cls in (module_cls, train_cls) for f in fields(cls)}
    axes: list[tuple[str, list[Any]]] = []
    spelled: dict[str, str] = {}
    for key, values in data.items():
        name = str(key).replace("-", "_")
        if name in spelled:
            raise InputError(f"sweep setting {key!r} is named twice (also as {spelled[name]!r}); give its values "
                             f"once", str(path))
        spelled[name] = str(key)
        if name in FIXED:
            raise InputError(f"{key!r} cannot be swept: every combination must train one variant and be selected on "
                             f"the same dev set", str(path))
        if name not in module_fields | train_fields:
            raise InputError(f"unknown sweep setting {key!r}; settings: {', '.join(sorted(module_fields | train_fields))}",
                             str(path))
        values = values if isinstance(values, list) else [values]
        if not values:
            raise InputError(f"sweep setting {key!r} has no values", str(path))
        axes.append((name, [_typed(key, types[name], value, path) for value in values]))
    points = []
    for index, combo in enumerate(itertools.product(*(values for _, values in axes))):
        chosen = dict(zip((name for name, _ in axes), combo))
        points.append(SweepPoint(index, {k: v for k, v in chosen.items() if k in module_fields},
                                 {k: v for k, v in chosen.items() if k in train_fields}))
    return points


def _typed(key: Any, annotation: str, value: Any, path: str | Path) -> Any:
    """``value`` as the setting's type (``annotation``: the dataclass field's, e.g. ``"float"``, ``"int | None"``):
    a number written so that YAML reads a string (``1e-3``: YAML 1.1 needs ``1.0e-3``) becomes the number; a value
    of another type is an InputError naming the setting (it failed only when that point's training began)."""
    allowed = {part.strip() for part in annotation.split("|")}
    if value is None:
        if "None" in allowed:
            return None
        raise InputError(f"sweep setting {key!r}: null is not a value of it", str(path))
    if isinstance(value, bool) or "bool" in allowed:
        if "bool" in allowed and isinstance(value, bool):
            return value
        raise InputError(f"sweep setting {key!r}: {value!r} is not a {annotation}", str(path))
    if "float" in allowed or "int" in allowed:
        number = value
        if isinstance(value, str):
            try:
                number = float(value) if "float" in allowed else int(value)
            except ValueError:
                number = None
        if "float" not in allowed and isinstance(number, float):
            number = None  # an integer setting given a fraction
        if not isinstance(number, (int, float)):
            raise InputError(f"sweep setting {key!r}: {value!r} is not a number of type {annotation}", str(path))
        return number
    if "str" in allowed and not isinstance(value, str):
        raise InputError(f"sweep setting {key!r}: {value!r} is not text", str(path))
    return value


LOSS_DEFINING = ("loss", "margin", "pointwise_weight", "temperature", "first_stage_weight")
"""Settings that define the dev loss itself: points that differ in them cannot be compared by it."""


def check_selection(points: Sequence[SweepPoint], metric: str, path: str | Path) -> None:
    """Refuse (InputError) selecting by the dev ``loss`` among points whose loss is defined differently (another
    margin, pointwise weight, loss or temperature): the smallest margin or weight would always win."""
    if metric != "loss":
        return
    varied = [k for k in LOSS_DEFINING if len({repr(p.settings.get(k)) for p in points}) > 1]
    if varied:
        raise InputError(f"--selection-metric loss cannot compare points with different {', '.join(varied)} (each "
                         f"point's dev loss is its own loss); select by a ranking metric such as ndcg@10", str(path))


def run_sweep(points: Sequence[SweepPoint], train_one: Callable[[SweepPoint, Path], Any], output: str | Path,
              metric: str, write: bool = True, on_finish: Callable[[Path], Any] | None = None) -> dict[str, Any]:
    """Train every point with ``train_one(point, folder) -> TrainResult`` and publish the best one.

    Args:
        metric: the dev selection metric (``loss`` is lower-is-better, everything else higher-is-better).
        write: publish ``best/`` and the tables (False on the other ranks of a data-parallel run).
        on_finish: called with the published ``best/`` before ``sweep.json`` marks the sweep finished (the
            interpolation weight it carries is selected there: a sweep stopped in between is not finished).

    Returns:
        ``{"metric", "best": {...}, "rows": [...]}``, also written to ``output/sweep.json`` and ``sweep.md``.
    """
    from ..artifacts import atomic_write, write_json
    from ..training.state import publish_best

    output = Path(output)
    rows = []
    for point in points:
        folder = output / SWEEP_DIR / point.name
        logger.info("sweep %d/%d: %s", point.index + 1, len(points), point.settings)
        result = train_one(point, folder)
        dev = {k: v for k, v in result.best_dev.items() if isinstance(v, float)}
        rows.append({"index": point.index, "name": point.name, "settings": point.settings, "folder": str(folder),
                     "best_epoch": result.best_epoch, "best_step": result.best_step, "dev": dev})
    sign = -1.0 if metric == "loss" else 1.0
    best = max(rows, key=lambda r: (sign * r["dev"][metric], -r["index"]))
    summary = {"metric": metric, "best": best, "rows": rows}
    if not write:
        return summary
    for name in ("sweep.json", "sweep.md"):  # a rerun's: until it is written again, the sweep is unfinished
        (output / name).unlink(missing_ok=True)
    published = publish_best(Path(best["folder"]) / "best", output)
    if on_finish is not None:
        on_finish(published)
    write_json(output / "sweep.json", summary)
    with atomic_write(output / "sweep.md") as out:
        out.write(sweep_table(summary))
    return summary


def sweep_table(summary: Mapping[str, Any]) -> str:
    """Markdown table of a sweep: one row per combination (its settings spelled as `train qpeft` flags), dev
    metrics at its best epoch, the winner marked."""
    rows = summary["rows"]
    metrics = sorted({m for r in rows for m in r["dev"]})
    lines = [f"Sweep selected on dev {summary['metric']} (best epoch of each combination); * = copied to best/",
             "", "| | settings | best epoch | " + " | ".join(f"dev {m}" for m in metrics) + " |",
             "|---|---|---:|" + "---:|" * len(metrics)]
    for r in rows:
        mark = "*" if r["index"] == summary["best"]["index"] else ""
        settings = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in r["settings"].items())  # as flags
        lines.append(f"| {mark} | {settings} | {r['best_epoch']} | "
                     + " | ".join(f"{r['dev'].get(m, float('nan')):.4f}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"
