"""Throughput of the Bayesian decoder against the paper's greedy and beam-5 decodings, in one run on this host.

On a trained run with a tuned decoder (`brainllm tune-decoder RUN`), decodes the first `--samples` validation
samples (never test) four ways with the run's model: greedy and beam 5 (the paper's repetition penalty 2, 4-32
new tokens; brainllm's prefix-cache search), and the Bayesian decoder with the run's tuned settings (its search
result + n_candidates − 1 nucleus samples, each scored by the LM and the encoding model) twice: with the reference
sampler (`generation.sampler: hf`: HF `generate`, a teacher-forced pass for log p_LM, every candidate's states
from scratch) and with the default one (`prefix`: each prefix run once, log p_LM kept while drawing, candidates'
states continuing from their prompt's cache), and once more picking by minimum Bayes risk (`generation.pick: mbr`,
`decoding.mbr`) instead of the posterior's mode; then with the encoding-guided beam search (`generation.
guided_beams`, `decoding.guided`; the run's tuned width, else `--guided-beams`), once beside the sampled candidates
and once with only the search result beside it (`n_candidates` 1: the search's own cost); then with the
retrieval-seeded candidates (`generation.seeded_sentences`, `decoding.seeded`; the run's tuned number, else
`--seeded-sentences`) beside the sampled ones. Prints samples/s, each
decoder's time relative to greedy and to beam 5, and how many picks the two samplers share (they draw different
random numbers, so not all). The prefix sampler runs twice: in float32 and in bfloat16 (`generation.precision`),
with this host's measured bfloat16 matmul speedup and the float type the default `precision: auto` takes here.

    .venv/bin/python benchmarks/bayes_decoder.py RUN [--samples 64] [--repeats 1] [--guided-beams 4]
        [--seeded-sentences 3]
"""

from __future__ import annotations

import argparse
import dataclasses

from _common import host_info, matmul_peak, print_table, timed, write_json
from brainllm.decoding.generation import decode
from brainllm.model.precision import MIN_SPEEDUP, bf16_speedup, inference_dtype
from brainllm.runs import load_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--guided-beams", type=int, default=4, help="the guided search's width where the run's "
                        "tuned decoder has none")
    parser.add_argument("--seeded-sentences", type=int, default=3, help="retrieved sentences seeding candidates "
                        "where the run's tuned decoder has none")
    args = parser.parse_args()
    info, peak = host_info(), matmul_peak()
    speedup, auto = bf16_speedup("cpu"), inference_dtype("auto", "cpu")
    print(f"host: {info}\nmeasured matmul peak float32: {peak:.1f} GFLOP/s; bfloat16 matmul {speedup:.2f}x "
          f"float32's, so precision auto takes {auto} here (bfloat16 from {MIN_SPEEDUP}x)")
    run = load_run(args.run)
    tuned = run.config.generation
    if tuned.rerank != "encoding":
        raise SystemExit(f"{args.run} has no tuned Bayesian decoder: run `brainllm tune-decoder {args.run}` first.")
    tuned = dataclasses.replace(tuned, guided_beams=0, seeded_sentences=0)  # the plain rows: sampled candidates
    samples = run.encoder.encode_all(run.dataset, run.split.valid[: args.samples])
    paper = dataclasses.replace(tuned, rerank="none", method="beam", num_beams=5, repetition_penalty=2.0,
                                min_new_tokens=4, max_new_tokens=32)
    bayes = f"Bayesian ({tuned.n_candidates} candidates, λ {tuned.encoding_weight})"
    configs = {"greedy": dataclasses.replace(paper, method="greedy", num_beams=1, repetition_penalty=1.0),
               "beam 5": paper,
               f"{bayes}, reference sampler (hf)": dataclasses.replace(tuned, sampler="hf"),
               f"{bayes}, prefix sampler, float32": dataclasses.replace(tuned, sampler="prefix",
                                                                         precision="float32"),
               f"{bayes}, prefix sampler, bfloat16": dataclasses.replace(tuned, sampler="prefix",
                                                                           precision="bfloat16"),
               f"{bayes}, prefix sampler, bfloat16, MBR pick": dataclasses.replace(
                   tuned, sampler="prefix", precision="bfloat16", pick="mbr")}
    beams = run.config.generation.guided_beams or args.guided_beams
    guided = dataclasses.replace(tuned, sampler="prefix", precision="bfloat16", guided_beams=beams)
    configs |= {f"{bayes}, prefix sampler, bfloat16, + guided search {beams} beams": guided,
                f"guided search {beams} beams + the search result, bfloat16": dataclasses.replace(guided,
                                                                                                   n_candidates=1)}
    seeds = run.config.generation.seeded_sentences or args.seeded_sentences
    configs[f"{bayes}, prefix sampler, bfloat16, + {seeds} retrieval-seeded sentences, {tuned.seeded_draws} "
            f"draws"] = dataclasses.replace(tuned, sampler="prefix", precision="bfloat16", seeded_sentences=seeds)
    rows, texts = [], {}
    for name, cfg in configs.items():
        seconds = timed(lambda: texts.__setitem__(name, decode(run, samples, "brain", cfg, desc=name)), args.repeats)
        rows.append({"decoder": name, "seconds": round(seconds, 2), "samples_s": round(len(samples) / seconds, 2)})
    for row in rows:
        row["time_vs_greedy"] = round(row["seconds"] / rows[0]["seconds"], 2)
        row["time_vs_beam5"] = round(row["seconds"] / rows[1]["seconds"], 2)
    reference, fast, fast_bf16 = (texts[name] for name in list(configs)[2:5])
    for row in rows:
        row["vs_reference"] = round(rows[2]["seconds"] / row["seconds"], 2)
    print_table(rows, ["decoder", "seconds", "samples_s", "time_vs_greedy", "time_vs_beam5", "vs_reference"])
    for name, picks in (("float32", fast), ("bfloat16", fast_bf16)):
        print(f"prefix sampler ({name}): the reference's pick for {sum(a == b for a, b in zip(reference, picks))}/"
              f"{len(picks)} samples (the samplers draw different random numbers)")
    payload = {"host": info, "peak_gflops_fp32": peak, "bf16_matmul_speedup": round(speedup, 2),
               "auto_precision": str(auto), "run": args.run, "rows": rows}
    print(f"wrote {write_json('bayes_decoder', payload)}")


if __name__ == "__main__":
    main()
