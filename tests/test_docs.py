"""The documentation's commands: every block of README.md and docs/*.md parses and declares its
directives correctly, and the cheap offline ones (the README's quick start with the bundled
model) run as written. The full run of every block is ``make doc-check``
(scripts/doc-check.py)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _doc_check():
    spec = importlib.util.spec_from_file_location("doc_check", ROOT / "scripts" / "doc-check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["doc_check"] = module
    spec.loader.exec_module(module)
    return module


dc = _doc_check()
BLOCKS = [b for d in dc.documents() for b in dc.parse(d)]


def test_documents_have_blocks():
    assert {b.doc.name for b in BLOCKS} >= {"README.md", "serving.md", "training.md"}
    assert not any("notes" in b.doc.parts for b in BLOCKS), "docs/notes/ is not checked"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.where)
def test_block_parses(block):
    assert dc.problems(block) == []


def test_skips_are_few_and_explained():
    skipped = [b for b in BLOCKS if b.skip]
    assert all(len(b.skip.split()) >= 3 for b in skipped), [b.where for b in skipped]
    assert len(skipped) < len(BLOCKS) / 2


def test_no_dataset_path_but_the_documented_one():
    """One convention: ../shared/data/debian-ir (or tests/data/tiny-beir)."""
    for b in BLOCKS:
        for path in re.findall(r"[\w./-]*debian-ir\b", b.text):
            assert path.startswith("../shared/data/debian-ir"), (b.where, path)


def test_every_substituted_model_has_a_builder():
    from crossrank.testing import BUILDERS

    for family, _ in dc.MODELS.values():
        assert family == "xlm-roberta" or family in BUILDERS


def test_docs_link_to_existing_files():
    for doc in [*dc.documents(), ROOT / "docs" / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            if target.endswith("verifying.md"):  # another branch's guide, merged separately
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"


QUICK = [
    b
    for b in BLOCKS
    if b.doc.name == "README.md"
    and b.heading.startswith("Quick start")
    and not b.skip
    and "crossrank serve" not in b.text
    and "curl" not in b.text
]


def test_quick_start_found():
    assert [b.lang for b in QUICK] == ["python", "shell"]


@pytest.mark.parametrize("block", QUICK, ids=lambda b: b.where)
def test_quick_start_runs(block, tmp_path):
    for name, text in dc.FIXTURES.items():
        (tmp_path / name).write_text(text)
    runner = dc.Runner(tmp_path / "work", tmp_path / "models", verbose=True)
    ok, out = runner.run(block, tmp_path)
    assert ok, out
    if block.lang == "python":
        assert "nmap" in out  # the ranked documents are printed
    else:
        assert "nmap" in out
