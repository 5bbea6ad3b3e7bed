"""Baseline decoders to compare BrainLLM with."""
