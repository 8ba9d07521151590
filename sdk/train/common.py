"""What every training recipe shares: torchrun/DDP context, atomic checkpoints, a progress bar, weight files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import distributed as dist

from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import atomic_file


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Average a scalar over ranks (for logging the same loss everywhere)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size


@contextmanager
def distributed() -> Iterator[DistContext]:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, NCCL on GPUs), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield DistContext()
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    # Share the machine's cores between the ranks instead of oversubscribing them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        yield DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())
    finally:
        dist.destroy_process_group()


def atomic_torch_save(obj: object, path: Path) -> None:
    """Write a checkpoint under a temporary name, then rename: a kill never leaves half a file."""
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a checkpoint we cannot read is the user's to decide about, not ours to delete
        raise EdgeSDKError(f"cannot read checkpoint {path} ({exc}); delete it to start over") from exc


def resume(checkpoint: Path, train_config: dict, model: torch.nn.Module,
           optimizer: torch.optim.Optimizer) -> dict | None:
    """Load model and optimizer state from ``checkpoint`` if it exists and was written with ``train_config``;
    return the checkpoint (for its counters and history), or None to start fresh."""
    state = load_checkpoint(checkpoint)
    if state is None:
        return None
    if state["train_config"] != train_config:
        raise EdgeSDKError(f"checkpoint {str(checkpoint)!r} was written with other settings; pass the same "
                           "options to resume, or delete it to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state


def save_weights(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, object]) -> None:
    """Shipped weights: safetensors, with JSON-encoded metadata (config, vocabulary...). Atomic."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_file(path) as tmp:
        save_file(contiguous, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})


def ema_update(ema: dict[str, torch.Tensor], params: dict[str, torch.Tensor], decay: float) -> None:
    with torch.no_grad():
        for name, value in params.items():
            ema[name].mul_(decay).add_(value.detach(), alpha=1.0 - decay)
