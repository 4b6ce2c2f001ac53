"""Which vocabulary tokens Q-PEFT-R may pick as hints (``token_filter="content"``).

``explain`` showed Q-PEFT-R spending 3 of its 16 slots on ``-``, ``.`` and ``,`` (cosine 1.0 with the query's own
punctuation): tokens that match but carry no evidence. The content filter keeps only alphabetic tokens of at least
two letters that are not English stop-words (NLTK's list, lower-cased, compared after stripping the tokenizer's
leading-space marker).
"""
from __future__ import annotations

import functools

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves also may might must shall via per vs et al using use used based
""".split())


def is_content_token(text: str) -> bool:
    """True for a decoded token that is a word (piece) worth a hint slot."""
    word = text.strip().lower()
    return len(word) >= 2 and word.isalpha() and word not in STOPWORDS


@functools.lru_cache(maxsize=8)
def _non_content_ids(tokenizer) -> tuple[int, ...]:
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return tuple(i for i, text in enumerate(texts) if not is_content_token(text))


def excluded_token_ids(tokenizer, token_filter: str) -> list[int]:
    """Token ids never selected as hints: the special tokens, plus every non-content token for ``content``."""
    special = {i for i in getattr(tokenizer, "all_special_ids", []) if i is not None}
    if token_filter == "content":
        special.update(_non_content_ids(tokenizer))
    return sorted(special)
