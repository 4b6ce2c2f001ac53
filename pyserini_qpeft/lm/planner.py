"""The work plan of query-likelihood scoring: pure Python on plain lists (no torch, no tokenizer).

Scoring N (query, document) pairs is planned in three steps, each a pure function of its input:

1. :func:`dedupe` finds the distinct documents: every pair gets a document slot (its prefix is run once and its
   key/value cache is shared by every pair in that slot). This is the only place documents are deduplicated.
2. :func:`plan_groups` sorts the distinct documents by prefix length (longest first: length buckets, little left
   padding) and cuts them into groups of ``prefix_batch_size`` documents (one prefix forward each).
3. Within a group, pairs are sorted by query length (longest first) and cut into suffix batches of
   ``batch_size`` pairs.

The plan depends only on the input, never on what was done, so a resumed job recomputes the same groups and can
skip finished ones by :attr:`ScoreGroup.index`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence


@dataclass(frozen=True)
class Dedup:
    """Distinct items of a sequence.

    Attributes:
        first: for each distinct key (in order of first appearance), the index of its first occurrence.
        slot: for each item, the index (into ``first``) of its distinct key.
    """

    first: tuple[int, ...]
    slot: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.first)


@dataclass(frozen=True)
class ScoreGroup:
    """A deterministic unit of work: a few documents (one prefix forward) and all pairs that use them.

    Attributes:
        index: position of the group in the plan (stable for a given input; resume skips by it).
        docs: distinct-document slots of the group, longest prefix first.
        pairs: indices into the scored input, in the order they are computed.
        batches: ``pairs`` cut into suffix batches.
    """

    index: int
    docs: tuple[int, ...]
    pairs: tuple[int, ...]
    batches: tuple[tuple[int, ...], ...]


def dedupe(keys: Sequence[Hashable]) -> Dedup:
    """Slots of equal keys: ``dedupe(["a", "b", "a"])`` is ``Dedup(first=(0, 1), slot=(0, 1, 0))``."""
    index: dict[Hashable, int] = {}
    first: list[int] = []
    slot: list[int] = []
    for i, key in enumerate(keys):
        j = index.get(key)
        if j is None:
            j = index[key] = len(first)
            first.append(i)
        slot.append(j)
    return Dedup(first=tuple(first), slot=tuple(slot))


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def plan_groups(doc_of: Sequence[int], prefix_lens: Sequence[int], query_lens: Sequence[int], batch_size: int,
                prefix_batch_size: int) -> list[ScoreGroup]:
    """Group pairs by document and cut them into prefix groups and suffix batches.

    Args:
        doc_of: ``[N]`` distinct-document slot of each pair (``Dedup.slot``); slots are ``0 .. D-1``.
        prefix_lens: ``[D]`` prefix token count of each distinct document.
        query_lens: ``[N]`` query token count of each pair.
        batch_size: at most this many pairs per suffix batch.
        prefix_batch_size: at most this many documents per group.

    Returns:
        Groups in plan order; every pair is in exactly one batch of one group, and a group's pairs all use its
        documents. Ties break by index, so the plan is deterministic.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("prefix_batch_size", prefix_batch_size)
    if len(doc_of) != len(query_lens):
        raise ValueError(f"got {len(doc_of)} pair slots but {len(query_lens)} query lengths")
    pairs_of: list[list[int]] = [[] for _ in prefix_lens]
    for i, j in enumerate(doc_of):
        if not 0 <= j < len(pairs_of):
            raise ValueError(f"pair {i} has document slot {j}, outside 0..{len(pairs_of) - 1}")
        pairs_of[j].append(i)
    order = sorted(range(len(prefix_lens)), key=lambda j: (-prefix_lens[j], j))
    groups = []
    for g, start in enumerate(range(0, len(order), prefix_batch_size)):
        members = order[start:start + prefix_batch_size]
        pairs = sorted((i for j in members for i in pairs_of[j]), key=lambda i: (-query_lens[i], i))
        batches = tuple(tuple(pairs[k:k + batch_size]) for k in range(0, len(pairs), batch_size))
        groups.append(ScoreGroup(index=g, docs=tuple(members), pairs=tuple(pairs), batches=batches))
    return groups


def first_rows(keys: Sequence[Hashable]) -> list[int]:
    """For each item, the index of the first item with an equal key: ``first_rows("aba")`` is ``[0, 1, 0]``."""
    d = dedupe(keys)
    return [d.first[s] for s in d.slot]
