"""Decoder (LLM) rerankers behind the :class:`~crossrank.Reranker` API.

``Reranker(path_or_hub_id)`` returns an :class:`LLMReranker` when config.json names a decoder
architecture (``GemmaForCausalLM``: bge-reranker-v2-gemma; ``LayerWiseMiniCPMForCausalLM``:
bge-reranker-v2-minicpm-layerwise), so the same code serves encoders and decoders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crossrank.errors import CrossrankError, InputError
from crossrank.reranker import Reranker, init_signature, resolve_device, resolve_dtype, sigmoid

logger = logging.getLogger(__name__)


class LLMReranker(Reranker):
    """Decoder reranker with FlagEmbedding's input rules (FlagLLMReranker,
    LayerWiseFlagLLMReranker) and our own exact forward pass.

    Takes the arguments of :class:`~crossrank.Reranker`, plus:

    Args:
        prompt: instruction after the pair (default: FlagEmbedding's "Given a query A and a
            passage B, ...").
        cutoff_layers: layerwise MiniCPM only: an int or a list of layers in
            ``[start_layer, num_hidden_layers]`` (default: the last layer). The forward pass
            stops at the largest. With several layers :meth:`compute_score` returns one list
            of scores per layer (in the given order); :meth:`rank` ranks by the first.
        share_prefix: compute the keys/values of ``[bos] + "A: " + query + "\\n"`` once per
            batch for all passages of a query (default True; scores are unchanged).

    ``query_instruction`` / ``passage_instruction`` default to ``"A: "`` / ``"B: "``.

    Example:
        >>> rr = Reranker("BAAI/bge-reranker-v2-gemma", dtype="bf16")  # doctest: +SKIP
        >>> rr.compute_score(["what is panda?", "The giant panda is a bear."])  # doctest: +SKIP
        [7.4...]
        >>> lw = Reranker("BAAI/bge-reranker-v2-minicpm-layerwise", cutoff_layers=[28, 40])  # doctest: +SKIP
        >>> lw.compute_score([["q", "p1"], ["q", "p2"]])  # [[s28_1, s28_2], [s40_1, s40_2]]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int = 512,
        query_max_length: int | None = None,
        batch_size: int | None = None,
        normalize: bool = False,
        query_instruction: str | None = None,
        passage_instruction: str | None = None,
        max_batch_tokens: int | None = None,
        show_progress: bool | None = None,
        revision: str | None = None,
        prompt: str | None = None,
        cutoff_layers: int | Sequence[int] | None = None,
        share_prefix: bool = True,
        **unsupported: Any,
    ) -> None:
        from crossrank.config import read_config
        from crossrank.engine.llm_tokenize import LLMPairTokenizer, special_token_id
        from crossrank.engine.tokenize import load_tokenizer
        from crossrank.hub import resolve_model_dir
        from crossrank.models.decoder import DecoderConfig, load_decoder

        # encoder-only options (e.g. backend="onnx", quantize=) are refused unless left at
        # their defaults; the decoders run on the PyTorch backend only
        given = {
            k: v
            for k, v in unsupported.items()
            if v is not None and not (k == "backend" and v == "torch")
        }
        if given:
            raise CrossrankError(
                f"option(s) {', '.join(sorted(given))} are not supported for LLM rerankers"
            )
        self.model_name = str(model)
        self.model_dir = getattr(self, "_resolved_dir", None) or resolve_model_dir(
            model, revision=revision
        )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.config = DecoderConfig.from_dict(read_config(self.model_dir / "config.json"))  # type: ignore[assignment]
        if batch_size is not None and batch_size < 1:
            raise CrossrankError(f"batch_size must be positive, got {batch_size}")
        self.max_length = self._clamp_length(max_length)
        self.normalize = normalize
        self.layerwise = self.config.kind == "minicpm-layerwise"
        if cutoff_layers is not None and not self.layerwise:
            raise CrossrankError("cutoff_layers only applies to layerwise rerankers")
        tok = load_tokenizer(self.model_dir)
        self.tokenizer = LLMPairTokenizer(  # type: ignore[assignment]
            tok,
            bos_id=special_token_id(tok, self.model_dir, "bos_token"),
            pad_id=special_token_id(tok, self.model_dir, "pad_token"),
            always_bos=self.layerwise,
            max_length=self.max_length,
            query_max_length=query_max_length,
            prompt=prompt,
            query_instruction="A: " if query_instruction is None else query_instruction,
            passage_instruction="B: " if passage_instruction is None else passage_instruction,
        )
        self.model = load_decoder(self.model_dir, dtype=self.dtype, device=self.device)
        self.share_prefix = share_prefix
        self.max_batch_tokens = max_batch_tokens
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.cutoff_layers = self._cutoffs(cutoff_layers)
        self.engine = self._engine(self.tokenizer, self.cutoff_layers)
        self.backend = self.engine.backend

    def _cutoffs(self, cutoff_layers: int | Sequence[int] | None) -> list[int] | None:
        if not self.layerwise:
            return None
        if cutoff_layers is None:
            return [self.config.num_hidden_layers]
        if isinstance(cutoff_layers, int):
            cutoff_layers = [cutoff_layers]
        return self.model.check_cutoffs(cutoff_layers)

    def _engine(self, tokenizer, cutoffs: list[int] | None):
        from crossrank.engine.llm_backend import DecoderBackend
        from crossrank.engine.runner import Engine

        if cutoffs is None:
            kwargs: dict[str, Any] = {"token_ids": [tokenizer.yes_id]}
        else:
            kwargs = {"cutoff_layers": cutoffs}
        backend = DecoderBackend(
            self.model,
            self.device,
            self.dtype,
            score_kwargs=kwargs,
            n_outputs=len(cutoffs) if cutoffs else 1,
            share_prefix=self.share_prefix,
        )
        return Engine(
            tokenizer,
            backend,
            pad_id=0,  # pads are never attended to (right padding, causal attention)
            max_tokens=self.max_batch_tokens,
            batch_size=self.batch_size,
            show_progress=self.show_progress,
        )

    def compute_score(  # type: ignore[override]
        self,
        pairs: Sequence[str] | Sequence[Sequence[str]],
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        cutoff_layers: int | Sequence[int] | None = None,
        prompt: str | None = None,
    ) -> list[float] | list[list[float]]:
        """Scores of ``[query, passage]`` pairs, in input order.

        Returns a list of floats (the "Yes" logit, or one layer's head output), or, for a
        layerwise model with several ``cutoff_layers``, one such list per cutoff layer.
        ``cutoff_layers`` and ``prompt`` override the constructor's for this call.

        Example:
            >>> rr.compute_score([["q", "a passage"], ["q", "another"]])  # doctest: +SKIP
            [1.25, -3.5]
        """
        if len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
            pairs = [pairs]  # type: ignore[list-item]
        if cutoff_layers is not None and not self.layerwise:
            raise InputError("cutoff_layers only applies to layerwise rerankers")
        if max_length is not None:
            max_length = self._clamp_length(max_length)
        engine = self.engine
        cutoffs = self.cutoff_layers
        if cutoff_layers is not None or prompt is not None:
            tokenizer = self.tokenizer
            if prompt is not None:
                tokenizer = tokenizer.with_prompt(prompt)
            if cutoff_layers is not None:
                cutoffs = self._cutoffs(cutoff_layers)
            engine = self._engine(tokenizer, cutoffs)
        if not pairs:
            return [[] for _ in cutoffs] if cutoffs and len(cutoffs) > 1 else []
        logits = engine.score_pairs(pairs, max_length=max_length, batch_size=batch_size)  # type: ignore[arg-type]
        if self.normalize if normalize is None else normalize:
            logits = sigmoid(logits)
        if logits.ndim == 2:
            return [[float(x) for x in col] for col in np.asarray(logits).T]
        return [float(x) for x in logits]

    def _ranking_scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        scores = self.compute_score(pairs)
        return scores[0] if scores and isinstance(scores[0], list) else scores  # type: ignore[return-value]

    def __repr__(self) -> str:
        extra = f", cutoff_layers={self.cutoff_layers}" if self.layerwise else ""
        return (
            f"LLMReranker({self.model_name!r}, device={self.device}, dtype={self.dtype}, "
            f"max_length={self.max_length}{extra})"
        )


LLMReranker.__signature__ = init_signature(LLMReranker)  # type: ignore[attr-defined]
