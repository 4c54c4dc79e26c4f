"""The public API: :class:`Reranker` scores (query, passage) pairs and ranks documents."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossrank.errors import CrossrankError, InputError
from crossrank.hub import DEFAULT_MODEL

logger = logging.getLogger(__name__)

Document = str | Mapping[str, Any]

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class RankResult:
    """One ranked document: its position in the input, its score, and (optionally) itself."""

    index: int
    score: float
    document: Document | None = None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device; None picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CrossrankError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CrossrankError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``dtype`` as a torch.dtype (default fp32); fp16 on the CPU is refused."""
    if dtype is None:
        resolved = torch.float32
    elif isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        try:
            resolved = _DTYPES[str(dtype).lower()]
        except KeyError:
            raise CrossrankError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16") from None
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise CrossrankError(f"dtype {resolved} is not supported; use fp32, fp16 or bf16")
    if resolved == torch.float16 and device.type == "cpu":
        raise CrossrankError(
            "fp16 is not supported on the CPU (no half-precision kernels there); "
            "use fp32, or bf16 on CPUs with AMX"
        )
    return resolved


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float32."""
    x = np.asarray(x, dtype=np.float32)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def document_text(doc: Document, index: int) -> str:
    """The text of a document given as a string or a mapping with ``text``."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping) and isinstance(doc.get("text"), str):
        return doc["text"]
    raise InputError(f"document {index} must be a string or a mapping with a 'text' string")


class Reranker:
    """Cross-encoder reranker with the reference's input rules and exact scores.

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
        query_instruction / passage_instruction: strings put before every query / passage.
        max_batch_tokens: padded-token budget of a forward pass (default on the CPU: sized so
            the widest activation stays under 16 MiB, 1024 tokens for bge-reranker-base,
            2048 for MiniLM; 512 with ``backend="onnx"``; 65536 on CUDA).
        show_progress: progress bar on or off; default on for jobs of 1024 pairs or more.
        backend: ``"torch"`` (default, our PyTorch model) or ``"onnx"`` (ONNX Runtime, needs
            ``pip install 'crossrank[onnx]'``; the exported model is cached on disk).
        quantize: ``None`` or ``"int8"`` (ONNX backend only: dynamic int8 quantization of the
            linear layers; faster on CPUs with VNNI, scores change slightly).
        devices: several devices (``["cuda:0", "cuda:1"]``) to spread big jobs over, one model
            replica each; replicas load on the first job of 4096 pairs or more, smaller jobs
            run on the first device. Overrides ``device``.

    Example:
        >>> rr = Reranker("BAAI/bge-reranker-v2-m3")  # doctest: +SKIP
        >>> rr.compute_score(["what is panda?", "The giant panda is a bear."])  # doctest: +SKIP
        [5.26...]
        >>> rr.rank("what is panda?", ["hi", "The giant panda is a bear."])  # doctest: +SKIP
        [RankResult(index=1, score=5.26..., document=None), RankResult(index=0, ...)]
    """

    def __new__(
        cls, model: str | os.PathLike[str] | None = None, *args: Any, **kwargs: Any
    ) -> Reranker:
        """A decoder checkpoint (config.json ``architectures``) gives an
        :class:`~crossrank.llm_reranker.LLMReranker`, which also takes ``prompt=`` and
        ``cutoff_layers=``."""
        if cls is Reranker and model is not None:  # (None: copy / unpickle)
            from crossrank.config import model_kind, read_config
            from crossrank.hub import resolve_model_dir

            model_dir = resolve_model_dir(model, revision=kwargs.get("revision"))
            if model_kind(read_config(model_dir / "config.json")) != "encoder":
                from crossrank.llm_reranker import LLMReranker

                cls = LLMReranker
            obj = super().__new__(cls)
            obj._resolved_dir = model_dir
            return obj
        return super().__new__(cls)

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
    ) -> None:
        from crossrank.config import EncoderConfig, read_config
        from crossrank.engine.backend import create_backend
        from crossrank.engine.runner import Engine
        from crossrank.engine.tokenize import PairTokenizer, load_tokenizer, pad_token_id
        from crossrank.hub import resolve_model_dir
        from crossrank.models import load_cross_encoder

        self.model_name = str(model)
        self.model_dir: Path = getattr(self, "_resolved_dir", None) or resolve_model_dir(
            model, revision=revision
        )
        pool = [resolve_device(d) for d in devices] if devices else None
        self.device = pool[0] if pool else resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.config = EncoderConfig.from_dict(read_config(self.model_dir / "config.json"))
        if batch_size is not None and batch_size < 1:
            raise CrossrankError(f"batch_size must be positive, got {batch_size}")
        self.max_length = self._clamp_length(max_length)
        self.normalize = normalize
        tokenizer = load_tokenizer(self.model_dir)
        self.tokenizer = PairTokenizer(
            tokenizer,
            max_length=self.max_length,
            query_max_length=query_max_length,
            query_instruction=query_instruction,
            passage_instruction=passage_instruction,
            use_type_ids=self.config.type_vocab_size > 1,
        )
        self.backend = create_backend(
            backend,
            model_dir=self.model_dir,
            load_model=lambda dev: load_cross_encoder(self.model_dir, dtype=self.dtype, device=dev),
            device=self.device,
            dtype=self.dtype,
            quantize=quantize,
            devices=pool,
        )
        #: our PyTorch model (None when another backend computes the scores)
        self.model = getattr(self.backend, "model", None)
        self.engine = Engine(
            self.tokenizer,
            self.backend,
            pad_id=pad_token_id(tokenizer, self.model_dir, self.config.pad_token_id),
            max_tokens=max_batch_tokens or self._default_budget(),
            batch_size=batch_size,
            show_progress=show_progress,
        )

    def _default_budget(self) -> int | None:
        """Token budget for the CPU sized to the model's width (None: the engine's default)."""
        if self.device.type != "cpu":
            return None
        from crossrank.engine.runner import ONNX_TOKEN_BUDGET, cpu_token_budget

        if self.backend.name == "onnx":
            return ONNX_TOKEN_BUDGET
        return cpu_token_budget(self.config.hidden_size, self.config.intermediate_size)

    def _clamp_length(self, max_length: int) -> int:
        if max_length < 1:
            raise CrossrankError(f"max_length must be positive, got {max_length}")
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

    def compute_score(
        self,
        pairs: Sequence[str] | Sequence[Sequence[str]],
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
    ) -> list[float]:
        """Scores of ``[query, passage]`` pairs, in input order.

        ``pairs`` is one pair or a list of pairs; the result is always a list of floats
        (raw logits, or sigmoid scores when ``normalize``).

        Example:
            >>> rr.compute_score([["q", "a passage"], ["q", "another"]])  # doctest: +SKIP
            [1.25, -3.5]
        """
        if len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
            pairs = [pairs]  # type: ignore[list-item]
        if max_length is not None:
            max_length = self._clamp_length(max_length)
        logits = self.engine.score_pairs(pairs, max_length=max_length, batch_size=batch_size)  # type: ignore[arg-type]
        if self.normalize if normalize is None else normalize:
            logits = sigmoid(logits)
        return [float(x) for x in logits]

    def rank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
    ) -> list[RankResult]:
        """Documents ordered best first (ties keep input order), at most ``top_k`` of them.

        Documents are strings or mappings with a ``text`` field.

        Example:
            >>> rr.rank("what is panda?", ["hi", {"text": "pandas are bears"}], top_k=1)  # doctest: +SKIP
            [RankResult(index=1, score=4.1, document=None)]
        """
        return self.rank_many([query], [documents], top_k=top_k, return_documents=return_documents)[
            0
        ]

    def rank_many(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[Document]],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
    ) -> list[list[RankResult]]:
        """Rank the documents of many queries at once, batching pairs across queries.

        ``documents[i]`` are the candidates of ``queries[i]``; the result holds one ranked list
        per query.
        """
        if len(queries) != len(documents):
            raise InputError(
                f"{len(queries)} queries but {len(documents)} document lists; they must match"
            )
        if top_k is not None and top_k < 0:
            raise InputError(f"top_k must be >= 0, got {top_k}")
        pairs: list[tuple[str, str]] = []
        for qi, (query, docs) in enumerate(zip(queries, documents)):
            if not isinstance(query, str):
                raise InputError(f"query {qi} must be a string")
            pairs.extend((query, document_text(d, i)) for i, d in enumerate(docs))
        scores = self._ranking_scores(pairs) if pairs else []
        results, start = [], 0
        for docs in documents:
            chunk = scores[start : start + len(docs)]
            start += len(docs)
            order = sorted(range(len(chunk)), key=lambda i: (-chunk[i], i))
            if top_k is not None:
                order = order[:top_k]
            results.append(
                [RankResult(i, chunk[i], docs[i] if return_documents else None) for i in order]
            )
        return results

    def _ranking_scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """The scores :meth:`rank_many` orders by (one per pair)."""
        return self.compute_score(pairs)

    def __repr__(self) -> str:
        return (
            f"Reranker({self.model_name!r}, device={self.device}, dtype={self.dtype}, "
            f"max_length={self.max_length})"
        )


def init_signature(cls: type) -> inspect.Signature:
    """The signature of ``cls.__init__`` without ``self``: what ``help`` and IDEs should show
    for a class whose ``__new__`` takes ``*args, **kwargs``."""
    sig = inspect.signature(cls.__init__)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


Reranker.__signature__ = init_signature(Reranker)  # type: ignore[attr-defined]
