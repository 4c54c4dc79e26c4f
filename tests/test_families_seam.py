"""Every registered family fills the whole seam: a tiny checkpoint fixture with a parity test
against transformers, a training task (or None: not trained) and an ONNX export (or None)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from conftest import FAMILY_FIXTURES

TESTS = Path(__file__).parent

#: family -> the test that checks its scores against transformers (or the authors' code) on
#: its tiny checkpoint
PARITY_TESTS = {
    "encoder": "test_parity.py::test_scores_match_reference",
    "gemma": "test_gemma.py::test_gemma_matches_transformers",
    "minicpm-layerwise": "test_minicpm.py::test_minicpm_every_cutoff_matches_reference",
    "qwen3": "test_families_qwen3.py::test_reranker_scores_are_the_authors",
    "modernbert": "test_families_modernbert.py::test_reranker_scores_match_transformers",
}


def _family_of(model_dir: Path):
    from crossrank.config import read_config
    from crossrank.families import family_for

    raw = read_config(model_dir / "config.json")
    family = family_for(raw)
    return family, family.parse_config(raw)


def test_every_family_has_a_fixture_and_a_parity_test(request):
    from crossrank.families import REGISTRY

    covered = {_family_of(request.getfixturevalue(f))[0].name for f in FAMILY_FIXTURES}
    assert covered == set(REGISTRY), "a family without a tiny checkpoint in FAMILY_FIXTURES"
    assert set(PARITY_TESTS) == set(REGISTRY)
    for node in PARITY_TESTS.values():
        file, name = node.split("::")
        tree = ast.parse((TESTS / file).read_text(encoding="utf-8"))
        assert name in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}, node


def test_every_family_says_how_it_trains_and_exports():
    from crossrank.families import families

    for family in families():
        assert family.train_task is None or callable(family.train_task), family.name
        assert family.onnx_export is None or callable(family.onnx_export), family.name


def test_the_training_task_encodes_and_scores(family_dir, tmp_path):
    """The family's task on its tiny checkpoint: the pairs of a group are encoded with the
    family's input rules (at the training budgets), scored ``[n, k]``, and written back as a
    checkpoint the family loads."""
    from crossrank import Reranker
    from crossrank.train.config import TrainConfig
    from crossrank.train.data import Group
    from crossrank.train.encoding import make_chunks
    from crossrank.train.trainer import make_task

    family, _ = _family_of(family_dir)
    if family.train_task is None:
        pytest.skip(f"the {family.name} family is not trained")
    cfg = TrainConfig(model=str(family_dir), data="-", query_max_length=16, passage_max_length=112)
    task = make_task(family_dir, family_dir, cfg, torch.device("cpu"))
    groups = [Group("what is a panda?", ("The giant panda is a bear.", "Debian is an OS."))]
    encoded = task.encode(groups)
    assert len(encoded) == 2 and all(len(e) > 0 for e in encoded)
    chunks, inverse, _, _ = make_chunks(encoded, task.pad_id, 4096, torch.device("cpu"))
    with torch.no_grad():
        scores = torch.cat([task.scores(task.model, *c) for c in chunks])[inverse]
    assert scores.ndim == 2 and scores.shape[0] == 2 and torch.isfinite(scores).all()
    task.write_model(tmp_path, None, final=True)
    assert (tmp_path / "config.json").is_file()
    Reranker(tmp_path, device="cpu")  # the written checkpoint loads


def test_the_export_forward_pass_gives_the_models_scores(family_dir):
    """What the ONNX export traces (the padded forward pass beside the model in
    crossrank.models) scores a padded batch as our model does."""
    from crossrank import Reranker

    family, config = _family_of(family_dir)
    if family.onnx_export is None:
        pytest.skip(f"the {family.name} family has no ONNX export")
    export = family.onnx_export(config)
    rr = Reranker(family_dir, device="cpu")
    ids = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 10, 3, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[6], [4]])).long()
    args = (ids, mask, torch.zeros_like(ids)) if export.with_types else (ids, mask)
    with torch.no_grad():
        want = rr.model(ids, mask)
        got = export.padded(rr.model).eval()(*args)
    torch.testing.assert_close(got.reshape(-1), want.reshape(-1), atol=1e-4, rtol=0)
