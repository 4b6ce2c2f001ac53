"""Query-likelihood scorer: equals a plain reference computation, padding/batching/caching invariance, gradients;
the pure planner and prompt pieces on plain lists."""
from __future__ import annotations

import dataclasses
import math
import random
import subprocess
import sys

import pytest
import torch

from conftest import TOY_CORPUS, TOY_QUERIES
from pyserini_qpeft.data import Document
from pyserini_qpeft.lm.planner import ScoreGroup, dedupe, first_rows, plan_groups
from pyserini_qpeft.lm.prompts import SuffixPieces
from pyserini_qpeft.lm.scoring import PairBatch, QueryLikelihoodScorer, ScorerConfig, passage_text

DOCS = [Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS]
QUERIES = [q["text"] for q in TOY_QUERIES]
# 14 pairs: every document with 2-3 queries, mixed lengths, in a scrambled order.
PAIRS = [(QUERIES[i % 4], DOCS[(i * 5) % 6]) for i in range(14)]


def reference_score(lm, query: str, doc: Document, config: ScorerConfig = ScorerConfig()) -> float:
    """Build the prompt as one string, run the full model with logits everywhere, average over query tokens."""
    tok = lm.tokenizer
    instruction = config.instruction + ("\n" if config.instruction else "")
    prompt = instruction + config.template.format(passage=passage_text(doc)) + config.question_prefix
    ids = tok(prompt + " " + query, add_special_tokens=False)["input_ids"]
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return torch.stack([logp[t - 1, ids[t]] for t in range(n_prompt, len(ids))]).mean().item()


def reference_ids(lm, query: str, doc: Document, config: ScorerConfig = ScorerConfig()) -> list[int]:
    instruction = config.instruction + ("\n" if config.instruction else "")
    prompt = instruction + config.template.format(passage=passage_text(doc)) + config.question_prefix
    return lm.tokenizer(prompt + " " + query, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("config", [
    ScorerConfig(batch_size=3, prefix_batch_size=2),
    ScorerConfig(batch_size=4, cache_prefixes=False),
    ScorerConfig(batch_size=32, prefix_batch_size=16, instruction="Read the passage."),
])
def test_scores_equal_reference(tiny_lm, config):
    scorer = QueryLikelihoodScorer(tiny_lm, config)
    queries, docs = zip(*PAIRS)
    for q, d in PAIRS:  # segment-wise tokenization gives exactly the tokens of the joined text
        assert scorer.prompt_ids(q, d) == reference_ids(tiny_lm, q, d, config)
    got = scorer.score(list(queries), list(docs))
    want = [reference_score(tiny_lm, q, d, config) for q, d in PAIRS]
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5
    assert len(set(round(x, 4) for x in got)) > 5  # scores differ between pairs: not a constant


def test_special_token_text_in_documents_and_queries_stays_text(tiny_lm):
    """A document or query that spells a special token ("</s>") is scored as text: no control token reaches the
    prompt from it; template pieces keep theirs."""
    tok = tiny_lm.tokenizer
    eos = tok.eos_token
    doc = Document("x", "Aspirin", f"aspirin {eos} reduces the risk of heart attack")
    query = f"does aspirin {eos} help the heart"
    scorer = QueryLikelihoodScorer(tiny_lm)
    ids = scorer.prompt_ids(query, doc)
    assert tok.eos_token_id not in ids and ids == reference_ids(tiny_lm, query, doc)
    assert len(ids) > len(scorer.prompt_ids(query.replace(eos, ""), Document("x", "Aspirin", doc.text.replace(eos, ""))))
    assert abs(scorer.score([query], [doc])[0] - reference_score(tiny_lm, query, doc)) < 1e-5
    for config in (ScorerConfig(instruction=f"Read this.{eos}"),  # in the prompt head
                   ScorerConfig(template="Passage: {passage}" + eos + ". Please write a question based on this passage.")):
        ids = QueryLikelihoodScorer(tiny_lm, config).prompt_ids(query, doc)
        assert ids.count(tok.eos_token_id) == 1, config  # the template's, not the document's or the query's
    from pyserini_qpeft.lmort.states import tokenize  # LMORT and every length count use the LM's tokenizer as well

    assert tok.eos_token_id not in tokenize(tiny_lm, [doc.text, query], 32)["input_ids"].tolist()[0]


def test_empty_title_has_no_stray_space(tiny_lm):
    scorer = QueryLikelihoodScorer(tiny_lm)
    doc = Document("x", "", "exercise improves heart health")
    assert passage_text(doc) == "exercise improves heart health"
    assert scorer.doc_tokens(doc).prefix == tuple(
        tiny_lm.tokenizer("Passage: exercise improves heart health. Please write a question based on this passage.\n",
                          add_special_tokens=False)["input_ids"])


def test_a_passage_of_exactly_the_budget_is_tokenized_with_the_template_tail(tiny_lm):
    """A passage that fits the budget -- exactly too -- is tokenized joined with the template's tail, as the prompt
    text reads; only a cut passage is tokenized apart (a template whose tail continues the passage's last word)."""
    tok = tiny_lm.tokenizer
    config = ScorerConfig(template="Passage: {passage}ing causes cancer.", instruction="")
    doc = Document("s", "", "the smok")
    joined = tuple(tok("Passage: the smoking causes cancer.", add_special_tokens=False)["input_ids"])
    exact = QueryLikelihoodScorer(tiny_lm, dataclasses.replace(config, max_passage_tokens=4)).doc_tokens(doc)
    assert len(exact.passage) == 4 and exact.prefix == joined
    cut = QueryLikelihoodScorer(tiny_lm, dataclasses.replace(config, max_passage_tokens=3)).doc_tokens(doc)
    apart = tuple(tok("Passage: the smok", add_special_tokens=False)["input_ids"])[:-1]
    assert cut.prefix != joined and cut.prefix[:len(apart)] == apart


def test_an_instruction_ending_in_whitespace_gets_no_second_line_break(tiny_lm):
    tok = tiny_lm.tokenizer
    doc = Document("x", "", "exercise improves heart health")
    text = "Passage: exercise improves heart health. Please write a question based on this passage.\n"
    for instruction, joined in (("Read it.\n", "Read it.\n"), ("Read it. ", "Read it. "), ("Read it.", "Read it.\n")):
        scorer = QueryLikelihoodScorer(tiny_lm, ScorerConfig(instruction=instruction))
        assert scorer.doc_tokens(doc).prefix == tuple(tok(joined + text, add_special_tokens=False)["input_ids"])


def test_documents_are_known_by_docid_title_and_text(tiny_lm):
    """Two documents under one docid with other titles (two corpora's, a corrected title) get their own prompts."""
    scorer = QueryLikelihoodScorer(tiny_lm)
    a, b = Document("d", "Lung cancer", "smoking causes it"), Document("d", "Heart disease", "smoking causes it")
    assert scorer.doc_tokens(a).prefix != scorer.doc_tokens(b).prefix
    assert len(scorer.plan([QUERIES[0]] * 2, [a, b])[0].docs) == 2


def test_plan_groups_refuses_a_slot_past_the_documents_and_a_bool_batch_size():
    with pytest.raises(ValueError, match="slot 2"):
        plan_groups([0, 2], [1, 1], [1, 1], 1, 1)
    with pytest.raises(ValueError):
        plan_groups([0], [1], [1], True, 1)


def test_a_prompt_presets_fields_are_a_copy():
    """Callers add their own settings to the fields (``make_reranker``): the presets stay as they are."""
    from pyserini_qpeft.lm.prompts import PROMPTS, prompt_fields

    fields = prompt_fields("claim")
    fields["max_passage_tokens"] = 7
    fields["question_prefix"] = "Changed:"
    assert PROMPTS["claim"] == {"template": "Passage: {passage}. Please write a claim based on this passage.\n",
                                "question_prefix": "Claim:"}
    with pytest.raises(ValueError, match="unknown prompt 'nope'; prompts: question, claim"):
        prompt_fields("nope")


def test_an_empty_document_has_an_empty_passage_slot_and_scores(tiny_lm):
    """No title and no text (or only whitespace): the passage slot is empty -- ``Passage:`` then the template's tail,
    the lead space belonging to the passage -- the hint modules get no passage tokens, and every scorer scores it."""
    from pyserini_qpeft.qpeft.config import QPeftConfig
    from pyserini_qpeft.qpeft.module import build_module

    tok = tiny_lm.tokenizer
    scorer = QueryLikelihoodScorer(tiny_lm)
    empty, blank = Document("e", "", ""), Document("b", "  ", " \n ")
    tokens = scorer.doc_tokens(empty)
    assert tokens.passage == () and scorer.doc_tokens(blank) == tokens
    assert tokens.prefix == tuple(tok("Passage:. Please write a question based on this passage.\n",
                                      add_special_tokens=False)["input_ids"])
    for hint in (None, *(build_module(tiny_lm, QPeftConfig(variant=v)) for v in ("retr", "attn", "prompt"))):
        scores = QueryLikelihoodScorer(tiny_lm, hint_module=hint).score([QUERIES[0]] * 3, [empty, DOCS[0], blank])
        assert all(map(math.isfinite, scores)) and scores[0] == scores[2]


def test_padding_and_batch_composition_do_not_change_scores(tiny_lm):
    target_q, target_d = QUERIES[0], DOCS[0]
    alone = QueryLikelihoodScorer(tiny_lm).score([target_q], [target_d])[0]
    long_doc = Document("long", "A long one", " ".join(["protein folding depends on temperature"] * 8))
    others = [(QUERIES[1], long_doc), (QUERIES[2], DOCS[2]), (QUERIES[3] + " and more words here", DOCS[4])]
    for cached in (True, False):
        scorer = QueryLikelihoodScorer(tiny_lm, ScorerConfig(cache_prefixes=cached, batch_size=4))
        qs, ds = zip(*(others + [(target_q, target_d)] + others[::-1]))
        mixed = scorer.score(list(qs), list(ds))
        assert abs(mixed[3] - alone) < 1e-5
        batch = scorer.encode(list(qs), list(ds))
        assert batch.prefix_mask[:, 0].tolist().count(0) >= 1  # some rows really are left padded
        assert torch.allclose(scorer.forward(batch), torch.tensor(mixed), atol=1e-5)


def test_deterministic_and_truncated(tiny_lm):
    config = ScorerConfig(max_passage_tokens=5, max_query_tokens=3, batch_size=2)
    scorer = QueryLikelihoodScorer(tiny_lm, config)
    long_doc = Document("long", "", " ".join(["the immune system fights infection"] * 50))
    assert len(scorer.doc_tokens(long_doc).passage) == 5
    assert len(scorer.query_tokens("what causes lung cancer in the park today")) == 3
    qs, ds = [QUERIES[0]] * 3, [long_doc, DOCS[0], DOCS[1]]
    assert scorer.score(qs, ds) == scorer.score(qs, ds)


def test_empty_query_rejected(tiny_lm):
    with pytest.raises(ValueError, match="empty"):
        QueryLikelihoodScorer(tiny_lm).score(["  "], [DOCS[0]])


@pytest.mark.parametrize("bad", [dict(template="no placeholder"), dict(batch_size=0), dict(max_query_tokens=-1),
                                 dict(question_prefix="  "), dict(hint_passage_tokens=0),
                                 dict(hint_passage_tokens=True)])
def test_config_validation(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ScorerConfig(**bad)


class MeanPassageHints(torch.nn.Module):
    """Toy hint module: n_hints vectors from the mean passage embedding; the last hint masked on odd rows."""

    def __init__(self, embed: torch.nn.Embedding, n_hints: int = 2, mask_last_on_odd: bool = False):
        super().__init__()
        self.embed = embed  # frozen LM embeddings (not a parameter of this module's trainable part)
        hidden = embed.weight.shape[1]
        self.proj = torch.nn.Linear(hidden, n_hints * hidden)
        self.n, self.mask_last_on_odd = n_hints, mask_last_on_odd

    def forward(self, query_ids, query_mask, passage_ids, passage_mask):
        e = self.embed(passage_ids) * passage_mask.unsqueeze(-1)
        q = self.embed(query_ids) * query_mask.unsqueeze(-1)
        pooled = e.sum(1) / passage_mask.sum(1, keepdim=True).clamp(min=1) + q.mean(1)
        hints = self.proj(pooled).view(len(pooled), self.n, -1)
        mask = torch.ones(hints.shape[:2], dtype=torch.long)
        if self.mask_last_on_odd:
            mask[1::2, -1] = 0
        return hints, mask


def test_hint_gradients_reach_module_only(tiny_lm):
    torch.manual_seed(0)
    module = MeanPassageHints(tiny_lm.model.get_input_embeddings())
    queries, docs = zip(*PAIRS[:6])
    plain = QueryLikelihoodScorer(tiny_lm).score(list(queries), list(docs))
    for cached in (True, False):
        module.zero_grad()
        scorer = QueryLikelihoodScorer(tiny_lm, ScorerConfig(cache_prefixes=cached), hint_module=module)
        scores = scorer.forward(scorer.encode(list(queries), list(docs)))
        assert scores.requires_grad
        (-scores.mean()).backward()
        assert module.proj.weight.grad is not None and module.proj.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in tiny_lm.model.parameters())
        assert max(abs(a - b) for a, b in zip(scores.tolist(), plain)) > 1e-4  # hints do change scores
        inference = scorer.score(list(queries), list(docs))
        assert max(abs(a - b) for a, b in zip(scores.tolist(), inference)) < 1e-5


def test_masked_hint_equals_absent_hint(tiny_lm):
    """A hint with mask 0 must act as if it were not there (positions and attention both skip it)."""
    torch.manual_seed(0)
    two = MeanPassageHints(tiny_lm.model.get_input_embeddings(), n_hints=2, mask_last_on_odd=True)
    one = MeanPassageHints(tiny_lm.model.get_input_embeddings(), n_hints=1)
    with torch.no_grad():  # one's single hint = two's first hint
        hidden = tiny_lm.hidden_size
        one.proj.weight.copy_(two.proj.weight[:hidden])
        one.proj.bias.copy_(two.proj.bias[:hidden])
    queries, docs = zip(*PAIRS[:4])
    # forward() keeps the input order (score() reorders rows, which would move the masked rows).
    scorer_two = QueryLikelihoodScorer(tiny_lm, hint_module=two)
    scorer_one = QueryLikelihoodScorer(tiny_lm, hint_module=one)
    with torch.no_grad():
        with_mask = scorer_two.forward(scorer_two.encode(list(queries), list(docs))).tolist()
        single = scorer_one.forward(scorer_one.encode(list(queries), list(docs))).tolist()
    assert abs(with_mask[1] - single[1]) < 1e-5 and abs(with_mask[3] - single[3]) < 1e-5
    assert abs(with_mask[0] - single[0]) > 1e-4  # unmasked second hint does matter


def test_pair_batch_layout(tiny_lm):
    scorer = QueryLikelihoodScorer(tiny_lm)
    batch = scorer.encode([QUERIES[0], QUERIES[1], QUERIES[2]], [DOCS[0], DOCS[1], DOCS[0]])
    assert isinstance(batch, PairBatch) and len(batch) == 3
    assert batch.doc_group.tolist() == [0, 1, 0]
    assert batch.prefix_mask[:, -1].all() and batch.query_mask[:, 0].all() and batch.passage_mask[:, 0].all()


def test_dedupe_and_first_rows():
    d = dedupe(["b", "a", "b", "c", "a"])
    assert d.first == (0, 1, 3) and d.slot == (0, 1, 0, 2, 1) and len(d) == 3
    assert first_rows(["b", "a", "b", "c", "a"]) == [0, 1, 0, 3, 1]
    assert dedupe([]) == dedupe(()) and len(dedupe([])) == 0


def random_plan_input(rng: random.Random) -> tuple[list[int], list[int], list[int], int, int]:
    n_docs = rng.randint(1, 30)
    doc_of = [rng.randrange(n_docs) for _ in range(rng.randint(0, 120))]
    doc_of += list(range(n_docs))  # every slot used at least once, as after dedupe
    rng.shuffle(doc_of)
    prefix_lens = [rng.randint(1, 40) for _ in range(n_docs)]  # with ties
    query_lens = [rng.randint(1, 9) for _ in doc_of]
    return doc_of, prefix_lens, query_lens, rng.randint(1, 10), rng.randint(1, 8)


@pytest.mark.parametrize("seed", range(40))
def test_plan_groups_invariants(seed):
    doc_of, prefix_lens, query_lens, batch_size, prefix_batch_size = random_plan_input(random.Random(seed))
    groups = plan_groups(doc_of, prefix_lens, query_lens, batch_size, prefix_batch_size)
    assert all(isinstance(g, ScoreGroup) for g in groups) and [g.index for g in groups] == list(range(len(groups)))
    scored = [i for g in groups for b in g.batches for i in b]
    assert sorted(scored) == list(range(len(doc_of)))  # every pair exactly once
    assert sorted(j for g in groups for j in g.docs) == list(range(len(prefix_lens)))  # every document once
    order = [j for g in groups for j in g.docs]
    assert [prefix_lens[j] for j in order] == sorted(prefix_lens, reverse=True)  # length buckets, longest first
    for g in groups:
        assert 1 <= len(g.docs) <= prefix_batch_size
        assert all(doc_of[i] in g.docs for i in g.pairs)  # a group's pairs use only its own prefixes
        assert [i for b in g.batches for i in b] == list(g.pairs)
        assert all(1 <= len(b) <= batch_size for b in g.batches)
        assert all(len(b) == batch_size for b in g.batches[:-1])  # only the last batch of a group is short
        assert [query_lens[i] for i in g.pairs] == sorted((query_lens[i] for i in g.pairs), reverse=True)
    assert groups == plan_groups(list(doc_of), list(prefix_lens), list(query_lens), batch_size, prefix_batch_size)


def test_plan_groups_example_and_errors():
    # docs: 0 (len 5), 1 (len 9), 2 (len 5); pairs 0..5
    groups = plan_groups([0, 1, 0, 2, 1, 2], [5, 9, 5], [1, 2, 3, 1, 2, 2], batch_size=2, prefix_batch_size=2)
    assert groups == [ScoreGroup(0, (1, 0), (2, 1, 4, 0), ((2, 1), (4, 0))),
                      ScoreGroup(1, (2,), (5, 3), ((5, 3),))]
    assert plan_groups([], [], [], 3, 3) == []
    with pytest.raises(ValueError, match="slot 3"):
        plan_groups([0, 3], [1, 1], [1, 1], 1, 1)
    with pytest.raises(ValueError, match="query lengths"):
        plan_groups([0, 0], [1], [1], 1, 1)
    with pytest.raises(ValueError, match="batch_size"):
        plan_groups([0], [1], [1], 0, 1)


def test_query_start_counts_hint_part():
    pieces = SuffixPieces(question=(7, 8), hint_open=(1, 2, 3), hint_close=(4,))
    assert pieces.query_start(None) == 1  # no hint module: last "Question:" token predicts query token 0
    assert pieces.query_start(5) == 3 + 5 + 1 + 2 - 1
    assert SuffixPieces(question=(7,)).query_start(0) == 0


def test_planner_and_prompts_do_not_import_torch():
    code = ("import sys; import pyserini_qpeft.lm.planner, pyserini_qpeft.lm.prompts, pyserini_qpeft.lm.scoring; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_scores_follow_input_order_and_documents_dedupe_once(tiny_lm):
    scorer = QueryLikelihoodScorer(tiny_lm, ScorerConfig(batch_size=3, prefix_batch_size=2))
    queries, docs = map(list, zip(*PAIRS))
    scores = scorer.score(queries, docs)
    perm = list(range(len(PAIRS)))
    random.Random(0).shuffle(perm)
    shuffled = scorer.score([queries[i] for i in perm], [docs[i] for i in perm])
    assert max(abs(shuffled[k] - scores[i]) for k, i in enumerate(perm)) < 1e-5
    # equal documents (same docid, title, text) share one prefix: distinct Document objects still dedupe
    copies = [Document(d.docid, d.title, d.text) for d in docs]
    plan = scorer.plan(queries, copies)
    assert sorted(j for g in plan for j in g.docs) == list(range(len({d.docid for d in docs})))
    # a caller that already deduplicated passes distinct documents + an index: same plan, same scores exactly
    distinct = dedupe([d.docid for d in docs])
    uniq = [docs[i] for i in distinct.first]
    assert scorer.plan(queries, uniq, doc_index=distinct.slot) == plan
    assert scorer.score(queries, uniq, doc_index=distinct.slot) == scores
    with pytest.raises(ValueError, match="document indices"):
        scorer.score(queries[:2], uniq, doc_index=[0])


@pytest.mark.slow
def test_smollm2_tokenization_and_cache_agree():
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig

    lm = FrozenLM.load(LMConfig())
    config = ScorerConfig(instruction="Read the scientific passage and write the question it answers.")
    docs = [Document("a", "Vitamin D and bones", "Vitamin D deficiency (<20 ng/mL) is linked to bone loss, 1.5x."),
            Document("b", "", "Smoking causes lung cancer; risk grows with pack-years.")]
    queries = ["Vitamin D deficiency causes bone loss.", "Does smoking cause cancer?"]
    scorer = QueryLikelihoodScorer(lm, config)
    for q, d in zip(queries, docs):
        assert scorer.prompt_ids(q, d) == reference_ids(lm, q, d, config)
    cached = scorer.score(queries * 2, docs + docs[::-1])
    plain = QueryLikelihoodScorer(lm, ScorerConfig(**{**config.to_dict(), "cache_prefixes": False})).score(
        queries * 2, docs + docs[::-1])
    assert max(abs(a - b) for a, b in zip(cached, plain)) < 0.05  # bf16
    assert cached[0] > cached[2] and cached[1] > cached[3]  # each query prefers its own passage


def test_prefix_memo_keeps_scores_bit_identical_and_skips_repeated_prefix_forwards(tiny_lm):
    """Scoring the same pairs again with a PrefixMemo (the dev pairs of every epoch) runs no prefix forward and
    gives exactly the scores of a scorer without one; a budget too small for a group keeps nothing of it."""
    from pyserini_qpeft.lm.memo import PrefixMemo, cache_bytes

    config = ScorerConfig(batch_size=3, prefix_batch_size=2)
    queries, docs = (list(x) for x in zip(*PAIRS))
    want = QueryLikelihoodScorer(tiny_lm, config).score(queries, docs)
    memo = PrefixMemo(1 << 30)
    scorer = QueryLikelihoodScorer(tiny_lm, config, prefix_memo=memo)
    calls = []
    run_prefix = scorer.engine.prefix_cache
    scorer.engine.prefix_cache = lambda ids, mask: calls.append(ids.shape) or run_prefix(ids, mask)
    assert scorer.score(queries, docs) == want
    groups = len(scorer.plan(queries, docs))
    assert len(calls) == groups == len(memo) == memo.misses and memo.hits == 0 and groups == 3
    assert memo.bytes == sum(cache_bytes(c) for c in memo._store.values()) > 0
    assert scorer.score(queries, docs) == want  # the second evaluation: every prefix from the memo
    assert len(calls) == groups and memo.hits == groups
    # another scorer of the same LM (other suffix batch size: same groups) shares it
    other = QueryLikelihoodScorer(tiny_lm, ScorerConfig(batch_size=5, prefix_batch_size=2), prefix_memo=memo)
    assert other.score(queries, docs) == QueryLikelihoodScorer(tiny_lm, ScorerConfig(batch_size=5,
                                                                                     prefix_batch_size=2)
                                                               ).score(queries, docs)
    assert memo.hits == 2 * groups
    # a budget below one group's cache: nothing kept, scores unchanged
    small = PrefixMemo(min(cache_bytes(c) for c in memo._store.values()) - 1)
    assert QueryLikelihoodScorer(tiny_lm, config, prefix_memo=small).score(queries, docs) == want
    assert len(small) == 0 and small.bytes == 0
    with pytest.raises(ValueError):
        PrefixMemo(-1)


def test_prefix_memo_keys_a_group_by_its_documents_in_order(tiny_lm):
    """Two documents of one prefix length in one group, scored again in the other input order: the group's rows
    are in the other order, so the memo must not hand back the first call's cache (its rows are the other
    documents')."""
    from pyserini_qpeft.lm.memo import PrefixMemo

    config = ScorerConfig(batch_size=4, prefix_batch_size=2)
    x, y = Document("x", "", "alpha beta gamma delta"), Document("y", "", "delta gamma beta alpha")
    scorer = QueryLikelihoodScorer(tiny_lm, config, prefix_memo=PrefixMemo(1 << 30))
    assert len(scorer.doc_tokens(x).prefix) == len(scorer.doc_tokens(y).prefix)
    plain = QueryLikelihoodScorer(tiny_lm, config)
    queries = ["what is alpha", "what is delta"]
    first, second = [x, y, x, y], [y, x, y, x]
    assert scorer.score(queries * 2, first) == plain.score(queries * 2, first)
    assert scorer.score(queries * 2, second) == plain.score(queries * 2, second)


def test_the_memo_budget_from_free_memory(monkeypatch):
    """The default budget is a quarter of the device's free memory (CUDA: the allocator's free bytes, not the
    card's total; the host: MemAvailable), split between the processes sharing it; a group exactly filling what
    is left is kept."""
    from pathlib import Path

    from pyserini_qpeft.lm import memo as memo_module
    from pyserini_qpeft.lm.memo import PrefixMemo, free_bytes

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 << 30, 80 << 30))
    assert free_bytes("cuda:0") == 3 << 30
    assert PrefixMemo.for_device("cuda:0").max_bytes == int((3 << 30) * memo_module.DEFAULT_SHARE)
    if Path("/proc/meminfo").is_file():
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemAvailable:"))
        assert abs(free_bytes("cpu") - kb * 1024) < 256 << 20  # the same reading, moments apart
    monkeypatch.setattr(memo_module, "free_bytes", lambda device: 8 << 30)
    assert PrefixMemo.for_device("cpu", processes=4).max_bytes == int((8 << 30) * memo_module.DEFAULT_SHARE / 4)
    assert PrefixMemo.for_device("cpu", gigabytes=0).max_bytes == 0

    class Layer:
        keys, values = torch.zeros(4), torch.zeros(4)  # 32 bytes

    class Cache:
        layers = [Layer()]

    exact = PrefixMemo(64)
    assert exact.put("a", Cache()) and exact.put("b", Cache()) and not exact.put("c", Cache())
    assert len(exact) == 2 and exact.bytes == 64


def test_scoring_rate_times_fresh_prefixes_of_the_asked_length(tiny_lm):
    from pyserini_qpeft.lm.throughput import scoring_rate, synthetic_passage

    scorer = QueryLikelihoodScorer(tiny_lm, ScorerConfig(max_passage_tokens=24))
    passages = [scorer.doc_tokens(Document(f"d{i}", "", synthetic_passage(i, 48))).passage for i in range(6)]
    assert all(len(p) == 24 for p in passages) and len(set(passages)) == 6  # cut to the budget, each one distinct
    assert scoring_rate(tiny_lm, 24, pairs=3, rounds=2, warmup=1) > 0
    for bad in ({"pairs": 0}, {"rounds": 0}, {"warmup": -1}):
        with pytest.raises(ValueError, match="pairs and rounds must be >= 1"):
            scoring_rate(tiny_lm, 24, **bad)
