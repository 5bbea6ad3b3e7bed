"""Diagnostics that run a trained model (the layer above decoding; `brainllm.evaluation` only scores files).

* `ceiling`: how much perfect knowledge of the continuation, delivered through the adapter's slots, could lower the
  loss, and what a ridge decoder of tokens from the frames reaches (`brainllm ceiling`);
* `injection`: the state oracles of `ceiling`: the LM's own layer-L state of the continuation, written as the brain
  positions' hidden state.
"""
