"""The Reranker's options, declared once (crossrank.options): checked before the model loads
at every entry point, old names kept, one declaration reaching the CLI, the server settings,
the Ray options and docs/python-api.md; per-call option sets keep the engine's token budget."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from crossrank import options as opts
from crossrank.cli import main
from crossrank.errors import CrossrankError, InputError
from crossrank.options import ChunkSpec, Options, views

README = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
PAIRS = [("what is panda?", "The giant panda is a bear. " * 30), ("what is panda?", "hi")]


# -- checked once, before the model loads -------------------------------------------------


@pytest.mark.parametrize("name", ["instruction", "prompt", "query_instruction"])
@pytest.mark.parametrize(
    "value, why", [("a\x00b", "NUL character"), ("caf\udce9", "not valid Unicode")]
)
def test_bad_text_options_are_input_errors_before_the_model_loads(tmp_path, name, value, why):
    missing = tmp_path / "no-such-model"  # never read: the options fail first
    with pytest.raises(InputError, match=f"{name} .*{why}"):
        from crossrank import Reranker

        Reranker(missing, **{name: value})


def test_bad_text_options_per_call_are_input_errors(gemma_dir):
    from crossrank import Reranker

    rr = Reranker(gemma_dir)
    for value in ("a\x00b", "caf\udce9"):
        with pytest.raises(InputError, match="prompt"):
            rr.compute_score(PAIRS, prompt=value)


def test_cli_bad_instruction_is_one_line_exit_2_before_the_model_loads(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q", "passage": "p"}\n')
    missing = str(tmp_path / "no-such-model")
    # undecodable command-line bytes reach Python as lone surrogates
    for flag, value in (("--instruction", "caf\udce9"), ("--prompt", "a\x00b")):
        code = main(["score", "-m", missing, "-i", str(pairs), flag, value])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert flag.lstrip("-") in err[0] and "model" not in err[0], err


def test_qwen3_instruction_that_leaves_no_room_is_refused(qwen3_dir):
    from crossrank import Reranker

    rr = Reranker(qwen3_dir, max_length=80)
    assert len(rr.compute_score(PAIRS, instruction="Relevant?")) == 2
    with pytest.raises(InputError, match="instruction takes .* tokens"):
        rr.compute_score(PAIRS, instruction="Find the passage that answers it. " * 10)
    with pytest.raises(InputError, match="instruction takes"):
        Reranker(qwen3_dir, max_length=80, instruction="long " * 60).compute_score(PAIRS)


def test_unknown_and_misplaced_options():
    with pytest.raises(InputError, match="'promt' is not an option of Reranker .*'prompt'"):
        opts.parse({"promt": "x"})
    with pytest.raises(InputError, match="device is set when the Reranker is made"):
        opts.parse({"device": "cpu"}, per_call=True)
    with pytest.raises(InputError, match="max_chunks_per_doc must be an integer >= 1"):
        opts.parse({"max_chunks_per_doc": 0})
    with pytest.raises(InputError, match="unknown backend 'tensorrt'; use one of"):
        opts.parse({"backend": "tensorrt"})
    assert issubclass(InputError, CrossrankError)


# -- one name per setting, old keywords kept ----------------------------------------------


def test_chunking_is_one_object_and_its_fields_are_the_old_keywords(bert_dir):
    from crossrank import Reranker

    rr = Reranker(bert_dir, max_length=32)
    spec = ChunkSpec(max_chunks_per_doc=4, chunk_overlap=4, max_tokens_per_doc=60)
    by_object = rr.compute_score(PAIRS, chunking=spec)
    by_keywords = rr.compute_score(
        PAIRS, max_chunks_per_doc=4, chunk_overlap=4, max_tokens_per_doc=60
    )
    by_mapping = rr.compute_score(
        PAIRS, chunking={"max_chunks_per_doc": 4, "chunk_overlap": 4, "max_tokens_per_doc": 60}
    )
    assert by_object == by_keywords == by_mapping
    assert by_object != rr.compute_score(PAIRS)  # the long passage's best window scores
    # a constructor default, adjusted per call by the old keywords
    chunked = Reranker(bert_dir, max_length=32, chunking=spec)
    assert chunked.compute_score(PAIRS) == by_object
    assert chunked.compute_score(PAIRS, max_chunks_per_doc=1, max_tokens_per_doc=None) == (
        rr.compute_score(PAIRS, max_tokens_per_doc=60)
    )
    assert chunked.options.chunking == spec


def test_signatures_show_every_declared_option():
    from crossrank import Reranker

    init = inspect.signature(Reranker).parameters
    assert [f.name for f in fields(Options)] == [p for p in init if p != "model"]
    call = inspect.signature(Reranker.compute_score).parameters
    per_call = {f.name for f in fields(Options) if f.metadata["per_call"]}
    assert per_call | {"max_chunks_per_doc", "chunk_overlap", "max_tokens_per_doc"} <= set(call)
    assert "device" not in call
    assert all(f"    {f.name} (" in Reranker.__doc__ for f in fields(Options))


# -- one declaration, every entry point ---------------------------------------------------


def _sample_argv(cls: type) -> tuple[list[str], dict[str, object]]:
    """A command line giving every flagged option of ``cls`` a value, and what it parses to."""
    argv: list[str] = []
    want: dict[str, object] = {}
    for f in fields(cls):
        flag = f.metadata["flag"]
        if flag is None:
            continue
        name = views.flag_name(f.name)
        if flag.get("action") == "store_true":
            argv.append(name)
            want[f.name] = True
        elif flag.get("choices"):
            argv += [name, flag["choices"][-1]]
            want[f.name] = flag["choices"][-1]
        elif flag.get("type") in (int, float):
            argv += [name, "3"]
            value = flag["type"](3)
            want[f.name] = (value,) if flag.get("nargs") else value
        else:
            value = "bf16" if f.name == "dtype" else "cpu" if f.name == "device" else "text"
            argv += [name, value]
            want[f.name] = value
    return argv, want


def test_a_declared_option_reaches_the_cli_the_server_and_ray():
    from crossrank.cli import build_parser
    from crossrank.distributed.cli import reranker_options
    from crossrank.server import settings as server_settings

    model_argv, model_want = _sample_argv(Options)
    chunk_argv, chunk_want = _sample_argv(ChunkSpec)
    assert {"prompt", "instruction", "cutoff_layers", "device"} <= set(model_want)
    assert set(chunk_want) == {"max_chunks_per_doc", "chunk_overlap", "max_tokens_per_doc"}
    parser = build_parser()
    chunking = ChunkSpec(**chunk_want)

    # crossrank score / rank / eval: the library's keywords, checked
    for command in (["score", "-i", "x"], ["rank", "-q", "q", "-d", "x"], ["eval", "-d", "x"]):
        args = parser.parse_args([*command, *model_argv, *chunk_argv])
        assert views.from_args(args) == {**model_want, "chunking": chunking}, command
    # crossrank serve: the server's settings carry them (its own chunk settings apart)
    args = parser.parse_args(["serve", *model_argv])
    assert server_settings.from_args(args).options == model_want
    # the Ray options: the Reranker of every actor gets them
    args = parser.parse_args(["score", "-i", "x", "--engine", "ray", *model_argv, *chunk_argv])
    ray = reranker_options(args)
    assert ray.pop("reranker_batch_size") == model_want["batch_size"]
    assert ray == {
        **{k: v for k, v in model_want.items() if k != "batch_size"},
        "chunking": chunking,
    }


def test_server_settings_check_the_options_by_their_declaration():
    from crossrank.server.settings import ServerSettings

    with pytest.raises(InputError, match="max_length must be an integer >= 1"):
        ServerSettings(options={"max_length": 0})
    with pytest.raises(InputError, match="not an option of Reranker"):
        ServerSettings(options={"max_lenght": 10})


def test_readme_carries_the_options_table():
    from crossrank.families import REGISTRY, get_family

    honoured = {name: get_family(name).options for name in REGISTRY}
    assert views.options_table(honoured) in README.read_text(), (
        "docs/python-api.md's options table is stale: paste crossrank.options.options_table(...)"
    )
    family_only = {f.name for f in fields(Options) if f.metadata["family"]}
    assert set().union(*honoured.values()) <= family_only


# -- per-call option sets keep the engine's state ------------------------------------------


def test_per_call_overrides_keep_the_lowered_token_budget(gemma_dir, monkeypatch):
    """An out-of-memory error lowers the token budget; a call with other options (a new
    prompt) must not start again from the original budget, nor rebuild its engine."""
    from crossrank import Reranker

    rr = Reranker(gemma_dir, max_batch_tokens=4096)
    pairs = [("what is panda?", f"passage number {i} about bears") for i in range(8)]
    want = rr.compute_score(pairs, prompt="Relevant?")
    decoder = rr.loaded.decoder
    real = decoder.score
    passes: list[int] = []

    def score(input_ids, *args, **kwargs):  # an accelerator that fits 2 rows at a time
        passes.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise RuntimeError("CUDA out of memory (injected)")
        return real(input_ids, *args, **kwargs)

    monkeypatch.setattr(decoder, "score", score)
    got = rr.compute_score(pairs, prompt="Relevant?")
    np.testing.assert_allclose(got, want, atol=1e-5)
    lowered = rr.engine.max_tokens
    assert lowered < 4096, "the out-of-memory error did not lower the Reranker's budget"
    passes.clear()
    rr.compute_score(pairs, prompt="Is it about bears?")  # another option set
    rr.compute_score(pairs)  # the constructor's
    assert max(passes) <= 2, f"a later call forgot the lowered budget: passes of {passes} rows"
    assert rr.engine.max_tokens <= lowered
    first = rr._setup({"prompt": "Relevant?"})
    assert rr._setup({"prompt": "Relevant?"}) is first  # made once, then reused
    assert first[1].budget is rr.engine.budget


def test_flags_give_the_options_set_to_other_than_their_default():
    args = argparse.Namespace(model="m", max_length=512, normalize=False, backend="onnx")
    assert views.from_args(args) == {"backend": "onnx"}
