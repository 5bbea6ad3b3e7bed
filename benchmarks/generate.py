"""Generation throughput of BrainLLM with SmolLM2-135M on the simulated sentence design (batch 8, greedy).

Compares, in one run on this host:
  * brainllm: HF `generate` from left-padded `inputs_embeds` with the KV cache;
  * no-cache: the same greedy decoding recomputing the whole prefix at every step (as the reference code's
    full-story decoder does; HF silently ignores use_cache=False with inputs_embeds, so it is written out here).
Both produce the same tokens (checked). Prints new tokens/s and the ratio.

    .venv/bin/python benchmarks/generate.py [--new-tokens 16] [--batches 3] [--data PREPARED_DATASET]
"""

from __future__ import annotations

import argparse

import torch

from _common import add_common_args, dtypes_for, load_brainllm, peak_memory_mb, print_table, setup, timed, write_json
from brainllm.model import BrainLLM, Collator


@torch.inference_mode()
def greedy_without_cache(model: BrainLLM, batch, new_tokens: int) -> list[list[int]]:
    embeds, mask = model.embed(batch), batch.attention_mask
    emb_table = model.backbone.get_input_embeddings()
    out = []
    for _ in range(new_tokens):
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                use_cache=False).logits[:, -1]
        nxt = logits.argmax(-1)
        out.append(nxt)
        embeds = torch.cat([embeds, emb_table(nxt)[:, None].to(embeds.dtype)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(out, 1).tolist()


def bench_dtype(args, ds, dtype: str, device: str) -> list[dict]:
    """Time cached and uncached greedy decoding of the same batches with the backbone in `dtype`."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, enc = load_brainllm(args.backbone, ds, dtype, device)
    model.eval()
    samples = enc.encode_all(ds, [s.id for s in ds][: args.batch_size * args.batches])
    collate = Collator(ds.frames, enc, for_generation=True)
    batches = [collate(samples[i:i + args.batch_size]).to(device) for i in range(0, len(samples), args.batch_size)]
    n = args.new_tokens
    kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1, eos_token_id=enc.eos_id,
                  pad_token_id=enc.pad_id)
    cached = [model.generate(b, **kwargs) for b in batches]
    uncached = [greedy_without_cache(model, b, n) for b in batches]
    agree = sum(x == y for cb, ub in zip(cached, uncached) for x, y in zip(cb, ub)) / len(samples)
    rows = []
    for name, fn in (("brainllm (KV cache)", lambda: [model.generate(b, **kwargs) for b in batches]),
                     ("no-cache", lambda: [greedy_without_cache(model, b, n) for b in batches])):
        seconds = timed(fn, 3)
        rows.append({"dtype": dtype, "config": name, "seconds": round(seconds, 2),
                     "new_tokens_s": round(len(samples) * n / seconds, 1)})
    rows[0]["speedup"] = round(rows[0]["new_tokens_s"] / rows[1]["new_tokens_s"], 2)
    rows[0]["same_tokens"] = f"{agree:.0%}"  # bf16: near-ties may flip between the two code paths
    rows[0]["peak_mem_mb"] = round(peak_memory_mb(device))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3)
    add_common_args(parser)
    args = parser.parse_args()
    device, info, peak32, ds = setup(args.data)
    rows = []
    for dtype in dtypes_for(device):
        rows += bench_dtype(args, ds, dtype, device)
    print_table(rows, ["dtype", "config", "seconds", "new_tokens_s", "speedup", "same_tokens", "peak_mem_mb"])
    print(f"wrote {write_json('generate', {'host': info, 'peak_gflops_fp32': peak32, 'rows': rows})}")


if __name__ == "__main__":
    main()
