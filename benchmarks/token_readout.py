"""How much of a brain effect can token slots carry with no generation training? (docs/calibration.md, issue 16)

A probe of the *readout*: what the frames tell about a sample's text, delivered to the frozen backbone as the
input embeddings of K vocabulary tokens in the run's brain slots (the backbone reads its own tokens without any
training; the boundary vectors stay the run's). For each validation sample, and for its frames under each of
`--permutations` PerBrainLLM derangements (`model.collate.permute_frames`), the teacher-forced loss of its
continuation; reported as in `brainllm evaluate`: Δ = own - mean permuted loss with the sign-flip p over stimuli,
and pairwise accuracy (own < permuted, per sample). Token sources, each fitted on the run's training samples only:

* `true tokens`: the K highest-idf tokens of the sample's own text (prompt + continuation): the copy ceiling,
  what K slots can do with perfect knowledge of the words;
* `semantic`: ridge from the frames to the backbone's mean layer-L state of the text (standardised per dimension
  over the training samples, then PCA-whitened to `--components`), then a text-only ridge from that state to the
  text's idf-weighted bag of tokens (fitted on the true states), the K tokens most above the mean bag;
* `direct`: ridge from the frames to the bag of tokens itself (the ceiling's `ridge-decoded tokens`, at K);
* with `--posterior-layer L`, `posterior`: the encoding direction instead of a regression: an encoding model
  (`voxelwise.sentence_encoding`, layer-L mean state + length/position -> the first `--posterior-dims` frame
  components) gives each training text's log-likelihood of the frames; the bags of the training texts weighted by
  softmax(log-likelihood / τ), per `--temperatures` τ;
* with `--reference-minilm`, `semantic` in the MiniLM sentence space instead of the backbone's: on simulated data
  that is the space the frames were generated from (an upper reference, not a method).

Penalties by cross-validation over training stimuli (`ridge.cv_ridge`). Validation only; test is never read.
The run needs `model.adapter.tokens_per_frame >= K` (an untrained run is enough:
`brainllm train CONFIG --set training.epochs=0 --set training.warmup_epochs=0 --set model.adapter.tokens_per_frame=8`).

    .venv/bin/python benchmarks/token_readout.py RUN [--layer 1] [--components 64] [--permutations 3]
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

import numpy as np
import torch

from brainllm.decoding.generation import teacher_forced_losses
from brainllm.evaluation import stats as S
from brainllm.model import Collator, EncodedSample
from brainllm.model.collate import permute_frames
from brainllm.model.ridge_init import text_bags
from brainllm.model.text_features import nuisance_features, stimulus_positions
from brainllm.ridge import cv_ridge
from brainllm.runs import LoadedRun, load_run
from brainllm.voxelwise.sentence_encoding import SentenceEncodingModel
from target_decodability import centred_cosine


def text_ids(s: EncodedSample) -> list[int]:
    return list(s.prompt_ids) + list(s.continuation_ids)


def mean_frames(run: LoadedRun, samples: Sequence[EncodedSample]) -> np.ndarray:
    """`(n, D)` each sample's frames averaged."""
    frames = np.asarray(run.dataset.frames, dtype=np.float64)
    return np.stack([frames[list(s.frame_rows)].mean(0) for s in samples])


@torch.no_grad()
def layer_states(run: LoadedRun, samples: Sequence[EncodedSample], layer: int) -> np.ndarray:
    """`(n, H)` the bare backbone's hidden state after `layer` blocks, averaged over the text's tokens."""
    bos = [run.encoder.bos_id] if run.encoder.bos_id is not None else []
    out = []
    for s in samples:
        hidden = run.model.backbone(input_ids=torch.tensor([bos + text_ids(s)]), output_hidden_states=True)
        out.append(hidden.hidden_states[layer][0, len(bos):].float().mean(0).numpy())
    return np.stack(out).astype(np.float64)


def whitener(y: np.ndarray, components: int) -> Callable[[np.ndarray], np.ndarray]:
    """Standardise each column with `y`'s statistics, then project on its top principal axes scaled to unit
    variance: `(n, H) -> (n, components)`."""
    mean, std = y.mean(0), y.std(0) + 1e-6
    z = (y - mean) / std
    _, sv, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    k = min(components, len(sv))
    proj = vt[:k].T / sv[:k] * np.sqrt(len(z))
    return lambda v: ((v - mean) / std - z.mean(0)) @ proj


def ridge_fit(x: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    coef, icpt, _, _ = cv_ridge(x, y, groups, centred_cosine)
    return lambda v: v @ coef + icpt


def encoding_design(run: LoadedRun, samples: Sequence[EncodedSample], layer: int) -> np.ndarray:
    """`(n, H + 2)` the bare backbone's mean layer state of each text, then its length and position."""
    texts = [run.encoder.tokenizer.decode(text_ids(s), skip_special_tokens=True) for s in samples]
    positions = stimulus_positions(run.dataset, [run.dataset.by_id(s.id) for s in samples])
    return np.hstack([layer_states(run, samples, layer), nuisance_features(texts, positions)])


def posterior_decoder(encoding: SentenceEncodingModel, train_design: np.ndarray, bags: np.ndarray,
                      raw_frames: Callable[[np.ndarray], np.ndarray], tau: float
                      ) -> Callable[[np.ndarray], np.ndarray]:
    """Standardised frames `(n, D)` -> `(n, C)`: the training bags weighted by the encoding model's posterior over
    the training texts, softmax(log p(frames | text) / tau) (tau -> 0: the bag of the best-fitting training text)."""
    def decode(x: np.ndarray) -> np.ndarray:
        ll = encoding.log_likelihood_matrix(train_design, raw_frames(x)) / tau  # (N train texts, n)
        post = np.exp(ll - ll.max(0, keepdims=True))
        return (post / post.sum(0, keepdims=True)).T @ bags
    return decode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=None, help="K (default: the run's tokens_per_frame)")
    parser.add_argument("--permutations", type=int, default=3)
    parser.add_argument("--reference-minilm", action="store_true")
    parser.add_argument("--posterior-layer", type=int, default=None,
                        help="also the posterior decoder: an encoding model on this layer's state + length/position")
    parser.add_argument("--posterior-dims", type=int, default=300)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    args = parser.parse_args()
    run = load_run(args.run)
    run.model.eval()
    k_slots = args.tokens or run.model.adapter.tokens_per_frame
    if k_slots > run.model.adapter.tokens_per_frame:
        parser.error(f"--tokens {k_slots} > the run's tokens_per_frame {run.model.adapter.tokens_per_frame}")
    train = run.encoder.encode_all(run.dataset, run.split.train)
    valid = run.encoder.encode_all(run.dataset, run.split.valid)
    groups = [s.stimulus for s in train]

    emb = run.model.backbone.get_input_embeddings().weight.detach().float().numpy()
    # the readout's own targets (`fit_token_readout`): every training token a candidate, bags of the whole text
    text = Collator(run.dataset.frames, run.encoder, warmup_target="text")
    vocab, bags = text_bags(text, train, len(emb))
    idf = np.full(len(emb), np.log(1 + len(train)))  # a token no training text holds: df 0
    idf[vocab] = bags.max(0)  # each candidate is in some text, where its bag entry is its idf
    mean_bag = bags.mean(0)

    x_train = mean_frames(run, train)
    x_mean, x_std = x_train.mean(0), x_train.std(0) + 1e-8
    standardise = lambda x: (x - x_mean) / x_std
    x_train = standardise(x_train)

    def semantic_decoder(train_states: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        white = whitener(train_states, args.components)
        z_train = white(train_states)
        frames_to_z, z_to_bag = ridge_fit(x_train, z_train, groups), ridge_fit(z_train, bags, groups)
        return lambda x: z_to_bag(frames_to_z(x))

    decoders: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        f"semantic (layer {args.layer}, {args.components} comp.)": semantic_decoder(
            layer_states(run, train, args.layer)),
        "direct (frames -> bag of tokens)": ridge_fit(x_train, bags, groups)}
    if args.reference_minilm:
        from brainllm.evaluation.semantic import MiniLMScorer
        texts = [run.encoder.tokenizer.decode(text_ids(s), skip_special_tokens=True) for s in train]
        decoders["semantic (MiniLM: the simulator's space, a reference)"] = semantic_decoder(
            MiniLMScorer().sentence_vectors(texts).astype(np.float64))

    if args.posterior_layer is not None:
        train_design = encoding_design(run, train, args.posterior_layer)
        encoding = SentenceEncodingModel().fit(train_design, mean_frames(run, train)[:, :args.posterior_dims], groups)
        for tau in args.temperatures:
            decoders[f"posterior (layer {args.posterior_layer}, τ {tau:g})"] = posterior_decoder(
                encoding, train_design, bags, lambda x: (x * x_std + x_mean)[:, :args.posterior_dims], tau)

    variants = [valid] + [permute_frames(valid, p) for p in range(args.permutations)]

    def slots(samples: Sequence[EncodedSample], tokens: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """K token embeddings in each frame's first K slots, zeros in the rest: `(T_i * k, H)` per sample."""
        k = run.model.adapter.tokens_per_frame
        out = []
        for s, ids in zip(samples, tokens):
            block = np.zeros((k, emb.shape[1]), dtype=np.float32)
            block[:k_slots] = emb[list(ids)]
            out.append(np.tile(block, (len(s.frame_rows), 1)))
        return out

    def score(name: str, tokens_of: Callable[[Sequence[EncodedSample]], list[list[int]]]) -> None:
        losses = [teacher_forced_losses(run, v, "brain", 32, brain_slots=slots(v, tokens_of(v))) for v in variants]
        own, perm = losses[0], np.stack(losses[1:], 1)
        diff = own - perm.mean(1)
        p = S.sign_flip_test(diff, [s.stimulus for s in valid])
        acc = float(np.nanmean(S.pairwise_accuracy(own, perm)))
        print(f"| {name} | {own.mean():.3f} | {perm.mean():.3f} | {diff.mean():+.3f} ({p:.3g}) | {acc:.3f} |",
              flush=True)

    def top_true(samples):
        by_id = {s.id: s for s in valid}  # a permuted sample's frames come from `frames_from`
        out = []
        for s in samples:
            ids = sorted(set(text_ids(by_id[s.frames_from or s.id])), key=lambda t: -idf[t])
            out.append([ids[j % len(ids)] for j in range(k_slots)])
        return out

    print(f"{len(valid)} validation samples, K = {k_slots} token slots, {args.permutations} derangements")
    print("| tokens in the slots | own loss | permuted loss | Δ (p) | pairwise acc. |")
    print("|---|---|---|---|---|")
    score("true tokens (copy ceiling)", top_true)
    for name, decoder in decoders.items():
        def decoded(samples, decoder=decoder):
            scores = decoder(standardise(mean_frames(run, samples))) - mean_bag
            return [list(vocab[np.argsort(-row)[:k_slots]]) for row in scores]
        score(name, decoded)


if __name__ == "__main__":
    main()
