"""``crossrank score --engine ray`` and ``crossrank eval --engine ray``: the Ray options, the
cluster connection, and the batch scoring job (read, rerank, write atomically, summary line).

This module imports Ray only when a Ray job runs, so ``crossrank --help`` stays fast and
works without the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crossrank.atomic import atomic_dir, check_output
from crossrank.cli_args import UsageError
from crossrank.options.views import from_args

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
OUTPUT_FORMATS = ("parquet", "jsonl")


def add_ray_args(p: argparse.ArgumentParser, *, files: bool = False) -> None:
    """``--engine`` and the Ray options; with ``files`` also the file-format options of
    ``crossrank score --engine ray``."""
    g = p.add_argument_group("scale-out on Ray (pip install 'crossrank[ray]')")
    g.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local (default: this process) or ray (Ray Data actors, one model each)",
    )
    g.add_argument("--replicas", type=int, default=1, help="Ray actors, one model each (1)")
    g.add_argument("--gpus-per-replica", type=float, default=0, help="GPUs per actor (0)")
    g.add_argument(
        "--threads-per-replica", type=int, default=None, help="torch threads (and CPUs) per actor"
    )
    g.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join: auto (the running cluster) or HOST:PORT "
        "(default: start a local Ray for this job)",
    )
    g.add_argument(
        "--ray-batch-size", type=int, default=256, help="rows per actor call on Ray (256)"
    )
    g.add_argument(
        "--replica-resources",
        type=_resources,
        default=None,
        metavar="JSON",
        help="custom Ray resources per actor, e.g. '{\"scorer\": 1}' (nodes started with "
        "ray start --resources)",
    )
    if files:
        g.add_argument(
            "--input-format",
            choices=("auto", "jsonl", "parquet"),
            default="auto",
            help="input files (default auto: .parquet is Parquet, else JSON lines)",
        )
        g.add_argument(
            "--output-format", choices=OUTPUT_FORMATS, default="parquet", help="(parquet)"
        )
        g.add_argument("--query-column", default="query", help="(query)")
        g.add_argument("--passage-column", default="passage", help="(passage)")


def _resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and v > 0 for k, v in value.items()
    ):
        raise argparse.ArgumentTypeError(f"expected a JSON object of positive numbers: {text}")
    return {k: float(v) for k, v in value.items()}


def reranker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~crossrank.Reranker` options of the shared model and chunk flags (those
    :func:`crossrank.cli_args.load_reranker` passes, with ``chunking``: every option declared
    in :mod:`crossrank.options` that has a flag), checked, as
    :func:`~crossrank.distributed.ray_data.rerank_dataset` takes them (the Reranker's
    ``batch_size`` as ``reranker_batch_size``: ``batch_size`` there is Ray's)."""
    options = from_args(args)
    if "batch_size" in options:
        options["reranker_batch_size"] = options.pop("batch_size")
    return options


def ray_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`~crossrank.distributed.ray_data.rerank_dataset` keywords of the Ray options."""
    if args.replicas < 1:
        raise UsageError("--replicas must be >= 1")
    if args.gpus_per_replica < 0:
        raise UsageError("--gpus-per-replica must be >= 0")
    if args.threads_per_replica is not None and args.threads_per_replica < 1:
        raise UsageError("--threads-per-replica must be >= 1")
    if args.ray_batch_size < 1:
        raise UsageError("--ray-batch-size must be >= 1")
    return {
        "replicas": args.replicas,
        "gpus_per_replica": args.gpus_per_replica,
        "threads_per_replica": args.threads_per_replica,
        "batch_size": args.ray_batch_size,
        "resources": args.replica_resources,
    }


@contextlib.contextmanager
def ray_session(args: argparse.Namespace) -> Iterator[Any]:
    """Connected to the cluster of ``--ray-address`` (or a local Ray started for the job and
    stopped after it); a user error raised on the cluster comes out unwrapped (one line)."""
    from crossrank.distributed.ray_data import import_ray, user_error

    ray = import_ray()
    started = not ray.is_initialized()
    if started and args.ray_address:
        _check_reachable(args.ray_address)
        try:
            ray.init(address=args.ray_address, log_to_driver=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"--ray-address {args.ray_address}: {reason}") from None
    elif started:
        # the actors hold their CPUs for the whole job: leave room for read/write tasks
        need = int(args.replicas * float(args.threads_per_replica or 1)) + 1
        ray.init(num_cpus=max(os.cpu_count() or 1, need), include_dashboard=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        if args.replicas * args.gpus_per_replica > gpus:
            ray.shutdown()
            raise UsageError(
                f"{args.replicas} replicas x {args.gpus_per_replica:g} GPUs need "
                f"{args.replicas * args.gpus_per_replica:g} GPUs; this machine has {gpus:g}"
            )
    context = ray.data.DataContext.get_current()
    preserve = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # output rows in input order
    try:
        yield ray
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        raise err from None
    finally:
        context.execution_options.preserve_order = preserve
        if started:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on is a usage error now (ray.init would retry for
    minutes); ``auto`` and ``ray://`` addresses are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address}: expected auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(
            f"--ray-address {address}: no Ray head answers there ({exc.strerror or exc})"
        ) from None


def _check_output(output: str, inputs: list[str]) -> None:
    """A local output directory: writable, and not holding an input (it will be replaced)."""
    if output == "-":
        raise UsageError("--engine ray writes a directory: give --output DIR")
    if "://" in output:
        return
    check_output(output, what="--output", directory=True)
    out = Path(output).resolve()
    for path in inputs:
        resolved = Path(path).resolve()
        if "://" not in path and (resolved == out or out in resolved.parents):
            raise UsageError(f"{output}: the output directory holds an input ({path})")


def _count_rows(path: str, fmt: str) -> int:
    import pyarrow.dataset as pads

    return pads.dataset(path, format="parquet" if fmt == "parquet" else "json").count_rows()


def score_with_ray(args: argparse.Namespace) -> int:
    """``crossrank score --engine ray``: score files of pairs on Ray and write a directory."""
    from crossrank.distributed.ray_data import rerank_dataset
    from crossrank.distributed.sources import (
        detect_format,
        expand_inputs,
        json_lines_sink,
        read_pairs,
    )
    from crossrank.models.adapters import check_model_argument

    if args.input == "-":
        raise UsageError("--engine ray reads files: give --input PATH, DIR or GLOB")
    options = ray_options(args)
    inputs = expand_inputs(args.input)
    fmt = args.input_format
    if fmt == "auto":
        formats = {detect_format(p) for p in inputs}
        if len(formats) > 1:
            raise UsageError(f"{args.input}: mixes JSON lines and Parquet; give one kind")
        fmt = formats.pop()
    _check_output(args.output, inputs)
    check_model_argument(args.model)  # a wrong model fails here, not in every actor
    timing: dict[str, float] = {}

    def run(target: str) -> None:  # the whole job, writing into ``target``
        with ray_session(args):
            start = time.perf_counter()
            ds = read_pairs(
                inputs, fmt=fmt, query_column=args.query_column, passage_column=args.passage_column
            )
            scored = rerank_dataset(
                ds,
                model=args.model,
                query_column=args.query_column,
                passage_column=args.passage_column,
                **options,
                **reranker_options(args),
            )
            if args.output_format == "parquet":
                scored.write_parquet(target)
            else:
                scored.write_datasink(json_lines_sink(target))
            timing["seconds"] = time.perf_counter() - start
        timing["rows"] = _count_rows(target, args.output_format)

    if "://" in args.output:  # object stores cannot rename: written in place
        run(args.output)
    else:  # a temporary sibling directory, renamed into place when complete
        atomic_dir(args.output, lambda tmp: run(str(tmp)))
    rows, seconds = int(timing["rows"]), timing["seconds"]
    print(
        f"crossrank: {rows} rows in {seconds:.1f} s ({rows / max(seconds, 1e-9):.1f} pairs/s) "
        f"-> {args.output}",
        file=sys.stderr,
    )
    return 0


def ray_reranker(args: argparse.Namespace, model: str) -> Any:
    """``crossrank eval --engine ray``: a :class:`~crossrank.distributed.ray_data.RayReranker`
    for ``model`` with the command's options (used inside :func:`ray_session`)."""
    from crossrank.distributed.ray_data import RayReranker

    return RayReranker(model, **ray_options(args), **reranker_options(args))
