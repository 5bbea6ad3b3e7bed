"""Which text features make the Bayesian decoder's encoding model identify texts best? Training passages only.

For a run, the encoding model (`voxelwise.sentence_encoding`, ridge + shrunk Gaussian noise) is cross-validated
over folds of whole training stimuli (5 folds, as `brainllm tune-decoder` does) with designs `tune-decoder` does
not try: one layer's mean state (its own choice, for reference), two or three layers side by side, the MiniLM
sentence embedding, and a layer beside MiniLM, each with the length + position features (their own ridge band,
scaled by each `--nuisance-weights`), to the first D frame components. Reported: held-out 2-way identification of
texts for fixed frames (`identification.two_way`), across stimuli and within one. `--folds` changes how many
training passages each fit sees (a learning curve). `--context-sentences N` reads each text's backbone states after
the N sentences before it in its passage (`text_features.passage_contexts`; 0 = alone, as the decoder does).
Validation and test are never read.

    .venv/bin/python benchmarks/encoding_designs.py RUN [--designs "layer 8"] [--dims 200 300] [--shrinkage 0.5]
        [--nuisance-weights 1 3 6] [--folds 5] [--context-sentences 0 1 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import host_info, print_table, write_json
from brainllm.decoding.encoding_choice import training_samples
from brainllm.decoding.encoding_model import bare_states, positions_of, reference_texts, sample_contexts, sample_frames
from brainllm.evaluation.semantic import MiniLMScorer
from brainllm.identification import two_way
from brainllm.model.text_features import NUISANCE_NAMES, nuisance_features
from brainllm.ridge import stimulus_folds
from brainllm.runs import load_run
from brainllm.voxelwise.sentence_encoding import SentenceEncodingConfig, SentenceEncodingModel

#: design name -> the feature blocks it stacks (ints: the backbone's mean state after that layer)
DESIGNS: dict[str, tuple[int | str, ...]] = {
    "layer 8": (8,), "layer 10": (10,), "layers 8 + 16": (8, 16), "layers 6 + 10 + 16": (6, 10, 16),
    "MiniLM": ("minilm",), "layer 8 + MiniLM": (8, "minilm"), "layer 10 + MiniLM": (10, "minilm"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--dims", type=int, nargs="+", default=[200, 300])
    parser.add_argument("--shrinkage", type=float, default=0.5)
    parser.add_argument("--designs", nargs="+", choices=list(DESIGNS), default=list(DESIGNS))
    parser.add_argument("--nuisance-weights", type=float, nargs="+", default=[1.0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--context-sentences", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    designs = {name: DESIGNS[name] for name in args.designs}
    run = load_run(args.run)
    samples = training_samples(run)
    texts, stimuli = reference_texts(run, samples), [s.stimulus for s in samples]
    keys = [s.frame_rows for s in samples]
    layers = sorted({b for blocks in designs.values() for b in blocks if isinstance(b, int)})
    minilm = (MiniLMScorer().sentence_vectors(texts) if any("minilm" in parts for parts in designs.values())
              else None)
    nuisance = nuisance_features(texts, positions_of(run, samples))
    folds = stimulus_folds(stimuli, args.folds, 0)
    rows = []
    for context in args.context_sentences:
        contexts = sample_contexts(run, samples, context)
        blocks: dict[int | str, np.ndarray] = dict(bare_states(run, texts, layers, contexts))
        blocks["minilm"] = minilm
        for name, parts in designs.items():
            x = np.hstack([blocks[b].astype(np.float64) for b in parts] + [nuisance])
            for dims, weight in ((d, w) for d in args.dims for w in args.nuisance_weights):
                y = sample_frames(run, samples, dims)
                cfg = SentenceEncodingConfig(noise_shrinkage=args.shrinkage, nuisance_columns=len(NUISANCE_NAMES),
                                             nuisance_weight=weight)
                held_out = []
                for held in folds:
                    tr, te = np.flatnonzero(~held), np.flatnonzero(held)
                    model = SentenceEncodingModel(cfg).fit(x[tr], y[tr], [stimuli[i] for i in tr])
                    ident = two_way(model.log_likelihood_matrix(x[te], y[te]), [stimuli[i] for i in te],
                                    [keys[i] for i in te])
                    held_out.append((ident["across"], ident["within"]))
                across, within = np.mean(held_out, axis=0)
                rows.append({"design": name, "context_sentences": context, "dims": dims, "nuisance_weight": weight,
                             "folds": args.folds, "across": round(float(across), 3), "within": round(float(within), 3)})
                print(rows[-1], flush=True)
    print_table(rows, ["design", "context_sentences", "dims", "nuisance_weight", "folds", "across", "within"])
    print(f"wrote {write_json('encoding_designs', {'host': host_info(), 'run': args.run, 'rows': rows})}")


if __name__ == "__main__":
    main()
