"""Voxelwise time-series regression, the Huth-lab toolkit that Tang et al. 2023 build on: run boundaries and FIR
response delays (`delays`), Lanczos resampling of word-level features to TRs (`lanczos`), the chunked-bootstrap
ridge with one penalty per target (`bootstrap`), and config overrides, input checks and validated model files for
the models fitted with them (`modelfile`).

Shared by the word-rate model (`brainllm.decoding.wordrate`, used by both full-story decoders) and the Tang encoding
model (`brainllm.baselines.tang.encoding`); it imports nothing but `brainllm.errors`, `io`, `progress` and `ridge`.
"""
