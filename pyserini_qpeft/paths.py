"""Where the package keeps what it makes once per machine (converted models, downloaded datasets, probes).

Torch-free and dependency-free, so every layer (``data``, ``lm``) can ask without importing another.
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PYSERINI_QPEFT_CACHE"


def cache_dir() -> Path:
    """Root of the package's cache: ``$PYSERINI_QPEFT_CACHE`` (``~`` expanded; blank = unset), else
    ``~/.cache/pyserini_qpeft``. InputError when neither is known (no ``$HOME`` and a user id without a passwd
    entry, as in some containers)."""
    given = os.environ.get(CACHE_ENV, "").strip()
    if given:
        return Path(given).expanduser()
    try:
        return Path.home() / ".cache" / "pyserini_qpeft"
    except RuntimeError:  # Path.home(): no HOME and no passwd entry
        from .errors import InputError

        raise InputError(f"no home folder to keep the package's cache in: set {CACHE_ENV} to a writable folder") \
            from None
