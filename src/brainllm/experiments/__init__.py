"""Experiments that decode with a trained model and score what it decoded (the layer above decoding and scoring).

* `fullstory`: the full-story experiment of `brainllm decode-story`: its conditions (`permuted`, `other_story`,
  `no_brain`), the brain-free and decoder nulls, the scoring of any decoded story in 20-s windows and the pooling
  over stories;
* `decoder_tuning`: choosing the Bayesian decoder of `decoding.bayes` (`brainllm tune-decoder`): its encoding model
  by CV over training stimuli, its weight and number of candidates by validation BLEU-1.
"""
