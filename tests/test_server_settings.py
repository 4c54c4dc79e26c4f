"""Each setting is defined once: the flags, the environment, /info and the docs come from it."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from crossrank.errors import CrossrankError
from crossrank.options import Options
from crossrank.server import cli as serve_cli
from crossrank.server.settings import ServerSettings, from_args, info_settings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "serving.md"


def parse(argv: list[str], env: dict[str, str] | None = None, monkeypatch=None):
    if env:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    p = argparse.ArgumentParser()
    serve_cli.build_serve_parser(p)
    problems = serve_cli.apply_env(p)
    args = p.parse_args(argv)
    assert not problems, problems
    return args


def test_docs_table_is_the_settings_table():
    assert serve_cli.settings_table() in DOCS.read_text(), (
        "docs/serving.md's flags table is stale: paste `crossrank serve --print-settings-table`"
    )


def test_every_setting_is_a_flag_with_its_default():
    args = parse([])
    settings = from_args(args)
    for f in fields(ServerSettings):
        if f.name != "model":  # the shared --model flag has the CLI's default model
            default = f.default_factory() if f.default is MISSING else f.default
            assert getattr(settings, f.name) == default, f.name
    flags = serve_cli.settings_table()
    for f in fields(ServerSettings):
        if f.name == "options":  # the Reranker's: one flag per flagged declared option
            for o in fields(Options):
                if o.metadata["flag"] is not None:
                    assert serve_cli.env_name(o.name.replace("_", "-")) in flags, o.name
            continue
        assert serve_cli.env_name(f.metadata["flag"] or f.name.replace("_", "-")) in flags


def test_environment_and_flags(monkeypatch):
    env = {"CROSSRANK_MAX_QUEUE_WAIT": "7.5", "CROSSRANK_NO_WARMUP": "yes"}
    args = parse(["--graceful-timeout", "3"], env, monkeypatch)
    s = from_args(args)
    assert s.max_queue_wait == 7.5 and s.warmup is False and s.graceful_timeout == 3.0
    s = from_args(parse(["--max-queue-wait", "2"], env, monkeypatch))
    assert s.max_queue_wait == 2.0  # the command line wins


def test_info_lists_settings_but_never_the_key():
    info = info_settings(ServerSettings(api_key="secret", max_queue_wait=4))
    assert info["auth"] is True and info["max_queue_wait"] == 4.0
    assert "secret" not in repr(info) and "secret" not in repr(ServerSettings(api_key="secret"))


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"max_queue_wait": -0.5}, "max_queue_wait"),
        ({"port": 70000}, "port"),
        ({"max_client_batch_size": 0}, "max_client_batch_size must be positive"),
        ({"log_level": "loud"}, "log_level"),
    ],
)
def test_bad_values_are_crossrank_errors(kwargs, needle):
    with pytest.raises(CrossrankError, match=needle):
        ServerSettings(**kwargs)
