"""Other Hugging Face causal LM families than Llama: the scorer's fast path (prefix cache, left padding, logits at
query positions only) equals the model's own full forward, hints and LMORT's early-stopping layer states work, GPU
batch sizing reads the real KV cache size, and an LM head whose post-processing is unknown is refused instead of
scored wrongly."""
from __future__ import annotations

import pytest
import torch

from pyserini_qpeft.errors import ModelError
from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
from pyserini_qpeft.lm.memory import ModelShape
from pyserini_qpeft.lm.scoring import QueryLikelihoodScorer, ScorerConfig
from pyserini_qpeft.lmort.states import layer_token_states, tokenize
from pyserini_qpeft.qpeft.module import QPeftConfig, build_module
from test_scoring import PAIRS, reference_score

H = 32
SMALL = dict(num_hidden_layers=2, num_attention_heads=4)
LLAMA_LIKE = dict(hidden_size=H, intermediate_size=2 * H, num_key_value_heads=2, **SMALL)
# family -> (config class name, its tiny arguments), set so that what differs from Llama bites: the logits'
# post-processing (gemma2/3 soft-cap at 0.3, random tiny logits being ~0.1-1; cohere scales by 0.25, granite divides
# by 4) and sliding-window attention (mistral, qwen2, gemma2/3: a window of 8 tokens, shorter than every prompt).
FAMILIES = {
    "gpt2": ("GPT2Config", dict(n_embd=H, n_layer=2, n_head=4, n_positions=256)),
    "gpt_bigcode": ("GPTBigCodeConfig", dict(n_embd=H, n_layer=2, n_head=4, n_positions=256)),
    "qwen2": ("Qwen2Config", dict(LLAMA_LIKE, use_sliding_window=True, sliding_window=8, max_window_layers=0)),
    "qwen3": ("Qwen3Config", dict(LLAMA_LIKE, head_dim=8)),
    "mistral": ("MistralConfig", dict(LLAMA_LIKE, sliding_window=8)),
    "olmo2": ("Olmo2Config", LLAMA_LIKE),
    "stablelm": ("StableLmConfig", LLAMA_LIKE),
    "phi3": ("Phi3Config", LLAMA_LIKE),
    "falcon": ("FalconConfig", dict(hidden_size=H, **SMALL)),
    "gemma": ("GemmaConfig", dict(LLAMA_LIKE, head_dim=8)),
    "gemma3": ("Gemma3TextConfig", dict(LLAMA_LIKE, head_dim=8, sliding_window=8, final_logit_softcapping=0.3)),
    "gemma4": ("Gemma4TextConfig", dict(LLAMA_LIKE, head_dim=8, sliding_window=8, hidden_size_per_layer_input=0,
                                        num_kv_shared_layers=0)),
    # Gemma 3 4B+ checkpoints load as Gemma3ForConditionalGeneration (a text model inside a multimodal one)
    "gemma3-multimodal": ("Gemma3Config", dict(
        text_config=dict(LLAMA_LIKE, head_dim=8, sliding_window=8),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=28, patch_size=14),
        mm_tokens_per_image=4, image_token_index=5, boi_token_index=6, eoi_token_index=7)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=H, intermediate_size=2 * H, **SMALL)),
    "opt": ("OPTConfig", dict(hidden_size=H, ffn_dim=2 * H, word_embed_proj_dim=H, max_position_embeddings=256,
                              **SMALL)),
    "phi": ("PhiConfig", dict(hidden_size=H, intermediate_size=2 * H, **SMALL)),
    "bloom": ("BloomConfig", dict(hidden_size=H, n_layer=2, n_head=4)),
    "gemma2": ("Gemma2Config", dict(LLAMA_LIKE, head_dim=8, sliding_window=8, final_logit_softcapping=0.3)),
    "cohere": ("CohereConfig", dict(LLAMA_LIKE, logit_scale=0.25)),
    "granite": ("GraniteConfig", dict(LLAMA_LIKE, logits_scaling=4.0, embedding_multiplier=3.0)),
}


def tiny_family(root, tokenizer_path, family: str, dtype: str = "fp32",
                spec: tuple[str, dict] | None = None) -> FrozenLM:
    """A tiny random model of ``family`` (or of ``spec``: config class name, arguments) with the shared tiny tokenizer,
    saved and loaded like any HF folder."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    name, kwargs = spec or FAMILIES[family]
    if not hasattr(transformers, name):  # setup.py allows older releases than some families
        pytest.skip(f"transformers {transformers.__version__} has no {name}")
    tokens = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    if "text_config" in kwargs:  # a multimodal config: the tokens belong to its text model
        kwargs, tokens = dict(kwargs, text_config={**kwargs["text_config"], **tokens}), {}
    config = getattr(transformers, name)(**tokens, **kwargs)
    torch.manual_seed(0)
    folder = root / family
    if not folder.exists():
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        tok.save_pretrained(folder)
    return FrozenLM.load(LMConfig(model=str(folder), device="cpu", dtype=dtype))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_scores_hints_and_layer_states(family, tiny_lm_path, tmp_path):
    lm = tiny_family(tmp_path, tiny_lm_path, family)
    queries, docs = (list(x) for x in zip(*PAIRS))
    want = [reference_score(lm, q, d) for q, d in PAIRS]
    assert max(want) - min(want) > 0.01  # the pairs are told apart: a wrong score would show
    for config in (ScorerConfig(batch_size=3, prefix_batch_size=2), ScorerConfig(batch_size=4, cache_prefixes=False)):
        got = QueryLikelihoodScorer(lm, config).score(queries, docs)
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5, config

    torch.manual_seed(0)
    module = build_module(lm, QPeftConfig(variant="retr", top_k=4))
    with_hints = []
    for cached in (True, False):
        module.zero_grad()
        scorer = QueryLikelihoodScorer(lm, ScorerConfig(cache_prefixes=cached), hint_module=module)
        scores = scorer.forward(scorer.encode(queries[:6], docs[:6]))
        (-scores.mean()).backward()
        assert all(p.grad is not None for p in module.parameters() if p.requires_grad)
        with_hints.append(scores.detach())
    assert (with_hints[0] - with_hints[1]).abs().max().item() < 1e-5

    # GPU batch sizing (lm/memory.py) reads the KV cache's size from the config: it must match the cache built
    shape = ModelShape.of(lm)
    ids = torch.arange(5, 38).reshape(3, 11)
    cache = QueryLikelihoodScorer(lm).engine.prefix_cache(ids, torch.ones_like(ids))
    per_token = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers) / ids.numel()
    assert per_token == 2 * shape.layers * shape.kv_heads * shape.head_dim

    # bf16 rounds the logits before or after the post-processing: the head check must still accept the model
    assert tiny_family(tmp_path, tiny_lm_path, family, dtype="bf16").logit_head.scale == lm.logit_head.scale

    batch = tokenize(lm, ["the cat sat on the mat", "aspirin"], 16, "left")
    early = layer_token_states(lm, batch["input_ids"], batch["attention_mask"], [0, 1])
    full = layer_token_states(lm, batch["input_ids"], batch["attention_mask"], [0, 1, lm.num_layers])
    real = batch["attention_mask"].bool()
    for layer in (0, 1):
        assert torch.equal(early[layer][real], full[layer][real]), layer


def test_unknown_logit_post_processing_is_refused(tiny_lm_path, tmp_path):
    lm = tiny_family(tmp_path, tiny_lm_path, "cohere")
    assert lm.logit_head.scale == 0.25
    lm = tiny_family(tmp_path / "again", tiny_lm_path, "cohere")
    lm.model.config.logit_scale = 1.0  # the model still scales by 0.25: a post-processing the config does not name
    with pytest.raises(ModelError, match="post-processes its logits"):
        QueryLikelihoodScorer(lm).score(["what causes lung cancer"], [PAIRS[0][1]])


def test_a_bidirectional_model_is_refused_as_not_causal(tiny_lm_path, tmp_path):
    """A BERT LM head loads as a 'causal LM' but sees later tokens: refused for what it is (exit 6), not blamed on
    an unknown logit post-processing."""
    import shutil

    from transformers import AutoTokenizer, BertConfig, BertLMHeadModel

    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    torch.manual_seed(0)
    BertLMHeadModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=256)).save_pretrained(tmp_path / "bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_lm_path / name).exists():
            shutil.copy(tiny_lm_path / name, tmp_path / "bert" / name)
    lm = FrozenLM.load(LMConfig(model=str(tmp_path / "bert"), device="cpu", dtype="fp32"))
    with pytest.raises(ModelError, match="is not a causal LM"):
        QueryLikelihoodScorer(lm).score(["what causes lung cancer"], [PAIRS[0][1]])


@pytest.mark.parametrize("family", ["Gemma3nTextConfig", "Gemma4TextConfig"])
def test_per_layer_input_models_score_but_take_no_hints(family, tiny_lm_path, tmp_path):
    """Gemma 3n / small Gemma 4 also embed each token id once per layer. Plain query likelihood (UPR) scores them as
    their own forward does, LMORT's layer states work, and a hint module (no token id to look up) is refused."""
    lm = tiny_family(tmp_path, tiny_lm_path, family, spec=(family, dict(
        LLAMA_LIKE, head_dim=8, hidden_size_per_layer_input=8, num_kv_shared_layers=0, vocab_size_per_layer_input=512)))
    queries, docs = (list(x) for x in zip(*PAIRS))
    want = [reference_score(lm, q, d) for q, d in PAIRS]
    got = QueryLikelihoodScorer(lm, ScorerConfig(batch_size=3, prefix_batch_size=2)).score(queries, docs)
    assert max(want) - min(want) > 0.01 and max(abs(a - b) for a, b in zip(got, want)) < 1e-5
    with pytest.raises(ModelError, match="per-layer inputs"):
        QueryLikelihoodScorer(lm, hint_module=build_module(lm, QPeftConfig(variant="retr", top_k=4)))
    batch = tokenize(lm, ["the cat sat on the mat"], 16)
    assert layer_token_states(lm, batch["input_ids"], batch["attention_mask"], [1])[1].shape[-1] == H


def sentencepiece_style_lm(root, kind: str) -> FrozenLM:
    """A tiny Llama with a SentencePiece-style tokenizer: words carry a leading "▁", newlines stand alone, byte
    fallback; ``llama2`` = transformers' legacy Llama 2 / Mistral v0.1 pipeline (``Prepend("▁")`` normalizer, no
    pre-tokenizer), ``metaspace`` = the current one (``Metaspace``, prepended to the first section only)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from conftest import TOY_TEXTS

    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # trained within words and with newlines alone, as SentencePiece pieces are
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"),
                                                 pre_tokenizers.Split(Regex("▁[^▁\n]*|[^▁\n]+"), behavior="isolated")])
    specials = ["<unk>", "<s>", "</s>", "<pad>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(TOY_TEXTS * 5 + ["Passage: Please write a question based on this passage.\nQuestion:\n"] * 3,
                            trainer=trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False))
    if kind == "llama2":
        tok.pre_tokenizer = None
    else:
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    torch.manual_seed(0)
    folder = root / kind
    LlamaForCausalLM(LlamaConfig(vocab_size=len(fast), **LLAMA_LIKE)).save_pretrained(folder)
    fast.save_pretrained(folder)
    return FrozenLM.load(LMConfig(model=str(folder), device="cpu", dtype="fp32"))


@pytest.mark.parametrize("kind", ["llama2", "metaspace"])
def test_sentencepiece_style_tokenizers_score_the_joined_prompt(kind, tmp_path):
    """Such tokenizers mark the start of every string as a word start: tokenized piece by piece, the prompt had a
    "▁" the joined text does not have before "Question:" and before the query. The scorer's pieces now equal the
    joined prompt's tokens, and its scores the full forward's."""
    from test_scoring import reference_ids

    lm = sentencepiece_style_lm(tmp_path, kind)
    for config in (ScorerConfig(), ScorerConfig(instruction="Read the passage.")):
        scorer = QueryLikelihoodScorer(lm, config)
        assert all(scorer.prompt_ids(q, d) == reference_ids(lm, q, d, config) for q, d in PAIRS), config
    queries, docs = (list(x) for x in zip(*PAIRS))
    got = QueryLikelihoodScorer(lm).score(queries, docs)
    assert max(abs(a - b) for a, b in zip(got, [reference_score(lm, q, d) for q, d in PAIRS])) < 1e-5


def test_a_model_that_ships_its_own_code_loads_only_when_allowed_and_scores_as_its_weights(
        tiny_lm, tiny_lm_path, remote_code_lm_path, toy_beir, tmp_path, monkeypatch):
    """`--trust-remote-code` (transformers' trust_remote_code): off by default, with an error that names the flag;
    on, the model's own classes load (here Llama's under another model type: the scores must equal the Llama's), for
    the library (LMConfig, or the environment variable the flag sets) and for the CLI."""
    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.lm.backbone import TRUST_REMOTE_CODE_ENV

    monkeypatch.setenv(TRUST_REMOTE_CODE_ENV, "")  # restored after the test: the CLI flag below sets it
    with pytest.raises(ModelError, match="runs code shipped with the model.*--trust-remote-code"):
        FrozenLM.load(LMConfig(model=str(remote_code_lm_path), device="cpu", dtype="fp32"))
    assert LMConfig().trust_remote_code is False
    remote = FrozenLM.load(LMConfig(model=str(remote_code_lm_path), device="cpu", dtype="fp32", trust_remote_code=True))
    assert type(remote.model).__name__ == "TinyRemoteForCausalLM"
    queries, docs = [q for q, _ in PAIRS], [d for _, d in PAIRS]
    assert (QueryLikelihoodScorer(remote, ScorerConfig()).score(queries, docs)
            == QueryLikelihoodScorer(tiny_lm, ScorerConfig()).score(queries, docs))
    monkeypatch.setenv(TRUST_REMOTE_CODE_ENV, "1")
    assert LMConfig().trust_remote_code is True
    from pyserini_qpeft.search.encoders import MiniLMEncoder  # `minilm:PATH` sentence encoders follow the switch

    assert type(MiniLMEncoder(remote_code_lm_path).model).__name__ == "TinyRemoteModel"
    monkeypatch.setenv(TRUST_REMOTE_CODE_ENV, "")
    with pytest.raises(ModelError, match="runs code shipped with the model"):
        MiniLMEncoder(remote_code_lm_path)

    run = tmp_path / "bm25.trec"
    run.write_text("".join(f"{q} Q0 {d} {r} {10 - r} bm25\n" for q in ("q1", "q2") for r, d in
                           enumerate(("d1", "d2", "d3", "d4"), start=1)))

    def rerank(model, output, *extra):
        return CliRunner().invoke(cli, ["rerank", "--run", str(run), "--topics", str(toy_beir / "queries.jsonl"),
                                        "--corpus", str(toy_beir / "corpus.jsonl"), "--output", str(output),
                                        "--reranker", "upr", "--model", str(model), "--device", "cpu", "--dtype",
                                        "fp32", "--rerank-depth", "4", "-q", *extra])

    refused = rerank(remote_code_lm_path, tmp_path / "refused.trec")
    assert refused.exit_code == 6 and "--trust-remote-code" in refused.output, refused.output
    assert not (tmp_path / "refused.trec").exists()
    assert rerank(tiny_lm_path, tmp_path / "llama.trec").exit_code == 0
    allowed = rerank(remote_code_lm_path, tmp_path / "remote.trec", "--trust-remote-code")
    assert allowed.exit_code == 0, allowed.output
    assert (tmp_path / "remote.trec").read_bytes() == (tmp_path / "llama.trec").read_bytes()
    monkeypatch.setenv(TRUST_REMOTE_CODE_ENV, "")

    def encode(output, *extra):  # the dense side (frozen-lm / LMORT encoders) follows the same switch
        return CliRunner().invoke(cli, ["encode", "--encoder", "frozen-lm:1", "--corpus", str(toy_beir / "corpus.jsonl"),
                                        "--output", str(output), "--model", str(remote_code_lm_path), "--device",
                                        "cpu", "--dtype", "fp32", "--max-length", "16", "-q", *extra])

    refused = encode(tmp_path / "refused-index")
    assert refused.exit_code == 6 and "--trust-remote-code" in refused.output, refused.output
    allowed = encode(tmp_path / "index", "--trust-remote-code")
    assert allowed.exit_code == 0 and (tmp_path / "index" / "meta.json").is_file(), allowed.output



def test_budgets_past_the_models_context_are_refused_before_any_work(tiny_lm_path, toy_beir, tmp_path):
    """A model with 200 positions: a rerank whose longest prompt (passage + query budgets + template) cannot fit,
    an encode or LMORT budget past it, and a hint module whose hints overflow it exit 2 naming the limit and how
    much passage fits, before anything is written (a learned position table failed with an IndexError mid-run)."""
    import json
    import shutil

    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.errors import UsageError

    short = tmp_path / "short-context"
    shutil.copytree(tiny_lm_path, short)
    config = json.loads((short / "config.json").read_text())
    config["max_position_embeddings"] = 200
    (short / "config.json").write_text(json.dumps(config))
    run, topics = tmp_path / "run.trec", tmp_path / "topics.tsv"
    run.write_text("q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\n")
    topics.write_text("q1\twhat causes lung cancer\n")
    args = ["rerank", "--run", str(run), "--topics", str(topics), "--corpus", str(toy_beir), "--reranker", "upr",
            "--model", str(short), "--device", "cpu", "--dtype", "fp32", "-q"]
    result = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "out.trec")])  # 128 passage tokens
    assert result.exit_code == 2, result.output
    assert "more than the 200 positions the model has; lower --max-passage-tokens (at most" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec", "short-context", "topics.tsv", "toy"]
    lm = FrozenLM.load(LMConfig(model=str(short), device="cpu", dtype="fp32"))
    fits = int(result.output.split("(at most ")[1].split()[0])
    small = ScorerConfig(max_passage_tokens=fits, max_query_tokens=64)
    QueryLikelihoodScorer(lm, small)  # exactly fits
    with pytest.raises(UsageError, match="template and hint tokens"):  # Q-PEFT-A adds a hint per query token
        QueryLikelihoodScorer(lm, small, hint_module=build_module(lm, QPeftConfig(variant="attn")))
    ok = CliRunner().invoke(cli, [*args, "--max-passage-tokens", str(fits), "--output", str(tmp_path / "ok.trec")])
    assert ok.exit_code == 0, ok.output
    encode = CliRunner().invoke(cli, ["encode", "--encoder", "frozen-lm:1", "--max-length", "201", "--corpus",
                                      str(toy_beir), "--model", str(short), "--output", str(tmp_path / "idx"),
                                      "--device", "cpu", "--dtype", "fp32", "-q"])
    assert encode.exit_code == 2 and "--max-length = 201 tokens, more than the 200 positions" in encode.output
    assert not (tmp_path / "idx").exists()
