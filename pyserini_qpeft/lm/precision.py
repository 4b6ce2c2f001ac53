"""Which precision a CPU runs fastest, decided by measurement (``--dtype auto`` on CPU).

No CPU flag decides it: bf16 matmul is ~8x fp32 on Intel AMX, ~4x on AMD EPYC with avx512_bf16, 0.5x on Intel
avx512_bf16 without AMX, and unusable on AVX2-only CPUs (ENVIRONMENT.md). So ``auto`` times one square matmul in
each precision (about a second in all), picks bf16 only when it is at least :data:`BF16_MIN_SPEEDUP` times faster
than fp32, and caches the result per CPU model and torch version in ``<cache>/precision/cpu-probe.json``, so the
probe runs once per machine kind. The choice and the measured ratio are logged once per process and recorded
(:meth:`PrecisionChoice.to_dict`) in the metadata of what the LM produces.
"""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

BF16_MIN_SPEEDUP = 1.3
"""bf16 must beat fp32 matmul throughput by this factor to be chosen: below it, bf16's rounding is not worth
the gain (and timing noise on a busy 2-core machine is about +-10 %)."""
PROBE_SIZE = 512
PROBE_FORMAT = 1
CACHE_NAME = "cpu-probe.json"

Timer = Callable[[str], float]
"""``timer(dtype_name) -> GFLOP/s`` for ``"fp32"`` or ``"bf16"``; injectable for tests."""


@dataclass(frozen=True)
class PrecisionChoice:
    """The outcome of a CPU probe.

    Attributes:
        cpu: CPU model name (``/proc/cpuinfo``'s ``model name``).
        torch: torch version that ran the probe.
        fp32_gflops, bf16_gflops: measured ``[N, N] @ [N, N]`` matmul throughput.
        dtype: ``"bf16"`` or ``"fp32"``, the choice.
        threshold: the speed-up bf16 needed (:data:`BF16_MIN_SPEEDUP` when probed).
    """

    cpu: str
    torch: str
    fp32_gflops: float
    bf16_gflops: float
    dtype: str
    threshold: float = BF16_MIN_SPEEDUP

    @property
    def ratio(self) -> float:
        """bf16 / fp32 matmul throughput."""
        return self.bf16_gflops / self.fp32_gflops if self.fp32_gflops > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3), "rule": f"bf16 if ratio >= {self.threshold}"}

    def describe(self) -> str:
        return (f"--dtype auto on this CPU: {self.dtype} (bf16 matmul {self.bf16_gflops:.0f} GFLOP/s vs fp32 "
                f"{self.fp32_gflops:.0f} GFLOP/s = {self.ratio:.2f}x; bf16 needs >= {self.threshold}x; {self.cpu})")


def cpu_model() -> str:
    """The CPU's model name, the cache key's machine part."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def matmul_gflops(dtype_name: str, size: int = PROBE_SIZE, min_seconds: float = 0.25, max_repeats: int = 50) -> float:
    """Throughput of ``[size, size] @ [size, size]`` in ``dtype_name`` (``fp32``/``bf16``) on the CPU, GFLOP/s.

    A small warm-up product (kernel selection), then repeats until ``min_seconds`` have passed: an emulated
    bf16 (AVX2-only CPUs, ~1 GFLOP/s) stops after one product of about 0.3 s.
    """
    import torch

    from .backbone import torch_dtype

    dtype = torch_dtype(dtype_name)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    torch.matmul(a[:64, :64], b[:64, :64])
    repeats, start = 0, time.perf_counter()
    while True:
        torch.matmul(a, b)
        repeats += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or repeats >= max_repeats:
            break
    return 2.0 * size ** 3 * repeats / elapsed / 1e9


def decide(fp32_gflops: float, bf16_gflops: float, threshold: float = BF16_MIN_SPEEDUP) -> str:
    """``"bf16"`` when bf16 is at least ``threshold`` times faster than fp32, else ``"fp32"``."""
    return "bf16" if fp32_gflops > 0 and bf16_gflops / fp32_gflops >= threshold else "fp32"


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _read_cache(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("format") != PROBE_FORMAT or not isinstance(data.get("probes"), list):
        return []
    return [p for p in data["probes"] if isinstance(p, dict)]


def probe_cpu(cache_file: Path | None = None, timer: Timer | None = None, cpu: str | None = None,
              torch_version: str | None = None, threshold: float = BF16_MIN_SPEEDUP) -> PrecisionChoice:
    """The cached probe for this CPU model and torch version, measuring (and caching) it when absent.

    Args:
        cache_file: JSON cache; default ``<cache_dir>/precision/cpu-probe.json``. Unreadable caches are ignored.
        timer: ``timer("fp32"|"bf16") -> GFLOP/s``; default :func:`matmul_gflops`.
        cpu, torch_version: cache key parts; default the running machine's.
    """
    from ..artifacts import write_json
    from ..paths import cache_dir

    cache_file = cache_file or cache_dir() / "precision" / CACHE_NAME
    cpu = cpu or cpu_model()
    torch_version = torch_version or _torch_version()
    probes = _read_cache(cache_file)
    for entry in probes:
        if entry.get("cpu") == cpu and entry.get("torch") == torch_version:
            try:
                fp32, bf16 = float(entry["fp32_gflops"]), float(entry["bf16_gflops"])
            except (KeyError, TypeError, ValueError):
                break
            return PrecisionChoice(cpu, torch_version, fp32, bf16, decide(fp32, bf16, threshold), threshold)
    timer = timer or matmul_gflops
    fp32, bf16 = float(timer("fp32")), float(timer("bf16"))
    choice = PrecisionChoice(cpu, torch_version, fp32, bf16, decide(fp32, bf16, threshold), threshold)
    probes = [p for p in probes if not (p.get("cpu") == cpu and p.get("torch") == torch_version)]
    probes.append({"cpu": cpu, "torch": torch_version, "fp32_gflops": round(fp32, 2), "bf16_gflops": round(bf16, 2),
                   "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_file, {"format": PROBE_FORMAT, "probes": probes})
    except OSError as exc:  # a read-only cache costs a second per process, nothing more
        logger.warning("cannot cache the precision probe in %s: %s", cache_file, exc)
    return choice


_LOGGED: set[tuple[str, str]] = set()


def auto_cpu_dtype() -> PrecisionChoice:
    """The probe's choice for this machine. Printed to stderr when measured (once per machine kind and torch
    version), logged at INFO once per process otherwise."""
    measured: list[str] = []

    def timer(name: str) -> float:
        measured.append(name)
        return matmul_gflops(name)

    choice = probe_cpu(timer=timer)
    key = (choice.cpu, choice.torch)
    if measured:
        print(choice.describe(), file=sys.stderr)
    elif key not in _LOGGED:
        logger.info("%s", choice.describe())
    _LOGGED.add(key)
    return choice
