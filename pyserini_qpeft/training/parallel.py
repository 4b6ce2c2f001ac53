"""Data-parallel training through Hugging Face accelerate: every rank works on its slice of the global batch.

A training run started by ``accelerate launch --multi_gpu --num_processes N -m pyserini_qpeft train ...`` (or
``torchrun --nproc_per_node N -m pyserini_qpeft train ...``; on a machine without CUDA both start N CPU processes
that talk over gloo) sees ``WORLD_SIZE > 1``; :meth:`DataParallel.from_environment` then initialises the process
group through accelerate's ``PartialState``. Without a launcher nothing is imported and :data:`SINGLE` is used.

The rule that makes a result independent of the number of processes:

1. every rank samples the *global* batch with the same seeded rng (so the pairs, negatives and in-batch
   negatives are those of a single-process run);
2. the expensive work (frozen-LM forward for Q-PEFT, tuner forward for LMORT) runs on this rank's contiguous
   slice of the rows (:meth:`DataParallel.shard`);
3. :meth:`DataParallel.gather_rows` all-gathers the slices, keeping the autograd graph of the local one, and every
   rank computes the same loss over the whole batch (in-batch negatives included);
4. after ``backward`` each rank holds the gradient of the global loss with respect to its own rows;
   :meth:`DataParallel.reduce_gradients` sums them, which is exactly the single-process gradient.

With dropout > 0 the masks depend on which rank draws them (statistically the same training, not the same bits);
with dropout 0 the weights match a single process to float tolerance. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..errors import InputError

if TYPE_CHECKING:
    import torch

# Ranks wait for rank 0 while it writes checkpoints or selects the interpolation weight on dev.
TIMEOUT = timedelta(hours=6)


def shard_bounds(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, end)`` of rank ``rank``'s contiguous share of ``total`` rows (sizes differ by at most one)."""
    return total * rank // world_size, total * (rank + 1) // world_size


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run (``world_size == 1``: a single process, no collectives).

    Args:
        rank: this process's index (0 writes files).
        world_size: number of processes.
        backend: the torch.distributed backend (``gloo`` on CPUs, ``nccl`` on GPUs), None for one process.
    """

    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @classmethod
    def from_environment(cls, device: str = "auto") -> "DataParallel":
        """The run's data-parallel state: :data:`SINGLE` unless a launcher set ``WORLD_SIZE > 1``.

        ``device``: the ``--device`` flag; ``cpu`` (or no CUDA) gives gloo, otherwise one GPU per process.
        """
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return SINGLE
        try:
            import torch
            from accelerate import PartialState
        except ImportError:
            raise InputError("a distributed launch (WORLD_SIZE > 1) needs accelerate: "
                             "pip install 'pyserini_qpeft[distributed]'") from None
        cpu = device == "cpu" or not torch.cuda.is_available()
        state = PartialState(cpu=cpu, timeout=TIMEOUT)
        return cls(state.process_index, state.num_processes, state.backend)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, total: int) -> range:
        """Indices of this rank's contiguous share of ``total`` rows."""
        return range(*shard_bounds(total, self.rank, self.world_size))

    def gather_rows(self, local: "torch.Tensor", total: int) -> "torch.Tensor":
        """All ranks' slices ``[n_r, ...]`` concatenated in rank order ``[total, ...]``; the rows of ``local`` keep
        their autograd graph (the others are constants). ``local`` must have ``len(self.shard(total))`` rows; the
        result is float32 (ranks may hold no rows, so the dtype cannot come from the data)."""
        if not self.active:
            return local
        import torch
        from accelerate.utils import gather

        sizes = [b - a for a, b in (shard_bounds(total, r, self.world_size) for r in range(self.world_size))]
        if local.shape[0] != sizes[self.rank]:
            raise ValueError(f"rank {self.rank} holds {local.shape[0]} rows, its share of {total} is "
                             f"{sizes[self.rank]}")
        width = max(sizes)
        padded = torch.zeros((width, *local.shape[1:]), dtype=torch.float32, device=local.device)
        padded[:local.shape[0]] = local.detach()
        everything = gather(padded)  # [world_size * width, ...]
        parts = [everything[r * width:r * width + sizes[r]] for r in range(self.world_size)]
        parts[self.rank] = local
        return torch.cat(parts)

    def gather_list(self, items: Sequence[Any]) -> list[Any]:
        """Every rank's ``items`` (picklable) concatenated in rank order."""
        if not self.active:
            return list(items)
        from accelerate.utils import gather_object

        return list(gather_object(list(items)))

    def reduce_gradients(self, params: Sequence["torch.nn.Parameter"]) -> None:
        """Sum ``.grad`` over ranks in one collective; a parameter no rank touched keeps ``grad = None`` (AdamW then
        skips it, as in a single process)."""
        if not self.active:
            return
        import torch
        from accelerate.utils import reduce

        device = params[0].device
        flat = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype, device=device)
                for p in params]
        present = torch.tensor([p.grad is not None for p in params], dtype=flat[0].dtype, device=device)
        total = reduce(torch.cat([*flat, present]), reduction="sum")
        offset = 0
        for p, seen in zip(params, total[-len(params):].tolist()):
            n = p.numel()
            p.grad = total[offset:offset + n].view_as(p).clone() if seen else None
            offset += n

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (picklable)."""
        if not self.active:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """End the run cleanly: wait for every rank, then destroy the process group (a rank that exits while another
        still talks to it makes gloo abort the other)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()

    @contextmanager
    def closing(self) -> Iterator["DataParallel"]:
        """``with parallel.closing():`` -- :meth:`close` when the block ends normally; after an exception the ranks
        are left as they are (the launcher stops the others when one fails; a barrier could wait forever)."""
        yield self
        self.close()

    def describe(self) -> dict[str, Any]:
        """JSON for checkpoint metadata."""
        return {"world_size": self.world_size, "backend": self.backend}


SINGLE = DataParallel()
