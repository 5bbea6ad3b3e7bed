"""`python -m brainllm ...` (also what `accelerate launch -m brainllm train ...` and torchrun run)."""

from .cli import main

main()
