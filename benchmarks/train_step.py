"""Training-step throughput of BrainLLM with SmolLM2-135M on the simulated sentence design (batch 8).

Compares, in one run on this host:
  * brainllm: dynamic padding to the longest sequence, logits only at target positions; evaluation (teacher-forced
    losses, `eval_samples_s`) as `brainllm generate` scores: `--eval-samples` in batches of `--eval-batch-size` sorted
    by length, under inference_mode;
  * authors-style: every text padded to 64 tokens, logits over all positions, autograd kept during evaluation,
    which runs the same samples in batches of `--batch-size` (what the reference code does);
  * brainllm + margin / + infonce: brainllm with the `brain` recipe's auxiliary loss (`model.aux_loss`) added,
    for its cost per step (`aux_cost` = brainllm's samples/s over this row's);
and prints samples/s, achieved model GFLOP/s as a fraction of this host's measured matmul peak in the same dtype,
peak memory (GPU memory allocated on CUDA, process RSS on CPU), and the ratio. bfloat16 rows run only where the
device computes bf16 natively (see DESIGN.md).

    .venv/bin/python benchmarks/train_step.py [--steps 6] [--backbone smollm2-135m] [--data PREPARED_DATASET]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from _common import (add_common_args, dtypes_for, load_brainllm, matmul_peak, peak_memory_mb, print_table, setup,
                     timed, write_json)
from brainllm import backbones
from brainllm.decoding.generation import length_sorted_batches
from brainllm.model import BrainLLM, Collator
from brainllm.model.aux_loss import AuxLoss
from brainllm.model.collate import PAD, Batch

FIXED_TEXT = 64  # the authors pad prompt+continuation to 64 tokens


def pad_fixed(batch: Batch, prefix: int) -> Batch:
    """Right-pad a batch to prefix + 64 positions (the authors' fixed padding)."""
    length = prefix + FIXED_TEXT
    extra = length - batch.kind.shape[1]
    if extra <= 0:
        return batch
    pad = lambda t, v: F.pad(t, (0, extra), value=v)  # noqa: E731
    return Batch(batch.ids, pad(batch.token_ids, 0), pad(batch.kind, PAD), pad(batch.brain_pos, 0),
                 pad(batch.attention_mask, 0), batch.frames, batch.frame_mask, batch.target_batch, batch.target_pos,
                 batch.target_ids, batch.warmup_ids, batch.warmup_mask, batch.group)


def full_logits_loss(model: BrainLLM, batch: Batch) -> torch.Tensor:
    logits = model.backbone(inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask).logits
    return F.cross_entropy(logits[batch.target_batch, batch.target_pos].float(), batch.target_ids)


def with_aux(aux: AuxLoss):
    """The training loss with an auxiliary loss added (weight 1, as `training.aux_weight` defaults)."""
    def loss(model: BrainLLM, batch: Batch) -> torch.Tensor:
        out = model(batch, aux=aux)
        return out["loss"] + out["aux"]
    return loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--eval-batch-size", type=int, default=32, help="brainllm's evaluation batch")
    add_common_args(parser)
    args = parser.parse_args()
    device, info, peak32, ds = setup(args.data)
    dtypes = dtypes_for(device)
    peaks = {d: peak32 if d == "float32" else matmul_peak(backbones.DTYPES[d], device=device) for d in dtypes}
    rows = []
    for dtype in dtypes:
        torch.manual_seed(0)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        model, enc = load_brainllm(args.backbone, ds, dtype, device)
        n_params = sum(p.numel() for n, p in model.backbone.named_parameters() if "embed" not in n and "wte" not in n)
        # shuffled, as training batches are: consecutive samples share a passage, which leaves the margin loss no
        # partner from another stimulus
        order = np.random.default_rng(0).permutation(len(ds))[: args.batch_size * args.steps]
        samples = enc.encode_all(ds, [ds.samples[i].id for i in order])
        eval_order = np.random.default_rng(1).permutation(len(ds))[: args.eval_samples]
        eval_samples = enc.encode_all(ds, [ds.samples[i].id for i in eval_order])
        collate = Collator(ds.frames, enc)
        batches = [collate(samples[i:i + args.batch_size]).to(device) for i in range(0, len(samples), args.batch_size)]
        prefix = 1 + 1 + 1  # <brain> v_1 </brain> (T = 1 in the sentence design)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()
        for name, make_batch, loss_fn in (
            ("brainllm", lambda b: b, lambda m, b: m(b)["loss"]),
            ("authors-style", lambda b: pad_fixed(b, prefix), full_logits_loss),
            ("brainllm + margin", lambda b: b, with_aux(AuxLoss("margin"))),
            ("brainllm + infonce", lambda b: b, with_aux(AuxLoss("infonce"))),
        ):
            ready = [make_batch(b) for b in batches]
            it = iter(range(10 ** 9))

            def step():
                b = ready[next(it) % len(ready)]
                loss = loss_fn(model, b)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if device == "cuda":
                    torch.cuda.synchronize()

            seconds = timed(step, args.steps)
            real_tokens = sum(int(b.attention_mask.sum()) for b in batches) / len(batches)
            # forward 2*P per token, backward without weight gradients about 2*P more
            flops = 4 * n_params * real_tokens
            rows.append({"dtype": dtype, "config": name, "train_samples_s": round(args.batch_size / seconds, 2),
                         "s_per_step": round(seconds, 3), "useful_GFLOP_s": round(flops / seconds / 1e9, 1),
                         "frac_of_peak": round(flops / seconds / 1e9 / peaks[dtype], 3),
                         "mean_len": round(sum(b.kind.shape[1] for b in ready) / len(ready), 1)})

            if name not in ("brainllm", "authors-style"):
                continue

            def evaluate():
                model.eval()
                if name == "brainllm":
                    with torch.inference_mode():
                        for part in length_sorted_batches([collate.length(s) for s in eval_samples],
                                                          args.eval_batch_size):
                            model(collate([eval_samples[i] for i in part]).to(device))["sample_loss"]
                else:
                    with torch.enable_grad():
                        for i in range(0, len(eval_samples), args.batch_size):
                            loss_fn(model, make_batch(collate(eval_samples[i:i + args.batch_size]).to(device)))
                model.train()

            rows[-1]["eval_samples_s"] = round(len(eval_samples) / timed(evaluate, 3), 2)
        for row in rows[-4:]:
            row["peak_mem_mb"] = round(peak_memory_mb(device))
    for dtype in dtypes:
        ours, theirs, *aux_rows = [next(r for r in rows if r["dtype"] == dtype and r["config"] == c)
                                   for c in ("brainllm", "authors-style", "brainllm + margin", "brainllm + infonce")]
        ours["train_speedup"] = round(ours["train_samples_s"] / theirs["train_samples_s"], 2)
        ours["eval_speedup"] = round(ours["eval_samples_s"] / theirs["eval_samples_s"], 2)
        for row in aux_rows:
            row["aux_cost"] = round(ours["train_samples_s"] / row["train_samples_s"], 2)
    print_table(rows, ["dtype", "config", "mean_len", "s_per_step", "train_samples_s", "eval_samples_s",
                       "useful_GFLOP_s", "frac_of_peak", "peak_mem_mb", "train_speedup", "eval_speedup", "aux_cost"])
    print(f"wrote {write_json('train_step', {'host': info, 'peak_gflops': peaks, 'rows': rows})}")


if __name__ == "__main__":
    main()
