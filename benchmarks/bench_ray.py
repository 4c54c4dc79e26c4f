"""Ray Data vs in-process scoring, same machine, one run; then a real two-node Ray topology.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_ray.py --pairs 20000 --two-node \\
        --json bench_ray.json

1. Pairs: the first dev queries of debian-ir's ``dev.bm25.top100.run`` with their BM25
   candidates (query text, "title text" documents as ``crossrank eval`` builds them), written
   once to ``benchmarks/.cache/ray/pairs-N.parquet``.
2. In-process: ``Reranker("crossrank/minilm-debian")`` with 2 torch threads, timed from the
   model load to the last score.
3. Ray, on a local cluster started here (3 logical CPUs: 2 for the actors, 1 for the read and
   write tasks): 1 replica x 2 threads, then 2 replicas x 1 thread, each timed from the job's
   start (the actors' start and model load included) to the Parquet output written; scores
   compared with the in-process ones. ``--rounds`` (2) repeats 2-3 in turn; the best round of
   each configuration is compared.
4. ``--two-node``: ``ray start --head`` (1 CPU) plus a second ``ray start --address`` with
   its own ``--resources '{"scorer": 2}'`` on this machine, the scoring job submitted with
   ``ray job submit --working-dir src`` (the model from its path, as from shared storage, not
   uploaded; the actors ask for ``{"scorer": 1}``, so they run on
   the second node), output compared row by row with step 3's 2 x 1 output. The two nodes'
   processes are stopped by PID afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "minilm-debian"
HEAD_PORT, DASHBOARD_PORT = 6391, 8271
GRID = ((1, 2), (2, 1))  # (replicas, threads per replica)


def build_pairs(data: Path, n: int, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crossrank.eval.beir import load_beir
    from crossrank.eval.runs import ranked, read_run

    if path.exists():
        return
    ds = load_beir(data, "dev")
    run = read_run(data / "dev.bm25.top100.run", doc_ids=ds.corpus)
    rows: list[dict] = []
    for qid in run:
        for doc, _ in ranked(run[qid]):
            rows.append({"id": len(rows), "qid": qid, "docid": doc, "query": ds.queries[qid],
                         "passage": ds.corpus[doc]})  # fmt: skip
            if len(rows) == n:
                break
        if len(rows) == n:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def in_process(pairs_path: Path, max_length: int) -> tuple[float, dict[int, float]]:
    import pyarrow.parquet as pq
    import torch

    from crossrank import Reranker

    torch.set_num_threads(2)
    table = pq.read_table(pairs_path)
    pairs = list(zip(table.column("query").to_pylist(), table.column("passage").to_pylist()))
    start = time.perf_counter()
    rr = Reranker(str(MODEL), device="cpu", max_length=max_length, show_progress=True)
    scores = rr.compute_score(pairs)
    seconds = time.perf_counter() - start
    return seconds, dict(zip(table.column("id").to_pylist(), scores))


def read_scores(out: Path) -> dict[int, float]:
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    ids = table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{out}: a row is there twice")
    return dict(zip(ids, table.column("score").to_pylist()))


def on_ray(pairs_path: Path, out: Path, replicas: int, threads: int, args) -> float:
    from crossrank.distributed.ray_data import rerank_dataset
    from crossrank.distributed.sources import read_pairs

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    ds = read_pairs([str(pairs_path)], fmt="parquet")
    scored = rerank_dataset(
        ds, model=str(MODEL), replicas=replicas, threads_per_replica=threads,
        batch_size=args.ray_batch_size, max_length=args.max_length,
    )  # fmt: skip
    scored.write_parquet(str(out))
    return time.perf_counter() - start


def diff(a: dict[int, float], b: dict[int, float]) -> float:
    if set(a) != set(b):
        raise SystemExit(f"rows differ: {len(a)} vs {len(b)}")
    return max(abs(a[k] - b[k]) for k in a)


def two_node(pairs_path: Path, out: Path, args) -> dict:
    """Head + worker node on this machine, the job submitted with a working directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # crossrank comes from src/
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["RAY_AUTH_MODE"] = "token"  # Ray's default token (~/.ray/auth_token) on every node
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp = Path("/tmp/crossrank-bench-2n")
    cmds = [
        [ray_bin, "start", "--head", f"--port={HEAD_PORT}", "--num-cpus=1",
         "--resources", '{"head": 1}', "--include-dashboard=true",
         f"--dashboard-port={DASHBOARD_PORT}", "--dashboard-host=127.0.0.1",
         f"--temp-dir={temp}", "--min-worker-port=20000", "--max-worker-port=20499",
         "--disable-usage-stats"],
        [ray_bin, "start", f"--address=127.0.0.1:{HEAD_PORT}", "--num-cpus=2",
         "--resources", '{"scorer": 2}', "--min-worker-port=20500", "--max-worker-port=20999",
         "--disable-usage-stats"],
    ]  # fmt: skip
    job = [
        ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{DASHBOARD_PORT}",
        "--working-dir", str(REPO / "src"),
        "--runtime-env-json", '{"excludes": ["crossrank/bundled/minilm-debian/"]}', "--",
        "python", "-m", "crossrank", "score", "--engine", "ray", "--ray-address", "auto",
        "--input", str(pairs_path), "--output", str(out), "-m", str(MODEL),
        "--max-length", str(args.max_length), "--replicas", "2", "--threads-per-replica", "1",
        "--replica-resources", '{"scorer": 1}', "--ray-batch-size", str(args.ray_batch_size),
    ]  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    try:
        for cmd in cmds:
            subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        status = subprocess.run([ray_bin, "status", f"--address=127.0.0.1:{HEAD_PORT}"],
                                env=env, capture_output=True, text=True)  # fmt: skip
        print(status.stdout, file=sys.stderr)
        start = time.perf_counter()
        proc = subprocess.run(job, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-12:])
        print(tail, file=sys.stderr)
        if proc.returncode != 0:
            raise SystemExit(f"ray job submit failed ({proc.returncode})")
        return {"seconds": seconds, "nodes": status.stdout.count("node_"), "log_tail": tail}
    finally:
        stop_cluster(temp)


def stop_cluster(temp: Path) -> None:
    """Stop this benchmark's Ray processes by PID (those naming its temp dir or head port,
    and their children), never other users' Ray."""
    import psutil

    marks = (str(temp), f":{HEAD_PORT}")
    pids: set[int] = set()
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if any(m in line for m in marks) and p.pid != os.getpid():
            pids.add(p.pid)
            try:
                pids.update(c.pid for c in p.children(recursive=True))
            except psutil.Error:
                pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "debian-ir")
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--ray-batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--two-node", action="store_true")
    ap.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / ".cache" / "ray")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.data / "dev.bm25.top100.run").is_file():
        args.data = Path("/work/shared/data/debian-ir")

    import ray
    import torch

    pairs_path = args.workdir / f"pairs-{args.pairs}.parquet"
    build_pairs(args.data, args.pairs, pairs_path)
    from crossrank.cpu import describe

    result = {"cpu": describe(), "cores": os.cpu_count(), "pairs": args.pairs,
              "ray": ray.__version__, "torch": torch.__version__, "runs": {}}  # fmt: skip

    # rounds interleave the three configurations, so load changes on a shared machine hit all
    ray.init(num_cpus=3, include_dashboard=False)  # 2 for the actors, 1 for read/write tasks
    names = ["in-process, 2 threads"] + [f"Ray {r} replica(s) x {t} thread(s)" for r, t in GRID]
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[tuple[int, int], dict[int, float]] = {}
    reference: dict[int, float] = {}
    try:
        for round_ in range(args.rounds):
            seconds, reference = in_process(pairs_path, args.max_length)
            times[names[0]].append(seconds)
            print(f"round {round_ + 1}: {names[0]}: {seconds:.1f} s", file=sys.stderr)
            for name, (replicas, threads) in zip(names[1:], GRID):
                out = args.workdir / f"out-{replicas}x{threads}"
                seconds = on_ray(pairs_path, out, replicas, threads, args)
                outputs[(replicas, threads)] = read_scores(out)
                times[name].append(seconds)
                print(f"round {round_ + 1}: {name}: {seconds:.1f} s", file=sys.stderr)
    finally:
        ray.shutdown()

    base = min(times[names[0]])
    for name in names:
        best = min(times[name])
        run = {"seconds": times[name], "best_s": best, "pairs_per_s": args.pairs / best,
               "x_in_process_time": best / base}  # fmt: skip
        if name != names[0]:
            grid = GRID[names.index(name) - 1]
            run["max_abs_diff_vs_in_process"] = diff(outputs[grid], reference)
        result["runs"][name] = run
    if args.two_node:
        out = args.workdir / "out-two-node"
        info = two_node(pairs_path, out, args)
        scores = read_scores(out)
        info["max_abs_diff_vs_local_2x1"] = diff(scores, outputs[(2, 1)])
        info["identical_to_local_2x1"] = scores == outputs[(2, 1)]
        info["max_abs_diff_vs_in_process"] = diff(scores, reference)
        result["two_node"] = info
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
