"""Scale-out: batch reranking on a Ray cluster (``pip install 'crossrank[ray]'``).

:mod:`crossrank.distributed.ray_data` holds the library API (:func:`rerank_dataset`, the
batch UDF :class:`RerankerUDF`); :mod:`crossrank.distributed.sources` reads JSON lines and
Parquet with row-level input checks; :mod:`crossrank.distributed.cli` is
``crossrank score --engine ray`` and ``crossrank eval --engine ray``. Ray is imported lazily.
"""
