"""A small decoder reranker of one family's architecture, with random weights and a real
tokenizer trained on a BEIR corpus: the starting point of ``scripts/llm-learning-debian.sh``.

    .venv/bin/python scripts/random_decoder.py gemma ../shared/data/debian-ir build/gemma-init

Families: ``gemma`` (GemmaForCausalLM: the "Yes" logit, bge-reranker-v2-gemma's input rule),
``minicpm-layerwise`` (LayerWiseMiniCPMForCausalLM: one head per layer from layer 1) and
``qwen3`` (Qwen3ForCausalLM: logit("yes") - logit("no"), the Qwen3-Reranker chat template).
The model is built by crossrank's own model class (no transformers), its matrices drawn from
N(0, std) with a fixed seed, and saved under the Hugging Face tensor names. The tokenizer is
a byte-level BPE (8,000 tokens) trained on the corpus texts plus the family's prompt, with the
family's special tokens. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from crossrank.families import family_for
from crossrank.models.weights import save_safetensors

SIZE = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4)
#: bge-reranker-v2-gemma's and the MiniCPM reranker's default prompt, and Qwen3-Reranker's
#: template words, so that the tokenizer has pieces for them
PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query by providing a prediction of either 'Yes' or 'No'."
)
QWEN3_TEXT = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that "
    "answer the query\n<Query>: \n<Document>: <|im_end|>\n<|im_start|>assistant\n<think>\n\n"
    "</think>\n\n yes no"
)

FAMILIES = {
    "gemma": {
        "specials": ["<pad>", "<eos>", "<bos>", "<unk>"],
        "tokens": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
        "extra_text": PROMPT + "\nYes\nNo",
        "config": dict(
            architectures=["GemmaForCausalLM"],
            model_type="gemma",
            num_key_value_heads=1,
            head_dim=32,
            hidden_act="gelu_pytorch_tanh",
            max_position_embeddings=1024,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
            tie_word_embeddings=True,
        ),
    },
    "minicpm-layerwise": {
        "specials": ["<unk>", "<s>", "</s>"],
        "tokens": {"bos_token": "<s>", "eos_token": "</s>"},
        "extra_text": PROMPT + "\nYes\nNo",
        "config": dict(
            architectures=["LayerWiseMiniCPMForCausalLM"],
            model_type="minicpm",
            num_key_value_heads=4,
            hidden_act="silu",
            max_position_embeddings=1024,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            scale_emb=12,
            scale_depth=1.4,
            dim_model_base=256,
            start_layer=1,
            head_type="simple",
            head_multi=True,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        ),
    },
    "qwen3": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
        "tokens": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "extra_text": QWEN3_TEXT,
        "config": dict(
            architectures=["Qwen3ForCausalLM"],
            model_type="qwen3",
            num_key_value_heads=2,
            head_dim=32,
            hidden_act="silu",
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            pad_token_id=0,
            eos_token_id=2,
            tie_word_embeddings=True,
        ),
    },
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


def train_tokenizer(texts: list[str], specials: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return tok


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
    spec = FAMILIES[family]
    texts = corpus_texts(data, docs) + [spec["extra_text"]] * 50
    tok = train_tokenizer(texts, spec["specials"], vocab_size)
    raw = dict(spec["config"], **SIZE, vocab_size=tok.get_vocab_size(), torch_dtype="float32")
    fam = family_for(raw)
    config = fam.parse_config(raw)
    torch.manual_seed(seed)
    model = fam.model_class()(config)
    with torch.no_grad():  # norms keep their neutral start (1, or 0 for Gemma's 1 + w)
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
    names = {ours: theirs for theirs, ours in model.checkpoint_renames.items()}
    state = {names.get(k, k): v.detach().contiguous() for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(state, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    tok.save(str(out / "tokenizer.json"))
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", **spec["tokens"]}
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    params = sum(p.numel() for p in model.parameters())
    print(f"{out}: {family}, {params / 1e6:.2f}M parameters, vocab {tok.get_vocab_size()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("family", choices=sorted(FAMILIES))
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
