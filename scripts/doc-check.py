#!/usr/bin/env python3
"""Run every command of the user documentation, as written (``make doc-check``).

Extracts the fenced ```bash / ```sh / ```console and ```python blocks of README.md and
docs/*.md (not docs/notes/, the engineering notes) and runs each one, in document order, in
a temporary working directory per document, with the substitutions of :data:`SUBSTITUTIONS`
(declared here, once) and the per-block directives of the HTML comments right above a block:

    <!-- doc-check: skip REASON -->         not run; REASON is required and is reported
    <!-- doc-check: flags SUB ARGS... -->   ARGS appended to every `crossrank SUB` call of the
                                            block (caps long runs: `flags train --max-steps 2`)
    <!-- doc-check: env NAME=VALUE ... -->  environment of the block
    <!-- doc-check: timeout SECONDS -->     (default 600)

Shell blocks run with `bash -euo pipefail` (a `console` block: its `$ ` lines), with
`crossrank` and `python` on PATH meaning this checkout (``PYTHONPATH=src``) and the venv's
Python. A `crossrank serve ...` line is started in the background instead, on a free port,
and kept for the following blocks of the document (their `localhost:8080` is that port)
until the next `crossrank serve` line or the document's end; the block waits for its
`/health` to answer 200. Python blocks run as a script with the venv's Python.

Model ids that cannot be fetched here (no network to the Hugging Face hub) are replaced by
tiny random checkpoints of the same family, built by ``crossrank.testing`` (see
:data:`MODELS`); the bundled ``crossrank/minilm-debian`` runs as it is. Each block's result
is one line; the summary counts blocks run / passed / failed / skipped (with the reasons).

    python scripts/doc-check.py                 # all documents
    python scripts/doc-check.py README.md -k quick   # one document, blocks whose text has 'quick'
    python scripts/doc-check.py --list          # the blocks and directives, nothing run
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data" / "debian-ir").resolve()
if not SHARED_DATA.exists():  # a worktree beside the main checkout
    for parent in ROOT.parents:
        if (parent / "shared" / "data" / "debian-ir").exists():
            SHARED_DATA = parent / "shared" / "data" / "debian-ir"
            break
LANGS = {"bash": "shell", "sh": "shell", "console": "console", "python": "python"}
DIRECTIVE = re.compile(r"<!--\s*doc-check:\s*(\w[\w-]*)\s*(.*?)\s*-->", re.S)
PORT_IN_DOCS = "8080"

#: hub id -> (family for crossrank.testing, builder options): the tiny stand-in of that family
MODELS: dict[str, tuple[str, dict]] = {
    "BAAI/bge-reranker-v2-m3": ("xlm-roberta", {}),
    "BAAI/bge-reranker-base": ("xlm-roberta", {}),
    "BAAI/bge-reranker-large": ("xlm-roberta", {}),
    "cross-encoder/ms-marco-MiniLM-L-6-v2": ("encoder", {}),
    "BAAI/bge-reranker-v2-gemma": ("gemma", {}),
    # the real model's 40 layers with heads from layer 8, so that cutoff_layers=28 / 40 exist
    "BAAI/bge-reranker-v2-minicpm-layerwise": (
        "minicpm-layerwise",
        {"num_hidden_layers": 40, "start_layer": 8},
    ),
    "Qwen/Qwen3-Reranker-0.6B": ("qwen3", {}),
    "Qwen/Qwen3-Reranker-4B": ("qwen3", {}),
    "Qwen/Qwen3-Reranker-8B": ("qwen3", {}),
    "Alibaba-NLP/gte-reranker-modernbert-base": ("modernbert", {}),
}


def substitutions(models_dir: Path, port: str) -> list[tuple[str, str]]:
    """What a block's text is run with instead of what it says (longest first)."""
    subs = [(hub_id, str(models_dir / hub_id.replace("/", "--"))) for hub_id in MODELS]
    subs += [
        ("../shared/data/debian-ir", str(SHARED_DATA)),
        (f"localhost:{PORT_IN_DOCS}", f"localhost:{port}"),
        (f"127.0.0.1:{PORT_IN_DOCS}", f"127.0.0.1:{port}"),
        (f"--port {PORT_IN_DOCS}", f"--port {port}"),
        (f"port={PORT_IN_DOCS}", f"port={port}"),
    ]
    return sorted(subs, key=lambda s: -len(s[0]))


#: the substitution table as the report prints it
SUBSTITUTIONS = (
    "model ids -> tiny random checkpoints of the same family (crossrank.testing): "
    + ", ".join(f"{k} -> {v[0]}" for k, v in MODELS.items())
    + f"; ../shared/data/debian-ir -> {SHARED_DATA}; port {PORT_IN_DOCS} -> a free port; "
    "`crossrank` -> python -m crossrank of this checkout; `curl` -> curl --fail-with-body; working directory -> a temporary "
    "directory per document holding the fixture files pairs.jsonl, docs.jsonl, docs.txt, train.jsonl (crossrank.testing.write_groups)"
)


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    heading: str = ""
    directives: dict[str, str] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def skip(self) -> str | None:
        return self.directives.get("skip")


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def parse(doc: Path) -> list[Block]:
    """The runnable fenced blocks of ``doc`` with their directives."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    heading = ""
    pending: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^(\s*)(`{3,})\s*([\w+-]*)\s*$", line)
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if fence:
            ticks, lang = fence.group(2), fence.group(3)
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(ticks):
                j += 1
            if lang in LANGS:
                block = Block(doc, i + 1, LANGS[lang], "\n".join(lines[i + 1 : j]) + "\n", heading)
                for name, arg in pending:
                    if name == "flags":
                        sub, _, args = arg.partition(" ")
                        block.flags[sub] = (block.flags.get(sub, "") + " " + args).strip()
                    elif name == "env":
                        block.directives["env"] = (
                            block.directives.get("env", "") + " " + arg
                        ).strip()
                    else:
                        block.directives[name] = arg
                blocks.append(block)
            pending = []
            i = j + 1
            continue
        found = DIRECTIVE.findall(line)
        if found:
            pending += found
        elif line.strip() and not line.strip().startswith("<!--"):
            pending = []
        i += 1
    return blocks


def problems(block: Block) -> list[str]:
    """What is wrong with a block's directives or syntax (without running it)."""
    out = []
    for name in block.directives:
        if name not in {"skip", "env", "timeout"}:
            out.append(f"unknown directive {name!r}")
    if "skip" in block.directives and not block.directives["skip"]:
        out.append("skip without a reason")
    if block.lang == "python":
        try:
            compile(block.text, block.where, "exec")
        except SyntaxError as e:
            out.append(f"python syntax: {e}")
    else:
        r = subprocess.run(
            ["bash", "-n"], input=shell_text(block), text=True, capture_output=True, check=False
        )
        if r.returncode:
            out.append(f"shell syntax: {r.stderr.strip()}")
    return out


def shell_text(block: Block) -> str:
    if block.lang != "console":
        return block.text
    cmds, cont = [], False
    for line in block.text.splitlines():
        if line.startswith("$ ") or cont:
            cmds.append(line[2:] if line.startswith("$ ") else line)
            cont = line.rstrip().endswith("\\")
    return "\n".join(cmds) + "\n"


# ---------------------------------------------------------------------------------- running


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def build_models(models_dir: Path, needed: set[str]) -> None:
    from crossrank.testing import roberta_checkpoint, tiny_checkpoint

    for hub_id in sorted(needed):
        family, options = MODELS[hub_id]
        path = models_dir / hub_id.replace("/", "--")
        if (path / "config.json").exists():
            continue
        if family == "xlm-roberta":  # the "encoder" family in bge's own architecture
            roberta_checkpoint(path, **options)
        else:
            tiny_checkpoint(family, path, **options)


FIXTURES = {
    "pairs.jsonl": "".join(
        f'{{"query": "what is panda?", "passage": "{p}"}}\n'
        for p in ["hi", "The giant panda is a bear species endemic to China."]
    ),
    "docs.jsonl": '{"id": "d1", "text": "hi"}\n'
    '{"id": "d2", "text": "The giant panda is a bear species endemic to China."}\n'
    '{"id": "d3", "text": "Pandas eat bamboo."}\n',
    "docs.txt": "hi\nThe giant panda is a bear species endemic to China.\nPandas eat bamboo.\n",
}


class Runner:
    def __init__(self, work: Path, models_dir: Path, verbose: bool) -> None:
        self.work, self.models_dir, self.verbose = work, models_dir, verbose
        self.bin = work / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        (self.bin / "crossrank").write_text(
            "#!/usr/bin/env bash\n"
            # flags a block's `flags` directive appends to one subcommand
            'sub="${1:-}"; var="DOC_CHECK_FLAGS_${sub//-/_}"; extra="${!var:-}"\n'
            f'exec {shlex.quote(py)} -m crossrank "$@" $extra\n'
        )
        (self.bin / "crossrank").chmod(0o755)
        # curl fails on an HTTP error status (a doc's `curl -s` would print the error and exit 0)
        (self.bin / "curl").write_text(
            '#!/usr/bin/env bash\nexec /usr/bin/curl --fail-with-body "$@"\n'
        )
        (self.bin / "curl").chmod(0o755)
        for name in ("python", "python3"):
            link = self.bin / name
            if not link.exists():
                link.symlink_to(py)
        self.server: subprocess.Popen | None = None
        self.port = free_port()

    def env(self, block: Block) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}:{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(ROOT / "src") + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env["CROSSRANK_CACHE"] = str(self.work / ".cache")
        for sub, args in block.flags.items():
            env[f"DOC_CHECK_FLAGS_{sub.replace('-', '_')}"] = args
        for item in shlex.split(block.directives.get("env", "")):
            k, _, v = item.partition("=")
            env[k] = v
        return env

    def substitute(self, text: str) -> str:
        for old, new in substitutions(self.models_dir, self.port):
            text = text.replace(old, new)
        return text

    def stop_server(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server = None

    def start_server(self, line: str, env: dict[str, str], doc_dir: Path, timeout: float) -> str:
        self.stop_server()
        self.port = free_port()
        line = self.substitute(line)
        if "--port" not in line:
            line += f" --port {self.port}"
        log = open(doc_dir / "server.log", "w")  # noqa: SIM115 (the server's lifetime)
        self.server = subprocess.Popen(
            ["bash", "-c", "exec " + line],
            cwd=doc_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                return f"server exited {self.server.returncode}:\n" + tail(doc_dir / "server.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return ""
            except OSError:
                pass
            time.sleep(0.5)
        return "server not healthy in time:\n" + tail(doc_dir / "server.log")

    def run(self, block: Block, doc_dir: Path) -> tuple[bool, str]:
        env = self.env(block)
        timeout = float(block.directives.get("timeout", 600))
        if block.lang == "python":
            script = doc_dir / f"block_{block.line}.py"
            script.write_text(self.substitute(block.text))
            cmd = [sys.executable, str(script)]
        else:
            lines, rest = shell_text(block).splitlines(), []
            joined: list[str] = []
            for line in lines:  # join continuation lines so a serve command is one line
                if joined and joined[-1].endswith("\\"):
                    joined[-1] = joined[-1][:-1] + " " + line.strip()
                else:
                    joined.append(line)
            for line in joined:
                stripped = line.strip()
                if re.match(r"^crossrank serve\b", stripped) and "--print-settings" not in stripped:
                    error = self.start_server(stripped.split(" #")[0], env, doc_dir, timeout)
                    if error:
                        return False, error
                else:
                    rest.append(line)
            script = doc_dir / f"block_{block.line}.sh"
            script.write_text("set -euo pipefail\n" + self.substitute("\n".join(rest)) + "\n")
            cmd = ["bash", str(script)]
        try:
            r = subprocess.run(
                cmd,
                cwd=doc_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f} s"
        out = (r.stdout + r.stderr).strip()
        return r.returncode == 0, (out if r.returncode or self.verbose else "")


def tail(path: Path, n: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("docs", nargs="*", help="documents (default: README.md docs/*.md)")
    ap.add_argument("-k", dest="keyword", help="only blocks whose text or heading contain this")
    ap.add_argument("--list", action="store_true", help="list the blocks, run nothing")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every block's output")
    args = ap.parse_args(argv)

    docs = [Path(d).resolve() for d in args.docs] or documents()
    blocks = [b for d in docs for b in parse(d)]
    if args.keyword:
        k = args.keyword.lower()
        blocks = [b for b in blocks if k in b.text.lower() or k in b.heading.lower()]
    bad = [(b, p) for b in blocks for p in problems(b)]
    for b, p in bad:
        print(f"INVALID {b.where}: {p}")
    if args.list:
        for b in blocks:
            extra = " ".join(f"{k}={v!r}" for k, v in {**b.directives, **b.flags}.items())
            print(f"{b.where:32} {b.lang:8} {b.heading[:40]:40} {extra}")
        return 1 if bad else 0

    print(f"substitutions: {SUBSTITUTIONS}\n")
    tmp = Path(tempfile.mkdtemp(prefix="doc-check-"))
    models_dir = tmp / "models"
    needed = {m for b in blocks if not b.skip for m in MODELS if m in b.text}
    sys.path.insert(0, str(ROOT / "src"))
    build_models(models_dir, needed)
    runner = Runner(tmp, models_dir, args.verbose)
    results: list[tuple[Block, str, float, str]] = []
    try:
        for doc in docs:
            doc_blocks = [b for b in blocks if b.doc == doc]
            if not doc_blocks:
                continue
            doc_dir = tmp / doc.relative_to(ROOT).as_posix().replace("/", "_")
            doc_dir.mkdir()
            for name, text in FIXTURES.items():
                (doc_dir / name).write_text(text)
            from crossrank.testing import write_groups

            write_groups(doc_dir / "train.jsonl")  # training groups of the tiny corpus
            for b in doc_blocks:
                if b.skip:
                    results.append((b, "SKIP", 0.0, b.skip))
                    print(f"SKIP {b.where} ({b.heading}): {b.skip}", flush=True)
                    continue
                t0 = time.monotonic()
                ok, out = runner.run(b, doc_dir)
                dt = time.monotonic() - t0
                status = "PASS" if ok else "FAIL"
                results.append((b, status, dt, out))
                print(f"{status} {b.where} ({b.heading}) {dt:.1f} s", flush=True)
                if out:
                    print("    " + out[-3000:].replace("\n", "\n    "), flush=True)
            runner.stop_server()
    finally:
        runner.stop_server()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    run = [r for r in results if r[1] != "SKIP"]
    passed = [r for r in run if r[1] == "PASS"]
    failed = [r for r in run if r[1] == "FAIL"]
    skipped = [r for r in results if r[1] == "SKIP"]
    print(
        f"\ndoc-check: {len(results)} blocks, {len(run)} run, {len(passed)} passed, "
        f"{len(failed)} failed, {len(skipped)} skipped, {len(bad)} invalid"
    )
    for b, _, _, reason in skipped:
        print(f"  skipped {b.where}: {reason}")
    for b, *_ in failed:
        print(f"  FAILED {b.where} ({b.heading})")
    return 1 if failed or bad else 0


if __name__ == "__main__":
    sys.exit(main())
