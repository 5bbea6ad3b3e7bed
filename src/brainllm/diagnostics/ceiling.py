"""The information ceiling of a trained run: how much could the backbone gain if the adapter delivered perfect
knowledge of the continuation?

A null result (BrainLLM = PerBrainLLM) has two readings: the frames hold no usable information, or the frozen
backbone makes little use of what the adapter's slots could carry. A ridge decoder tells whether the frames hold
information; this diagnostic bounds the second. It adds an *oracle vector* to every adapter output of a sample:
the mean input embedding of the sample's true continuation tokens, centred on the training samples' mean (the space
the paper's warm-up regresses onto, the natural target of any adapter), rescaled so that its mean norm is `scale`
times the mean norm of the adapter's outputs (a trained adapter's soft prompt can be far larger than the centred
embeddings, so an absolute scale would mean different things for different runs). Text i is scored (teacher-forced
loss per continuation token, nats) with its own frames plus its own oracle vector, and with its own frames plus the
oracle vector of each other sample j, so only the vector differs. Then, exactly as for BrainLLM vs PerBrainLLM:

* `delta` = mean over i of loss(i, i) - mean_{j != i} loss(i, j) (negative = the information helps), with a
  two-sided sign-flip p over stimuli when the split has several (`stats.sign_flip_test`), else over samples;
* `identification` = mean two-way identification of the own vector among the others (chance 0.5).

If even perfect information lowers the loss by a few hundredths of a nat, no adapter trained to emit such vectors
can show a large brain effect with this backbone and prompt layout.

The mean embedding is one format; a frozen LM may read another far better. The *token oracles* replace the adapter
outputs altogether, slot k of a sample holding the input embedding of one token (the boundary vectors stay the
run's), scored in the same cross design (text i with the slots of sample j):

* `true tokens`: the continuation's own tokens, in order (cycled when it has fewer tokens than frames): the most a
  slot can say about the continuation in the backbone's own vocabulary;
* `ridge-decoded tokens`: the tokens a ridge decoder predicts from the sample's frames (bag of continuation tokens
  of the training samples, penalty chosen by cross-validation over training stimuli), the T most likely: what the
  frames let one learn about word identity from this training set, with `precision` (fraction of those tokens in
  the continuation) beside the training set's most frequent tokens (`frequency_precision`, a brain-free guess).

A large `true tokens` gain with a null `ridge-decoded` one says the backbone could use the information but the
training set is too small to learn it from the frames.

The *state oracles* (`layers`, `diagnostics.injection`) deliver the information deeper: the brain positions' hidden
state after layer L is replaced by the bare LM's layer-L state averaged over the continuation tokens (`true mean
state`), or by a ridge prediction of it from the frames (`ridge-decoded state`, trained on the training samples,
rescaled to the training states' spread), or, when the run has a fitted encoding model (`brainllm tune-decoder`), by
the training states weighted by how well their texts predict the sample's frames under it (`retrieved state`,
`injection.retrieval_weights`: the Bayesian decoder's likelihood used to retrieve instead of to rerank), again in the
cross design. A semantic state is a target a linear decoder can generalise to words it never saw in training, which
a bag of tokens is not. The default split is `valid`: a diagnostic informs design choices, so it must not touch test
data.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..decoding.encoding_model import has_scorer, load_scorer, scorer_splits
from ..decoding.generation import input_layout, pick_samples, teacher_forced_losses
from ..errors import BrainLLMError
from ..io import write_json
from ..model import EncodedSample
from ..ridge import centred_correlation, cv_ridge
from ..runs import LoadedRun
from ..evaluation import stats as S
from ..evaluation.tables import render_text
from .injection import (continuation_states, injected_losses, retrieval_weights, retrieved_states,
                        to_training_spread)

log = logging.getLogger(__name__)

DEFAULT_SCALES = (0.1, 0.3, 1.0)  # oracle norm / adapter output norm
ORACLE = "mean input embedding of the true continuation tokens, centred on the training samples' mean"


@dataclass
class CeilingRow:
    """The oracle at one scale. Losses in nats per continuation token (+ EOS)."""

    scale: float               # mean |oracle vector| / mean |adapter output|
    own_loss: float            # text i with its own oracle vector
    other_loss: float          # text i with the other samples' vectors (mean over j != i)
    delta: float               # own - other (negative: the information helps)
    delta_se: float            # standard error over samples
    p: float                   # two-sided sign-flip p of delta (clusters: stimuli if several, else samples)
    identification: float      # two-way identification of the own vector (chance 0.5)


@dataclass
class TokenRow:
    """A token oracle (module docstring): the slots hold token embeddings instead of the adapter's outputs."""

    oracle: str                # "true tokens" or "ridge-decoded tokens"
    own_loss: float            # text i with its own slots
    other_loss: float          # text i with the slots of the other samples (mean over j != i)
    delta: float
    delta_se: float
    p: float
    identification: float
    precision: float           # fraction of slot tokens that occur in the sample's continuation
    frequency_precision: float  # the same for the training continuations' most frequent tokens (no brain)


@dataclass
class StateRow:
    """A state oracle (module docstring): the brain positions' hidden state after `layer` blocks replaced."""

    layer: int
    oracle: str                # "true mean state" or "ridge-decoded state"
    own_loss: float
    other_loss: float
    delta: float
    delta_se: float
    p: float
    identification: float
    correlation: float         # mean per-sample correlation with the true state (centred on the training mean)
    ridge_alpha: float | None  # penalty chosen by cross-validation on the training samples (None for the truth)
    cv_correlation: float | None  # its cross-validated correlation on the training samples (None for the truth)
    neighbours: float | None = None  # retrieval: mean effective number of training states averaged (1 / Σ w²)


@dataclass
class CeilingReport:
    run: str
    split: str
    n_samples: int
    n_stimuli: int
    baseline_loss: float       # the trained run with no oracle (its own frames)
    adapter_norm: float        # mean L2 norm of one adapter output (one slot) on these samples
    rows: list[CeilingRow]
    token_rows: list[TokenRow] = field(default_factory=list)
    ridge: dict = field(default_factory=dict)  # the ridge token decoder: penalty, vocabulary, CV precision
    state_rows: list[StateRow] = field(default_factory=list)
    oracle: str = ORACLE
    p_clusters: str = "stimuli"

    def table(self) -> str:
        def stats(r) -> list[str]:
            return [f"{r.own_loss:.4f}", f"{r.other_loss:.4f}", f"{r.delta:+.4f} ({r.delta_se:.4f})", f"{r.p:.3g}",
                    f"{r.identification:.3f}"]

        common = ["own loss", "others' loss", "delta (se)", "p", "identification"]
        text = (f"Information ceiling of {self.run} on {self.split} ({self.n_samples} samples, {self.n_stimuli} "
                f"stimuli; oracle: {self.oracle}; p: sign-flip over {self.p_clusters})\n"
                f"loss without oracle: {self.baseline_loss:.4f}; mean adapter output norm {self.adapter_norm:.3g}\n"
                + render_text(["|oracle|/|adapter|"] + common, [[f"{r.scale:g}"] + stats(r) for r in self.rows],
                              right_align=True))
        if self.token_rows:
            text += ("\n\nToken oracles (the slots hold token embeddings instead of the adapter outputs; ridge "
                     f"decoder: {self.ridge})\n"
                     + render_text(["oracle"] + common + ["precision", "frequency precision"],
                                   [[r.oracle] + stats(r) + [f"{r.precision:.3f}", f"{r.frequency_precision:.3f}"]
                                    for r in self.token_rows], right_align=True))
        if self.state_rows:
            text += ("\n\nState oracles (the brain positions' hidden state after layer L replaced)\n"
                     + render_text(["layer", "oracle"] + common + ["correlation", "ridge alpha", "cv correlation",
                                                                     "neighbours"],
                                   [[str(r.layer), r.oracle] + stats(r) + [f"{r.correlation:.3f}"]
                                    + (["-", "-"] if r.ridge_alpha is None else
                                       [f"{r.ridge_alpha:.3g}", f"{r.cv_correlation:.3f}"])
                                    + ["-" if r.neighbours is None else f"{r.neighbours:.1f}"]
                                    for r in self.state_rows], right_align=True))
        return text


def oracle_vectors(run: LoadedRun, samples: Sequence[EncodedSample], centre: np.ndarray | None = None) -> np.ndarray:
    """`(n, H)` mean input embedding of each sample's continuation tokens, minus `centre` `(H,)` if given."""
    weight = run.model.backbone.get_input_embeddings().weight
    with torch.no_grad():
        out = torch.stack([weight[list(s.continuation_ids)].float().mean(0) for s in samples]).cpu().numpy()
    return out - centre if centre is not None else out


def _adapter_norm(run: LoadedRun, samples: Sequence[EncodedSample]) -> float:
    """Mean L2 norm of the adapter's outputs `(T, H)` rows over the samples' frames."""
    device = run.model.boundary.device
    norms = []
    with torch.no_grad():
        for s in samples:
            frames = torch.as_tensor(np.asarray(run.dataset.frames[list(s.frame_rows)], dtype=np.float32))[None]
            out = run.model.adapter(frames.to(device), torch.ones(frames.shape[:2], dtype=torch.bool, device=device))
            norms.append(float(out.norm(dim=-1).mean()))
    return float(np.mean(norms))


def scaled_oracle(run: LoadedRun, samples: Sequence[EncodedSample]) -> tuple[np.ndarray, float]:
    """(`(n, H)` oracle vectors centred on the training samples' mean and rescaled to a mean norm equal to the
    adapter's mean output norm, that norm)."""
    centre = oracle_vectors(run, run.encoder.encode_all(run.dataset, run.split.train)).mean(0)
    vectors = oracle_vectors(run, samples, centre)
    adapter_norm = _adapter_norm(run, samples)
    return vectors * (adapter_norm / max(float(np.linalg.norm(vectors, axis=1).mean()), 1e-12)), adapter_norm


def _frame_matrix(run: LoadedRun, samples: Sequence[EncodedSample], t_max: int) -> np.ndarray:
    """`(n, t_max * D)` each sample's frames, flattened in order and zero-padded to `t_max` frames."""
    d = run.dataset.frames.shape[1]
    out = np.zeros((len(samples), t_max * d))
    for i, s in enumerate(samples):
        out[i, : len(s.frame_rows) * d] = np.asarray(run.dataset.frames[list(s.frame_rows)], dtype=np.float64).ravel()
    return out


def _precision(top: np.ndarray, bag: np.ndarray, n_slots: Sequence[int]) -> float:
    """Mean over samples of the fraction of its first `n_slots[i]` ranked tokens `top[i]` present in `bag[i]`."""
    return float(np.mean([bag[i, top[i, :k]].mean() for i, k in enumerate(n_slots)]))


def _standardised_frames(run: LoadedRun, train: Sequence[EncodedSample], samples: Sequence[EncodedSample]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(`(n_train, F)`, `(n, F)`) flattened frames of the training samples and of `samples`, standardised with
    the training statistics only."""
    t_max = max(len(s.frame_rows) for s in [*train, *samples])
    x_train = _frame_matrix(run, train, t_max)
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    return (x_train - mean) / std, (_frame_matrix(run, samples, t_max) - mean) / std


def ridge_decoded_tokens(run: LoadedRun, train: Sequence[EncodedSample], samples: Sequence[EncodedSample],
                         seed: int = 0) -> tuple[list[list[int]], float, dict]:
    """The T_i most likely continuation tokens of each sample by a ridge decoder from its frames.

    Trained on the run's training samples `train` only: features = the sample's frames flattened (standardised with the
    training statistics), targets = the bag (0/1) of its continuation tokens over the tokens seen in training
    continuations; the penalty maximises the cross-validated precision (`ridge.cv_ridge`). Returns (token ids per
    sample, the precision of the training set's most frequent tokens on `samples`, the decoder's description)."""
    vocab = sorted({t for s in train for t in s.continuation_ids})
    column = {t: j for j, t in enumerate(vocab)}

    def bag(ss: Sequence[EncodedSample]) -> np.ndarray:
        y = np.zeros((len(ss), len(vocab)))
        for i, s in enumerate(ss):
            y[i, [column[t] for t in s.continuation_ids if t in column]] = 1.0
        return y

    x_train, x = _standardised_frames(run, train, samples)
    y_train = bag(train)
    n_slots_train = np.asarray([len(s.frame_rows) for s in train])

    def precision(pred: np.ndarray, truth: np.ndarray, held: np.ndarray) -> float:
        return _precision(np.argsort(-pred, axis=1), truth, n_slots_train[held])

    coef, icpt, alpha, cv = cv_ridge(x_train, y_train, [s.stimulus for s in train], precision, seed)
    top = np.argsort(-(x @ coef + icpt), axis=1)
    decoded = [[vocab[j] for j in top[i, : len(s.frame_rows)]] for i, s in enumerate(samples)]
    frequent = np.tile(np.argsort(-y_train.sum(0)), (len(samples), 1))
    frequency_precision = _precision(frequent, bag(samples), [len(s.frame_rows) for s in samples])
    info = {"alpha": alpha, "vocabulary": len(vocab), "cv_precision": round(cv, 4), "train_samples": len(train)}
    return decoded, frequency_precision, info


def ridge_decoded_states(run: LoadedRun, train: Sequence[EncodedSample], train_states: np.ndarray,
                         samples: Sequence[EncodedSample], seed: int = 0) -> tuple[np.ndarray, float, float]:
    """A ridge prediction `(n, H)` of each sample's state from its frames, fitted on the training samples'
    `train_states` `(n_train, H)` with the penalty of best cross-validated `centred_correlation` (`ridge.cv_ridge`),
    rescaled about the training mean so that its mean norm is that of the training states (ridge shrinks).
    Returns (predictions, alpha, cross-validated correlation)."""
    x_train, x = _standardised_frames(run, train, samples)

    def correlation(pred: np.ndarray, truth: np.ndarray, held: np.ndarray) -> float:
        return centred_correlation(pred, truth, train_states[~held].mean(0))

    coef, icpt, alpha, cv = cv_ridge(x_train, train_states, [s.stimulus for s in train], correlation, seed)
    return to_training_spread(x @ coef + icpt, train_states), alpha, cv


def _token_slots(run: LoadedRun, samples: Sequence[EncodedSample], tokens: Sequence[Sequence[int]]
                 ) -> list[np.ndarray]:
    """One `(T_i, H)` array per sample: slot k = input embedding of `tokens[i][k % len(tokens[i])]`."""
    weight = run.model.backbone.get_input_embeddings().weight
    with torch.no_grad():
        return [weight[[ids[k % len(ids)] for k in range(len(s.frame_rows))]].float().cpu().numpy()
                for s, ids in zip(samples, tokens)]


def _compare(matrix: np.ndarray, clusters: Sequence[str], seed: int) -> dict[str, float]:
    """Own vs others' loss of a cross matrix `(n, n)` (row i = text i, column j = sample j's information).
    Losses within `ties.TIE_TOLERANCE` (1e-5 nats) tie: the same loss computed in batches of other lengths
    differs in float32 rounding (with two BLAS threads, by ~1e-7), which must not decide an identification."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(matrix)
    own = np.diag(matrix)
    diff = own - (matrix.sum(1) - own) / (n - 1)
    return {"own_loss": float(own.mean()), "other_loss": float((own - diff).mean()), "delta": float(diff.mean()),
            "delta_se": float(diff.std(ddof=1) / np.sqrt(n)), "p": S.sign_flip_test(diff, clusters, seed=seed),
            "identification": float(S.identification(matrix)["frames_given_text"]["two_way"].mean())}


def ceiling(run: LoadedRun, split: str = "valid", scales: Sequence[float] = DEFAULT_SCALES,
            max_samples: int = 48, seed: int = 0, batch_size: int = 16, tokens: bool = True,
            layers: Sequence[int] = (), retrieval_sharpness: float = 3.0) -> CeilingReport:
    """The oracle cross-loss for each scale on up to `max_samples` samples of `split` (one per stimulus first),
    with `tokens` the two token oracles, and the state oracles at each of `layers` (module docstring; the retrieved
    state with `retrieval_sharpness`, chosen on the real development data's validation split, when the run has an
    encoding model fitted without the probed split's samples)."""
    if run.model.inject_layer is not None:
        raise BrainLLMError(f"{run.path} injects its adapter outputs after layer {run.model.inject_layer}; the "
                            "ceiling's oracles replace input-embedding slots, so they probe runs of the paper's "
                            "layout (model.inject_layer unset) only.")
    if run.model.adapter.tokens_per_frame != 1:
        raise BrainLLMError(f"{run.path} gives each frame {run.model.adapter.tokens_per_frame} soft tokens; the "
                            "ceiling's oracles fill one slot per frame, so they probe runs with tokens_per_frame 1.")
    ids = pick_samples(run, split, max_samples, seed)
    if len(ids) < 2:
        raise BrainLLMError(f"The ceiling compares each sample with the others: split '{split}' has {len(ids)} "
                            f"sample(s); probe a split with at least 2.")
    for layer in layers:
        run.model.decoder_layer(layer)  # a layer the backbone lacks fails here, before any oracle is scored
    samples = run.encoder.encode_all(run.dataset, ids)
    vectors, adapter_norm = scaled_oracle(run, samples)  # (n, H)
    layout = input_layout(run, "brain")
    n = len(samples)
    stimuli = [s.stimulus for s in samples]
    clusters = stimuli if len(set(stimuli)) > 1 else [s.id for s in samples]
    pairs = [s for s in samples for _ in range(n)]  # row i: text i (and its frames) n times
    baseline = float(teacher_forced_losses(run, samples, layout, batch_size).mean())
    rows = []
    for scale in scales:
        offsets = scale * np.tile(vectors, (n, 1))  # pair (i, j) gets vector j
        matrix = teacher_forced_losses(run, pairs, layout, batch_size, offsets).reshape(n, n)
        rows.append(CeilingRow(float(scale), **_compare(matrix, clusters, seed)))
        log.info("oracle x%g: delta %+.4f, identification %.3f", scale, rows[-1].delta, rows[-1].identification)
    train = run.encoder.encode_all(run.dataset, run.split.train) if tokens or layers else []
    token_rows, ridge = [], {}
    if tokens:
        decoded, frequency_precision, ridge = ridge_decoded_tokens(run, train, samples, seed)
        truth = [list(s.continuation_ids) for s in samples]
        for name, ids in (("true tokens", truth), ("ridge-decoded tokens", decoded)):
            slots = _token_slots(run, samples, ids)
            matrix = teacher_forced_losses(run, pairs, layout, batch_size,
                                           brain_slots=[slots[j] for _ in range(n) for j in range(n)]).reshape(n, n)
            precision = float(np.mean([np.isin(ids[i][: len(s.frame_rows)], truth[i]).mean()
                                       for i, s in enumerate(samples)]))
            token_rows.append(TokenRow(name, **_compare(matrix, clusters, seed), precision=precision,
                                       frequency_precision=frequency_precision))
            log.info("%s: delta %+.4f, identification %.3f", name, token_rows[-1].delta,
                     token_rows[-1].identification)
    state_rows = []
    train_states, true_states = continuation_states(run, train, layers), continuation_states(run, samples, layers)
    # the retrieval's weights come from the encoding model's layer, not the injected one: computed once; an
    # encoding model fitted on the probed split's own samples would retrieve them in-sample, so then no row
    weights, neighbours = None, None
    if layers and has_scorer(run):
        if split in scorer_splits(run):
            log.warning("%s's encoding model was fitted on the %s samples (tune-decoder --refit-with-valid): no "
                        "retrieved-state oracle on them; tune with --no-refit-with-valid to probe it.", run.path, split)
        else:
            weights, neighbours = retrieval_weights(run, load_scorer(run), train, samples, retrieval_sharpness)
    for layer in layers:
        centre = train_states[layer].mean(0)
        decoded, alpha, cv = ridge_decoded_states(run, train, train_states[layer], samples, seed)
        oracles = [("true mean state", true_states[layer], (1.0, None, None, None)),
                   ("ridge-decoded state", decoded, (centred_correlation(decoded, true_states[layer], centre), alpha,
                                                     cv, None))]
        if weights is not None:
            retrieved = retrieved_states(weights, train_states[layer])
            oracles.append(("retrieved state", retrieved,
                            (centred_correlation(retrieved, true_states[layer], centre), None, None, neighbours)))
        for name, vectors, fit in oracles:
            matrix = injected_losses(run, pairs, layer, np.tile(vectors, (n, 1)), batch_size).reshape(n, n)
            state_rows.append(StateRow(layer, name, **_compare(matrix, clusters, seed), correlation=fit[0],
                                       ridge_alpha=fit[1], cv_correlation=fit[2], neighbours=fit[3]))
            log.info("layer %d %s: delta %+.4f, identification %.3f", layer, name, state_rows[-1].delta,
                     state_rows[-1].identification)
    return CeilingReport(str(run.path), split, n, len(set(stimuli)), baseline, adapter_norm, rows, token_rows, ridge,
                         state_rows, p_clusters="stimuli" if clusters is stimuli else "samples (one stimulus)")


def write_ceiling(report: CeilingReport, path: str | Path) -> None:
    """`report` as JSON (atomic)."""
    write_json(Path(path), asdict(report))
