"""Does the output depend on the brain? One verdict line per control, and the Bayesian decoder's identification.

A reader's first question (Jo et al. 2024 showed EEG-to-text models scoring the same on noise; Feghhi et al. 2024
that sentence length and position explain much of Pereira decoding) is answered before any table:

* `verdicts(summary)`: per control present, whether BrainLLM beats it, by which test and at which p:
  PerBrainLLM (permuted frames) and StdLLM (no brain input) by the teacher-forced loss (sign-flip over stimuli on
  the per-sample Δ loss) and by BLEU-1 of the generated text; the length/position decoder (`nuisance`) by BLEU-1
  and by the loss under its distribution (it decodes with the same LM, so its plain losses are BrainLLM's).
  Beating StdLLM alone is not a brain effect (a learned prompt does it), and the verdict says so.
* with the Bayesian decoder, the same loss test and pairwise accuracy under the decoder's own distribution
  (`posterior_loss_nats`: the adapter-conditioned LM re-weighted by λ·log p(frames | text), normalised over its
  samples), where the encoding model's reading of the frames enters the paper's scoring, beside the pairwise
  accuracy the length/position decoder's distribution reaches against the same PerBrainLLM (on the real development
  data most of the decoder's);
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


def _clause(entry: Optional[dict], metric: str, higher_is_better: bool, label: str) -> tuple[bool, str]:
    if not entry or entry.get("p_signflip_stimuli") is None:
        return False, f"{label}: not available"
    p = entry["p_signflip_stimuli"]
    hit = p < ALPHA and _better(entry, metric, higher_is_better)
    return hit, f"{label} Δ {entry['diff']:+.4f}, sign-flip over stimuli p={p:.3g}"


def verdicts(summary: dict) -> list[str]:
    """One line per control present in the run's evaluation summary (see the module docstring)."""
    lines = []
    for control in ("permuted", "nuisance", "no_brain", "no_text"):
        if f"brain_vs_{control}" not in summary.get("comparisons", {}):
            continue
        # the nuisance decoder uses BrainLLM's LM, so its own loss is BrainLLM's; its distribution's loss is not
        tests = ([(BLEU, True, "BLEU-1")] + ([(POSTERIOR_LOSS, False, "posterior loss")]
                                             if _test(summary, control, POSTERIOR_LOSS) else [])
                 if control == "nuisance" else [(LOSS, False, "loss"), (BLEU, True, "BLEU-1")])
        clauses = [_clause(_test(summary, control, m), m, hib, label) for m, hib, label in tests]
        detected = any(hit for hit, _ in clauses)
        what = "brain effect DETECTED" if detected else "no brain effect detected"
        if control == "no_brain":
            what = ("better than the bare LLM" if detected else "not better than the bare LLM") + \
                   " (a learned prompt alone can do this: not evidence of brain information)"
        elif control == "nuisance":
            what = ("content beyond length/position DETECTED" if detected
                    else "nothing beyond length/position detected")
        lines.append(f"vs {DISPLAY.get(control, control)}: {what} ({'; '.join(text for _, text in clauses)}; "
                     f"α {ALPHA})")
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
        lines.append(line + f"; α {ALPHA})")
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
