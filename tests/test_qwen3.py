"""Our Qwen3-Reranker (model and input template) against the authors' formula on transformers'
Qwen3ForCausalLM, on tiny checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from crossrank.errors import InputError
from oracle import (
    AUTHORS_PREFIX,
    authors_inputs,
    authors_scores,
    hf_qwen3_tokenizer,
)

#: kernels that differ by instruction set: also run under an emulated AVX2-only CPU
#: (scripts/test-isa.sh)
pytestmark = pytest.mark.isa

LONG = "Debian is a free operating system for your computer. " * 12
PAIRS = [
    ("what is panda?", "The giant panda is a bear species endemic to China."),
    ("what is panda?", "hi"),
    ("what is panda?", ""),
    ("Debian", LONG),
    ("A reranker orders candidate passages", "search engines rank documents"),
    ("熊猫", "我喜欢吃熊猫形状的饼干。熊猫是中国的国宝。"),
]


def padded(ids_list):
    seq = max(len(x) for x in ids_list)
    ids = torch.zeros(len(ids_list), seq, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(ids_list):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return ids, mask


def pair_tokenizer(model_dir, **kw):
    from crossrank.engine.qwen3_tokenize import Qwen3PairTokenizer
    from crossrank.engine.tokenize import load_tokenizer

    return Qwen3PairTokenizer(load_tokenizer(model_dir), **kw)


@pytest.mark.parametrize("max_length", [8192, 120, 92])
def test_template_and_truncation_match_the_authors(qwen3_dir, max_length):
    """Same ids as the model card's process_inputs; at 120 tokens long documents are cut, at
    92 the query too (the authors cut the middle text from its end), never the template."""
    qt = pair_tokenizer(qwen3_dir, max_length=max_length)
    ours = [e.ids for e in qt.encode(PAIRS)]
    ref = authors_inputs(hf_qwen3_tokenizer(qwen3_dir), PAIRS, max_length=max_length)
    ref_ids = [r[m.bool()].tolist() for r, m in zip(ref["input_ids"], ref["attention_mask"])]
    assert ours == ref_ids
    assert max(len(x) for x in ours) <= max_length
    if max_length == 120:
        assert max(len(x) for x in ours) == 120  # the long document was cut
    for ids in ours:  # the template is whole
        assert ids[: len(qt.prefix_ids)] == qt.prefix_ids
        assert ids[-len(qt.suffix_ids) :] == qt.suffix_ids


def test_an_instruction_that_leaves_no_room_is_refused(qwen3_dir):
    """At 75 tokens the instruction alone fills what the template leaves: the authors' cut
    would score every pair on the same input, so it is refused (as an over-long template is)."""
    qt = pair_tokenizer(qwen3_dir, max_length=75)
    with pytest.raises(InputError, match="instruction takes .* shorten the instruction"):
        qt.encode(PAIRS)
    assert len(qt.with_instruction("Relevant?").encode(PAIRS)) == len(PAIRS)


def test_prefix_len_covers_the_query_and_is_shared(qwen3_dir):
    qt = pair_tokenizer(qwen3_dir)
    enc = qt.encode(PAIRS)
    tok = hf_qwen3_tokenizer(qwen3_dir)
    panda = [e for (q, _), e in zip(PAIRS, enc) if q == "what is panda?"]
    heads = {tuple(e.ids[: e.prefix_len]) for e in panda}
    assert len(heads) == 1, "all documents of a query share one prefix"
    head_text = tok.decode(list(next(iter(heads))))
    assert head_text.startswith(AUTHORS_PREFIX)
    assert head_text.endswith("<Query>: what is panda?\n<Document>:")
    for e in enc:
        assert len(qt.prefix_ids) < e.prefix_len < len(e.ids)


def test_chunk_windows_start_with_the_plain_input(qwen3_dir):
    """Chunking tokenizes the query side and the document apart, split at ``<Document>:``
    (a pre-tokenizer boundary of Qwen's split): the first window is the plain input, even for
    queries ending in punctuation and documents starting with punctuation, digits, newlines."""
    from crossrank.engine.chunking import ChunkSpec, encode_chunked

    qt = pair_tokenizer(qwen3_dir, max_length=120)
    docs = ["(see below) " + LONG, "\n\nindented\n" + LONG, "2024: " + LONG, "", " x", "?!"]
    pairs = [(q, d) for q in ("what is panda?", "熊猫", "apt\n") for d in docs]
    plain = qt.encode(pairs)
    req = encode_chunked(qt, pairs, ChunkSpec(max_chunks_per_doc=4, chunk_overlap=8))
    first = [int(np.flatnonzero(req.doc_of == i)[0]) for i in range(len(pairs))]
    assert [list(req.pairs[i].ids) for i in first] == [e.ids for e in plain]
    assert [req.pairs[i].prefix_len for i in first] == [e.prefix_len for e in plain]
    assert len(req.pairs) > len(pairs)  # long documents did get more windows


def test_instruction_changes_the_input(qwen3_dir):
    qt = pair_tokenizer(qwen3_dir, instruction="Find Debian manual pages")
    ref = authors_inputs(
        hf_qwen3_tokenizer(qwen3_dir), PAIRS[:2], instruction="Find Debian manual pages"
    )
    ref_ids = [r[m.bool()].tolist() for r, m in zip(ref["input_ids"], ref["attention_mask"])]
    assert [e.ids for e in qt.encode(PAIRS[:2])] == ref_ids
    default = pair_tokenizer(qwen3_dir)
    assert default.with_instruction("Find Debian manual pages").encode(PAIRS[:2]) == qt.encode(
        PAIRS[:2]
    )
    assert default.encode(PAIRS[:2]) != qt.encode(PAIRS[:2])


def test_max_length_below_the_template_is_an_input_error(qwen3_dir):
    from crossrank.errors import InputError

    qt = pair_tokenizer(qwen3_dir)
    with pytest.raises(InputError, match="template"):
        qt.encode(PAIRS[:1], max_length=qt.num_special)


@pytest.mark.parametrize("fixture", ["qwen3_dir", "qwen3_untied_dir"])
def test_qwen3_matches_the_authors_formula(request, fixture):
    from crossrank.families import load_decoder

    model_dir = request.getfixturevalue(fixture)
    probs, diffs, ids_list = authors_scores(model_dir, PAIRS)
    qt = pair_tokenizer(model_dir)
    model = load_decoder(model_dir)
    with torch.no_grad():
        ours = model.score(*padded(ids_list), token_ids=[qt.yes_id, qt.no_id])[:, 0]
    assert diffs.std() > 0.3, "scores must vary for the test to bite"
    diff = (ours - diffs).abs().max().item()
    pdiff = (torch.sigmoid(ours) - probs).abs().max().item()
    print(f"{fixture}: qwen3 parity max abs diff logit {diff:.2e}, P(yes) {pdiff:.2e}")
    assert diff < 1e-4 and pdiff < 1e-4


def test_converted_sequence_classification_gives_the_same_scores(qwen3_dir, qwen3_seqcls_dir):
    from transformers import Qwen3ForSequenceClassification

    from crossrank.families import load_decoder

    _, diffs, ids_list = authors_scores(qwen3_dir, PAIRS)
    ids, mask = padded(ids_list)
    model = load_decoder(qwen3_seqcls_dir)
    with torch.no_grad():
        ours = model.score(ids, mask)[:, 0]
        hf = Qwen3ForSequenceClassification.from_pretrained(str(qwen3_seqcls_dir)).eval()
        ref = hf(input_ids=ids, attention_mask=mask).logits[:, 0]
    assert (ours - ref).abs().max().item() < 1e-4
    assert (ours - diffs).abs().max().item() < 1e-4


def test_prefix_sharing_gives_the_unshared_scores(qwen3_dir):
    from crossrank.engine.batching import collate
    from crossrank.engine.llm_backend import DecoderBackend, split_prefixes
    from crossrank.families import load_decoder

    qt = pair_tokenizer(qwen3_dir)
    model = load_decoder(qwen3_dir)
    batch = collate(qt.encode(PAIRS), pad_id=0)
    assert split_prefixes(batch) is not None
    kw = {"token_ids": [qt.yes_id, qt.no_id]}
    out = {}
    for share in (True, False):
        backend = DecoderBackend(
            model, torch.device("cpu"), torch.float32, score_kwargs=kw, share_prefix=share
        )
        backend.min_shared_fraction = 0.0
        out[share] = backend.score(batch)
    np.testing.assert_allclose(out[True], out[False], atol=1e-5)


def test_bf16_load(qwen3_dir):
    from crossrank.families import load_decoder

    qt = pair_tokenizer(qwen3_dir)
    ids, mask = padded([e.ids for e in qt.encode(PAIRS[:2])])
    model = load_decoder(qwen3_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ref = load_decoder(qwen3_dir).score(ids, mask, token_ids=[qt.yes_id, qt.no_id])
    with torch.no_grad():
        got = model.score(ids, mask, token_ids=[qt.yes_id, qt.no_id])
    assert got.dtype == torch.float32
    assert (got - ref).abs().max().item() < 0.25 * max(1.0, ref.abs().max().item())


def test_missing_qk_norm_is_a_load_error(qwen3_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from crossrank.errors import ModelLoadError
    from crossrank.families import load_decoder

    bad = tmp_path / "bad"
    shutil.copytree(qwen3_dir, bad)
    state = load_file(str(bad / "model.safetensors"))
    state.pop("model.layers.1.self_attn.k_norm.weight")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="k_norm"):
        load_decoder(bad)


def test_sliding_window_config_is_refused(qwen3_dir, tmp_path):
    from crossrank.config import read_config
    from crossrank.errors import UnsupportedModelError
    from crossrank.families import get_family

    family = get_family("qwen3")
    raw = read_config(qwen3_dir / "config.json")
    config = family.parse_config(raw)
    assert config.head_dim == 32 and config.qk_norm and config.hidden_act == "silu"
    raw["use_sliding_window"] = True
    with pytest.raises(UnsupportedModelError, match="sliding"):
        family.parse_config(json.loads(json.dumps(raw)))
