"""What the decoder (LLM) reranker families share: loading our decoder, the tokenizer, a
:class:`~crossrank.engine.llm_backend.DecoderBackend` per option set, and training.

:class:`DecoderTask` is LLM reranker training (FlagEmbedding's ``finetune.reranker.decoder_only``)
for every decoder family: the family's own input rules and score (what inference uses), trained.

- Inputs: the family's :class:`~crossrank.engine.encoding.PairEncoding` (``pair_tokenizer``)
  with the training length budgets (its ``training(q, p)``: for the bge LLM rerankers the query
  cut to ``q + p // 4`` tokens, the passage to ``p + q // 2``, the whole input to ``q + p``;
  for Qwen3 the input to ``q + p``, the document first). An example's ``prompt`` sets the
  family's :attr:`~crossrank.families.decoder.DecoderFamily.example_prompt` option (the prompt
  after the pair, or Qwen3's ``<Instruct>`` text); none gives the default.
- Scores: the family's ``score_spec`` (Gemma's "Yes" logit, Qwen3's yes - no, the layerwise
  heads of the trained layers, :meth:`~crossrank.families.decoder.DecoderFamily.train_options`).
- With ``--lora-rank`` the base is frozen in its ``--dtype`` and only the LoRA matrices (fp32)
  and ``--lora-extra-parameters`` are trained; the output is a PEFT adapter
  (:mod:`crossrank.models.adapters`) unless ``--merge``.

A decoder family subclasses :class:`DecoderFamily` and fills in its model class, its pair
tokenizer and what its score is (:meth:`DecoderFamily.score_spec`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from crossrank.engine.encoding import PairEncoding
from crossrank.engine.llm_backend import DecoderBackend
from crossrank.engine.tokenize import EncodedPair, load_tokenizer
from crossrank.errors import CrossrankError
from crossrank.families.base import Runtime, ScoreOptions, Scoring, claims_by_architecture
from crossrank.families.training import Example, TrainSettings, TrainTask
from crossrank.inputs import dtype_named
from crossrank.models.decoder import DecoderConfig, DecoderLM, load_decoder_weights


class DecoderFamily(ABC):
    """Base of the decoder families: subclasses set the class attributes and two hooks."""

    name: str
    architectures: tuple[str, ...]
    options: frozenset[str] = frozenset({"prompt", "share_prefix", "quantize"})
    backends: tuple[str, ...] = ("torch",)
    #: int8 products on the CPU (:mod:`crossrank.models.int8`): ``quantize="int8"``
    torch_quantize: tuple[str, ...] = ("int8",)
    score: str
    #: no ONNX export (the decoders run on PyTorch only)
    onnx_export = None
    #: the :class:`~crossrank.families.base.ScoreOptions` field a training example's ``prompt``
    #: sets
    example_prompt: str = "prompt"
    #: training adds the self-distillation of every score column towards the last one
    self_distill: bool = False

    def claims(self, raw: dict[str, Any]) -> bool:
        return claims_by_architecture(self, raw)

    def parse_config(self, raw: dict[str, Any]) -> DecoderConfig:
        return DecoderConfig.from_dict(raw, kind=self.name)

    @abstractmethod
    def model_class(self) -> type[DecoderLM]:
        """Our PyTorch model class for this family."""

    @abstractmethod
    def pair_tokenizer(
        self, tokenizer: Tokenizer, model_dir: Path, options: ScoreOptions
    ) -> PairEncoding:
        """The family's input rules for these options."""

    @abstractmethod
    def score_spec(
        self, model: DecoderLM, tokenizer: PairEncoding, options: ScoreOptions
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """``(keyword arguments of model.score, names of its output columns)``."""

    def train_options(self, model: DecoderLM, settings: TrainSettings) -> dict[str, Any]:
        """The :class:`~crossrank.families.base.ScoreOptions` fields training scores with
        (beyond the lengths and the example's prompt); refuses options the family lacks."""
        if settings.start_layer is not None:
            raise CrossrankError("--start-layer applies to layerwise models only")
        return {}

    def train_task(
        self, init_dir: Path, load_dir: Path, settings: TrainSettings, device: torch.device
    ) -> TrainTask:
        """The family's training task (:class:`~crossrank.families.decoder.DecoderTask`):
        ``load_dir`` holds the weights to start from (the initial model or the checkpoint
        resumed), ``init_dir`` the tokenizer and base config."""
        return DecoderTask(self, init_dir, load_dir, settings, device)

    def load(self, model_dir: Path, config: DecoderConfig, runtime: Runtime) -> LoadedDecoder:
        if runtime.backend != "torch":
            raise CrossrankError(f"the {self.name} family runs on backend='torch' only")
        return LoadedDecoder(self, model_dir, config, runtime)


class LoadedDecoder:
    """A decoder loaded once; each option set gets its own tokenizer and backend over it."""

    def __init__(
        self, family: DecoderFamily, model_dir: Path, config: DecoderConfig, runtime: Runtime
    ) -> None:
        self.family = family
        self.model_dir = model_dir
        self.runtime = runtime
        self.tokenizer = load_tokenizer(model_dir)
        self.decoder: DecoderLM = load_decoder_weights(
            model_dir,
            family.model_class(),
            config,
            dtype=runtime.dtype,
            device=runtime.device,
            quantize=runtime.quantize,
        )
        if runtime.quantize == "int8" and runtime.compile:
            from crossrank.models.compiled import compile_layers

            compile_layers(self.decoder.model.layers)
        self.model: torch.nn.Module | None = self.decoder

    def scoring(self, options: ScoreOptions) -> Scoring:
        pt = self.family.pair_tokenizer(self.tokenizer, self.model_dir, options)
        kwargs, outputs = self.family.score_spec(self.decoder, pt, options)
        backend = DecoderBackend(
            self.decoder,
            self.runtime.device,
            self.runtime.dtype,
            score_kwargs=kwargs,
            n_outputs=len(outputs),
            share_prefix=options.share_prefix,
        )
        # pads are never attended to (right padding, causal attention)
        return Scoring(pt, backend, pad_id=0, outputs=outputs, resolved=dict(kwargs))


class DecoderTask:
    """A decoder family's model in training (see the module docstring)."""

    autocast = False
    evaluation: PairEncoding | None = None  # dev-set evaluation: encoders only, for now

    def __init__(
        self,
        family: DecoderFamily,
        init_dir: Path,
        load_dir: Path,
        settings: TrainSettings,
        device: torch.device,
    ) -> None:
        from crossrank.config import read_config
        from crossrank.models import adapters, lora

        self.dtype = dtype_named(settings.dtype, "--dtype")
        if settings.dropout is not None:
            raise CrossrankError("--dropout applies to encoders; decoders have --lora-dropout")
        self.family, self.settings, self.init_dir = family, settings, init_dir
        self.use_lora = settings.lora_rank is not None
        # a LoRA checkpoint holds the adapter only: the base always comes from the initial model
        base_dir = init_dir if self.use_lora else load_dir
        config = family.parse_config(read_config(base_dir / "config.json"))
        model_class = family.model_class()
        self.model = load_decoder_weights(
            base_dir, model_class, config, dtype=self.dtype, device=device
        )
        extra = family.train_options(self.model, settings)
        self.self_distill = family.self_distill
        if self.use_lora:
            rank = settings.lora_rank
            assert rank is not None
            alpha = settings.lora_alpha if settings.lora_alpha is not None else 2.0 * rank
            self.lora_config = adapters.adapter_config(
                base=_base_name(settings.model, init_dir),
                rank=rank,
                alpha=alpha,
                dropout=settings.lora_dropout,
                target_modules=settings.target_modules,
                extra_parameters=settings.lora_extra_parameters,
            )
            lora.add_lora(
                self.model,
                rank=rank,
                alpha=alpha,
                dropout=settings.lora_dropout,
                target_modules=settings.target_modules,
                extra_parameters=settings.lora_extra_parameters,
            )
            if load_dir != init_dir:  # resumed
                adapters.load_adapter_state(self.model, load_dir)
        self.model.gradient_checkpointing = settings.gradient_checkpointing
        self.model.train()
        self.tokenizer = load_tokenizer(init_dir)
        self.pad_id = 0  # as in scoring: right padding, causal attention, pads never attended to
        self.eval_max_length = settings.max_length
        q, p = settings.query_max_length, settings.passage_max_length
        self.options = ScoreOptions(max_length=q + p, **extra)
        self._by_prompt: dict[str | None, PairEncoding] = {}
        default = self.encoding(None)
        self.score_kwargs, _ = family.score_spec(self.model, default, self.options)

    def encoding(self, prompt: str | None) -> PairEncoding:
        """The family's input rules with an example's prompt, at the training budgets."""
        if prompt not in self._by_prompt:
            options = replace(self.options, **{self.family.example_prompt: prompt})
            pair = self.family.pair_tokenizer(self.tokenizer, self.init_dir, options)
            s = self.settings
            self._by_prompt[prompt] = pair.training(s.query_max_length, s.passage_max_length)
        return self._by_prompt[prompt]

    def encode(self, groups: Sequence[Example]) -> list[EncodedPair]:
        by_prompt: dict[str | None, list[int]] = {}
        pairs = [(g.query, p) for g in groups for p in g.passages]
        prompts = [g.prompt for g in groups for _ in g.passages]
        for i, prompt in enumerate(prompts):
            by_prompt.setdefault(prompt, []).append(i)
        out: list[EncodedPair] = [None] * len(pairs)  # type: ignore[list-item]
        for prompt, index in by_prompt.items():  # each prompt's pairs in one call
            for i, encoded in zip(index, self.encoding(prompt).encode([pairs[i] for i in index])):
                out[i] = encoded
        return out

    def scores(self, model, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        return model.score(input_ids, attention_mask, **self.score_kwargs)

    def write_model(self, dest: Path, dtype: torch.dtype | None, final: bool = False) -> None:
        from crossrank.models import adapters, lora
        from crossrank.models.weights import copy_tokenizer_files, write_checkpoint

        if self.use_lora and not (final and self.settings.merge):
            adapters.save_adapter(self.model, dest, self.lora_config)
            copy_tokenizer_files(self.init_dir, dest)
            return
        state = lora.merged_state(self.model) if self.use_lora else None
        state = self.model.checkpoint_state(state)
        raw = self.model.config.raw
        write_checkpoint(dest, state, raw, dtype=dtype, tokenizer_dir=self.init_dir)


def _base_name(model: str, init_dir: Path) -> str:
    """``base_model_name_or_path``: the hub id as given, or the absolute local directory."""
    return str(init_dir.resolve()) if Path(model).exists() else model
