"""A small decoder reranker of one family's architecture, with random weights and a real
tokenizer trained on a BEIR corpus: the starting point of ``scripts/llm-learning-debian.sh``.

    .venv/bin/python scripts/random_decoder.py gemma ../shared/data/debian-ir build/gemma-init

Families: ``gemma`` (GemmaForCausalLM: the "Yes" logit, bge-reranker-v2-gemma's input rule),
``minicpm-layerwise`` (LayerWiseMiniCPMForCausalLM: one head per layer from layer 1) and
``qwen3`` (Qwen3ForCausalLM: logit("yes") - logit("no"), the Qwen3-Reranker chat template).
The model is built by crossrank's own model class (no transformers), its matrices drawn from
N(0, std) with a fixed seed, and saved under the Hugging Face tensor names
(``crossrank.testing.random_decoder``). The tokenizer is a byte-level BPE (8,000 tokens)
trained on the corpus texts plus the family's template words, with the family's special tokens
(``crossrank.testing.decoder_tokenizer``). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file

from crossrank.testing import decoder_tokenizer, random_decoder
from crossrank.testing.decoders import SPECS

SIZE = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4)
#: where this starting point differs from the tiny test checkpoints' config
OVERRIDES = {
    "gemma": dict(hidden_act="gelu_pytorch_tanh", rope_theta=10000.0),
    "minicpm-layerwise": {},
    "qwen3": dict(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
}


def corpus_texts(data: Path, limit: int) -> list[str]:
    """Title and text of the first ``limit`` corpus documents."""
    texts = []
    with open(data / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')} {doc.get('text', '')}".strip())
            if len(texts) == limit:
                break
    return texts


def build(
    family: str,
    data: Path,
    out: Path,
    *,
    seed: int,
    vocab_size: int,
    docs: int,
    std: float,
) -> None:
    tok = decoder_tokenizer(family, corpus_texts(data, docs), vocab_size, repeat=50)
    random_decoder(family, out, tok, seed=seed, std=std, **SIZE, **OVERRIDES[family])
    params = sum(t.numel() for t in load_file(str(out / "model.safetensors")).values())
    print(f"{out}: {family}, {params / 1e6:.2f}M parameters, vocab {tok.get_vocab_size()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("family", choices=sorted(SPECS))
    ap.add_argument("data", type=Path, help="BEIR dataset directory (its corpus.jsonl)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--docs", type=int, default=50000, help="corpus documents for the tokenizer")
    ap.add_argument("--std", type=float, default=0.02, help="std of the random matrices")
    args = ap.parse_args()
    build(args.family, args.data, args.out, seed=args.seed, vocab_size=args.vocab_size,
          docs=args.docs, std=args.std)  # fmt: skip


if __name__ == "__main__":
    main()
