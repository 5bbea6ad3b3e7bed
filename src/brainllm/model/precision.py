"""The float type of the Bayesian decoder's inference passes (its search, drawing candidates, their encoding
states): float32, or bfloat16 where this host computes it measurably faster (`generation.precision`).

On a 2-core CPU with bfloat16 matrix units (AMX) the matmuls of SmolLM2-135M's decoding steps ran 3.3-4.3x faster
in bfloat16 than in float32, and the Bayesian decoder's proposals 1.8x (benchmarks/bayes_decoder.py); on a CPU
without such units bfloat16 is emulated or gains little, while its rounding costs precision (about 0.2 nats in a
candidate's summed log p_LM) and exactness: a matmul's rounding can differ with the number of rows it is computed
with, so a draw may change with the batch its sample is decoded in (float32 keeps that to float noise). So `auto`
(the default) measures the matmul speedup once per process (`bf16_speedup`) and takes bfloat16 only from
`MIN_SPEEDUP`, a margin that separates matrix units from the rest; on CUDA it takes bfloat16 where the GPU supports
it. `generation.precision: float32` keeps float32 everywhere. The weights are swapped for bfloat16 copies only for
the duration of a pass (`cast_parameters`): the float32 originals are kept, not rounded, and the paper's search,
the losses and training are untouched.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator

import torch
from torch import nn

from ..config import PRECISIONS
#: `auto` takes bfloat16 on a CPU only when its measured matmul speedup is at least this: below it the non-matmul
#: work (about 40 % of the sampler's time) leaves little end-to-end gain for bfloat16's rounding
MIN_SPEEDUP = 2.5
#: the shape timed: one decoding step's MLP projection of 480 rows (32 prefixes x 15 draws) of SmolLM2-135M
_ROWS, _IN, _OUT = 480, 576, 1536


@functools.cache
def bf16_speedup(device_type: str = "cpu") -> float:
    """float32 time / bfloat16 time of a `(480, 576) x (576, 1536)` matmul on this host's `device_type`, the best
    of several repeats of each (measured once per process, ~0.1 s)."""
    if device_type != "cpu":
        return float("nan")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(_ROWS, _IN, generator=generator)
    w = torch.randn(_OUT, _IN, generator=generator)

    def best_time(dtype: torch.dtype) -> float:
        a, b = x.to(dtype), w.to(dtype)
        torch.nn.functional.linear(a, b)  # warm-up: kernel selection
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                torch.nn.functional.linear(a, b)
            times.append(time.perf_counter() - start)
        return min(times)

    return best_time(torch.float32) / best_time(torch.bfloat16)


def inference_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The float type `precision` ("auto", "float32", "bfloat16") means on `device`: `auto` is bfloat16 on a
    CUDA device that supports it and on a CPU where `bf16_speedup` reaches `MIN_SPEEDUP`, else float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision != "auto":
        return getattr(torch, precision)
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if bf16_speedup("cpu") >= MIN_SPEEDUP else torch.float32
    return torch.float32


@contextlib.contextmanager
def cast_parameters(module: nn.Module, dtype: torch.dtype) -> Iterator[nn.Module]:
    """Run `module` with its floating-point parameters in `dtype` inside the context; on exit each parameter gets
    its original tensor back (not a round trip through `dtype`). Buffers (e.g. rotary frequencies, which the
    models compute with in float32) are left alone. Hooks and wrappers stay attached: the same module objects."""
    params = [p for p in module.parameters() if p.is_floating_point() and p.dtype != dtype]
    originals = [p.data for p in params]
    try:
        for p in params:
            p.data = p.data.to(dtype)
        yield module
    finally:
        for p, original in zip(params, originals):
            p.data = original
