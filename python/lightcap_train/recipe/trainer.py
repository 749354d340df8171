"""The training loop shared by every stage: data-parallel setup (torchrun: NCCL on GPUs, gloo
on CPUs), a resumable step loop with checkpoints, learning-rate schedules, mixed precision,
progress lines and the run log.

A stage gives an `objective` (an nn.Module whose forward(step) returns (loss, stats)) and a
step count; `fit` runs it, wrapped in DistributedDataParallel when there are several
processes, saving `<dir>/ckpt.pt` every `checkpoint_every` steps so that the same command
resumes where it stopped. Batches are drawn from a generator seeded by (seed, rank, step),
so a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


# ----------------------------------------------------------------------------------------------
# Processes


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value) -> float:
        """Mean of a number or a one-element tensor over the processes (for logging): one
        reduction on the device, one copy to the host."""
        if self.world == 1:
            return float(value)
        t = torch.as_tensor(value, dtype=torch.float64, device=self.device).reshape(1)
        dist.all_reduce(t)
        return float(t) / self.world


def setup_dist(device: str = "cpu") -> Dist:
    """Joins the torchrun process group when WORLD_SIZE > 1: NCCL with one GPU per process
    (LOCAL_RANK) for device "cuda", gloo for "cpu"."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    target = torch.device("cpu")
    if device == "cuda":
        target = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(target)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if world > 1:
        return Dist(dist.get_rank(), dist.get_world_size(), target)
    return Dist(device=target)


# ----------------------------------------------------------------------------------------------
# Log


class Log:
    """Progress lines on stdout and in <run>/train.log (main process only)."""

    def __init__(self, run_dir: str, d: Dist):
        self.path = os.path.join(run_dir, "train.log")
        self.d = d
        self.start = time.time()
        if d.main:
            os.makedirs(run_dir, exist_ok=True)

    def __call__(self, message: str) -> None:
        if not self.d.main:
            return
        line = f"[{time.strftime('%H:%M:%S')} +{time.time() - self.start:6.0f}s] {message}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


# ----------------------------------------------------------------------------------------------
# Schedules


def warmup_cosine(step: int, total: int, warmup: int, cycles: int = 1, floor: float = 0.02) -> float:
    """LR factor: linear warm-up, then `cycles` cosine cycles (snapshot ensembles restart the
    cosine at every cycle) down to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    length = max(1, math.ceil((total - warmup) / cycles))
    t = ((step - warmup) % length) / length
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def cycle_ends(total: int, warmup: int, cycles: int) -> list[int]:
    """The steps (1-based counts) after which a cycle of `warmup_cosine` ends."""
    length = max(1, math.ceil((total - warmup) / cycles))
    return [min(total, warmup + length * (c + 1)) for c in range(cycles)]


def batch_rng(seed: int, d: Dist, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, d.rank, step])


# ----------------------------------------------------------------------------------------------
# The loop


def fit(objective: nn.Module, params, *, steps: int, lr: float, out_dir: str, log: Log, d: Dist,
        name: str, warmup: int = 0, cycles: int = 1, weight_decay: float = 0.01,
        checkpoint_every: int = 200, log_every: int = 20, clip_grad: float = 1.0,
        on_cycle_end=None, precision: str = "fp32") -> None:
    """Runs `objective(step) -> (loss, stats)` for `steps` AdamW steps, resuming from
    <out_dir>/ckpt.pt. `on_cycle_end(c)` is called (main process) after each LR cycle. With
    precision "bf16" the forward passes run under autocast (weights and optimizer stay fp32).
    Stats may be tensors: they are summed on the device and read once per log line."""
    os.makedirs(out_dir, exist_ok=True)
    params = [p for p in params if p.requires_grad]
    model = objective
    if d.world > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=True)
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    ckpt = os.path.join(out_dir, "ckpt.pt")
    start = 0
    if os.path.exists(ckpt):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        missing, unexpected = objective.load_state_dict(state["objective"], strict=False)
        if unexpected:
            raise ValueError(f"{ckpt}: unexpected tensors {unexpected}")
        start = state["step"]
        if missing:  # the objective grew (a new loss head): new parts start fresh, so does AdamW
            log(f"{name}: resuming at step {start}/{steps} with new parts {missing} (fresh optimizer)")
        else:
            opt.load_state_dict(state["optimizer"])
            log(f"{name}: resuming at step {start}/{steps}")
    ends = cycle_ends(steps, warmup, cycles)
    t0, sums, count = time.time(), {}, 0
    model.train()
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = lr * warmup_cosine(step, steps, warmup, cycles)
        with autocast:
            loss, stats = model(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        opt.step()
        for k, v in {"loss": loss.detach(), **stats}.items():
            sums[k] = sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else v)
        count += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            rate = (time.time() - t0) / (done - start)
            means = " ".join(f"{k} {d.mean(v / count):.4f}" for k, v in sums.items())
            log(f"{name}: step {done}/{steps} {means} lr {opt.param_groups[0]['lr']:.2e} "
                f"{rate:.2f} s/step eta {rate * (steps - done) / 60:.1f} min")
            sums, count = {}, 0
        if d.main and (done % checkpoint_every == 0 or done == steps):
            torch.save({"objective": objective.state_dict(), "optimizer": opt.state_dict(),
                        "step": done}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
        if on_cycle_end is not None and d.main:
            for c, end in enumerate(ends):
                if end == done:
                    on_cycle_end(c)
        d.barrier() if done % checkpoint_every == 0 else None
    model.eval()


def parameter_count(module: nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith(skip))
