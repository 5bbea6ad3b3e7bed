"""Choosing the Bayesian decoder of a run (`brainllm tune-decoder`, beyond the paper): the encoding model by
cross-validation over training stimuli, then, on the validation split, two λs.

- The distribution's λ (`posterior_weight`): the one under which the reference continuations are most likely
  (the held-out loss `decoding.bayes.posterior_losses` gives; it does not depend on the number of candidates).
- The picks' λ and the number of candidates (`encoding_weight`, `n_candidates`), by a `criterion`:
  `bleu` maximises the validation BLEU-1 of the picks under the true frames. The two others maximise how much that
  BLEU-1 beats a control's picks, among the settings whose true-frames BLEU-1 is within `tolerance` (relative) of
  the best: `content_gain` (the default) the length/position decoder's (the same candidates, picked with the
  encoding model that reads only the frames' length and position: what the frames say beyond that nuisance);
  `brain_gain` PerBrainLLM's (other passages' frames, their own candidates). On the real development data the
  BLEU-1 choice left the text independent of the frames (own 0.219 vs permuted 0.220 on validation); `brain_gain`
  chose λ = 10, whose gain over permuted frames came from length and position alone (docs/calibration.md).
  `meaning_gain` (the sentence task's default) is `content_gain` on BLEU-1 plus MiniLM similarity, the content
  line's two measures: with no prompt the sentence's topic is what the frames can give, and BLEU-1 alone chose
  picks no closer in meaning than a training sentence looked up (docs/results.md).
- The pick rule (`map`, `mbr`, and in the sentence task `pool-mbr` at `SENTENCE_MEANING_WEIGHTS`) with them.
- The length/position decoder's own λ and retrieval seeds (`nuisance_encoding_weight`,
  `nuisance_seeded_sentences`): the control shares the chosen row's sampled candidates (temperature, pick rule,
  number of candidates, guided width) and takes the λ and seeds under which *its* picks score best on validation
  (`best_nuisance_rows`); `content_gain` compares each row with that best control, not with the control at the
  row's own λ and seeds. Sharing them let the criterion choose settings whose control happened to be weakest: on
  split seed 4 of the real development data the noise-trained model's content line read DETECTED (its control at
  λ 3 with seeds fell to BLEU-1 0.089 against 0.141; docs/results.md).

The decoder itself is `decoding.bayes`; this module scores what it decodes, so it sits above decoding and scoring.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace

import numpy as np

from ..config import PICKS, GenerationConfig
from ..decoding.bayes import (encoding_scores, guided_texts, posterior_losses, reference_scores, score_candidates,
                              seeded_texts)
from ..decoding.encoding_choice import choose_encoding_model, fit_encoding_model, training_samples
from ..decoding.encoding_model import SentenceScorer, save_scorer
from ..decoding.pool_mbr import PoolMBR, PoolMBRPicker, SentenceVectors
from ..decoding.retrieval import retrieval_pool, retrieval_scores
from ..decoding.sentences import teacher_forced_losses
from ..errors import ConfigError, check_choice
from ..evaluation import metrics as M
from ..evaluation.stats import pairwise_accuracy
from ..io import write_json
from ..model.collate import permute_frames
from ..runs import LoadedRun, RunPaths

log = logging.getLogger(__name__)

#: the layers tried, as fractions of the backbone's depth (SmolLM2-135M's 30 blocks: 4, 8, 10, 12, 16, 24)
DEFAULT_LAYER_FRACTIONS = (0.13, 0.27, 0.33, 0.4, 0.53, 0.8)
#: first frame dimensions tried; on the real development data 200-300 beat all 1000 (docs/calibration.md)
DEFAULT_DIMS: tuple[int | None, ...] = (200, 300, None)
DEFAULT_SHRINKAGES = (0.5,)
#: scales of the length/position band; on the real development data 3-6 beat 1 (docs/calibration.md)
DEFAULT_NUISANCE_WEIGHTS = (1.0, 3.0, 6.0)
#: how many of the passage's previous sentences a text may be read after; on the real development data CV chose 1
#: (identification 0.841 against 0.818 alone), and on its test passages that decoder identified at 0.823 across
#: (0.795 alone) with the same text quality (docs/calibration.md)
DEFAULT_CONTEXT_SENTENCES = (0, 1)
#: refit the encoding models on training + validation once everything is chosen: on the real development data CV
#: identification still grows with training passages (0.796 at 42, 0.852 at 76; docs/calibration.md)
DEFAULT_REFIT_WITH_VALID = True
DEFAULT_WEIGHTS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
DEFAULT_CANDIDATES = (1, 4, 8, 16)
#: the sentence task (no prompt: `data.tasks`): the candidates must differ in content, so more of them, drawn at a
#: temperature chosen on validation; and no passage context, which would read the true previous sentences
SENTENCE_CANDIDATES = (1, 8, 16, 32)
#: and the frames weigh more against a whole sentence's LM score: on the real development data (split seed 2) the
#: validation choice sat at the default grid's largest λ, 30
SENTENCE_WEIGHTS = DEFAULT_WEIGHTS + (100.0, 300.0)
SENTENCE_TEMPERATURES = (0.8, 1.0, 1.2)
SENTENCE_CONTEXT_SENTENCES = (0,)
#: the encoding-guided search's widths tried by default: none (0). It is an option (`guided_beams`): on the real
#: development data the decoder that validation chose with it (split seed 3: 4 beams, λ 3) did not beat PerBrainLLM
#: on the test passages, and its BLEU-1 fell below the length/position decoder's (docs/results.md)
DEFAULT_GUIDED_BEAMS = (0,)
#: how many retrieved training sentences seed BrainLLM's extra candidates (`decoding.seeded`; 0 = none): the
#: sentence task tries none and 3, the continuation task none. On the real development data's validation passages
#: (split seeds 2 and 3) the seeded texts' MiniLM similarity to the reference was 0.10-0.12 against 0.08 for the
#: sampled ones, at the same BLEU-1 (docs/results.md)
DEFAULT_SEEDED_SENTENCES = (0,)
SENTENCE_SEEDED_SENTENCES = (0, 3)
#: the pick rules tried: the sentence task also tries `pool-mbr` (its hypotheses include the likeliest training
#: sentences, `decoding.pool_mbr`), at these weights of meaning (MiniLM cosine) against words in its similarity. On
#: the real development data's validation passages (split seeds 2, 3, 5; 139 samples;
#: benchmarks/pool_mbr_validation.py) it raised the picks' MiniLM similarity to the reference from 0.087 (each run's
#: tuned pick) to 0.096 (w 0.3) and 0.116 (w 0.7), but a look-up by the same rule reached 0.111 and 0.122
#: (docs/results.md)
DEFAULT_PICKS = ("map", "mbr")
SENTENCE_PICKS = ("map", "mbr", "pool-mbr")
SENTENCE_MEANING_WEIGHTS = (0.3, 0.7)
#: how the picks' λ and number of candidates are chosen on validation (module docstring), and the control
#: column each gain criterion subtracts; `meaning_gain` (the sentence task's default) scores a row by its BLEU-1 plus
#: its MiniLM similarity (`quality`), the content line's two measures
CRITERIA = ("content_gain", "brain_gain", "bleu", "meaning_gain")
DEFAULT_CRITERION = "content_gain"
SENTENCE_CRITERION = "meaning_gain"
CONTROL_COLUMNS = {"content_gain": "valid_bleu1_nuisance", "brain_gain": "valid_bleu1_permuted",
                   "meaning_gain": "valid_bleu1_nuisance"}
#: the settings the length/position decoder shares with the decoder it controls (the same sampled candidates, the
#: same pick rule); its λ and retrieval seeds are its own
SHARED_WITH_CONTROL = ("temperature", "pick", "n_candidates", "guided_beams", "mbr_meaning_weight")
DEFAULT_TOLERANCE = 0.05


def bleu1(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """`(n,)` the evaluation's `bleu1_per_sample` of each prediction (default metric settings)."""
    pred, ref, _, _ = M.prepare_pairs(predictions, references, M.MetricConfig())
    return np.array([M.bleu_per_sample(p, r, 1) for p, r in zip(pred, ref)])


def default_layers(n_blocks: int) -> list[int]:
    """The layers `tune` tries on a backbone of `n_blocks` blocks (`DEFAULT_LAYER_FRACTIONS` of its depth, each at
    least 1, without repeats)."""
    return sorted({max(1, min(n_blocks, round(f * n_blocks))) for f in DEFAULT_LAYER_FRACTIONS})


def quality(row: dict, criterion: str, suffix: str = "") -> float:
    """What `criterion` maximises in a validation row: its BLEU-1 (`valid_bleu1` + `suffix`), plus its MiniLM
    similarity (`valid_minilm` + `suffix`) for `meaning_gain`."""
    value = row["valid_bleu1" + suffix]
    return value + row["valid_minilm" + suffix] if criterion == "meaning_gain" else value


def check_selection(criterion: str | None, tolerance: float, prefix: str = "",
                    context_sentences: Sequence[int] | None = DEFAULT_CONTEXT_SENTENCES) -> None:
    """A `ConfigError` unless `criterion` is one of `CRITERIA`, `tolerance` lies in [0, 1) and `context_sentences`
    are whole numbers >= 0 or None (the run's task's default, `tune`) (checked before any fitting, so a typo costs
    nothing); `prefix` goes before the names in the message (`--` for the CLI). None: the run's task's default."""
    if criterion is not None:
        check_choice(f"{prefix}criterion", criterion, CRITERIA)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0.0 <= tolerance < 1.0:
        raise ConfigError(f"{prefix}tolerance must be a number in [0, 1), got {tolerance!r}.")
    if context_sentences is None:
        return
    if not context_sentences or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in context_sentences):
        raise ConfigError(f"{prefix}context-sentences must be whole numbers >= 0, got {list(context_sentences)!r}.")


def _shared(row: dict) -> tuple:
    """A validation row's settings that its length/position decoder shares (`SHARED_WITH_CONTROL`; missing ones at
    their defaults)."""
    defaults = {"temperature": None, "pick": "map", "guided_beams": 0, "mbr_meaning_weight": None}
    return tuple(row.get(k, defaults.get(k)) for k in SHARED_WITH_CONTROL)


def best_nuisance_rows(table: Sequence[dict], criterion: str = DEFAULT_CRITERION) -> dict[tuple, dict]:
    """Per shared setting (`_shared`), the row where the length/position decoder's validation BLEU-1
    (`valid_bleu1_nuisance`; plus its MiniLM similarity for `meaning_gain`: `quality`) is highest: that control with
    its own best λ and seeds (ties to fewer seeds, then to the smaller λ)."""
    out: dict[tuple, dict] = {}

    def rank(r: dict) -> tuple:
        return quality(r, criterion, "_nuisance"), -r.get("seeded_sentences", 0), -r["encoding_weight"]

    for r in table:
        key = _shared(r)
        if key not in out or rank(r) > rank(out[key]):
            out[key] = r
    return out


def choose_decoder(table: Sequence[dict], criterion: str = DEFAULT_CRITERION,
                   tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """The validation row (`n_candidates`, `encoding_weight`, `valid_bleu1`, and the control columns
    `valid_bleu1_nuisance`, `valid_bleu1_permuted`; for `meaning_gain` also the `valid_minilm*` ones) whose setting
    decodes: `bleu`, the highest `valid_bleu1`; a gain criterion, the highest `quality` minus its control's among
    rows with `quality >= (1 − tolerance) · max quality`: `brain_gain` PerBrainLLM's at the row's own settings,
    `content_gain` (BLEU-1) and `meaning_gain` (BLEU-1 + MiniLM) the length/position decoder's at its own best λ and
    seeds with the row's shared settings (`best_nuisance_rows`). Ties go to the higher quality, then to no or a
    narrower
    guided search, then to no or fewer retrieval-seeded sentences, then to fewer candidates (cheaper), then to the
    MAP pick (simpler; rows without a `pick` are MAP, without `guided_beams` unguided, without `seeded_sentences`
    unseeded)."""
    check_selection(criterion, tolerance)

    def simpler(r: dict) -> tuple:
        return (-r.get("guided_beams", 0), -r.get("seeded_sentences", 0), -r["n_candidates"],
                r.get("pick", "map") == "map")

    if criterion == "bleu":
        return max(table, key=lambda r: (r["valid_bleu1"], *simpler(r)))
    best_control = best_nuisance_rows(table, criterion)

    def control(r: dict) -> float:
        if criterion == "brain_gain":
            return r[CONTROL_COLUMNS[criterion]]
        return quality(best_control[_shared(r)], criterion, "_nuisance")

    floor = (1 - tolerance) * max(quality(r, criterion) for r in table)
    eligible = [r for r in table if quality(r, criterion) >= floor]
    return max(eligible, key=lambda r: (quality(r, criterion) - control(r), quality(r, criterion), *simpler(r)))


def tune(run: LoadedRun, cfg: GenerationConfig | None = None, layers: Sequence[int | None] | None = None,
         dims: Sequence[int | None] = DEFAULT_DIMS, shrinkages: Sequence[float] = DEFAULT_SHRINKAGES,
         weights: Sequence[float] | None = None, n_candidates: Sequence[int] | None = None,
         nuisance_weights: Sequence[float] = DEFAULT_NUISANCE_WEIGHTS, criterion: str | None = None,
         tolerance: float = DEFAULT_TOLERANCE, context_sentences: Sequence[int] | None = None,
         refit_with_valid: bool = DEFAULT_REFIT_WITH_VALID, temperatures: Sequence[float] | None = None,
         picks: Sequence[str] | None = None, guided_beams: Sequence[int] | None = None,
         seeded_sentences: Sequence[int] | None = None) -> dict:
    """Fit and choose the Bayesian decoder of a trained run, never reading test samples:
    1. the encoding model (layer, frame dimensions, shrinkage, nuisance band weight, and how many of the passage's
       previous sentences a text is read after, among `context_sentences`) by CV identification over training
       stimuli, refitted on all training samples (with the frames the run was trained on), plus a
       nuisance-only model (length and position) for the nuisance control;
    2. on the validation split, BrainLLM's candidates under the true frames and under a derangement of them
       (PerBrainLLM); per λ and number of candidates, the picks' mean BLEU-1 under both, that of the
       length/position decoder (the true frames' candidates, picked with the nuisance-only model) and the
       reference's loss under the decoder's distribution (true frames; beside it, under the permuted frames and
       their candidates, and the pairwise accuracy of the two, which are reported, not chosen on);
       all of it per sampling temperature (`temperatures`), per pick rule (`picks`: MAP or MBR, `decoding.mbr`)
       and per width of the encoding-guided search whose texts join the candidates (`guided_beams`, 0 = none:
       `decoding.guided`; each decoder runs its own search at each λ > 0: true frames, permuted frames, and the
       length/position model's), and per number of retrieved training sentences that seed more candidates
       (`seeded_sentences`, 0 = none: `decoding.seeded`; each decoder retrieves with its own frames and model, from
       the training sentences only);
       Each row also holds its picks' MiniLM similarity to the references (`valid_minilm*`); `pool-mbr` rows
       (`picks`, `decoding.pool_mbr`, one per meaning weight) score the training sentences as hypotheses too;
    3. `encoding_weight`, `n_candidates`, `temperature`, `pick`, `guided_beams` and `seeded_sentences`:
       `choose_decoder`; the length/position decoder's own λ and seeds (`nuisance_encoding_weight`,
       `nuisance_seeded_sentences`): its best validation BLEU-1 with the chosen row's shared settings;
       `posterior_weight`: the λ of the lowest such loss at the chosen temperature;
    4. with `refit_with_valid`, once everything is chosen, both encoding models refitted with the same choices on the
       training and validation samples (identification grows with training passages: docs/calibration.md).
    Writes `RUN/decoder/` (the models) and `RUN/decoder.json` (the chosen generation settings, which `load_run`
    applies as the run's defaults, and the tables behind the choice). Returns what decoder.json holds.
    Left at None, `weights`, `n_candidates`, `context_sentences`, `temperatures`, `picks` and `criterion` are the
    defaults of the run's task (`DEFAULT_*`; the sentence task's `SENTENCE_*`, also for `seeded_sentences`),
    `guided_beams` none
    (`DEFAULT_GUIDED_BEAMS`)."""
    sentence_task = run.dataset.task == "sentence"
    if weights is None:
        weights = SENTENCE_WEIGHTS if sentence_task else DEFAULT_WEIGHTS
    if n_candidates is None:
        n_candidates = SENTENCE_CANDIDATES if sentence_task else DEFAULT_CANDIDATES
    if context_sentences is None:
        context_sentences = SENTENCE_CONTEXT_SENTENCES if sentence_task else DEFAULT_CONTEXT_SENTENCES
    if guided_beams is None:
        guided_beams = DEFAULT_GUIDED_BEAMS
    if seeded_sentences is None:
        seeded_sentences = SENTENCE_SEEDED_SENTENCES if sentence_task else DEFAULT_SEEDED_SENTENCES
    if picks is None:
        picks = SENTENCE_PICKS if sentence_task else DEFAULT_PICKS
    if criterion is None:
        criterion = SENTENCE_CRITERION if sentence_task else DEFAULT_CRITERION
    check_selection(criterion, tolerance, context_sentences=context_sentences)
    for rule in picks:
        check_choice("pick", rule, PICKS)
    for name, values in (("guided_beams", guided_beams), ("seeded_sentences", seeded_sentences)):
        if not values or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in values):
            raise ConfigError(f"{name} must be whole numbers >= 0, got {list(values)!r}.")
    # the candidates' own draws; guided and seeded texts are added per row below (a retuned run's decoder.json
    # may carry a width or seeds)
    cfg = replace(cfg or run.config.generation, n_candidates=max(n_candidates), rerank="encoding", guided_beams=0,
                  seeded_sentences=0)
    if temperatures is None:
        temperatures = SENTENCE_TEMPERATURES if sentence_task else (cfg.temperature,)
    if layers is None:
        layers = default_layers(run.model.backbone.config.num_hidden_layers)
    paths = RunPaths(run.path)
    train = training_samples(run)
    model, choice, cv_rows = choose_encoding_model(run, train, layers, dims, shrinkages, nuisance_weights,
                                                   seed=cfg.seed, context_sentences=context_sentences,
                                                   store=paths.decoder_cv_cells)
    scorer = SentenceScorer(run, model, choice)
    save_scorer(run, scorer)
    nuisance, nchoice, nuisance_rows = choose_encoding_model(run, train, [None], dims, shrinkages, seed=cfg.seed,
                                                             store=paths.decoder_cv_cells)
    nuisance_scorer = SentenceScorer(run, nuisance, nchoice)
    save_scorer(run, nuisance_scorer, "nuisance")

    valid = run.encoder.encode_all(run.dataset, run.split.valid)
    valid_permuted = permute_frames(valid, cfg.seed)
    refs = [run.dataset.by_id(s.id).continuation for s in valid]
    # the references' scores do not depend on the candidates: once for every temperature
    references = [(teacher_forced_losses(run, ss, "brain", cfg.batch_size), *reference_scores(run, scorer, ss))
                  for ss in (valid, valid_permuted)]
    # each decoder steers its own searches and seeds: true frames, permuted ones, the length/position model
    decoders = ((valid, scorer, "brain"), (valid_permuted, scorer, "permuted"), (valid, nuisance_scorer, "nuisance"))
    pool = retrieval_pool(run, ("train",))  # the encoding models above saw training samples only
    # pool-mbr's evidence: each decoder's scores of the training sentences (its own frames and model), once
    pool_scores = ([retrieval_scores(run, sc, ss, pool) for ss, sc, _ in decoders] if "pool-mbr" in picks
                   else None)
    vectors = SentenceVectors()
    reference_vectors = vectors(refs)

    def measured(texts: Sequence[str]) -> tuple[float, float]:
        """Mean BLEU-1 and MiniLM cosine of picks against the validation references."""
        return float(bleu1(texts, refs).mean()), float((vectors(texts) * reference_vectors).sum(1).mean())

    table, guided = [], {}
    for t in temperatures:
        t_cfg = replace(cfg, temperature=t)
        # the candidates are kept as they are proposed (true and permuted frames in one file per temperature):
        # a killed tuning resumes
        store = paths.candidates("valid" if len(temperatures) == 1 else f"valid_t{t:g}")
        cands = score_candidates(run, valid, "brain", t_cfg, scorer, desc=f"valid/tune t={t:g}", store=store)
        permuted = score_candidates(run, valid_permuted, "brain", t_cfg, scorer, desc=f"valid/permuted t={t:g}",
                                    store=store)
        # the nuisance control decodes the true frames' candidates with the length/position model (as `generate`
        # does)
        by_nuisance = cands.rescored(encoding_scores(run, nuisance_scorer, valid, cands.texts))
        # the decoder's own distribution, normalised over all the candidates' draws: its held-out loss per λ (and
        # under PerBrainLLM's frames and candidates: the paper's pairwise test of that distribution, reported only)
        posterior = {w: (posterior_losses(*references[0], cands, w), posterior_losses(*references[1], permuted, w))
                     for w in weights}
        measures: dict[tuple, list[tuple[float, float]]] = {}  # pool-mbr's picks do not depend on λ: once per set
        for k in seeded_sentences:
            # the seeded texts depend on the temperature, not on λ: once per decoder here
            seeded = [None] * 3 if not k else [
                seeded_texts(run, ss, "brain", replace(t_cfg, seeded_sentences=k), sc, pool,
                             desc=f"valid/{name} t={t:g}") for ss, sc, name in decoders]
            for beams in guided_beams:
                pickers: tuple[PoolMBRPicker, ...] | None = None
                for w in weights:
                    if beams and not w:
                        continue  # a search the frames do not steer is the LM's own beam search
                    sets = (cands, permuted, by_nuisance)
                    if beams:
                        for ss, sc, name in decoders:  # the search does not depend on the temperature: once
                            if (beams, w, name) not in guided:
                                g_cfg = replace(cfg, guided_beams=beams, encoding_weight=w)
                                guided[beams, w, name] = guided_texts(run, ss, "brain", g_cfg, sc,
                                                                      desc=f"valid/guided {name} λ={w:g}")
                        sets = tuple(c.extended(run.encoder.decode, *guided[beams, w, name])
                                     for c, (_, _, name) in zip(sets, decoders))
                    if k:  # after the guided texts, as `score_candidates` adds them
                        sets = tuple(c.extended(run.encoder.decode, *more) for c, more in zip(sets, seeded))
                    if pool_scores is not None and (pickers is None or beams):
                        pickers = tuple(PoolMBRPicker(c, pool, sc, cfg.pool_mbr_top, vectors)
                                        for c, sc in zip(sets, pool_scores))
                    own, other = posterior[w]
                    for rule, meaning, n in ((r, m, n) for r in picks for n in n_candidates
                                             for m in (SENTENCE_MEANING_WEIGHTS if r == "pool-mbr" else (None,))):
                        if rule == "pool-mbr":
                            key = (k, beams, w if beams else None, meaning, n)
                            if key not in measures:
                                mbr = PoolMBR(cfg.pool_mbr_beta, cfg.pool_mbr_top, meaning)
                                measures[key] = [measured(p.picks(mbr, n)) for p in pickers]
                            scores = measures[key]
                        else:
                            scores = [measured(c.picks(w, n, rule)) for c in sets]
                        row = {"temperature": t, "pick": rule, "n_candidates": n, "encoding_weight": w,
                               "guided_beams": beams, "seeded_sentences": k}
                        if meaning is not None:
                            row["mbr_meaning_weight"] = meaning
                        for suffix, (b, m) in zip(("", "_permuted", "_nuisance"), scores):
                            row["valid_bleu1" + suffix], row["valid_minilm" + suffix] = b, m
                        table.append(row | {
                            "valid_posterior_loss": float(np.nanmean(own)),
                            "valid_posterior_loss_permuted": float(np.nanmean(other)),
                            "valid_posterior_pairwise": float(np.nanmean(pairwise_accuracy(own, other)))})
    best = choose_decoder(table, criterion, tolerance)
    control = best_nuisance_rows(table, criterion)[_shared(best)]
    likeliest = min((r for r in table if r["temperature"] == best["temperature"]),
                    key=lambda r: r["valid_posterior_loss"])
    settings = {"rerank": "encoding", "n_candidates": best["n_candidates"], "encoding_weight": best["encoding_weight"],
                "posterior_weight": likeliest["encoding_weight"], "temperature": best["temperature"],
                "pick": best["pick"], "guided_beams": best["guided_beams"],
                "seeded_sentences": best["seeded_sentences"], "seeded_draws": cfg.seeded_draws,
                "nuisance_encoding_weight": control["encoding_weight"],
                "nuisance_seeded_sentences": control.get("seeded_sentences", 0),
                "pool_mbr_beta": cfg.pool_mbr_beta, "pool_mbr_top": cfg.pool_mbr_top,
                "mbr_meaning_weight": best.get("mbr_meaning_weight", cfg.mbr_meaning_weight)}
    if refit_with_valid:
        refit = training_samples(run, with_valid=True)
        model = fit_encoding_model(run, refit, choice, cfg.seed)
        save_scorer(run, SentenceScorer(run, model, choice))
        save_scorer(run, SentenceScorer(run, fit_encoding_model(run, refit, nchoice, cfg.seed), nchoice), "nuisance")
    result = {"generation": settings, "encoding_model": asdict(choice) | {"alpha": model.alpha_},
              "nuisance_model": asdict(nchoice), "cv_table": cv_rows, "nuisance_cv_table": nuisance_rows,
              "valid_table": table, "criterion": criterion, "tolerance": tolerance,
              "refit_with_valid": refit_with_valid,
              "note": "encoding model chosen by CV over training stimuli; λs and candidates on validation"
                      + ("; then both encoding models refitted on training + validation" if refit_with_valid else "")}
    write_json(paths.decoder_file, result)
    log.info("Bayesian decoder of %s: %s (validation BLEU-1 %.4f, permuted frames %.4f, length/position decoder "
             "with its own λ and seeds %.4f)", run.path, settings, best["valid_bleu1"], best["valid_bleu1_permuted"],
             control["valid_bleu1_nuisance"])
    return result
