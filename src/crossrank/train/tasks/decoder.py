"""LLM reranker training (FlagEmbedding's ``finetune.reranker.decoder_only``).

- :class:`DecoderTask` (Gemma, ``.base``): the score of a pair is the logit of "Yes" at its last
  token; the loss is the group loss on those scores.
- :class:`LayerwiseTask` (layerwise MiniCPM, ``.layerwise``): one score per layer from
  ``start_layer`` to the last (each layer's head); the loss is the group loss summed over the
  layers plus, without teacher scores, the distillation of every layer but the last towards
  the softmax of the last layer's scores (detached).

Inputs follow the reference's training rule: ``"A: " + query`` cut to ``q + p // 4`` tokens,
``"B: " + passage`` cut to ``p + q // 2`` (q / p = ``--query-max-length`` /
``--passage-max-length``), ``[bos] + query`` and ``sep + passage`` cut on the passage side to
``q + p - len(sep) - len(prompt)`` tokens, then ``sep + prompt``; ``prompt`` is the example's
own or the default. With ``--lora-rank`` the base is frozen in its ``--dtype`` and only the
LoRA matrices (fp32) and ``--lora-extra-parameters`` are trained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from crossrank.errors import CrossrankError
from crossrank.inputs import dtype_named

if TYPE_CHECKING:
    from crossrank.train.config import TrainConfig
    from crossrank.train.losses import GroupLoss


class DecoderPairEncoder:
    """Training inputs of the LLM rerankers (the reference's training length rule)."""

    def __init__(self, model_dir: Path, cfg: TrainConfig, always_bos: bool) -> None:
        from crossrank.engine.llm_tokenize import LLMPairTokenizer, special_token_id
        from crossrank.engine.tokenize import load_tokenizer

        tok = load_tokenizer(model_dir)
        bos = special_token_id(tok, model_dir, "bos_token")
        pad = special_token_id(tok, model_dir, "pad_token")
        eos = special_token_id(tok, model_dir, "eos_token")
        self.pair = LLMPairTokenizer(tok, bos_id=bos, pad_id=pad, always_bos=always_bos)
        self.pad_id = next((i for i in (pad, eos, 0) if i is not None), 0)
        self.yes_id = self.pair.yes_id
        qmax, pmax = cfg.query_max_length, cfg.passage_max_length
        self.query_cut = qmax + pmax // 4
        self.passage_cut = pmax + qmax // 2
        self.pair_budget = qmax + pmax
        self._prompts: dict[str | None, list[int]] = {None: self.pair.prompt_ids}

    def prompt_ids(self, prompt: str | None) -> list[int]:
        if prompt not in self._prompts:
            self._prompts[prompt] = self.pair.with_prompt(prompt).prompt_ids  # type: ignore[arg-type]
        return self._prompts[prompt]

    def encode(self, groups) -> list:
        from crossrank.engine.tokenize import EncodedPair

        tok, sep = self.pair.tokenizer, self.pair.sep_ids
        head = [self.pair.bos_id] if self.pair.add_bos else []
        pairs = [(g.query, p) for g in groups for p in g.passages]
        queries, passages = self.pair.texts(pairs)
        unique = list(dict.fromkeys(queries))
        q_ids = {
            q: e.ids[: self.query_cut]
            for q, e in zip(unique, tok.encode_batch(unique, add_special_tokens=False))
        }
        p_encs = tok.encode_batch(passages, add_special_tokens=False)
        prompts = [g.prompt for g in groups for _ in g.passages]
        out = []
        for q, p_enc, prompt in zip(queries, p_encs, prompts):
            tail = self.prompt_ids(prompt)
            first = head + q_ids[q]
            second = sep + p_enc.ids[: self.passage_cut]
            excess = len(first) + len(second) - (self.pair_budget - len(tail) - len(sep))
            if 0 < excess < len(second):
                second = second[:-excess]
            out.append(EncodedPair(first + second + sep + tail, None, len(first)))
        return out


class DecoderTask:
    """Gemma-style LLM reranker: the "Yes" logit at the last token is the score."""

    autocast = False
    always_bos = False

    def __init__(
        self, init_dir: Path, load_dir: Path, cfg: TrainConfig, device: torch.device
    ) -> None:
        from crossrank.families import load_decoder
        from crossrank.train import lora

        if cfg.dropout is not None:
            raise CrossrankError("--dropout applies to encoders; decoders have --lora-dropout")
        if cfg.eval_dataset:
            raise CrossrankError(
                "--eval-dataset is not available for decoder training yet; evaluate the saved "
                "model with `crossrank eval`"
            )
        self.cfg, self.init_dir = cfg, init_dir
        self.dtype = dtype_named(cfg.dtype, "--dtype")
        self.use_lora = cfg.lora_rank is not None
        resumed = load_dir != init_dir
        # a LoRA checkpoint holds the adapter only: the base always comes from the initial model
        base_dir = init_dir if self.use_lora else load_dir
        self.model = load_decoder(base_dir, dtype=self.dtype, device=device)
        self.check_options(cfg)
        if self.use_lora:
            self.lora_config = lora.adapter_config(
                base=_base_name(cfg.model, init_dir),
                rank=cfg.lora_rank,  # type: ignore[arg-type]
                alpha=cfg.lora_alpha if cfg.lora_alpha is not None else 2.0 * cfg.lora_rank,  # type: ignore[operator]
                dropout=cfg.lora_dropout,
                target_modules=cfg.target_modules,
                extra_parameters=cfg.lora_extra_parameters,
            )
            lora.add_lora(
                self.model,
                rank=self.lora_config["r"],
                alpha=self.lora_config["lora_alpha"],
                dropout=cfg.lora_dropout,
                target_modules=cfg.target_modules,
                extra_parameters=cfg.lora_extra_parameters,
            )
            if resumed:
                lora.load_adapter_state(self.model, load_dir)
        self.model.gradient_checkpointing = cfg.gradient_checkpointing
        self.model.train()
        self.encoder = self.make_encoder(init_dir, cfg)
        self.pad_id = self.encoder.pad_id

    def make_encoder(self, init_dir: Path, cfg: TrainConfig):
        """The family's training inputs (the bge LLM rule here)."""
        return DecoderPairEncoder(init_dir, cfg, self.always_bos)

    def check_options(self, cfg: TrainConfig) -> None:
        if cfg.start_layer is not None:
            raise CrossrankError("--start-layer applies to layerwise models only")

    def encode(self, groups) -> list:
        return self.encoder.encode(groups)

    def scores(self, model, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        return model.score(input_ids, attention_mask, token_ids=[self.encoder.yes_id])

    def loss(self, scores: torch.Tensor, teacher: torch.Tensor | None, loss: GroupLoss):
        return loss(scores[..., 0], teacher)

    def write_model(self, dest: Path, dtype: torch.dtype | None, final: bool = False) -> None:
        from crossrank.models.weights import save_safetensors
        from crossrank.train import lora
        from crossrank.train.checkpoint import TOKENIZER_FILES

        if self.use_lora and not (final and self.cfg.merge):
            lora.save_adapter(self.model, dest, self.lora_config)
        else:
            state = lora.merged_state(self.model) if self.use_lora else self.model.state_dict()
            # back to the checkpoint's own tensor names where ours differ
            names = {ours: theirs for theirs, ours in self.model.checkpoint_renames.items()}
            state = {names.get(k, k): v for k, v in state.items()}
            if dtype is not None:
                state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
            save_safetensors(
                {k: v.detach().contiguous() for k, v in state.items()}, dest / "model.safetensors"
            )
            raw = dict(self.model.config.raw)
            saved = next(iter(state.values())).dtype
            raw["torch_dtype"] = str(saved).removeprefix("torch.")
            (dest / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
        for name in TOKENIZER_FILES:
            src = self.init_dir / name
            if src.is_file():
                shutil.copyfile(src, dest / name)

    def evaluator(self, cfg: TrainConfig, device: torch.device):
        return None


class LayerwiseTask(DecoderTask):
    """Layerwise MiniCPM: one score per trained layer, losses summed over layers."""

    always_bos = True

    def check_options(self, cfg: TrainConfig) -> None:
        conf = self.model.config
        start = conf.start_layer if cfg.start_layer is None else cfg.start_layer
        if not conf.start_layer <= start <= conf.num_hidden_layers:
            raise CrossrankError(
                f"--start-layer {start}: this checkpoint has heads for layers "
                f"{conf.start_layer} to {conf.num_hidden_layers}"
            )
        self.layers = list(range(start, conf.num_hidden_layers + 1))

    def scores(self, model, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        return model.score(input_ids, attention_mask, cutoff_layers=self.layers)

    def loss(self, scores: torch.Tensor, teacher: torch.Tensor | None, loss: GroupLoss):
        from crossrank.train.losses import distillation

        total = sum(loss(scores[..., k], teacher) for k in range(scores.shape[-1]))
        if teacher is None:  # self-distillation of every layer towards the last one
            last = scores[..., -1]
            for k in range(scores.shape[-1] - 1):
                total = total + distillation(scores[..., k], last)
        return total


def _base_name(model: str, init_dir: Path) -> str:
    """``base_model_name_or_path``: the hub id as given, or the absolute local directory."""
    return str(init_dir.resolve()) if Path(model).exists() else model
