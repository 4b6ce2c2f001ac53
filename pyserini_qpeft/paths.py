"""Where the package keeps what it makes once per machine (converted models, downloaded datasets, probes).

Torch-free and dependency-free, so every layer (``data``, ``lm``) can ask without importing another.
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PYSERINI_QPEFT_CACHE"


def cache_dir() -> Path:
    """Root of the package's cache: ``$PYSERINI_QPEFT_CACHE`` (``~`` expanded), else ``~/.cache/pyserini_qpeft``."""
    given = os.environ.get(CACHE_ENV)
    return Path(given).expanduser() if given else Path.home() / ".cache" / "pyserini_qpeft"
