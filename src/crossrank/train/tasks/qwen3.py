"""Qwen3-Reranker training: the score of a pair is ``logit("yes") - logit("no")`` at its last
token (the converted sequence-classification head gives it directly); the loss is the group
loss on those scores, as for the bge LLM rerankers.

Inputs are the authors' template (:class:`~crossrank.engine.qwen3_tokenize.Qwen3PairTokenizer`)
cut to ``--query-max-length + --passage-max-length`` tokens, the document first; an example's
``prompt`` field is its task instruction (the ``<Instruct>`` text), else the default one.
LoRA, ``--dtype``, gradient checkpointing, resume and ``--merge`` work as for Gemma.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from crossrank.train.tasks.decoder import DecoderTask

if TYPE_CHECKING:
    from crossrank.train.config import TrainConfig


class Qwen3PairEncoder:
    """Training inputs of Qwen3-Reranker: the template, per-example instruction."""

    def __init__(self, model_dir: Path, cfg: TrainConfig) -> None:
        from crossrank.engine.qwen3_tokenize import Qwen3PairTokenizer
        from crossrank.engine.tokenize import load_tokenizer

        max_length = cfg.query_max_length + cfg.passage_max_length
        self.pair = Qwen3PairTokenizer(load_tokenizer(model_dir), max_length=max_length)
        self.pair.limits()  # the template must leave room for text
        self.pad_id = 0  # right padding with causal attention: pads are never attended to
        self.yes_id, self.no_id = self.pair.yes_id, self.pair.no_id
        self._by_instruction = {None: self.pair}

    def encode(self, groups) -> list:
        out = []
        for g in groups:
            pt = self._by_instruction.get(g.prompt)
            if pt is None:
                pt = self._by_instruction[g.prompt] = self.pair.with_instruction(g.prompt)
            out.extend(pt.encode([(g.query, p) for p in g.passages]))
        return out


class Qwen3Task(DecoderTask):
    """Qwen3-Reranker (both checkpoint forms): the yes-minus-no logit is the training score."""

    def make_encoder(self, init_dir: Path, cfg: TrainConfig) -> Qwen3PairEncoder:
        return Qwen3PairEncoder(init_dir, cfg)

    def scores(self, model, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        if self.model.classification:  # the converted head already is yes row - no row
            return model.score(input_ids, attention_mask)
        ids = [self.encoder.yes_id, self.encoder.no_id]
        return model.score(input_ids, attention_mask, token_ids=ids)
