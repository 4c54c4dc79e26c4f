"""Built-in BM25 first stage (bm25s + PyStemmer) and its on-disk cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")

from crossrank.errors import InputError  # noqa: E402
from crossrank.eval.beir import BeirDataset  # noqa: E402
from crossrank.eval.firststage import BM25Index, bm25_run, default_cache_dir  # noqa: E402

CORPUS = {
    "vim": "vim Vi IMproved, a text editor for programmers",
    "gcc": "gcc The GNU compiler collection compiles C programs",
    "git": "git A distributed revision control system",
    "nginx": "nginx A small and fast web server and reverse proxy",
    "panda": "The giant panda eats bamboo in the mountains of China",
    "sqlite": "sqlite An embedded SQL database engine",
}
QUERIES = {
    "q_edit": "editors for programmers",
    "q_comp": "compiling programs",  # matches "compiles" only through stemming
    "q_web": "web servers",
    "q_none": "zzzz the of",  # no indexed term (stopwords and an unknown word)
}


def dataset(path: Path, corpus=CORPUS) -> BeirDataset:
    qrels = {q: {} for q in QUERIES}
    return BeirDataset(path, "test", dict(corpus), dict(QUERIES), qrels)


def test_right_document_first(tmp_path):
    run = bm25_run(dataset(tmp_path), top_k=3, cache_dir=tmp_path / "cache")
    assert list(run) == list(QUERIES)
    best = {q: max(docs, key=docs.get) for q, docs in run.items() if docs}
    assert best == {"q_edit": "vim", "q_comp": "gcc", "q_web": "nginx"}
    assert run["q_none"] == {}  # in the run, with no candidates
    assert all(len(d) <= 3 and all(s > 0 for s in d.values()) for d in run.values())
    assert "panda" not in run["q_web"]  # documents without a query term are left out


def test_query_subset_and_unknown_ids(tmp_path):
    ds = dataset(tmp_path)
    run = bm25_run(ds, top_k=100, query_ids=["q_web"], cache_dir=tmp_path / "c")
    assert list(run) == ["q_web"]  # top_k above the corpus size is fine
    with pytest.raises(InputError, match="not in the dataset"):
        bm25_run(ds, query_ids=["nope"], cache_dir=tmp_path / "c")
    with pytest.raises(InputError, match="top_k"):
        bm25_run(ds, top_k=0, cache_dir=tmp_path / "c")


def test_cache_reused_and_rebuilt_on_change(tmp_path):
    cache = tmp_path / "cache"
    first = BM25Index.load_or_build(CORPUS, cache_dir=cache)
    assert not first.from_cache and first.path is not None and first.path.parent == cache
    again = BM25Index.load_or_build(dict(CORPUS), cache_dir=cache)
    assert again.from_cache and again.path == first.path
    queries = {"q": "distributed revision control"}
    assert again.search(queries, 2) == first.search(queries, 2)

    changed = {**CORPUS, "git": "git A distributed version control system"}
    rebuilt = BM25Index.load_or_build(changed, cache_dir=cache)
    assert not rebuilt.from_cache and rebuilt.path != first.path
    assert list(rebuilt.search({"q": "version"}, 1)["q"]) == ["git"]
    assert first.search({"q": "version"}, 1) == {"q": {}}
    params = BM25Index.load_or_build(CORPUS, cache_dir=cache, k1=1.2, b=0.75)
    assert not params.from_cache  # other BM25 parameters: another index
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 3


def test_damaged_cache_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    index = BM25Index.load_or_build(CORPUS, cache_dir=cache)
    for f in index.path.iterdir():
        if f.name != "ids.json":
            f.write_bytes(b"garbage")
    again = BM25Index.load_or_build(CORPUS, cache_dir=cache)
    assert not again.from_cache
    assert again.search({"q": "web server"}, 1)["q"].keys() == {"nginx"}


def test_damaged_cache_is_replaced_and_killed_builds_cleaned(tmp_path):
    """A rebuilt index replaces the damaged entry on disk (the next load is from the cache),
    and the temporary directory of a build killed earlier (its process is gone) is removed."""
    import subprocess
    import sys

    from crossrank.atomic import temp_name

    cache = tmp_path / "cache"
    index = BM25Index.load_or_build(CORPUS, cache_dir=cache)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              stdout=subprocess.PIPE).stdout)  # fmt: skip
    killed = cache / temp_name(index.path.name).replace(f"-{os.getpid()}-", f"-{dead}-")
    killed.mkdir()
    (killed / "params.index.json").write_text("{half")
    (index.path / "ids.json").write_text("[not json")
    assert not BM25Index.load_or_build(CORPUS, cache_dir=cache).from_cache
    assert BM25Index.load_or_build(CORPUS, cache_dir=cache).from_cache
    assert not killed.exists()
    assert [p.name for p in cache.iterdir()] == [index.path.name]


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("CROSSRANK_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    data.mkdir()
    assert default_cache_dir(data) == data / ".crossrank_cache" / "bm25"
    data.chmod(0o555)
    try:
        if not os.access(data, os.W_OK):  # root can write anyway
            assert default_cache_dir(data) == tmp_path / "home" / ".cache" / "crossrank" / "bm25"
    finally:
        data.chmod(0o755)
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(data) == tmp_path / "env" / "bm25"


def test_dataset_dir_cache_used_by_bm25_run(tmp_path, monkeypatch):
    monkeypatch.delenv("CROSSRANK_CACHE", raising=False)
    bm25_run(dataset(tmp_path), top_k=2)
    entries = list((tmp_path / ".crossrank_cache" / "bm25").iterdir())
    assert len(entries) == 1 and (entries[0] / "ids.json").is_file()
