"""Small built-in texts: what the tiny tokenizers are built from, and tiny training data."""

from __future__ import annotations

import json
from pathlib import Path

from crossrank.engine.llm_tokenize import DEFAULT_PROMPT
from crossrank.engine.qwen3_tokenize import PREFIX

#: ten words the streaming-score tests build their pairs from
WORDS = ["panda", "bear", "bamboo", "china", "forest", "debian", "package", "kernel", "free",
         "software"]  # fmt: skip

#: a small multilingual corpus (Latin, German umlauts, CJK, Cyrillic, digits, punctuation)
CORPUS = [
    "The giant panda is a bear species endemic to China.",
    "what is panda? pandas eat bamboo and live in the mountains",
    "Debian is a free operating system for your computer.",
    "A reranker orders candidate passages by their relevance to a query.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Größe, Straße, Übung.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "日本語の文章をトークン化します。東京は日本の首都です。",
    "我喜欢吃熊猫形状的饼干。熊猫是中国的国宝。",
    "Быстрая коричневая лиса прыгает через ленивую собаку. Москва — столица России.",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024, punctuation: ; ! ? ( ) [ ] { } - _ / \\",
    "search engines rank documents; cross-encoders rescore the top hundred candidates",
]

#: bge's LLM rerankers' prompt and answer words, so the BPE tokenizers have pieces for them
LLM_CORPUS = [DEFAULT_PROMPT, "A: what is panda?\nB: Yes No Yes No", "Yes\nNo\n"]
#: Qwen3-Reranker's template words (its "yes" / "no" answers must be whole tokens)
QWEN3_CORPUS = [
    PREFIX,
    "<Instruct>: Given a web search query\n<Query>: what is panda?\n<Document>: yes no",
    "yes\nno\nyes no yes no",
]

#: (topic, passage) of the tiny training data
TOPICS = [
    ("panda", "The giant panda is a bear that eats bamboo in China."),
    ("debian", "Debian is a free operating system for your computer."),
    ("reranker", "A reranker orders candidate passages by relevance to a query."),
    ("fox", "The quick brown fox jumps over the lazy dog."),
    ("cat", "Die Katze schläft auf dem Sofa, während es draußen regnet."),
    ("tokyo", "東京は日本の首都です。"),
    ("moscow", "Москва — столица России."),
    ("numbers", "numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024"),
]


def train_corpus() -> list[str]:
    """The texts the tiny tokenizers are built from (:data:`CORPUS`, three times)."""
    return CORPUS * 3


def write_groups(path: Path, n: int = 16) -> str:
    """``n`` training groups as JSON lines (``{"query", "pos", "neg"}``, one topic each, the
    other topics' passages as negatives) written to ``path``; returns the path as a string."""
    rows = []
    for i in range(n):
        topic, text = TOPICS[i % len(TOPICS)]
        negs = [t for k, (_, t) in enumerate(TOPICS) if k != i % len(TOPICS)]
        rows.append({"query": f"what is {topic}?", "pos": [text], "neg": negs})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)
