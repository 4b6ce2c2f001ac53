"""Prefix KV caches kept between scoring calls, for pairs that are scored again and again.

Training evaluates the same dev pairs after every epoch (and once untrained, and once with the zero-shot
baseline); a sweep does so for every grid point. A pair's document prefix never depends on the hint module (the
hints come after it), so the prefix forward of each score group -- most of the cost of a dev evaluation -- only
needs to run once. :class:`PrefixMemo` keeps the KV cache of each group's prefix batch, keyed by the group's
prefix token ids: the plan of the same pairs is the same (:mod:`.planner`), so a hit hands back exactly the cache
the prefix forward would have computed, and scores stay bit-identical.

Memory: one cached token costs ``2 * layers * kv_heads * head_dim * bytes`` (SmolLM2-135M in fp32: 46 KB; a
group of 32 SciFact prefixes of ~150 tokens: ~220 MB). Groups are kept until ``max_bytes`` is reached, later ones
are computed as usual.
"""
from __future__ import annotations

import os
from typing import Any, Hashable, Sequence


def cache_bytes(cache: Any) -> int:
    """Bytes held by a ``DynamicCache``'s key and value tensors."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
               if t is not None)


def free_bytes(device: Any) -> int:
    """Free memory of ``device`` now: the CUDA allocator's free bytes, or the host's available memory."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


DEFAULT_SHARE = 0.25  # of the device's free memory, when no budget is given


class PrefixMemo:
    """Prefix KV caches of score groups, up to ``max_bytes``.

    Args:
        max_bytes: stop keeping new groups once this many bytes are held (0 = keep nothing).

    Attributes:
        hits, misses: lookups answered from the memo / computed (for logs and tests).
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._store: dict[Hashable, Any] = {}

    @classmethod
    def for_device(cls, device: Any, gigabytes: float | None = None, processes: int = 1) -> "PrefixMemo":
        """A memo of ``gigabytes`` (None: :data:`DEFAULT_SHARE` of ``device``'s free memory now, split between
        ``processes`` that share the device; 0: off)."""
        if gigabytes is None:
            return cls(int(free_bytes(device) * DEFAULT_SHARE / max(1, processes)))
        return cls(int(gigabytes * 2**30))

    @staticmethod
    def key(prefixes: Sequence[Sequence[int]], device: Any, dtype: Any) -> Hashable:
        """The identity of a group's prefix forward: its prefix token ids in order, device and dtype. The LM is
        not part of it: a memo serves one loaded LM (a training's dev evaluations, a sweep's points), never two."""
        return (tuple(tuple(p) for p in prefixes), str(device), str(dtype))

    def get(self, key: Hashable) -> Any | None:
        """The kept cache for ``key``, or None (counted as a miss: the caller computes it)."""
        cache = self._store.get(key)
        if cache is None:
            self.misses += 1
        else:
            self.hits += 1
        return cache

    def put(self, key: Hashable, cache: Any) -> bool:
        """Keep ``cache`` if it fits in what is left of ``max_bytes``; returns whether it was kept. The caller must
        not modify a kept cache (scoring only reads it: suffix forwards run on a row-selected copy)."""
        if key in self._store:
            return True
        size = cache_bytes(cache)
        if self.bytes + size > self.max_bytes:
            return False
        self._store[key] = cache
        self.bytes += size
        return True

    def __len__(self) -> int:
        return len(self._store)
