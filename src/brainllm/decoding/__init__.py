"""Everything that turns a trained model into words.

* `generation`: sentence decoding of a run's split under each condition (`brain`, `permuted`, `no_brain`,
  `nuisance`, `retrieval`),
  teacher-forced losses and the cross-loss matrix (`brainllm generate`);
* `prefix_beam`: HF's beam and greedy search run from each prefix's KV cache once, finished samples leaving the
  batch (what `generation` decodes with);
* the Bayesian decoder (beyond the paper; `training.recipe: brain`): `candidates` proposes (the search result and
  nucleus draws from one pass over each prefix, `prefix_sample`, with their log p_LM), `encoding_model` reads a
  text and the frames (features, the fitted model's files), `encoding_choice` fits and chooses it by cross-
  validation, `bayes` scores the candidates, picks and gives the decoder's distribution, `mbr` picks by minimum
  Bayes risk instead of the mode (`pool_mbr`: against the likeliest training sentences too), and
  `decoder_identification` scores every text against every sample's frames for the identification verdicts;
* `retrieval`: the retrieval baseline, no generation: the training text the encoding model finds likeliest (or
  the one a `pool-mbr` decoder's rule chooses);
* `wordlm`: a causal LM as a word-level LM (word vocabulary, proposals, KV-cached beam state, word features);
* `beam`: the beam-search pieces both full-story decoders share, their brain-free null, and `DecodedStory`;
* `wordrate`: the word-rate model (how many words each TR holds, from later brain responses);
* `fullstory`: BrainLLM full-story decoding, a brain prefix that can read any run's frames (what the controls of
  `brainllm.experiments.fullstory` feed), and BrainLLM as another decoder's language prior.

Nothing here scores what it decodes (that is `brainllm.experiments`, on `brainllm.evaluation`) or imports a
baseline; the Tang et al. 2023 baseline (`brainllm.baselines.tang`) imports from here (tests/test_structure.py
checks both).
"""
