"""`--dtype auto` on the CPU: a cached matmul probe decides (timings injected here, no real measurement)."""
from __future__ import annotations

import json

import pytest

from pyserini_qpeft.lm.precision import BF16_MIN_SPEEDUP, decide, probe_cpu


class FakeTimer:
    """``timer(name) -> GFLOP/s`` from a table; counts calls."""

    def __init__(self, fp32: float, bf16: float):
        self.table = {"fp32": fp32, "bf16": bf16}
        self.calls: list[str] = []

    def __call__(self, name: str) -> float:
        self.calls.append(name)
        return self.table[name]


@pytest.mark.parametrize("fp32, bf16, expected", [
    (210.0, 860.0, "bf16"),    # AMD EPYC with avx512_bf16 (ENVIRONMENT.md)
    (230.0, 1800.0, "bf16"),   # Intel AMX
    (270.0, 143.0, "fp32"),    # Intel avx512_bf16 without AMX
    (131.0, 1.0, "fp32"),      # AVX2 only: bf16 is emulated
    (100.0, 100.0 * BF16_MIN_SPEEDUP, "bf16"),
    (100.0, 100.0 * BF16_MIN_SPEEDUP - 0.1, "fp32"),
])
def test_decision(fp32, bf16, expected, tmp_path):
    assert decide(fp32, bf16) == expected
    choice = probe_cpu(tmp_path / "probe.json", timer=FakeTimer(fp32, bf16), cpu="cpu-a", torch_version="2.13.0")
    assert choice.dtype == expected
    assert choice.ratio == pytest.approx(bf16 / fp32)


def test_cache_is_reused_then_invalidated_by_cpu_or_torch(tmp_path):
    cache = tmp_path / "precision" / "cpu-probe.json"
    fast = FakeTimer(200.0, 800.0)
    assert probe_cpu(cache, timer=fast, cpu="cpu-a", torch_version="2.13.0").dtype == "bf16"
    assert fast.calls == ["fp32", "bf16"]
    stored = json.loads(cache.read_text())
    assert stored["probes"][0]["cpu"] == "cpu-a" and stored["probes"][0]["bf16_gflops"] == 800.0

    # Same CPU and torch: the cache answers, nothing is measured (a slow timer would flip the choice).
    slow = FakeTimer(200.0, 10.0)
    assert probe_cpu(cache, timer=slow, cpu="cpu-a", torch_version="2.13.0").dtype == "bf16"
    assert slow.calls == []

    # Another CPU model: measured again, and both entries are kept.
    assert probe_cpu(cache, timer=slow, cpu="cpu-b", torch_version="2.13.0").dtype == "fp32"
    assert slow.calls == ["fp32", "bf16"]
    # Another torch version on the first CPU: measured again too.
    again = FakeTimer(200.0, 10.0)
    assert probe_cpu(cache, timer=again, cpu="cpu-a", torch_version="2.14.1").dtype == "fp32"
    assert again.calls == ["fp32", "bf16"]
    keys = {(p["cpu"], p["torch"]) for p in json.loads(cache.read_text())["probes"]}
    assert keys == {("cpu-a", "2.13.0"), ("cpu-b", "2.13.0"), ("cpu-a", "2.14.1")}


def test_corrupt_cache_is_measured_again(tmp_path):
    cache = tmp_path / "cpu-probe.json"
    cache.write_text("{not json")
    timer = FakeTimer(100.0, 400.0)
    assert probe_cpu(cache, timer=timer, cpu="c", torch_version="t").dtype == "bf16"
    assert timer.calls == ["fp32", "bf16"]
    assert json.loads(cache.read_text())["format"] == 1


def test_a_zero_fp32_rate_answers_fp32():
    """A timer (or a cache entry) reporting 0 fp32 GFLOP/s chooses fp32 instead of dividing by zero."""
    assert decide(0.0, 100.0) == "fp32"


def test_a_cache_of_another_format_or_a_damaged_entry_is_measured_again(tmp_path):
    cache = tmp_path / "cpu-probe.json"
    entry = {"cpu": "c", "torch": "t", "fp32_gflops": 100.0, "bf16_gflops": 400.0}
    cache.write_text(json.dumps({"format": 2, "probes": [entry]}))  # a later version's layout: not read
    timer = FakeTimer(100.0, 10.0)
    assert probe_cpu(cache, timer=timer, cpu="c", torch_version="t").dtype == "fp32"
    assert timer.calls == ["fp32", "bf16"]
    cache.write_text(json.dumps({"format": 1, "probes": [1, "x"]}))  # entries that are not records: skipped
    timer = FakeTimer(100.0, 10.0)
    assert probe_cpu(cache, timer=timer, cpu="c", torch_version="t").dtype == "fp32" and len(timer.calls) == 2
    cache.write_text(json.dumps({"format": 1, "probes": [{**entry, "fp32_gflops": "fast"}]}))
    timer = FakeTimer(100.0, 400.0)
    assert probe_cpu(cache, timer=timer, cpu="c", torch_version="t").dtype == "bf16"
    assert timer.calls == ["fp32", "bf16"]
    (stored,) = json.loads(cache.read_text())["probes"]  # the damaged entry replaced by the measurement
    assert (stored["fp32_gflops"], stored["bf16_gflops"]) == (100.0, 400.0)


def test_a_cached_probe_is_decided_with_the_callers_threshold(tmp_path):
    cache = tmp_path / "cpu-probe.json"
    assert probe_cpu(cache, timer=FakeTimer(200.0, 300.0), cpu="c", torch_version="t").dtype == "bf16"  # 1.5x
    never = FakeTimer(0.0, 0.0)
    choice = probe_cpu(cache, timer=never, cpu="c", torch_version="t", threshold=2.0)
    assert never.calls == [] and choice.dtype == "fp32" and choice.threshold == 2.0


def test_cpu_model_reads_the_model_name_line(monkeypatch):
    """x86's /proc/cpuinfo has a ``model : 1`` line before ``model name``: the name is the cache's machine key."""
    from pathlib import Path

    from pyserini_qpeft.lm import precision

    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 9R14\n"
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text",
                        lambda self, *a, **k: text if str(self) == "/proc/cpuinfo" else real(self, *a, **k))
    assert precision.cpu_model() == "AMD EPYC 9R14"


def test_auto_prints_a_measured_choice_once_then_only_logs_it(tmp_path, monkeypatch, capsys):
    from pyserini_qpeft.lm import precision

    monkeypatch.setenv("PYSERINI_QPEFT_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "_LOGGED", set())
    monkeypatch.setattr(precision, "matmul_gflops", lambda name: {"fp32": 100.0, "bf16": 1.0}[name])
    assert precision.auto_cpu_dtype().dtype == "fp32"
    assert capsys.readouterr().err.startswith("--dtype auto on this CPU: fp32 (bf16 matmul 1 GFLOP/s vs fp32 100")
    monkeypatch.setattr(precision, "matmul_gflops", lambda name: pytest.fail("measured despite the cache"))
    assert precision.auto_cpu_dtype().dtype == "fp32"
    assert capsys.readouterr().err == ""


def test_resolve_precision_records_the_reason(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from pyserini_qpeft.lm import precision
    from pyserini_qpeft.lm.backbone import resolve_precision

    monkeypatch.setenv("PYSERINI_QPEFT_CACHE", str(tmp_path))
    dtype, record = resolve_precision("fp32", "cpu")
    assert dtype == torch.float32 and record == {"requested": "fp32", "dtype": "fp32", "reason": "flag"}
    # A cached probe for this very machine says bf16 is 4x faster: auto follows it without measuring.
    cache = tmp_path / "precision" / precision.CACHE_NAME
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"format": 1, "probes": [
        {"cpu": precision.cpu_model(), "torch": str(torch.__version__), "fp32_gflops": 200.0, "bf16_gflops": 800.0}]}))
    monkeypatch.setattr(precision, "matmul_gflops", lambda name: pytest.fail("measured despite the cache"))
    dtype, record = resolve_precision("auto", "cpu")
    assert dtype == torch.bfloat16
    assert record["reason"] == "cpu matmul probe" and record["ratio"] == 4.0 and record["dtype"] == "bf16"


def test_qpeft_trains_through_a_bf16_lm(tiny_lm_path, tiny_lm):
    """The frozen LM in bf16, the hint module and its gradients in fp32; the loss is close to the fp32 LM's."""
    import torch

    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
    from pyserini_qpeft.lm.scoring import QueryLikelihoodScorer, ScorerConfig
    from pyserini_qpeft.qpeft.config import QPeftConfig
    from pyserini_qpeft.qpeft.module import build_module
    from pyserini_qpeft.data.corpus import Document

    lm16 = FrozenLM.load(LMConfig(model=str(tiny_lm_path), device="cpu", dtype="bf16"))
    docs = [Document("d1", "Lung cancer", "smoking causes lung cancer"), Document("d2", "", "cells divide by mitosis")]
    queries = ["what causes lung cancer", "how do cells divide"]
    nll = {}
    for name, lm in (("bf16", lm16), ("fp32", tiny_lm)):
        torch.manual_seed(0)
        module = build_module(lm, QPeftConfig(variant="attn", seed=0))
        scorer = QueryLikelihoodScorer(lm, ScorerConfig(), hint_module=module)
        out = -scorer.forward(scorer.encode(queries, docs))
        assert out.dtype == torch.float32
        out.mean().backward()
        params = [p for p in module.parameters() if p.requires_grad]
        assert params and all(p.dtype == torch.float32 for p in params)
        assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
                   for p in params), name
        assert any(float(p.grad.abs().max()) > 0 for p in params), name
        assert all(p.grad is None for p in lm.model.parameters())  # the LM stays frozen
        nll[name] = out.detach()
    assert lm16.dtype == torch.bfloat16
    torch.testing.assert_close(nll["bf16"], nll["fp32"], rtol=0.02, atol=0.05)  # bf16: ~3 significant digits


@pytest.mark.slow
def test_minilm_encodes_in_bf16_and_records_it(tmp_path):
    """``--dtype bf16`` reaches the MiniLM encoder, lands in the index meta, and queries follow it."""
    import numpy as np

    from pyserini_qpeft.search.encoders import MiniLMEncoder, encoder_from_meta

    texts = ["smoking causes lung cancer", "cells divide by mitosis", "aspirin and the heart"]
    fp32, bf16 = MiniLMEncoder(dtype="fp32"), MiniLMEncoder(dtype="bf16")
    assert (fp32.meta()["lm_dtype"], bf16.meta()["lm_dtype"]) == ("fp32", "bf16")
    a, b = fp32._encode(texts), bf16._encode(texts)
    assert a.dtype == b.dtype == np.float32
    assert (a * b).sum(axis=1).min() > 0.99 and not np.array_equal(a, b)  # same vectors up to bf16 rounding
    assert encoder_from_meta(bf16.meta(), device="cpu").dtype_name == "bf16"
    legacy = {k: v for k, v in fp32.meta().items() if k != "lm_dtype"}  # an index written before lm_dtype
    assert encoder_from_meta(legacy, device="cpu").dtype_name == "fp32"
