"""Evaluation of predictions: declared metric variants, controls, statistics, analyses and the HTML report. It
scores files (predictions, decoded stories), never runs a model: the diagnostics that do are in
`brainllm.diagnostics`.

Modules (import them directly; this package imports nothing heavy so that `python -m
brainllm.evaluation.wordnet` runs with the standard library alone):

* `text`: cleaning (pad/eos strings) and the one tokenisation every lexical metric uses;
* `metrics`: per-sample and corpus-level metrics, each under a variant name;
* `semantic`: MiniLM sentence cosine and a BERTScore-style greedy-matching F1;
* `wordnet`: finding or preparing WordNet for METEOR;
* `rundata`: reading a run folder's predictions (the contract with generation);
* `stats`: paired tests, stimulus-level bootstrap CIs, effect sizes, pairwise/identification accuracy,
  contamination check;
* `evaluate`: scores of one run (what `brainllm evaluate` writes);
* `analyses`: scores by surprisal, prompt length, training size, backbone and brain region, with figures;
* `report`: the self-contained HTML report, scores.json and a Markdown table.
"""
