"""The public API: :class:`Reranker` scores (query, passage) pairs and ranks documents."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from crossrank.errors import CrossrankError, InputError
from crossrank.hub import DEFAULT_MODEL
from crossrank.inputs import (
    Document,
    as_layers,
    as_pairs,
    check_text,
    positive_int,
    resolve_device,
    resolve_dtype,
    sigmoid,
)
from crossrank.ranking import RankResult, rank_pairs, ranked_lists

__all__ = ["Document", "RankResult", "Reranker", "resolve_device", "resolve_dtype", "sigmoid"]

if TYPE_CHECKING:
    from crossrank.engine.auto import BackendChoice
    from crossrank.engine.backend import Backend
    from crossrank.engine.encoding import PairEncoding
    from crossrank.engine.runner import Engine
    from crossrank.families.base import Scoring

logger = logging.getLogger(__name__)


class Reranker:
    """Reranker with the reference's input rules and exact scores, for every model family.

    The family (encoder cross-encoder, bge-reranker-v2-gemma, the layerwise MiniCPM, ...) is
    read from the checkpoint's config.json (:mod:`crossrank.families`); every option below works
    for every family unless it says otherwise, and an option a family cannot honour raises a
    :class:`~crossrank.errors.CrossrankError`.

    Args:
        model: a checkpoint directory in Hugging Face layout, a hub id, or the bundled
            ``"crossrank/minilm-debian"``; default ``"BAAI/bge-reranker-v2-m3"`` (fetched from
            the hub on first use; offline, a clear error names the bundled model).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        dtype: ``"fp32"`` (default), ``"fp16"`` or ``"bf16"`` (fp16 is refused on the CPU).
        max_length: longest pair in tokens, special tokens included (clamped, with a
            warning, to what the model's position table allows).
        query_max_length: longest query in tokens (default ``max_length * 3 // 4``).
        batch_size: most pairs in one forward pass (default: only the token budget limits).
        normalize: return sigmoid scores instead of raw logits by default.
        query_instruction / passage_instruction: strings put before every query / passage
            (LLM families default to ``"A: "`` / ``"B: "``, as FlagEmbedding does).
        max_batch_tokens: padded-token budget of a forward pass (default on the CPU: sized so
            the widest activation stays under 16 MiB, 1024 tokens for bge-reranker-base,
            2048 for MiniLM; 512 with ``backend="onnx"``; 65536 on CUDA).
        show_progress: progress bar on or off; default on for jobs of 1024 pairs or more.
        revision: hub revision (branch, tag or commit) of a hub id.
        backend: ``"torch"`` (default, our PyTorch model, every family); encoders also
            ``"onnx"`` (ONNX Runtime, needs ``pip install 'crossrank[onnx]'``; the export is
            cached on disk). ``"auto"``: the fastest backend that keeps mean per-query
            Spearman >= 0.99 against fp32, measured on first use on this machine and cached
            (:mod:`crossrank.engine.auto`); logged, and in :attr:`backend_choice`.
        quantize: encoders with ``backend="onnx"``: ``None`` or ``"int8"``.
        devices: encoders: several devices (``["cuda:0", "cuda:1"]``) to spread big jobs
            over, one model replica each. Overrides ``device``.
        prompt: LLM families: the instruction after the pair (default: FlagEmbedding's).
        cutoff_layers: layerwise families: an int or a list of layers in
            ``[start_layer, num_hidden_layers]`` (default: the last layer); the forward pass
            stops at the largest. :meth:`compute_score` gives the first layer's scores,
            :meth:`compute_layer_scores` all of them.
        share_prefix: LLM families: compute the query prefix's keys/values once for all
            passages (and chunks) of a query (default True; scores are unchanged).
        instruction: families with a task instruction in their template (Qwen3-Reranker).
        adapter: LLM families, ``backend="torch"``: a local PEFT LoRA adapter directory merged
            into ``model``'s weights. ``model`` may itself be an adapter directory: its base is
            then its ``base_model_name_or_path``.

    Example:
        >>> rr = Reranker("BAAI/bge-reranker-v2-m3")  # doctest: +SKIP
        >>> rr.compute_score(["what is panda?", "The giant panda is a bear."])  # doctest: +SKIP
        [5.26...]
        >>> rr.rank("what is panda?", ["hi", "The giant panda is a bear."])  # doctest: +SKIP
        [RankResult(index=1, score=5.26..., document=None), RankResult(index=0, ...)]
        >>> rr.rank("q", [long_document], max_chunks_per_doc=8)  # best 512-token window  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
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
        backend: str = "torch",
        quantize: str | None = None,
        devices: Sequence[str | torch.device] | None = None,
        prompt: str | None = None,
        cutoff_layers: int | Sequence[int] | None = None,
        share_prefix: bool = True,
        instruction: str | None = None,
        adapter: str | os.PathLike[str] | None = None,
    ) -> None:
        from crossrank.config import read_config
        from crossrank.families import family_for
        from crossrank.families.base import Runtime, ScoreOptions
        from crossrank.hub import resolve_model_dir
        from crossrank.models.adapters import split_adapter

        self.model_name = str(model)
        model, adapter_dir = split_adapter(model, adapter)
        self.model_dir: Path = resolve_model_dir(model, revision=revision)
        raw = read_config(self.model_dir / "config.json")
        self.family = family_for(raw)
        self._check_options(
            backend=backend,
            quantize=quantize,
            devices=devices,
            prompt=prompt,
            cutoff_layers=cutoff_layers,
            share_prefix=share_prefix,
            instruction=instruction,
        )
        for name, value in (
            ("batch_size", batch_size),
            ("query_max_length", query_max_length),
            ("max_batch_tokens", max_batch_tokens),
        ):
            if value is not None:
                positive_int(name, value)
        self.config = self.family.parse_config(raw)
        pool = [resolve_device(d) for d in devices] if devices else None
        self.device = pool[0] if pool else resolve_device(device)
        #: what ``backend="auto"`` chose (None for an explicit backend)
        self.backend_choice: BackendChoice | None = None
        if backend == "auto":
            from crossrank.engine.auto import resolve_auto

            same = dict(
                max_length=max_length,
                query_max_length=query_max_length,
                query_instruction=query_instruction,
                passage_instruction=passage_instruction,
                max_batch_tokens=max_batch_tokens,
                batch_size=batch_size,
                prompt=prompt,
                cutoff_layers=cutoff_layers,
                share_prefix=share_prefix,
                instruction=instruction,
            )
            from crossrank.engine.calibrate import measure_for

            measure = measure_for(Reranker, self.model_dir, adapter_dir, same)
            self.backend_choice = resolve_auto(
                self.family.backends, self.device, dtype, quantize, measure=measure
            )
            backend, quantize = self.backend_choice.backend, self.backend_choice.quantize
            dtype = self.backend_choice.dtype or dtype
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_length = self._clamp_length(max_length)
        self.normalize = normalize
        self.options = ScoreOptions(
            max_length=self.max_length,
            query_max_length=query_max_length,
            query_instruction=query_instruction,
            passage_instruction=passage_instruction,
            prompt=prompt,
            cutoff_layers=as_layers(cutoff_layers),
            share_prefix=share_prefix,
            instruction=instruction,
        )
        runtime = Runtime(self.device, self.dtype, backend, quantize, pool)
        self.loaded = self.family.load(self.model_dir, self.config, runtime)
        if adapter_dir is not None:
            from crossrank.models.adapters import apply_adapter_to

            apply_adapter_to(self.loaded.model, adapter_dir, backend=backend, devices=pool)
        #: our PyTorch model (None when another backend computes the scores)
        self.model = self.loaded.model
        self._max_batch_tokens = max_batch_tokens
        self._batch_size = batch_size
        self._show_progress = show_progress
        self.scoring = self.loaded.scoring(self.options)
        self.engine = self._engine(self.scoring)

    # -- what the family gave -------------------------------------------------------------

    @property
    def tokenizer(self) -> PairEncoding:
        """The family's input rules (a :class:`~crossrank.engine.encoding.PairEncoding`)."""
        return self.scoring.tokenizer

    @property
    def backend(self) -> Backend:
        """What computes the scores (:class:`~crossrank.engine.backend.Backend`)."""
        return self.scoring.backend

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of the score columns: ``("score",)``, or one per cutoff layer."""
        return self.scoring.outputs

    @property
    def cutoff_layers(self) -> list[int] | None:
        """The layers scored by a layerwise model (None for other families)."""
        layers = self.scoring.resolved.get("cutoff_layers")
        return list(layers) if layers is not None else None

    def _check_options(self, **given: Any) -> None:
        from crossrank.families.base import check_options

        check_options(self.family, self.model_name, given)

    def _engine(self, scoring: Scoring) -> Engine:
        from crossrank.engine.runner import Engine

        return Engine(
            scoring.tokenizer,
            scoring.backend,
            pad_id=scoring.pad_id,
            max_tokens=self._max_batch_tokens or scoring.default_max_tokens,
            batch_size=self._batch_size,
            show_progress=self._show_progress,
        )

    def _scoring_for(self, **overrides: Any) -> Scoring:
        """The scoring set-up for per-call option overrides (the constructor's if none)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self.scoring
        try:
            self._check_options(**given)
        except CrossrankError as exc:
            raise InputError(str(exc)) from None
        if "cutoff_layers" in given:
            given["cutoff_layers"] = as_layers(given["cutoff_layers"])
        return self.loaded.scoring(replace(self.options, **given))

    def _clamp_length(self, max_length: int) -> int:
        max_length = positive_int("max_length", max_length)
        usable = self.config.max_tokens
        if max_length > usable:
            logger.warning(
                "max_length %d exceeds what %s supports; using %d",
                max_length,
                self.model_name,
                usable,
            )
            return usable
        return max_length

    # -- scoring --------------------------------------------------------------------------

    def _scores(
        self,
        pairs: Any,
        scoring: Scoring,
        *,
        batch_size: int | None,
        max_length: int | None,
        max_chunks_per_doc: int | None,
        max_tokens_per_doc: int | None,
        chunk_overlap: int | None,
        normalize: bool | None,
    ) -> np.ndarray:
        """Float32 scores ``[n, n_outputs]`` of pairs (validated), best window per pair,
        sigmoid when ``normalize`` (default: the constructor's)."""
        from crossrank.engine.chunking import chunk_spec

        items = as_pairs(pairs)
        if batch_size is not None:
            batch_size = positive_int("batch_size", batch_size)
        if max_length is not None:
            max_length = self._clamp_length(max_length)
        spec = chunk_spec(max_chunks_per_doc, max_tokens_per_doc, chunk_overlap)
        engine = self.engine if scoring is self.scoring else self._engine(scoring)
        try:
            scores = engine.score_pairs(
                items, max_length=max_length, batch_size=batch_size, chunks=spec
            )
        except TypeError:
            # the tokenizer refuses strings that are not valid Unicode: name the pair
            check_text((q for q, _ in items), "query of pair")
            check_text((p for _, p in items), "passage of pair")
            raise
        scores = scores.reshape(len(items), engine.backend.n_outputs)
        return sigmoid(scores) if (self.normalize if normalize is None else normalize) else scores

    def compute_score(
        self,
        pairs: Sequence[str] | Iterable[Sequence[str]],
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        max_chunks_per_doc: int | None = None,
        max_tokens_per_doc: int | None = None,
        chunk_overlap: int | None = None,
        prompt: str | None = None,
        instruction: str | None = None,
        cutoff_layers: int | Sequence[int] | None = None,
    ) -> list[float]:
        """Scores of ``[query, passage]`` pairs, in input order: always a flat list of floats
        (raw logits, or sigmoid scores when ``normalize``).

        ``pairs``: one pair, or any iterable of pairs (list, generator, 2-D numpy array of
        strings, pandas DataFrame with two columns).
        ``max_chunks_per_doc``: split passages longer than what fits beside the query into
        windows of that size (``chunk_overlap`` tokens shared, default 32) and score each pair
        by its best window; ``max_tokens_per_doc``: read at most that many passage tokens.
        ``prompt`` / ``instruction`` override the constructor's for this call (families that
        have them); ``cutoff_layers`` picks one layer of a layerwise model (default: the first
        of the constructor's; :meth:`compute_layer_scores` gives several at once).

        Example:
            >>> rr.compute_score([["q", "a passage"], ["q", "another"]])  # doctest: +SKIP
            [1.25, -3.5]
        """
        layers = as_layers(cutoff_layers)
        if layers is not None and len(layers) > 1:
            raise InputError(
                f"compute_score gives one score per pair; for the layers {list(layers)} use "
                "compute_layer_scores"
            )
        scoring = self._scoring_for(prompt=prompt, instruction=instruction, cutoff_layers=layers)
        scores = self._scores(
            pairs,
            scoring,
            batch_size=batch_size,
            max_length=max_length,
            max_chunks_per_doc=max_chunks_per_doc,
            max_tokens_per_doc=max_tokens_per_doc,
            chunk_overlap=chunk_overlap,
            normalize=normalize,
        )[:, 0]
        return [float(x) for x in scores]

    def compute_layer_scores(
        self,
        pairs: Sequence[str] | Iterable[Sequence[str]],
        *,
        cutoff_layers: int | Sequence[int] | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        max_chunks_per_doc: int | None = None,
        max_tokens_per_doc: int | None = None,
        chunk_overlap: int | None = None,
        prompt: str | None = None,
    ) -> dict[int, list[float]]:
        """Layerwise families: the scores at each cutoff layer, ``{layer: [scores]}`` in the
        order of ``cutoff_layers`` (default: the constructor's), from one forward pass that
        stops at the largest layer.

        Example:
            >>> lw = Reranker("BAAI/bge-reranker-v2-minicpm-layerwise")  # doctest: +SKIP
            >>> lw.compute_layer_scores(pairs, cutoff_layers=[28, 40])  # doctest: +SKIP
            {28: [...], 40: [...]}
        """
        if "cutoff_layers" not in self.family.options:
            raise InputError(
                f"compute_layer_scores needs a layerwise model; {self.model_name} is of the "
                f"{self.family.name} family (use compute_score)"
            )
        scoring = self._scoring_for(cutoff_layers=cutoff_layers, prompt=prompt)
        layers = list(scoring.resolved["cutoff_layers"])
        scores = self._scores(
            pairs,
            scoring,
            batch_size=batch_size,
            max_length=max_length,
            max_chunks_per_doc=max_chunks_per_doc,
            max_tokens_per_doc=max_tokens_per_doc,
            chunk_overlap=chunk_overlap,
            normalize=normalize,
        )
        return {layer: [float(x) for x in scores[:, j]] for j, layer in enumerate(layers)}

    # -- ranking --------------------------------------------------------------------------

    def rank(
        self,
        query: str,
        documents: Iterable[Document],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
        **score_options: Any,
    ) -> list[RankResult]:
        """Documents ordered best first (ties keep input order), at most ``top_k`` of them.

        Documents are strings or mappings with a ``text`` field. ``score_options`` are those of
        :meth:`compute_score` (``max_chunks_per_doc=``, ``prompt=``, ``batch_size=``...).

        Example:
            >>> rr.rank("what is panda?", ["hi", {"text": "pandas are bears"}], top_k=1)  # doctest: +SKIP
            [RankResult(index=1, score=4.1, document=None)]
        """
        return self.rank_many(
            [query], [documents], top_k=top_k, return_documents=return_documents, **score_options
        )[0]

    def rank_many(
        self,
        queries: Sequence[str],
        documents: Sequence[Iterable[Document]],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
        **score_options: Any,
    ) -> list[list[RankResult]]:
        """Rank the documents of many queries at once, batching pairs across queries.

        ``documents[i]`` are the candidates of ``queries[i]``; the result holds one ranked list
        per query.
        """
        if top_k is not None:
            top_k = positive_int("top_k", top_k, minimum=0)
        doc_lists, pairs = rank_pairs(queries, documents)
        scores = self.compute_score(pairs, **score_options) if pairs else []
        return ranked_lists(scores, doc_lists, top_k=top_k, return_documents=return_documents)

    def __repr__(self) -> str:
        layers = self.cutoff_layers
        extra = f", cutoff_layers={layers}" if layers is not None else ""
        return (
            f"Reranker({self.model_name!r}, family={self.family.name}, device={self.device}, "
            f"dtype={self.dtype}, max_length={self.max_length}{extra})"
        )
