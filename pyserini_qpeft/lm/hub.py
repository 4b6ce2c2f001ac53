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


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")


def model_folder(name: str) -> Path | None:
    """The folder a model's files are read from: ``name`` itself when it is a local folder, else the cached Hub
    snapshot of ``name`` (None when there is none)."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an id the hub library rejects, or no huggingface_hub
        return None
    return Path(found).parent if isinstance(found, str) else None


def weights_fingerprint(folder: Path, blocks: int = 16, block: int = 4096) -> str | None:
    """A short sha256 of a model folder's weight files (:data:`WEIGHT_SUFFIXES`): each file's name and size and
    ``blocks`` evenly spaced ``block``-byte pieces of it (a safetensors header, with every tensor's shape, is the
    first). Other weights under the same name (re-saved, fine-tuned, another Hub revision) change it; reading it
    costs 16 small reads per file, whatever the model's size. None when the folder holds no weight file."""
    import hashlib

    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as handle:
            for i in range(blocks):
                handle.seek(max(0, size - block) * i // max(1, blocks - 1))
                digest.update(handle.read(block))
    return digest.hexdigest()[:16]


DIGEST_CACHE = "weights-sha256.json"
DIGEST_CACHE_ENTRIES = 512
_HEX = frozenset("0123456789abcdef")


def _file_sha256(path: Path) -> str:
    """sha256 of one weight file: free for a Hugging Face cache file (a link to ``blobs/<its sha256>``), else read
    once and remembered by (path, device, inode, size, mtime, ctime) in the package cache (a file changed in place
    gets a new ctime and is read again)."""
    import json

    real = path.resolve()
    if real.parent.name == "blobs" and len(real.name) == 64 and set(real.name) <= _HEX:
        return real.name  # the Hub stores LFS files (every weight file) under their sha256
    stat = real.stat()
    # ctime too: a tool can restore the mtime after writing in place (rsync --inplace -t, cp -p), never the ctime
    key = f"{real}\0{stat.st_dev}\0{stat.st_ino}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}"
    try:
        from ..paths import cache_dir

        store = cache_dir() / DIGEST_CACHE
    except Exception:  # no usable cache folder: compute every time
        store = None
    known: dict = {}
    if store is not None and store.is_file():
        try:
            known = json.loads(store.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        if not isinstance(known, dict):  # damaged in some other way: recomputed and rewritten like a torn file
            known = {}
    if isinstance(known.get(key), str):
        return known[key]
    from ..artifacts import file_sha256

    value = file_sha256(real)
    if store is not None:
        from ..artifacts import atomic_write

        known = {k: v for k, v in known.items() if isinstance(v, str)}
        known[key] = value
        try:
            with atomic_write(store) as out:  # the newest entries only; a lost race loses a cache entry, no more
                json.dump(dict(list(known.items())[-DIGEST_CACHE_ENTRIES:]), out)
        except OSError:
            pass
    return value


def weights_digest(folder: Path) -> str | None:
    """sha256 over the full contents of a model folder's weight files (:data:`WEIGHT_SUFFIXES`, by name): unlike
    :func:`weights_fingerprint`'s samples, any changed byte changes it. Reading a file costs one pass over it, once
    per version of the file (:func:`_file_sha256`); None when the folder holds no weight file."""
    import hashlib

    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()[:32]

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
