"""Does the output depend on the brain? One verdict line per control, and the Bayesian decoder's identification.

A reader's first question (Jo et al. 2024 showed EEG-to-text models scoring the same on noise; Feghhi et al. 2024
that sentence length and position explain much of Pereira decoding) is answered before any table:

* `verdicts(summary)`, strongest question first. With a length/position decoder (`nuisance`: the same candidates
  picked by length and position alone), the first line asks whether content beyond length and position reaches
  the decoded words (BLEU-1 and MiniLM similarity against it, Bonferroni over the two). Then, per control present,
  whether BrainLLM beats it, by which test and at which p: PerBrainLLM (permuted frames) and StdLLM (no brain
  input) by the teacher-forced loss (sign-flip over stimuli on the per-sample Δ loss) and by BLEU-1 of the
  generated text. Beating StdLLM alone is not a brain effect (a learned prompt does it), and the verdict says so;
  a DETECTED that the length/position decoder matches says so in the same line.
* with the Bayesian decoder, the same loss test and pairwise accuracy under the decoder's own distribution
  (`posterior_loss_nats`: the adapter-conditioned LM re-weighted by λ·log p(frames | text), normalised over its
  samples), where the encoding model's reading of the frames enters the paper's scoring, beside the pairwise
  accuracy the length/position decoder's distribution reaches against the same PerBrainLLM, and whether the
  decoder's distribution beats that one's (the loss under each; on the real development data the length/position
  distribution reaches most of the decoder's);
* with the retrieval baseline (`retrieval`: the training text the encoding model finds likeliest for the frames,
  or the one a `pool-mbr` decoder's rule chooses),
  whether generation beats looking the text up (MiniLM similarity and BLEU-1, Bonferroni over the two);
* `decoder_identification(scores)`: from `predictions/<split>_decoderscore.npz` (`decoding.decoder_identification`), 2-way
  identification of texts for fixed frames, across stimuli and within a stimulus, by the encoding model, by the
  length/position model alone, and by the decoder's whole score (log p_LM + λ log p(frames | text), each text's
  score centred on its mean over frames, so a text's prior probability does not decide), where the cross-loss
  matrix is there.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..identification import two_way
from .metrics import LOSS, POSTERIOR_LOSS
from .rundata import DISPLAY

ALPHA = 0.05
BLEU = "bleu1_per_sample"
SEMSIM = "semsim_minilm_cosine"


def decoder_identification(scores: Optional[dict[str, np.ndarray]],
                           crossloss: Optional[tuple[list[str], np.ndarray]]) -> dict[str, Any]:
    """Identification by the Bayesian decoder's own scores (see the module docstring); `{"available": False}`
    without a decoderscore file."""
    if scores is None:
        return {"available": False, "reason": "no decoderscore file (run generate with --crossloss on a run with "
                                              "a tuned decoder)"}
    ids = [str(i) for i in scores["ids"]]
    stimuli, keys = [str(s) for s in scores["stimuli"]], [str(k) for k in scores["frame_keys"]]
    out: dict[str, Any] = {"available": True, "n": len(ids), "chance": 0.5,
                           "encoding_model": two_way(scores["encoding"], stimuli, keys),
                           "length_position_model": two_way(scores["nuisance"], stimuli, keys)}
    if crossloss is not None:
        index = {sid: i for i, sid in enumerate(ids)}
        cl_ids, loss = crossloss
        if all(c in index for c in cl_ids):
            rows = [index[c] for c in cl_ids]
            lm = -loss * scores["n_tokens"][rows][:, None]  # summed log p_LM(text i | frames j)
            total = lm + float(scores["weight"]) * scores["encoding"][np.ix_(rows, rows)]
            total = total - total.mean(axis=1, keepdims=True)
            out["decoder_score"] = two_way(total, [stimuli[r] for r in rows], [keys[r] for r in rows])
            out["decoder_score"]["n"] = len(rows)
    return out


def _test(summary: dict, control: str, metric: str) -> Optional[dict]:
    return (summary.get("comparisons", {}).get(f"brain_vs_{control}") or {}).get(metric)


def _better(entry: dict, metric: str, higher_is_better: bool) -> bool:
    diff = entry.get("diff")
    return diff is not None and (diff > 0 if higher_is_better else diff < 0)


def _available(entry: Optional[dict]) -> bool:
    return bool(entry) and entry.get("p_signflip_stimuli") is not None


def _clause(entry: Optional[dict], metric: str, higher_is_better: bool, label: str, alpha: float = ALPHA
            ) -> tuple[bool, str]:
    """(whether `entry` beats its control in the right direction at p < `alpha`, its text)."""
    if not _available(entry):
        return False, f"{label}: not available"
    p = entry["p_signflip_stimuli"]
    hit = p < alpha and _better(entry, metric, higher_is_better)
    return hit, f"{label} Δ {entry['diff']:+.4f}, sign-flip over stimuli p={p:.3g}"


def verdicts(summary: dict) -> list[str]:
    """One line per control present in the run's evaluation summary, strongest question first (see the module
    docstring): with a length/position decoder, the first line says whether content beyond length and position
    reaches the decoded words, and a DETECTED that the length/position decoder matches says so in its own line."""
    comparisons = summary.get("comparisons", {})
    has_nuisance = "brain_vs_nuisance" in comparisons
    lines = [_content_line(summary)] if has_nuisance else []
    for control in ("permuted", "no_brain", "no_text"):
        if f"brain_vs_{control}" not in comparisons:
            continue
        clauses = [_clause(_test(summary, control, m), m, hib, label)
                   for m, hib, label in ((LOSS, False, "loss"), (BLEU, True, "BLEU-1"))]
        detected = any(hit for hit, _ in clauses)
        what = "brain effect DETECTED" if detected else "no brain effect detected"
        if control == "no_brain":
            what = ("better than the bare LLM" if detected else "not better than the bare LLM") + \
                   " (a learned prompt alone can do this: not evidence of brain information)"
        line = f"vs {DISPLAY.get(control, control)}: {what} ({'; '.join(text for _, text in clauses)}; α {ALPHA})"
        if control == "permuted" and clauses[1][0] and has_nuisance:
            line += _matched(summary, BLEU, True, "BLEU-1", "text")
        lines.append(line)
    pairwise = summary.get("pairwise_accuracy", {}).get("vs_permuted")
    if pairwise and pairwise.get("mean") is not None:
        lines.append(f"pairwise accuracy vs PerBrainLLM (loss with true < permuted frames): {pairwise['mean']:.3f}, "
                     f"sign-flip p={pairwise.get('p_signflip_stimuli', float('nan')):.3g} vs chance 0.5")
    posterior = _test(summary, "permuted", POSTERIOR_LOSS)
    if posterior:
        hit, text = _clause(posterior, POSTERIOR_LOSS, False, "posterior loss")
        line = (f"vs PerBrainLLM under the Bayesian decoder's own distribution: "
                f"{'brain effect DETECTED' if hit else 'no brain effect detected'} ({text}")
        pairwise = summary.get("pairwise_accuracy", {})
        for key, label in (("posterior_vs_permuted", "pairwise accuracy"),
                           ("nuisance_posterior_vs_permuted", "the length/position decoder's distribution alone")):
            if (pairwise.get(key) or {}).get("mean") is not None:
                line += (f"; {label} {pairwise[key]['mean']:.3f}, sign-flip p="
                         f"{pairwise[key].get('p_signflip_stimuli', float('nan')):.3g}")
        line += f"; α {ALPHA})"
        if hit and _test(summary, "nuisance", POSTERIOR_LOSS):
            line += _matched(summary, POSTERIOR_LOSS, False, "posterior loss", "distribution")
        lines.append(line)
    if "brain_vs_retrieval" in comparisons:
        lines.append(_retrieval_line(summary))
    ident = summary.get("decoder_identification") or {}
    if ident.get("available"):
        enc, nuis = ident["encoding_model"], ident["length_position_model"]
        line = (f"decoder identification (2-way, texts for fixed frames, {ident['n']} samples): encoding model "
                f"across passages {enc['across']:.3f} / within {enc['within']:.3f}; length+position alone "
                f"{nuis['across']:.3f} / {nuis['within']:.3f}")
        if "decoder_score" in ident:
            d = ident["decoder_score"]
            line += f"; whole decoder score ({d['n']} samples) {d['across']:.3f} / {d['within']:.3f}"
        lines.append(line)
    return lines


TEXT_TESTS = ((BLEU, "BLEU-1"), (SEMSIM, "MiniLM similarity"))


def _text_tests(summary: dict, control: str) -> tuple[bool, str]:
    """(whether BrainLLM's text beats `control`'s on BLEU-1 or MiniLM similarity, each at α / (number of tests)
    (Bonferroni, so that two tests do not double the false alarms), the clauses)."""
    tests = [(m, label) for m, label in TEXT_TESTS if _available(_test(summary, control, m))]
    alpha = ALPHA / max(len(tests), 1)
    clauses = [_clause(_test(summary, control, m), m, True, label, alpha) for m, label in tests]
    detail = "; ".join(text for _, text in clauses) if clauses else "no text metric to compare"
    return any(hit for hit, _ in clauses), f"{detail}; α {ALPHA}, Bonferroni over {len(tests)} tests"


def _content_line(summary: dict) -> str:
    """Whether the decoded words hold content beyond length and position: BrainLLM's text against the
    length/position decoder's (the same candidates, picked by length and position alone)."""
    hit, detail = _text_tests(summary, "nuisance")
    return (f"content beyond length/position in the decoded words: {'DETECTED' if hit else 'not detected'} (vs the "
            f"length/position decoder: {detail})")


def _retrieval_line(summary: dict) -> str:
    """Whether generating the text beats looking it up: BrainLLM against the retrieval baseline (the training text
    the encoding model finds likeliest for the frames, or the one a pool-mbr decoder's rule chooses)."""
    hit, detail = _text_tests(summary, "retrieval")
    rule = summary.get("decoding", {}).get("retrieval", {})
    pick = str(rule.get("pick", "")) if rule.get("rerank") == "encoding" else ""
    how = ("a training text chosen by the decoder's own rule, pool-mbr" if pick == "pool-mbr" else
           f"per fold, by that fold's decoder's rule ({pick.removeprefix('per fold: ')}; pool-mbr: a training text "
           "chosen by that rule, else the nearest by the encoding model)" if "pool-mbr" in pick else
           "the nearest training text by the encoding model")
    return (f"generation vs look-up: {'better than' if hit else 'not better than'} the retrieval baseline ({how}: "
            f"{detail})")


def _matched(summary: dict, metric: str, higher_is_better: bool, label: str, what: str) -> str:
    """The clause a DETECTED line gets from the length/position decoder's `what` on `metric`: BrainLLM beyond it at
    α, or it does as well (the effect may be length and position, not content)."""
    beyond, text = _clause(_test(summary, "nuisance", metric), metric, higher_is_better, label)
    if beyond:
        return f" — and beyond the length/position decoder's {what} ({text} vs it)"
    return f" — but the length/position decoder's {what} does as well ({text} vs it): not evidence of content"
