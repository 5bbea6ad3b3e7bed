"""Shared benchmark helpers: host description, measured matmul peak, timing, JSON output.

Every benchmark prints the host's CPU flags that matter and its own measured matmul peak, and compares
configurations as ratios measured in the same run (these machines differ and are noisy).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

import torch


def host_info() -> dict:
    flags = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")), "?")
        flags = next((l for l in cpuinfo.splitlines() if l.startswith("flags")), "")
    except OSError:
        model = platform.processor()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"cpu": model, "flags": [f for f in wanted if f" {f}" in flags], "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def matmul_peak(dtype: torch.dtype = torch.float32, n: int | None = None, repeats: int = 5, device: str = "cpu") -> float:
    """Best achieved GFLOP/s of an n x n matmul on this host (our own measurement, not a datasheet).

    n defaults to 1024 on CPU and 8192 on a GPU (smaller products do not fill one).
    """
    n = n or (1024 if device == "cpu" else 8192)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats: int, warmup=None) -> float:
    """Median seconds of `repeats` calls, after one warm-up call (of `warmup` if given, e.g. a smaller workload
    when one call takes minutes)."""
    (warmup or fn)()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(f"{r.get(c, '')}".ljust(w) for c, w in zip(columns, widths)))


def write_json(name: str, payload: dict) -> Path:
    out = Path(os.environ.get("BRAINLLM_BENCH_DIR", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def add_common_args(parser) -> None:
    """Options every model benchmark takes."""
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data", default=None,
                        help="a prepared sentence-design dataset (default: simulate 30 passages, which needs MiniLM)")


def dtypes_for(device: str) -> list[str]:
    """float32, plus bfloat16 where the device computes it natively (see DESIGN.md)."""
    from brainllm import backbones

    if device == "cuda" or backbones.cpu_has_native_bf16():
        return ["float32", "bfloat16"]
    print("bfloat16 skipped: this CPU has no native bf16 (avx512_bf16/amx_bf16)")
    return ["float32"]


def peak_memory_mb(device: str) -> float:
    """Peak GPU memory allocated since the last reset on CUDA, else the process's peak RSS."""
    return torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else peak_rss_mb()


def setup(data: str | None = None) -> tuple[str, dict, float, "object"]:
    """Device, host description and measured float32 matmul peak (printed), and the benchmark data."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    info = host_info()
    peak32 = matmul_peak(torch.float32, device=device)
    print(f"host: {info}\nmeasured matmul peak float32: {peak32:.1f} GFLOP/s")
    if data:
        from brainllm.data.dataset import BrainTextDataset

        return device, info, peak32, BrainTextDataset.load(data)
    from brainllm.data.simulate import simulate

    dataset = simulate(design="sentence", passages=30, voxels=900, components=200, seed=0).dataset
    return device, info, peak32, dataset


def load_brainllm(spec: str, dataset, dtype: str = "float32", device: str = "cpu"):
    """A BrainLLM with the paper's default MLP adapter on `spec`, and its TextEncoder."""
    from brainllm import backbones
    from brainllm.model import BrainLLM, TextEncoder, build_adapter

    backbone, tokenizer = backbones.load(spec, dtype=dtype, device=device)
    model = BrainLLM(backbone, build_adapter("mlp", dataset.feature_dim, backbone.config.hidden_size)).to(device)
    return model, TextEncoder(tokenizer)
