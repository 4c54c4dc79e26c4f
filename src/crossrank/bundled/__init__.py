"""Models and examples shipped inside the package, usable offline.

``crossrank/minilm-debian`` is a small English reranker (all-MiniLM-L6-v2 fine-tuned on the
debian-ir training split); see its README.md for the recipe and measured metrics. Its files
live in the repository's ``models/minilm-debian``; ``minilm-debian`` here links to them, so
wheels and editable installs carry the same model.

Example:
    >>> from crossrank import Reranker
    >>> from crossrank.bundled import MINILM_DEBIAN
    >>> rr = Reranker(MINILM_DEBIAN)  # or Reranker("crossrank/minilm-debian")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent
#: the bundled English reranker (a checkpoint directory in Hugging Face layout)
MINILM_DEBIAN = BUNDLED_DIR / "minilm-debian"
#: names accepted wherever a model id is (``Reranker("crossrank/minilm-debian")``)
MODELS = {"crossrank/minilm-debian": MINILM_DEBIAN}
#: the language each bundled model reads, said wherever it is offered (CLI help, the demo,
#: the offline hint of :mod:`crossrank.hub`): its vocabulary and training data are English
LANGUAGES = {"crossrank/minilm-debian": "English only"}
#: pair length the bundled model is used with (its training used query 32 + passage 64)
MINILM_DEBIAN_MAX_LENGTH = 128
#: a sample query and documents for ``crossrank demo`` / ``crossrank rank``
EXAMPLE_DIR = BUNDLED_DIR / "example"
#: the debian-ir sample ``crossrank demo`` reranks (BEIR layout, split ``dev``): 64 dev queries
#: drawn with seed 0 among those whose package BM25 ranks in its top 30, BM25's top 30 of each
#: (``scripts/make_demo_sample.py`` builds it from the dataset)
DEMO_SAMPLE = BUNDLED_DIR / "demo-sample"
#: the first-stage run of :data:`DEMO_SAMPLE` and its depth
DEMO_SAMPLE_RUN, DEMO_SAMPLE_DEPTH = DEMO_SAMPLE / "dev.bm25.top30.run.gz", 30


def bundled_model_dir(name: str) -> Path | None:
    """The directory of a bundled model named ``name``, or None."""
    path = MODELS.get(name)
    return path if path is not None and (path / "config.json").is_file() else None
