"""Typed view of a Hugging Face encoder ``config.json`` (the encoder family's config) and
reading config files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import ModelLoadError, UnsupportedModelError

#: architectures we score with, mapped to the family of their encoder
SEQUENCE_CLASSIFICATION = {
    "XLMRobertaForSequenceClassification": "roberta",
    "RobertaForSequenceClassification": "roberta",
    "BertForSequenceClassification": "bert",
}
#: bare encoders: loaded with a freshly initialised classification head
BARE_ENCODERS = {
    "XLMRobertaModel": "roberta",
    "RobertaModel": "roberta",
    "BertModel": "bert",
}
MODEL_TYPES = {"xlm-roberta": "roberta", "roberta": "roberta", "bert": "bert"}


@dataclass(frozen=True)
class EncoderConfig:
    """The fields of ``config.json`` that the encoder forward pass depends on."""

    architecture: str
    family: str  # "bert" or "roberta" (RoBERTa and XLM-R share the math)
    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 1
    initializer_range: float = 0.02
    classifier_dropout: float | None = None
    has_head: bool = True
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int:
        """Longest input (special tokens included) the position table allows."""
        if self.family == "roberta":
            # positions start after the padding index: pad_id + 1, pad_id + 2, ...
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EncoderConfig:
        archs = raw.get("architectures") or []
        model_type = raw.get("model_type", "")
        arch = next((a for a in archs if a in SEQUENCE_CLASSIFICATION or a in BARE_ENCODERS), None)
        if arch is None:
            if archs:
                # the full list of every family is crossrank.families' (it chose this family)
                raise UnsupportedModelError(
                    f"unsupported architecture {archs[0]!r} for an encoder config; encoders: "
                    + ", ".join(sorted({*SEQUENCE_CLASSIFICATION, *BARE_ENCODERS}))
                )
            if model_type not in MODEL_TYPES:
                raise UnsupportedModelError(
                    f"config.json names no architecture and model_type {model_type!r} is not "
                    "one of " + ", ".join(sorted(MODEL_TYPES))
                )
            arch = {"bert": "BertModel", "roberta": "RobertaModel"}[MODEL_TYPES[model_type]]
        family = SEQUENCE_CLASSIFICATION.get(arch) or BARE_ENCODERS[arch]
        pos_type = raw.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise UnsupportedModelError(
                f"position_embedding_type {pos_type!r} is not supported (only 'absolute')"
            )
        act = raw.get("hidden_act", "gelu")  # checked when the layers are built (activations.py)
        num_labels = int(raw.get("num_labels") or len(raw.get("id2label") or {}) or 1)
        if arch in SEQUENCE_CLASSIFICATION and num_labels != 1:
            raise UnsupportedModelError(
                f"the checkpoint's head has {num_labels} labels; a reranker needs exactly 1"
            )
        try:
            return cls(
                architecture=arch,
                family=family,
                model_type=model_type or family,
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=int(raw["num_attention_heads"]),
                intermediate_size=int(raw["intermediate_size"]),
                hidden_act=act,
                max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
                pad_token_id=int(raw.get("pad_token_id", 1 if family == "roberta" else 0)),
                num_labels=1,
                initializer_range=float(raw.get("initializer_range", 0.02)),
                classifier_dropout=raw.get("classifier_dropout"),
                has_head=arch in SEQUENCE_CLASSIFICATION,
                raw=dict(raw),
            )
        except KeyError as exc:
            raise ModelLoadError(f"config.json lacks the field {exc.args[0]!r}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> EncoderConfig:
        return cls.from_dict(read_config(path))

    def to_dict(self) -> dict[str, Any]:
        """config.json content for a sequence-classification checkpoint of this model."""
        out = dict(self.raw)
        out["architectures"] = [
            {
                "bert": "BertForSequenceClassification",
                "roberta": "XLMRobertaForSequenceClassification"
                if self.model_type == "xlm-roberta"
                else "RobertaForSequenceClassification",
            }[self.family]
        ]
        out["num_labels"] = 1
        out["id2label"] = {"0": "LABEL_0"}
        out["label2id"] = {"LABEL_0": 0}
        return out


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a config.json file, raising :class:`ModelLoadError` with the path on failure
    (missing, unreadable, invalid UTF-8 or JSON with its position, not a JSON object)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path} not found: a model directory needs config.json") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read config.json ({exc.strerror})") from None
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelLoadError(
            f"{path} is not valid UTF-8 (byte offset {exc.start}); save config.json as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(raw, dict):
        raise ModelLoadError(
            f"{path}: expected a JSON object ({{...}}) of model settings, got {type(raw).__name__}"
        )
    return raw
