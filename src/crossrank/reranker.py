"""The public API: :class:`Reranker` scores (query, passage) pairs and ranks documents."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrank.errors import CrossrankError, InputError
from crossrank.hub import DEFAULT_MODEL
from crossrank.inputs import (
    Document,
    as_pairs,
    check_text,
    positive_int,
    resolve_device,
    resolve_dtype,
    sigmoid,
)
from crossrank.options import ChunkSpec, Options, parse, per_call_family_options, work_options
from crossrank.options.views import docstring, signature
from crossrank.ranking import RankResult, rank_pairs, ranked_lists

__all__ = [
    "ChunkSpec",
    "Document",
    "Options",
    "RankResult",
    "Reranker",
    "resolve_device",
    "resolve_dtype",
    "sigmoid",
]

if TYPE_CHECKING:
    from crossrank.engine.auto import BackendChoice
    from crossrank.engine.backend import Backend
    from crossrank.engine.encoding import PairEncoding
    from crossrank.engine.runner import Engine
    from crossrank.families.base import Scoring

logger = logging.getLogger(__name__)

#: option sets (per-call overrides of prompt, instruction, cutoff_layers) kept with their
#: tokenizer and engine; the oldest beyond this is dropped
MAX_SETUPS = 16


def signature_of(*, per_call: bool) -> Callable[[Any], Any]:
    """Decorator: the declared options as the method's keywords (:func:`~crossrank.options.signature`)."""
    return lambda function: signature(function, per_call=per_call)


class Reranker:
    """Reranker with the reference's input rules and exact scores, for every model family.

    The family (encoder cross-encoder, bge-reranker-v2-gemma, the layerwise MiniCPM, ...) is
    read from the checkpoint's config.json (:mod:`crossrank.families`). Every option is
    declared once, in :class:`crossrank.options.Options` (listed below and in docs/python-api.md's
    table): an option only some families honour raises a
    :class:`~crossrank.errors.CrossrankError` on the others, and every value is checked before
    the model loads (a bad one is an :class:`~crossrank.errors.InputError` naming it). The old
    keywords ``max_chunks_per_doc``, ``max_tokens_per_doc`` and ``chunk_overlap`` are the
    fields of ``chunking=ChunkSpec(...)``, and still accepted on their own.

    Args:
        model: a checkpoint directory in Hugging Face layout, a hub id, or the bundled
            ``"crossrank/minilm-debian"`` (small, offline, English only); default ``"BAAI/bge-reranker-v2-m3"`` (fetched from
            the hub on first use; offline, a clear error names the bundled model).
        **options: the options below.

    Example:
        >>> rr = Reranker("BAAI/bge-reranker-v2-m3")  # doctest: +SKIP
        >>> rr.compute_score(["what is panda?", "The giant panda is a bear."])  # doctest: +SKIP
        [5.26...]
        >>> rr.rank("what is panda?", ["hi", "The giant panda is a bear."])  # doctest: +SKIP
        [RankResult(index=1, score=5.26..., document=None), RankResult(index=0, ...)]
        >>> rr.rank("q", [long_document], max_chunks_per_doc=8)  # best 512-token window  # doctest: +SKIP

    """

    __doc__ = (__doc__ or "") + docstring()

    @signature_of(per_call=False)
    def __init__(self, model: str | os.PathLike[str] = DEFAULT_MODEL, **options: Any) -> None:
        from crossrank.config import read_config
        from crossrank.engine import malloc
        from crossrank.engine.runner import Engine
        from crossrank.families import family_for
        from crossrank.families.base import Runtime, check_options
        from crossrank.hub import resolve_model_dir
        from crossrank.models.adapters import split_adapter

        given = parse(options)  # every option checked before anything loads
        self.model_name = str(model)
        model, adapter_dir = split_adapter(model, given.get("adapter"))
        self.model_dir: Path = resolve_model_dir(model, revision=given.get("revision"))
        raw = read_config(self.model_dir / "config.json")
        self.family = family_for(raw)
        check_options(self.family, self.model_name, given)
        self.config = self.family.parse_config(raw)
        devices = given.get("devices")
        pool = [resolve_device(d) for d in devices] if devices else None
        self.device = pool[0] if pool else resolve_device(given.get("device"))
        backend, quantize = given.get("backend", "torch"), given.get("quantize")
        dtype = given.get("dtype")
        #: what ``backend="auto"`` chose (None for an explicit backend)
        self.backend_choice: BackendChoice | None = None
        if given.get("deterministic") and backend != "torch":
            if backend in ("onnx", "openvino"):
                raise InputError(
                    f"deterministic=True needs backend='torch': {backend}'s kernels make no "
                    "promise that a score does not depend on its batch"
                )
            logger.info("deterministic=True: backend 'auto' means torch")
            backend = "torch"
        if backend == "auto":
            from crossrank.engine.auto import resolve_auto
            from crossrank.engine.calibrate import measure_for

            same = work_options(given)
            measure = measure_for(Reranker, self.model_dir, adapter_dir, same)
            self.backend_choice = resolve_auto(
                self.family.backends,
                self.device,
                dtype,
                quantize,
                measure=measure,
                torch_quantize=self.family.torch_quantize,
            )
            backend, quantize = self.backend_choice.backend, self.backend_choice.quantize
            dtype = self.backend_choice.dtype or dtype
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_length = self._clamp_length(given.get("max_length", 512))
        self.normalize: bool = given.get("normalize", False)
        #: the options in use (the model's max_length, the backend auto chose)
        self.options = Options(
            **{**given, "max_length": self.max_length, "backend": backend, "quantize": quantize}
        )
        runtime = Runtime(
            self.device, self.dtype, backend, quantize, pool, compile=not self.options.deterministic
        )
        if self.device.type == "cpu":
            malloc.tune()  # activation buffers reused between batches (CROSSRANK_MALLOC=default)
        with malloc.loading():  # weight buffers returned as they are freed
            self.loaded = self.family.load(self.model_dir, self.config, runtime)
        if adapter_dir is not None:
            from crossrank.models.adapters import apply_adapter_to

            apply_adapter_to(self.loaded.model, adapter_dir, backend=backend, devices=pool)
        #: our PyTorch model (None when another backend computes the scores)
        self.model = self.loaded.model
        self.scoring = self.loaded.scoring(self.options)
        self.engine = Engine(
            self.scoring.tokenizer,
            self.scoring.backend,
            pad_id=self.scoring.pad_id,
            max_tokens=self.options.max_batch_tokens or self.scoring.default_max_tokens,
            batch_size=self.options.batch_size,
            show_progress=self.options.show_progress,
            deterministic=self.options.deterministic,
        )
        # per-call option sets -> their scoring and engine (sharing self.engine's budget)
        self._setups: dict[tuple, tuple[Scoring, Engine]] = {(): (self.scoring, self.engine)}

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

    def _call(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The per-call options, checked (every mistake an InputError)."""
        from crossrank.families.base import check_options

        call = parse(options, per_call=True, base=self.options.chunking)
        try:
            check_options(self.family, self.model_name, call)
        except CrossrankError as exc:
            raise InputError(str(exc)) from None
        return call

    def _setup(self, call: Mapping[str, Any]) -> tuple[Scoring, Engine]:
        """The scoring set-up and engine of a call's options: the constructor's, or one made
        once per distinct override of the family's options, over the same weights and with
        the same token budget (an out-of-memory lesson is never forgotten)."""
        key = tuple(
            (k, call[k])
            for k in sorted(per_call_family_options())
            if k in call and call[k] != getattr(self.options, k)
        )
        found = self._setups.get(key)
        if found is None:
            try:
                scoring = self.loaded.scoring(replace(self.options, **dict(key)))
            except CrossrankError as exc:
                raise InputError(str(exc)) from None
            engine = self.engine.sibling(scoring.tokenizer, scoring.backend, pad_id=scoring.pad_id)
            if len(self._setups) >= MAX_SETUPS:
                del self._setups[next(k for k in self._setups if k)]
            found = self._setups[key] = (scoring, engine)
        return found

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

    def _scores(self, pairs: Any, call: Mapping[str, Any], engine: Engine) -> np.ndarray:
        """Float32 scores ``[n, n_outputs]`` of pairs (validated), best window per pair,
        sigmoid when ``normalize`` (default: the constructor's)."""
        items = as_pairs(pairs)
        max_length = call.get("max_length")
        if max_length is not None:
            max_length = self._clamp_length(max_length)
        chunking: ChunkSpec | None = call.get("chunking", self.options.chunking)
        try:
            scores = engine.score_pairs(
                items, max_length=max_length, batch_size=call.get("batch_size"), chunks=chunking
            )
        except TypeError:
            # the tokenizer refuses strings that are not valid Unicode: name the pair
            check_text((q for q, _ in items), "query of pair")
            check_text((p for _, p in items), "passage of pair")
            raise
        scores = scores.reshape(len(items), engine.backend.n_outputs)
        return sigmoid(scores) if call.get("normalize", self.normalize) else scores

    @signature_of(per_call=True)
    def compute_score(
        self, pairs: Sequence[str] | Iterable[Sequence[str]], **options: Any
    ) -> list[float]:
        """Scores of ``[query, passage]`` pairs, in input order: always a flat list of floats
        (raw logits, or sigmoid scores when ``normalize``).

        ``pairs``: one pair, or any iterable of pairs (list, generator, 2-D numpy array of
        strings, pandas DataFrame with two columns).
        ``options``: the per-call options (:class:`~crossrank.options.Options`), overriding the
        constructor's for this call: ``max_length``, ``batch_size``, ``normalize``,
        ``chunking`` (or its fields ``max_chunks_per_doc``: split passages longer than what
        fits beside the query into windows, ``chunk_overlap`` tokens shared, and score each
        pair by its best window; ``max_tokens_per_doc``: read at most that many passage
        tokens), and for the families that have them ``prompt``, ``instruction``,
        ``cutoff_layers`` (one layer of a layerwise model, default the first of the
        constructor's; :meth:`compute_layer_scores` gives several at once).

        Example:
            >>> rr.compute_score([["q", "a passage"], ["q", "another"]])  # doctest: +SKIP
            [1.25, -3.5]
        """
        call = self._call(options)
        layers = call.get("cutoff_layers")
        if layers is not None and len(layers) > 1:
            raise InputError(
                f"compute_score gives one score per pair; for the layers {list(layers)} use "
                "compute_layer_scores"
            )
        _, engine = self._setup(call)
        return [float(x) for x in self._scores(pairs, call, engine)[:, 0]]

    @signature_of(per_call=True)
    def compute_layer_scores(
        self, pairs: Sequence[str] | Iterable[Sequence[str]], **options: Any
    ) -> dict[int, list[float]]:
        """Layerwise families: the scores at each cutoff layer, ``{layer: [scores]}`` in the
        order of ``cutoff_layers`` (default: the constructor's), from one forward pass that
        stops at the largest layer. ``options``: those of :meth:`compute_score`.

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
        call = self._call(options)
        scoring, engine = self._setup(call)
        layers = list(scoring.resolved["cutoff_layers"])
        scores = self._scores(pairs, call, engine)
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
