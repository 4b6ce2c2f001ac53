"""What an artifact records about how it was made: library versions, the source commit, a model card."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping


# Packages every artifact records; an artifact adds its own (peft, faiss-cpu, pyserini) via ``extra``.
CORE_PACKAGES = ("pyserini_qpeft", "torch", "transformers")


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of :data:`CORE_PACKAGES` and ``extra`` (distribution names); absent ones are left out.

    Read from package metadata, so nothing is imported (recording versions never loads torch).
    """
    import importlib.metadata as md

    from .. import __version__

    versions: dict[str, str] = {}
    for name in (*CORE_PACKAGES, *extra):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            if name == "pyserini_qpeft":  # a source checkout that is not installed
                versions[name] = __version__
    return versions


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The git commit of this package's source checkout (``-dirty`` appended when tracked files differ from it);
    None for an installed wheel or without git. Recorded in trained checkpoints and their model cards."""
    import subprocess

    root = Path(__file__).resolve().parents[2]  # the checkout: artifacts/ -> pyserini_qpeft/ -> root
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def provenance_lines(record: Mapping[str, Any], versions: Mapping[str, Any], commit: str | None) -> list[str]:
    """A model card's "Data and provenance" list: dataset and split, the hard-negative run, training and dev query
    counts, seed and dev carve, code version and commit. ``record`` holds the checkpoint's training record
    (``dataset``, ``split``, ``negatives``, ``train_queries``, ``dev_queries``, ``train_config``); absent entries
    are left out."""
    config = record.get("train_config") or {}
    lines = [f"- dataset: `{record['dataset']}`, split `{record.get('split', '?')}`" if record.get("dataset") else "",
             f"- hard negatives from: `{record['negatives']}`" if record.get("negatives") else "",
             f"- {record['train_queries']} training queries"
             + (f" (at most {config['max_train_queries']} used per epoch: --max-train-queries)"
                if config.get("max_train_queries") else "")
             + f", {record.get('dev_queries', '?')} dev queries carved from them"
             if "train_queries" in record else "",
             f"- seed {config['seed']} (dev carve seed {config.get('dev_seed') or config['seed']})"
             if "seed" in config else "",
             f"- code: pyserini_qpeft {versions.get('pyserini_qpeft', '?')}"
             + (f", commit `{commit}`" if commit else "")]
    return [line for line in lines if line]


def model_card(title: str, base_model: str, parameters: str, record: Mapping[str, Any], versions: Mapping[str, Any],
               commit: str | None, dev_metrics: Mapping[str, Any], usage: str) -> str:
    """A trained checkpoint's ``README.md``: what it is, its frozen base model, its trainable parameters, the command,
    data and code that produced it (:func:`provenance_lines`; ``record['command']``), its dev metrics, how to use
    it."""
    lines = [f"# {title}", "", f"Base model (frozen, not included): `{base_model}`", "",
             f"Trainable parameters: {parameters}", ""]
    if record.get("command"):
        lines += ["Training command:", "", "```", record["command"], "```", ""]
    lines += ["Data and provenance:", "", *provenance_lines(record, versions, commit), ""]
    if dev_metrics:
        lines += ["Dev metrics (checkpoint selection; carved from the training queries):", ""]
        lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in sorted(dev_metrics.items())]
        lines.append("")
    return "\n".join([*lines, usage, ""])
