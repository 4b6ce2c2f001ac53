"""Several query-likelihood rerankers of one run in one pass (`rerank --also-rerank`): each document group's prefix
forward runs once for all of them, and every reranker's run is byte-identical to its own rerank, resumes included."""
from __future__ import annotations

import copy
import logging

import pytest
from click.testing import CliRunner

from conftest import TOY_CORPUS, TOY_QUERIES, write_beir
from pyserini_qpeft.cli.main import cli
from pyserini_qpeft.data import Document
from pyserini_qpeft.lm.scoring import ScorerConfig, passage_text
from pyserini_qpeft.qpeft.module import QPeftConfig, build_module
from pyserini_qpeft.rerank import DictDocStore, LMReranker, UPRReranker, rerank_together
from pyserini_qpeft.types import Hit, Query, Run

DOCS = DictDocStore({d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS})
QUERIES = [Query(q["_id"], q["text"]) for q in TOY_QUERIES]
DOCIDS = [d["_id"] for d in TOY_CORPUS]
CONFIG = ScorerConfig(batch_size=2, prefix_batch_size=2)  # several groups, some with several suffix batches


def first_stage() -> Run:
    return Run({q.qid: [Hit(d, 10.0 - i) for i, d in enumerate(DOCIDS[k:] + DOCIDS[:k])]
                for k, q in enumerate(QUERIES)}, tag="bm25")


def rerankers(lm, config: ScorerConfig = CONFIG) -> list[LMReranker]:
    """UPR, Q-PEFT-R and Q-PEFT-A (random modules: their scores differ from UPR's) on one loaded LM."""
    return [UPRReranker(lm, config),
            LMReranker(lm, config, build_module(lm, QPeftConfig(variant="retr", top_k=3)), name="qpeft-retr"),
            LMReranker(lm, config, build_module(lm, QPeftConfig(variant="attn", seed=3)), name="qpeft-attn")]


def count_prefix_forwards(monkeypatch, reranker: LMReranker) -> list[int]:
    calls: list[int] = []
    engine = reranker.scorer.engine
    original = engine.prefix_cache

    def counted(ids, mask):
        calls.append(int(ids.shape[0]))
        return original(ids, mask)

    monkeypatch.setattr(engine, "prefix_cache", counted)
    return calls


def written(run: Run, path) -> bytes:
    run.write(path)
    return path.read_bytes()


def test_one_pass_is_byte_identical_to_separate_reranks_and_runs_each_prefix_once(tiny_lm, tmp_path, monkeypatch):
    alone = [written(r.rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False), tmp_path / f"alone{k}")
             for k, r in enumerate(rerankers(tiny_lm))]
    assert len(set(alone)) == 3  # the three rerankers really rank differently

    together = rerankers(tiny_lm)
    calls = [count_prefix_forwards(monkeypatch, r) for r in together]
    runs = rerank_together(together, QUERIES, first_stage(), DOCS, depth=5, progress=False)
    assert [written(run, tmp_path / f"together{k}") for k, run in enumerate(runs)] == alone
    plan = together[0].scorer.plan([q.text for q in QUERIES for _ in range(5)],
                                   [DOCS.get(h.docid) for q in QUERIES for h in first_stage()[q.qid][:5]])
    assert len(calls[0]) == len(plan) > 1 and sum(calls[0]) == len(DOCIDS)  # each document's prefix once ...
    assert calls[1] == calls[2] == []  # ... and never again for the other two


class Killed(Exception):
    pass


def test_interrupted_pass_resumes_every_reranker_byte_identically(tiny_lm, tmp_path, monkeypatch):
    alone = [written(r.rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False), tmp_path / f"alone{k}")
             for k, r in enumerate(rerankers(tiny_lm))]
    states = [tmp_path / f"state{k}.tsv" for k in range(3)]
    broken = rerankers(tiny_lm)
    engine = broken[2].scorer.engine
    original, seen = engine.forward_suffix, []

    def dies(*args, **kwargs):  # the third reranker's 4th suffix batch never finishes
        seen.append(1)
        if len(seen) == 4:
            raise Killed()
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "forward_suffix", dies)
    with pytest.raises(Killed):
        rerank_together(broken, QUERIES, first_stage(), DOCS, depth=5, progress=False, state_paths=states)
    saved = [s.read_text().count("#done\n") for s in states]
    # what each finished was kept (scores are read back one batch late, so the kill also loses batch 3)
    assert saved[0] == saved[1] > saved[2] == 2

    resumed = rerankers(tiny_lm)
    runs = rerank_together(resumed, QUERIES, first_stage(), DOCS, depth=5, progress=False, state_paths=states)
    assert [written(run, tmp_path / f"resumed{k}") for k, run in enumerate(runs)] == alone


def test_rerankers_that_cannot_share_run_one_after_another(tiny_lm, tmp_path, caplog):
    other = LMReranker(tiny_lm, ScorerConfig(batch_size=2, prefix_batch_size=2, max_passage_tokens=7),
                       build_module(tiny_lm, QPeftConfig(variant="retr", top_k=3)), name="short")
    upr = UPRReranker(tiny_lm, CONFIG)
    assert upr.scorer.prefix_mismatch(other.scorer) == "max_passage_tokens 128 vs 7"
    assert "loaded LM" in upr.scorer.prefix_mismatch(UPRReranker(copy.copy(tiny_lm), CONFIG).scorer)
    alone = [written(r.rerank(QUERIES, first_stage(), DOCS, depth=4, progress=False), tmp_path / f"alone{k}")
             for k, r in enumerate((upr, other))]
    with caplog.at_level(logging.WARNING):
        runs = rerank_together([upr, other], QUERIES, first_stage(), DOCS, depth=4, progress=False)
    assert "cannot share document prefixes (max_passage_tokens 128 vs 7)" in caplog.text
    assert [written(run, tmp_path / f"together{k}") for k, run in enumerate(runs)] == alone


def test_cli_also_rerank_writes_each_run_as_its_own_rerank_would(tiny_lm, tiny_lm_path, tmp_path):
    from pyserini_qpeft.qpeft.checkpoint import save_checkpoint

    config = QPeftConfig(variant="retr", top_k=3)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, ScorerConfig())
    root = write_beir(tmp_path / "toy")
    run = tmp_path / "bm25.trec"
    first_stage().write(run)
    common = ["rerank", "--run", str(run), "--topics", str(root / "queries.jsonl"), "--corpus", str(root),
              "--rerank-depth", "4", "--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "-q"]
    for name, extra in (("upr", []), ("qpeft", ["--reranker-checkpoint", str(ckpt)])):
        done = CliRunner().invoke(cli, [*common, "--reranker", name.replace("qpeft", "qpeft-retr"), *extra,
                                        "--output", str(tmp_path / f"{name}.trec")])
        assert done.exit_code == 0, done.output
    both = CliRunner().invoke(cli, [*common, "--reranker", "upr", "--output", str(tmp_path / "a.trec"),
                                    "--also-rerank", "qpeft-retr", str(ckpt), str(tmp_path / "b.trec")])
    assert both.exit_code == 0, both.output
    assert both.stdout.split() == [str(tmp_path / "a.trec"), str(tmp_path / "b.trec")]
    assert (tmp_path / "a.trec").read_bytes() == (tmp_path / "upr.trec").read_bytes()
    assert (tmp_path / "b.trec").read_bytes() == (tmp_path / "qpeft.trec").read_bytes()
    assert not list(tmp_path.glob("*.partial"))

    from pyserini_qpeft.rerank.flags import ALSO_RERANK_EXCLUDES
    from pyserini_qpeft.repro.execute import _shareable_key

    values = {"--shard-id": "0", "--shard-num": "2", "--merge-shards": "2", "--engine": "ray",
              "--output-jsonl": str(tmp_path / "c.jsonl"), "--interpolate": "0.5"}
    assert set(values) == set(ALSO_RERANK_EXCLUDES)
    for flags in (["--interpolate"], ["--shard-id", "--shard-num"], ["--merge-shards"], ["--engine"],
                  ["--output-jsonl"]):
        extra = [a for flag in flags for a in (flag, values[flag])]
        bad = CliRunner().invoke(cli, [*common, "--reranker", "upr", "--output", str(tmp_path / "c.trec"),
                                       "--also-rerank", "upr", "-", str(tmp_path / "d.trec"), *extra])
        assert bad.exit_code == 2 and "--also-rerank" in bad.output, bad.output
        assert all(flag in bad.output for flag in flags), bad.output
        # repro shares no pass with such a command
        assert _shareable_key([*common, "--reranker", "upr", "--output", "x.trec", *extra]) is None
    assert _shareable_key([*common, "--reranker", "upr", "--output", "x.trec", "--engine", "local"]) is None
    assert _shareable_key([*common, "--reranker", "upr", "--output", "x.trec"]) is not None
    # --engine local is the default: allowed with --also-rerank
    local = CliRunner().invoke(cli, [*common, "--reranker", "upr", "--output", str(tmp_path / "e.trec"), "--engine",
                                     "local", "--also-rerank", "upr", "-", str(tmp_path / "f.trec")])
    assert local.exit_code == 0, local.output
    same = CliRunner().invoke(cli, [*common, "--reranker", "upr", "--output", str(tmp_path / "c.trec"),
                                    "--also-rerank", "upr", "-", str(tmp_path / "c.trec")])
    assert same.exit_code == 3 and "--output and --also-rerank are the same file" in same.output, same.output


def test_a_hint_module_reading_more_of_the_passage_shares_the_lm_prefixes(tiny_lm, tmp_path, monkeypatch):
    """`train qpeft --hint-passage-tokens`: the hint module reads more of each passage than the LM's prompt holds.
    The prompt (so the shared prefix) stays the LM's, and the shared pass is byte-identical to its own rerank."""
    short = ScorerConfig(batch_size=2, prefix_batch_size=2, max_passage_tokens=8)
    wide = ScorerConfig(batch_size=2, prefix_batch_size=2, max_passage_tokens=8, hint_passage_tokens=64)
    module = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=3))

    def pair(config: ScorerConfig) -> list[LMReranker]:
        return [UPRReranker(tiny_lm, short), LMReranker(tiny_lm, config, copy.deepcopy(module), name="qpeft-retr")]

    lead, reader = pair(wide)
    docs = [DOCS.get(d) for d in DOCIDS]
    full = [reader.scorer.prompts.follow(reader.scorer.prompts.passage_lead + passage_text(d), literal=True)
            for d in docs]
    assert any(len(f) > 8 for f in full)  # some passage is cut for the LM ...
    for doc, ids in zip(docs, full):
        assert reader.scorer.doc_tokens(doc).prefix == lead.scorer.doc_tokens(doc).prefix  # ... the same prompt
        assert reader.scorer.doc_tokens(doc).passage == tuple(ids[:64])  # ... and the module reads all of it
    alone = [written(r.rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False), tmp_path / f"alone{k}")
             for k, r in enumerate(pair(wide))]
    cut = written(pair(short)[1].rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False), tmp_path / "cut")
    assert alone[1] != cut  # the text beyond the LM's passage changes the hints

    together = pair(wide)
    calls = [count_prefix_forwards(monkeypatch, r) for r in together]
    runs = rerank_together(together, QUERIES, first_stage(), DOCS, depth=5, progress=False)
    assert [written(run, tmp_path / f"together{k}") for k, run in enumerate(runs)] == alone
    assert sum(calls[0]) == len(DOCIDS) and calls[1] == []


def test_cli_train_refuses_a_hint_passage_for_the_prompt_variant(tmp_path):
    (tmp_path / "run.trec").write_text("")
    result = CliRunner().invoke(cli, ["train", "qpeft", "--variant", "prompt", "--dataset", "scifact",
                                      "--negatives", str(tmp_path / "run.trec"), "--output", str(tmp_path / "out"),
                                      "--hint-passage-tokens", "256"])
    assert result.exit_code == 2 and "--hint-passage-tokens" in result.output and "read no passage" in result.output
    assert not (tmp_path / "out").exists()
    # a flag this variant or loss does not read: a warning (it was recorded in the checkpoint unused)
    result = CliRunner().invoke(cli, ["train", "qpeft", "--variant", "attn", "--top-k", "8", "--temperature", "0.5",
                                      "--dataset", "nosuch-dataset", "--negatives", str(tmp_path / "run.trec"),
                                      "--output", str(tmp_path / "out")])
    assert "warning: --top-k applies to --variant retr only; --variant attn does not read it" in result.output
    assert "warning: --temperature applies to --loss listwise only; --loss hinge does not read it" in result.output
    # module settings that contradict each other: exit 2 before the corpus or the LM loads (were tracebacks, exit 1)
    for flags, message in ((["--variant", "attn", "--query-proj"], "query_proj applies to the retr variant only"),
                           (["--variant", "prompt", "--prompt-tokens", "4"], "prompt_tokens adds prompt vectors")):
        result = CliRunner().invoke(cli, ["train", "qpeft", *flags, "--dataset", "nosuch-dataset", "--negatives",
                                          str(tmp_path / "run.trec"), "--output", str(tmp_path / "out")])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_train_qpeft_refuses_a_hint_passage_for_the_prompt_variant(tiny_lm, tmp_path):
    """The same refusal through the Python API, before any step: a prompt-variant checkpoint would store a value
    nothing reads."""
    from pyserini_qpeft.qpeft.step import QPeftTrainConfig, train_qpeft

    config = QPeftConfig(variant="prompt", num_virtual_tokens=2)
    with pytest.raises(ValueError, match="read no passage"):
        train_qpeft(tiny_lm, build_module(tiny_lm, config), config,
                    ScorerConfig(max_passage_tokens=8, hint_passage_tokens=64), [], [object()], {},
                    QPeftTrainConfig(epochs=1), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_reranks_and_explains_with_its_own_base_model_by_default(tiny_lm, tiny_lm_path, tmp_path):
    """Without --model, `rerank` / `explain` (and `build_reranker` without ``lm``) load the LM the checkpoint was
    trained on (as `encode --encoder lmort:` does), not the packaged default; an explicit --model still wins
    (another one: exit 6, tested elsewhere)."""
    from pyserini_qpeft.qpeft.checkpoint import base_model_name, save_checkpoint

    config = QPeftConfig(variant="retr", top_k=3)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, ScorerConfig())
    assert base_model_name(ckpt) == str(tiny_lm_path) and base_model_name(tmp_path / "nothing") is None
    root = write_beir(tmp_path / "toy")
    run = tmp_path / "bm25.trec"
    first_stage().write(run)
    common = ["rerank", "--run", str(run), "--topics", str(root / "queries.jsonl"), "--corpus", str(root),
              "--rerank-depth", "4", "--device", "cpu", "--dtype", "fp32", "-q", "--reranker", "qpeft-retr",
              "--reranker-checkpoint", str(ckpt)]
    implied = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "implied.trec")])
    assert implied.exit_code == 0, implied.output
    given = CliRunner().invoke(cli, [*common, "--model", str(tiny_lm_path), "--output", str(tmp_path / "given.trec")])
    assert given.exit_code == 0, given.output
    assert (tmp_path / "implied.trec").read_bytes() == (tmp_path / "given.trec").read_bytes()
    explained = CliRunner().invoke(cli, ["explain", "--reranker-checkpoint", str(ckpt), "--query", "lung cancer",
                                         "--doc-text", "smoking causes lung cancer", "--device", "cpu", "--dtype",
                                         "fp32", "--json"])
    assert explained.exit_code == 0, explained.output
    from pyserini_qpeft.rerank import build_reranker

    assert build_reranker("qpeft-retr", checkpoint=ckpt).lm.model_id == str(tiny_lm_path)  # the Python API too
