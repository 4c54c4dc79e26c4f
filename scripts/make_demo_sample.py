"""Build the debian-ir sample that ships in the package for ``crossrank demo``.

A seeded draw of dev queries among those whose relevant package BM25 ranks within its top
``--depth`` (reranking the top ``--depth`` can only move what is there), with BM25's top
``--depth`` of each, their judgments, and only the documents these name (texts cut at 2,000
characters: the bundled model reads 128 tokens of a pair). A BEIR directory, as
``crossrank eval`` reads it:

    python scripts/make_demo_sample.py --dataset ../shared/data/debian-ir \
        --out src/crossrank/bundled/demo-sample
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from crossrank.eval.beir import load_beir, sample_queries
from crossrank.eval.runs import ranked, read_run

#: characters of a document kept (the model reads 128 tokens of query + passage)
MAX_CHARS = 2000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="../shared/data/debian-ir")
    p.add_argument("--out", default="src/crossrank/bundled/demo-sample")
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    root, out = Path(args.dataset), Path(args.out)
    ds = load_beir(root, "dev")
    run = read_run(root / "dev.bm25.top100.run", doc_ids=ds.corpus)
    top = {q: [d for d, _ in ranked(docs)[: args.depth]] for q, docs in run.items()}
    pool = [
        q
        for q, judged in ds.qrels.items()
        if q in top and any(rel > 0 and d in top[q] for d, rel in judged.items())
    ]
    qids = sample_queries(pool, args.queries, args.seed)
    docs = {d for q in qids for d in top[q]} | {d for q in qids for d in ds.qrels[q]}
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "qrels" / "dev.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            fh.writelines(f"{q}\t{d}\t{rel}\n" for d, rel in ds.qrels[q].items() if d in docs)
    with open(out / "queries.jsonl", "w") as fh:
        fh.writelines(json.dumps({"_id": q, "text": ds.queries[q]}) + "\n" for q in qids)
    with gzip.GzipFile(out / "corpus.jsonl.gz", "wb", mtime=0) as gz:
        for d in sorted(docs):
            text = ds.corpus[d][:MAX_CHARS]
            gz.write((json.dumps({"_id": d, "title": "", "text": text}) + "\n").encode())
    with gzip.GzipFile(out / f"dev.bm25.top{args.depth}.run.gz", "wb", mtime=0) as gz:
        for q in qids:
            for rank, (d, score) in enumerate(ranked(run[q])[: args.depth], 1):
                gz.write(f"{q} Q0 {d} {rank} {score:.4f} bm25\n".encode())
    print(f"{out}: {len(qids)} of {len(pool)} queries (seed {args.seed}), {len(docs)} documents")


if __name__ == "__main__":
    main()
