"""Generation throughput of BrainLLM with SmolLM2-135M on the simulated sentence design.

Compares, in one run on this host:
  * greedy, 16 new tokens, batch 8 (every dtype the device computes natively):
    - brainllm (KV cache): HF `generate` from left-padded `inputs_embeds` with the KV cache;
    - no-cache: the same greedy decoding recomputing the whole prefix at every step (as the reference code's
      full-story decoder does; HF silently ignores use_cache=False with inputs_embeds, so it is written out here);
  * the paper's decodings (float32), `--samples` samples, the authors' configuration against brainllm's:
    - beam 5, repetition penalty 2, 4-32 new tokens; and greedy, no penalty, 4-32 new tokens (the authors' greedy);
    - authors: HF `generate` on `inputs_embeds`, batch 4 in dataset order, every beam running the prefix (HF expands
      the inputs into beams first), every sample kept to the end of its batch;
    - brainllm: `decoding.generation.decode_ids` (the `brainllm generate` path): batches of `--our-batch` sorted by
      length, the prefix run once per sample and its cache copied into the beams, finished samples dropped.
    Both use the same repetition-penalty processor (HF's own, without the left-pad offset that HF's built-in
    `repetition_penalty` applies to `inputs_embeds`; `decoding.prefix_beam`), so the tokens can be compared
    (`same_tokens`); the work per step is the same either way.
Prints samples/s (or new tokens/s) and the ratios.

    .venv/bin/python benchmarks/generate.py [--new-tokens 16] [--batches 3] [--samples 32] [--our-batch 32]
        [--data PREPARED_DATASET] [--run TRAINED_RUN] [--bf16]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import torch

from _common import add_common_args, dtypes_for, load_brainllm, peak_memory_mb, print_table, setup, timed, write_json
from brainllm.config import GenerationConfig
from brainllm.decoding.generation import decode_ids, decoding_kwargs
from brainllm.model import BrainLLM, Collator

AUTHORS_BATCH = 4  # the authors' evaluation loaders (Llama) decode 4 samples at a time
PAPER = {"beam 5": GenerationConfig(method="beam", num_beams=5, repetition_penalty=2.0, min_new_tokens=4,
                                    max_new_tokens=32),
         "greedy": GenerationConfig(method="greedy", repetition_penalty=1.0, min_new_tokens=4, max_new_tokens=32)}


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


def until_eos(ids: list[int], eos: int) -> list[int]:
    """A generated row up to its first EOS included (HF pads the rest of its batch's rows)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def bench_paper(args, ds, device: str) -> list[dict]:
    """The paper's decodings (float32): the authors' configuration against brainllm's, on the same samples: the
    first `--samples` of the benchmark data with a fresh model, or with `--run` the trained run's model on its
    validation samples (a trained model ends its continuations at EOS, an untrained one runs to the maximum)."""
    if args.run:
        from brainllm.runs import load_run

        run = load_run(args.run, device=device)
        model, enc, ds, spec = run.model, run.encoder, run.dataset, run.config.model.backbone
        ids = run.split.valid[: args.samples]
    else:
        model, enc = load_brainllm(args.backbone, ds, "float32", device)
        ids, spec = [s.id for s in ds][: args.samples], args.backbone
    model.eval()
    twin = bfloat16_twin(model, spec, device) if args.bf16 else None
    samples = enc.encode_all(ds, ids)
    collate = Collator(ds.frames, enc, for_generation=True)
    rows = []
    for name, cfg in PAPER.items():
        ours_cfg = dataclasses.replace(cfg, batch_size=args.our_batch)
        hf_kwargs = decoding_kwargs(cfg, enc)

        def authors(part=samples):
            out = []
            for i in range(0, len(part), AUTHORS_BATCH):
                out += model.generate(collate(part[i:i + AUTHORS_BATCH]).to(device), **hf_kwargs)
            return [until_eos(r, enc.eos_id) for r in out]

        def ours(part=samples):
            return decode_ids(model, collate, part, ours_cfg, enc, desc=name)

        theirs_ids, our_ids = authors(), ours()
        same = sum(a == b for a, b in zip(theirs_ids, our_ids)) / len(samples)
        new_tokens = sum(len(r) for r in our_ids) / len(samples)
        warm = samples[:AUTHORS_BATCH]
        t_theirs = timed(authors, args.repeats, warmup=lambda: authors(warm))
        t_ours = timed(ours, args.repeats, warmup=lambda: ours(warm))
        rows.append({"decoding": name, "config": f"authors (HF generate, batch {AUTHORS_BATCH})",
                     "seconds": round(t_theirs, 2), "samples_s": round(len(samples) / t_theirs, 2)})
        rows.append({"decoding": name, "config": f"brainllm (prefix cache, batch {args.our_batch} by length)",
                     "seconds": round(t_ours, 2), "samples_s": round(len(samples) / t_ours, 2),
                     "speedup": round(t_theirs / t_ours, 2), "same_tokens": f"{same:.0%}",
                     "mean_new_tokens": round(new_tokens, 1), "peak_mem_mb": round(peak_memory_mb(device))})
        if twin is not None:  # not like for like: bfloat16 changes some tokens (same_tokens says how many)
            twin_ids = decode_ids(twin, collate, samples, ours_cfg, enc, desc=f"{name} bf16")
            t_twin = timed(lambda: decode_ids(twin, collate, samples, ours_cfg, enc, desc=f"{name} bf16"),
                           args.repeats, warmup=lambda: decode_ids(twin, collate, warm, ours_cfg, enc, desc="warm"))
            rows.append({"decoding": name, "config": "brainllm in bfloat16 (same adapter), vs authors' float32",
                         "seconds": round(t_twin, 2), "samples_s": round(len(samples) / t_twin, 2),
                         "speedup": round(t_theirs / t_twin, 2),
                         "same_tokens": f"{sum(a == b for a, b in zip(theirs_ids, twin_ids)) / len(samples):.0%}",
                         "mean_new_tokens": round(sum(len(r) for r in twin_ids) / len(samples), 1)})
    return rows


def bfloat16_twin(model: BrainLLM, spec: str, device: str) -> BrainLLM | None:
    """The same trained adapter and boundary vectors on the backbone loaded in bfloat16 (None where the device has
    no native bfloat16, or for a run that changed the backbone's weights)."""
    if "bfloat16" not in dtypes_for(device) or model.finetune != "frozen":
        return None
    from brainllm import backbones

    twin = BrainLLM(backbones.load(spec, dtype="bfloat16", device=device)[0], copy.deepcopy(model.adapter),
                    inject_layer=model.inject_layer, bos_id=model.bos_id).to(device)
    twin.load_trainable_state_dict(model.trainable_state_dict())
    return twin.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--samples", type=int, default=32, help="samples for the paper's decodings")
    parser.add_argument("--our-batch", type=int, default=32, help="brainllm's batch for the paper's decodings")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes of the paper's decodings")
    parser.add_argument("--skip-greedy16", action="store_true", help="only the paper's decodings")
    parser.add_argument("--run", default=None, help="a trained run (float32) for the paper's decodings")
    parser.add_argument("--bf16", action="store_true", help="add brainllm in bfloat16 to the paper's decodings")
    add_common_args(parser)
    args = parser.parse_args()
    device, info, peak32, ds = setup(args.data)
    rows = []
    if not args.skip_greedy16:
        for dtype in dtypes_for(device):
            rows += bench_dtype(args, ds, dtype, device)
        print_table(rows, ["dtype", "config", "seconds", "new_tokens_s", "speedup", "same_tokens", "peak_mem_mb"])
    paper = bench_paper(args, ds, device)
    print_table(paper, ["decoding", "config", "seconds", "samples_s", "speedup", "same_tokens", "mean_new_tokens",
                        "peak_mem_mb"])
    payload = {"host": info, "peak_gflops_fp32": peak32, "rows": rows, "paper_decoding": paper,
               "samples": args.samples, "our_batch": args.our_batch, "run": args.run}
    print(f"wrote {write_json('generate', payload)}")


if __name__ == "__main__":
    main()
