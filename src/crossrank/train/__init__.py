"""Fine-tuning cross-encoders: data, losses, trainer, checkpoints, hard-negative mining.

Needs only the core dependencies (torch, tokenizers, safetensors, numpy, tqdm); periodic
evaluation and ``crossrank mine --first-stage bm25`` use the ``eval`` extra.
"""
