"""GPU batch sizing from device memory (lm.memory), checked on the CPU with injected memory sizes."""
from __future__ import annotations

import dataclasses

import pytest

from pyserini_qpeft.lm.memory import (MAX_DOCS, MAX_PAIRS, ModelShape, document_bytes, fit_to_device,
                                      gpu_batch_sizes, pair_bytes)
from pyserini_qpeft.lm.scoring import ScorerConfig

GIB = 1 << 30
# SmolLM2-135M in bf16 (config.json of HuggingFaceTB/SmolLM2-135M-Instruct)
SMOLLM2 = ModelShape(layers=30, kv_heads=3, head_dim=64, hidden=576, intermediate=1536, vocab=49152,
                     bytes_per_value=2, model_bytes=134_515_008 * 2)


def test_shape_of_a_loaded_model(tiny_lm):
    shape = ModelShape.of(tiny_lm)
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.hidden) == (2, 2, 8, 32)
    assert shape.vocab == tiny_lm.vocab_size and shape.bytes_per_value == 4
    assert shape.intermediate == tiny_lm.text_config.intermediate_size == 64  # read, not the 4 x hidden fallback
    assert shape.model_bytes == tiny_lm.num_parameters() * 4


def test_smollm2_on_an_h200_by_hand():
    """The formula, evaluated by hand for SmolLM2 (bf16) with the default 128-token passages and 64-token queries."""
    prompt, query = 128 + 32, 64
    kv = 2 * 30 * 3 * 64 * (prompt + query + 16) * 2 * 2
    head = 3 * query * 49152 * 4
    act = (query + 16) * (576 + 1536) * 2 * 4
    assert pair_bytes(SMOLLM2, prompt, query) == kv + head + act
    pairs, docs = gpu_batch_sizes(SMOLLM2, ScorerConfig(), 141 * GIB)
    room = 0.5 * 141 * GIB - SMOLLM2.model_bytes
    assert pairs == int(room / 2 // (kv + head + act)) // 8 * 8 and 512 <= pairs <= MAX_PAIRS
    assert docs == MAX_DOCS  # a document's KV cache is small next to the budget
    assert pairs > 10 * ScorerConfig().batch_size  # the CPU default would leave the GPU idle
    # a document's prefix forward: its KV cache (no query) and four activations of every prompt token
    assert document_bytes(SMOLLM2, prompt) == 2 * 30 * 3 * 64 * prompt * 2 + prompt * (576 + 1536) * 2 * 4


def test_the_whole_card_may_be_asked_for_and_the_caps_bind():
    """``budget=1.0`` is allowed (``0 < budget <= 1``); a small model on a big card gets both caps."""
    config = ScorerConfig()
    assert gpu_batch_sizes(SMOLLM2, config, 80 * GIB, budget=1.0)[0] > gpu_batch_sizes(SMOLLM2, config, 80 * GIB)[0]
    with pytest.raises(ValueError):
        gpu_batch_sizes(SMOLLM2, config, 80 * GIB, budget=1.01)
    tiny = ModelShape(layers=2, kv_heads=2, head_dim=8, hidden=32, intermediate=64, vocab=384, bytes_per_value=4,
                      model_bytes=1 << 20)
    assert gpu_batch_sizes(tiny, config, 141 * GIB) == (MAX_PAIRS, MAX_DOCS)
    assert MAX_PAIRS != MAX_DOCS


def test_sizes_follow_memory_precision_and_budget():
    config = ScorerConfig()
    small, big = gpu_batch_sizes(SMOLLM2, config, 16 * GIB), gpu_batch_sizes(SMOLLM2, config, 80 * GIB)
    assert small[0] < big[0] and all(n % 8 == 0 for n in (*small, *big))
    fp32 = dataclasses.replace(SMOLLM2, bytes_per_value=4, model_bytes=SMOLLM2.model_bytes * 2)
    assert gpu_batch_sizes(fp32, config, 80 * GIB)[0] < big[0]
    longer = dataclasses.replace(config, max_passage_tokens=512)
    assert gpu_batch_sizes(SMOLLM2, longer, 80 * GIB)[0] < big[0]
    assert gpu_batch_sizes(SMOLLM2, config, 80 * GIB, budget=0.25)[0] < big[0]
    assert gpu_batch_sizes(SMOLLM2, config, 1 << 20) == (1, 1)  # no room: one at a time, never zero
    assert document_bytes(SMOLLM2, 160) < pair_bytes(SMOLLM2, 160, 64)
    with pytest.raises(ValueError):
        gpu_batch_sizes(SMOLLM2, config, 0)


def test_a_model_larger_than_half_the_card_still_gets_batches():
    """Llama-3-8B-class in bf16 (16 GB) on a 24 GiB card: half the card less the model is nothing, so the batches
    get a quarter of the ~8 GiB the model leaves (they were 1 and 1); a model under a third of the card is sized
    by the first rule alone (the default model's batches as before)."""
    llama8b = ModelShape(layers=32, kv_heads=8, head_dim=128, hidden=4096, intermediate=14336, vocab=128256,
                         bytes_per_value=2, model_bytes=8_030_261_248 * 2)
    config = ScorerConfig()
    room = 0.25 * (24 * GIB - llama8b.model_bytes)
    pairs, docs = gpu_batch_sizes(llama8b, config, 24 * GIB)
    assert pairs == int(room / 2 // pair_bytes(llama8b, 128 + 32, 64)) >= 4
    assert docs == int(room / 2 // document_bytes(llama8b, 128 + 32)) // 8 * 8 >= 8
    assert gpu_batch_sizes(llama8b, config, 14 * GIB) == (1, 1)  # does not fit at all: one at a time
    third = dataclasses.replace(SMOLLM2, model_bytes=24 * GIB // 3 - GIB)
    first_rule = 0.5 * 24 * GIB - third.model_bytes
    assert gpu_batch_sizes(third, config, 24 * GIB)[0] == int(first_rule / 2 // pair_bytes(third, 160, 64)) // 8 * 8


def test_fit_to_device_only_replaces_cpu_defaults_on_cuda(tiny_lm, monkeypatch):
    import torch

    config = ScorerConfig()
    assert fit_to_device(tiny_lm, config) is config  # CPU: unchanged

    class Props:
        total_memory = 80 * GIB

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props)
    monkeypatch.setattr(tiny_lm, "device", "cuda:0")
    fitted = fit_to_device(tiny_lm, config)
    assert (fitted.batch_size, fitted.prefix_batch_size) == gpu_batch_sizes(ModelShape.of(tiny_lm), config, 80 * GIB)
    assert dataclasses.replace(fitted, batch_size=64, prefix_batch_size=32) == config  # nothing else changes
    explicit = dataclasses.replace(config, batch_size=16)  # a config built by hand: its pair batch is kept
    assert fit_to_device(tiny_lm, explicit) == dataclasses.replace(fitted, batch_size=16)
    both = dataclasses.replace(config, batch_size=16, prefix_batch_size=4)
    assert fit_to_device(tiny_lm, both) is both
    # a batch size the user gave at the CPU default's value (--batch-size-rerank 64) is kept too
    assert fit_to_device(tiny_lm, config, given=("batch_size",)) == dataclasses.replace(fitted, batch_size=64)


def test_an_explicit_batch_size_rerank_is_kept_on_a_gpu(tiny_lm, monkeypatch):
    """make_reranker(batch_size=64) -- the flag at the CPU default's value -- is not resized on CUDA; without the
    flag the batches are sized. (The LM stays on the CPU for the scorer; the sizing sees it on a CUDA card.)"""
    import torch

    from pyserini_qpeft.lm import memory
    from pyserini_qpeft.rerank.pipeline import make_reranker

    class Props:
        total_memory = 80 * GIB

    class OnCuda:
        device = "cuda:0"

        def __getattr__(self, name):
            return getattr(tiny_lm, name)

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props)
    fit = memory.fit_to_device
    monkeypatch.setattr(memory, "fit_to_device", lambda lm, config, given=(): fit(OnCuda(), config, given))
    sized = gpu_batch_sizes(ModelShape.of(tiny_lm), ScorerConfig(), 80 * GIB)
    for name in ("upr", "upr-instruct"):
        given = make_reranker(name, None, None, "cpu", "fp32", batch_size=64, lm=tiny_lm).config
        assert (given.batch_size, given.prefix_batch_size) == (64, sized[1])
        default = make_reranker(name, None, None, "cpu", "fp32", lm=tiny_lm).config
        assert (default.batch_size, default.prefix_batch_size) == sized
