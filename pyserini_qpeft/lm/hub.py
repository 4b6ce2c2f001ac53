"""Loading Hugging Face models: fail fast for one that cannot be found (not a local folder, not in the cache, and
no Hub -- else ``transformers`` retries for most of a minute), and load without per-tensor progress bars.

Nothing here imports torch or transformers at import time.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from ..errors import ModelError

PROBE_SECONDS = 3.0


def hub_host() -> str:
    """The Hub's host name (``$HF_ENDPOINT`` when set)."""
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def hub_reachable(host: str | None = None, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds (name lookup included)."""
    host = host or hub_host()
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an id the hub library rejects (bad characters): transformers reports it
        return False


def check_model_findable(name: str) -> None:
    """Return when ``name`` is a local path, is cached, or the Hub may have it; else ModelError (exit code 6) in
    seconds. With ``HF_HUB_OFFLINE=1`` transformers fails fast itself, so nothing is probed."""
    if Path(name).expanduser().exists() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return
    if _cached(name):
        return
    if not hub_reachable():
        raise ModelError(f"model {name!r} is not a local folder, not in the Hugging Face cache, and {hub_host()} "
                         "cannot be reached (offline?); give a local path or download the model first")


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' per-tensor "Loading weights" bar off while loading (noise on every command), then as it was."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
