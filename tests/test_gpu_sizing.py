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
    explicit = dataclasses.replace(config, batch_size=16)
    assert fit_to_device(tiny_lm, explicit) is explicit  # an explicit --batch-size-rerank is kept
