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
#: pair length the bundled model is used with (its training used query 32 + passage 64)
MINILM_DEBIAN_MAX_LENGTH = 128
#: a sample query and documents for ``crossrank demo`` / ``crossrank rank``
EXAMPLE_DIR = BUNDLED_DIR / "example"


def bundled_model_dir(name: str) -> Path | None:
    """The directory of a bundled model named ``name``, or None."""
    path = MODELS.get(name)
    return path if path is not None and (path / "config.json").is_file() else None
