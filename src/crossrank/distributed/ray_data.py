"""Batch reranking on Ray Data: one :class:`~crossrank.Reranker` per actor, a ``score`` column.

Example:
    >>> import ray
    >>> from crossrank.distributed.ray_data import rerank_dataset
    >>> ds = ray.data.read_parquet("s3://bucket/pairs/")  # doctest: +SKIP
    >>> scored = rerank_dataset(ds, model="BAAI/bge-reranker-v2-m3", replicas=4,
    ...                         gpus_per_replica=1, batch_size=512)  # doctest: +SKIP
    >>> scored.write_parquet("s3://bucket/scored/")  # doctest: +SKIP

Fault tolerance is Ray Data's: the actors of an actor pool are created with
``max_restarts=-1`` and ``max_task_retries=-1`` by default, so a replica whose process dies
is restarted and its unfinished batches are run again (passing them through
``map_batches(**ray_remote_args)`` is deprecated in Ray 2.60, so they are left at Ray's
defaults). A bad row is a :class:`~crossrank.errors.InputError`, which Ray does not retry.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crossrank import errors
from crossrank.errors import CrossrankError, InputError, missing_extra
from crossrank.ranking import RankResult, rank_pairs, ranked_lists

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

logger = logging.getLogger(__name__)

#: hidden column of :mod:`crossrank.distributed.sources`: a row's input error (null: none)
ERROR_COLUMN = "__crossrank_error"

#: rows per Ray batch (one UDF call); the reranker splits it further by its token budget
DEFAULT_BATCH_SIZE = 256


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ImportError naming the extra to install."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise missing_extra("ray", "ray[data]") from None
    return ray


def user_error(exc: BaseException) -> CrossrankError | None:
    """The :class:`~crossrank.errors.CrossrankError` a Ray failure carries, unwrapped.

    A read task's exception comes back as ``RayTaskError(InputError)`` whose ``cause`` is the
    original; a UDF's comes back as Ray Data's ``UserCodeException``, which keeps only the
    remote traceback as text, whose ``crossrank.errors.NAME: message`` line is parsed. None
    when the failure is not a user error (a crash, a bug: those keep Ray's report).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(current, CrossrankError) and not isinstance(cause, BaseException):
            return type(current)(str(current).splitlines()[0])  # without Ray's retry notes
        found = _REMOTE_ERROR.findall(str(current))
        if found:
            name, message = found[-1]
            cls = getattr(errors, name, None)
            if isinstance(cls, type) and issubclass(cls, CrossrankError):
                return cls(message)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    return None


#: the last line of a remote traceback of one of our errors
_REMOTE_ERROR = re.compile(r"^crossrank\.errors\.(\w+): (.*)$", re.MULTILINE)


def row_label(batch: pa.Table, index: int) -> str:
    """How an error names row ``index`` of ``batch``: its ``path`` (Ray's ``include_paths``)
    when the dataset has one, else its position in the batch."""
    if "path" in batch.column_names:
        return f"{batch.column('path')[index].as_py()}: a row"
    return f"row {index} of a batch"


def batch_pairs(batch: pa.Table, query_column: str, passage_column: str) -> list[tuple[str, str]]:
    """The ``(query, passage)`` pairs of a batch; a missing or non-string value is an
    :class:`~crossrank.errors.InputError` naming the row."""
    for name in (query_column, passage_column):
        if name not in batch.column_names:
            raise InputError(
                f"the dataset has no {name!r} column (columns: {', '.join(batch.column_names)})"
            )
    queries = batch.column(query_column).to_pylist()
    passages = batch.column(passage_column).to_pylist()
    for i, (q, p) in enumerate(zip(queries, passages)):
        for name, value in ((query_column, q), (passage_column, p)):
            if not isinstance(value, str):
                raise InputError(f"{row_label(batch, i)}: missing string field {name!r}")
    return list(zip(queries, passages))


class RerankerUDF:
    """Ray Data batch UDF (a callable class): loads one reranker per actor and scores batches.

    ``map_batches(RerankerUDF, fn_constructor_kwargs={...}, batch_format="pyarrow")``: each
    batch (a ``pyarrow.Table`` with the query and passage columns) comes back with every
    column unchanged plus ``score_column`` (float64: the reranker's fp32 scores exactly).

    Args:
        model: checkpoint directory, hub id or ``"crossrank/minilm-debian"`` (any family:
            encoders and LLM rerankers alike).
        query_column / passage_column: the input columns (``query`` / ``passage``).
        score_column: the added column (``score``).
        threads: torch CPU threads of this actor (default: torch's default, which follows the
            ``OMP_NUM_THREADS`` Ray sets from the actor's CPUs).
        score_options: per-call options of :meth:`~crossrank.Reranker.compute_score`
            (``max_chunks_per_doc``, ``max_tokens_per_doc``, ``chunk_overlap``...).
        **reranker_options: any keyword of :class:`~crossrank.Reranker` (``device``,
            ``dtype``, ``max_length``, ``normalize``, ``backend``, ``prompt``...).
    """

    def __init__(
        self,
        model: str,
        *,
        query_column: str = "query",
        passage_column: str = "passage",
        score_column: str = "score",
        threads: int | None = None,
        score_options: Mapping[str, Any] | None = None,
        **reranker_options: Any,
    ) -> None:
        import torch

        from crossrank.reranker import Reranker

        if threads is not None:
            torch.set_num_threads(threads)
        reranker_options.setdefault("show_progress", False)  # Ray shows the job's progress
        self.reranker = Reranker(model, **reranker_options)
        self.query_column = query_column
        self.passage_column = passage_column
        self.score_column = score_column
        self.score_options = dict(score_options or {})
        logger.info("replica pid %d loaded %r", os.getpid(), self.reranker)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        if ERROR_COLUMN in batch.column_names:  # checked while reading (file and row)
            column = batch.column(ERROR_COLUMN)
            if column.null_count < len(column):
                raise InputError(next(e for e in column.to_pylist() if e is not None))
            batch = batch.drop_columns([ERROR_COLUMN])
        pairs = batch_pairs(batch, self.query_column, self.passage_column)
        scores = self.reranker.compute_score(pairs, **self.score_options) if pairs else []
        column = pa.array(scores, type=pa.float64())
        if self.score_column in batch.column_names:
            return batch.set_column(
                batch.column_names.index(self.score_column), self.score_column, column
            )
        return batch.append_column(self.score_column, column)


def rerank_dataset(
    ds: ray.data.Dataset,
    *,
    model: str,
    replicas: int = 1,
    gpus_per_replica: float = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    query_column: str = "query",
    passage_column: str = "passage",
    score_column: str = "score",
    threads_per_replica: int | None = None,
    cpus_per_replica: float | None = None,
    reranker_batch_size: int | None = None,
    resources: dict[str, float] | None = None,
    score_options: Mapping[str, Any] | None = None,
    **reranker_options: Any,
) -> ray.data.Dataset:
    """``ds`` with a ``score`` column added by ``replicas`` actors, each holding one reranker.

    Every input column is kept. Lazy, as Ray Data is: nothing runs until the result is
    written, iterated or materialized.

    Args:
        ds: a Ray dataset with the query and passage columns (strings).
        model: checkpoint directory, hub id or ``"crossrank/minilm-debian"``; each actor loads
            it, so it must be reachable from every node (shared storage or the hub cache).
        replicas: actors in the pool (fixed size: ``ActorPoolStrategy(size=replicas)``).
        gpus_per_replica: GPUs reserved by each actor (fractions share a GPU); with GPUs the
            reranker runs on ``cuda`` (the GPU Ray assigns), else on the CPU, unless
            ``device=`` says otherwise.
        batch_size: rows per UDF call (the reranker's token budget and
            ``reranker_batch_size`` still bound each forward pass).
        query_column / passage_column / score_column: column names.
        threads_per_replica: torch threads of each actor.
        cpus_per_replica: CPUs Ray reserves for each actor (default ``threads_per_replica``,
            or 1).
        reranker_batch_size: the reranker's own ``batch_size=`` (most pairs per forward
            pass), named so because ``batch_size`` here is Ray's.
        resources: custom Ray resources each actor needs (``{"scorer": 1}`` places the
            actors on nodes started with ``ray start --resources '{"scorer": N}'``).
        score_options: per-call options of :meth:`~crossrank.Reranker.compute_score`
            (chunking of long passages).
        **reranker_options: passed to :class:`~crossrank.Reranker` in each actor.

    Raises:
        CrossrankError: bad option values (before anything is scheduled).
    """
    ray = import_ray()
    if replicas < 1:
        raise CrossrankError(f"replicas must be >= 1, got {replicas}")
    if gpus_per_replica < 0:
        raise CrossrankError(f"gpus_per_replica must be >= 0, got {gpus_per_replica}")
    if batch_size < 1:
        raise CrossrankError(f"batch_size must be >= 1, got {batch_size}")
    if threads_per_replica is not None and threads_per_replica < 1:
        raise CrossrankError(f"threads_per_replica must be >= 1, got {threads_per_replica}")
    if cpus_per_replica is None:
        cpus_per_replica = float(threads_per_replica or 1)
    if reranker_options.get("device") is None:  # the GPU Ray assigns, else the CPU
        reranker_options["device"] = "cuda" if gpus_per_replica > 0 else "cpu"
    return ds.map_batches(
        RerankerUDF,
        fn_constructor_kwargs={
            "model": str(model),
            "query_column": query_column,
            "passage_column": passage_column,
            "score_column": score_column,
            "threads": threads_per_replica,
            "batch_size": reranker_batch_size,
            "score_options": dict(score_options or {}),
            **reranker_options,
        },
        # one call at a time, run on the actor's own thread: by default Ray Data runs the UDF
        # on a helper thread, so torch gets a second OpenMP thread team beside the one model
        # loading made, and the replica lost about 20% (measured; the likely mechanism: libgomp,
        # counting more OpenMP threads than CPUs, stops spin-waiting; docs/performance.md)
        compute=ray.data.ActorPoolStrategy(
            size=replicas, max_concurrent_calls_per_actor=1, enable_true_multi_threading=True
        ),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=cpus_per_replica,
        num_gpus=gpus_per_replica or None,
        resources=resources,
        udf_modifying_row_count=False,
    )


class RayReranker:
    """A ``rank_many`` that scores on Ray Data, so :func:`crossrank.eval.reranking.rerank` (and
    ``crossrank eval --engine ray``) run through :func:`rerank_dataset`.

    Ranking is the in-process one: best score first, ties in input order.
    """

    def __init__(self, model: str, **options: Any) -> None:
        self.model = model
        self.options = options

    def compute_score(self, pairs: Sequence[tuple[str, str]], **score_options: Any) -> list[float]:
        """Scores of ``pairs`` in input order, computed by the actor pool (``score_options``:
        those of :meth:`crossrank.Reranker.compute_score`)."""
        import pyarrow as pa

        ray = import_ray()

        table = pa.table(
            {
                "row": pa.array(range(len(pairs)), type=pa.int64()),
                "query": [q for q, _ in pairs],
                "passage": [p for _, p in pairs],
            }
        )
        options = {**self.options, "score_options": score_options}
        scored = rerank_dataset(ray.data.from_arrow(table), model=self.model, **options)
        scores = [0.0] * len(pairs)
        seen = 0
        try:
            for batch in scored.select_columns(["row", "score"]).iter_batches(
                batch_format="pyarrow"
            ):
                for row, score in zip(
                    batch.column("row").to_pylist(), batch.column("score").to_pylist()
                ):
                    scores[row] = score
                    seen += 1
        except Exception as exc:  # a user error raised on the cluster, unwrapped
            err = user_error(exc)
            if err is None:
                raise
            raise err from None
        if seen != len(pairs):  # an internal fault, never the user's
            raise RuntimeError(f"Ray returned {seen} scores for {len(pairs)} pairs")
        return scores

    def rank_many(
        self, queries: Sequence[str], documents: Sequence[Sequence[Any]], **score_options: Any
    ) -> list[list[RankResult]]:
        """One ranked list per query, as :meth:`crossrank.Reranker.rank_many` gives."""
        doc_lists, pairs = rank_pairs(queries, documents)
        scores = self.compute_score(pairs, **score_options) if pairs else []
        return ranked_lists(scores, doc_lists)
