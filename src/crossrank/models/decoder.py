"""Shared machinery of the decoder-only (LLM) rerankers: the prefix cache, the scoring forward
pass and loading weights into a model. Its config is
:class:`~crossrank.models.decoder_config.DecoderConfig` (re-exported here); the layers it stacks
are in :mod:`crossrank.models.decoder_layers`; a checkpoint is loaded by its family with
:func:`crossrank.families.decoder.load_decoder`.

The models (:mod:`crossrank.models.gemma`, :mod:`crossrank.models.minicpm`,
:mod:`crossrank.models.qwen3`) differ only in the points this module leaves open: the embedding
scale, the RMSNorm form, the activation, the residual scale, RMSNorm on queries and keys per
head (Qwen3) and how the last hidden state becomes a score.

Batches are right-padded; the layers run on their real tokens only, packed (why no key mask
is needed and how attention sees the padded batch: :mod:`crossrank.models.decoder_layers`).

Query-prefix sharing: all pairs of one query start with the same tokens
(``[bos] + "A: " + query + "\\n"``). :meth:`DecoderLM.prefix_cache` runs those tokens once per
distinct prefix and keeps every layer's rotated keys and values; the suffixes (passage and
prompt) then run with positions continuing after their prefix and attend to the cached keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crossrank.errors import CrossrankError, ModelLoadError
from crossrank.models.attention import pack_rows
from crossrank.models.decoder_config import DecoderConfig
from crossrank.models.decoder_layers import DecoderBody, Packing, rotary
from crossrank.models.weights import iter_tensors, weight_files


@dataclass
class PrefixCache:
    """Rotated keys / values of distinct prefixes, one ``[n_prefix, kv_heads, P, d]`` pair per
    layer, plus each prefix's real length (prefixes are right-padded to ``P``)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    lengths: torch.Tensor  # [n_prefix] int64


class DecoderLM(nn.Module):
    """Base of the scoring decoders: ids in, the last real position's hidden states out.

    Subclasses set :attr:`embed_scale` and turn hidden states into scores.
    """

    offset_norm = True
    rope_fp32 = False
    #: checkpoint tensor names stored under another name in this module
    checkpoint_renames: dict[str, str] = {}
    #: recompute each layer's activations in backward (training only)
    gradient_checkpointing = False

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.model = DecoderBody(config, self.offset_norm, self.rope_fp32)

    def checkpoint_state(
        self, state: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """``state`` (default: this module's) under the checkpoint's own tensor names, as
        :func:`~crossrank.models.weights.write_checkpoint` takes it."""
        names = {ours: theirs for theirs, ours in self.checkpoint_renames.items()}
        state = self.state_dict() if state is None else state
        return {names.get(k, k): v.detach().contiguous() for k, v in state.items()}

    def embed_scale(self, dtype: torch.dtype) -> torch.Tensor | float:
        return 1.0

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.model.embed_tokens(ids)
        return x * self.embed_scale(x.dtype)

    def _rope(self, positions: torch.Tensor):
        return rotary(positions, self.config.head_dim, self.config.rope_theta)

    def packed_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
    ) -> tuple[Packing, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """What the layers take for a right-padded batch: its
        :class:`~crossrank.models.decoder_layers.Packing`, the real tokens' embeddings
        ``[tokens, h]`` and their rotary cos / sin ``[tokens, d]`` (``positions``: ``[b, s]``)."""
        packing = Packing.of(attention_mask)
        x = self.embed(pack_rows(input_ids.reshape(-1), packing.index))
        return packing, x, self._rope(pack_rows(positions.reshape(-1), packing.index))

    @torch.no_grad()
    def prefix_cache(
        self, prefix_ids: torch.Tensor, prefix_mask: torch.Tensor, n_layers: int | None = None
    ) -> PrefixCache:
        """Keys / values of right-padded prefixes ``[n, P]`` through the first ``n_layers``."""
        n, p = prefix_ids.shape
        positions = torch.arange(p, device=prefix_ids.device).expand(n, p)
        packing, x, rope = self.packed_inputs(prefix_ids, prefix_mask, positions)
        keys, values = [], []
        layers = self.model.layers[: n_layers or len(self.model.layers)]
        for i, layer in enumerate(layers):
            if i + 1 == len(layers):  # the last layer's output is never read: keys/values only
                k, v = layer.self_attn.keys_values(layer.input_layernorm(x), rope, packing)
            else:
                x, k, v = layer(x, rope, packing)
            keys.append(k)
            values.append(v)
        return PrefixCache(keys, values, prefix_mask.sum(dim=1))

    def hidden_at_last(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        layers: list[int],
        prefix: PrefixCache | None = None,
        prefix_index: torch.Tensor | None = None,
    ) -> dict[int, torch.Tensor]:
        """Hidden state ``[b, h]`` at each row's last real token after ``k`` layers, for each
        ``k`` in ``layers`` (no final norm). The forward pass stops at ``max(layers)``.

        With ``prefix`` (from :meth:`prefix_cache`), ``input_ids`` are suffixes: row ``i``
        continues prefix ``prefix_index[i]``. The layers run on the real tokens only
        (:class:`~crossrank.models.decoder_layers.Packing`).
        """
        b, s = input_ids.shape
        lengths = attention_mask.sum(dim=1)
        last = lengths - 1  # in the padded rows
        last_packed = torch.cumsum(lengths, 0) - 1  # in the packed tokens
        steps = torch.arange(s, device=input_ids.device)
        mask = None
        if prefix is None:
            positions = steps.expand(b, s)
        else:
            plen = prefix.lengths.index_select(0, prefix_index)  # [b]
            positions = plen[:, None] + steps[None, :]
            pmax = prefix.keys[0].shape[2]
            in_prefix = torch.arange(pmax, device=steps.device)[None, :] < plen[:, None]  # [b, P]
            causal = steps[None, :] <= steps[:, None]  # [s, s]
            mask = torch.cat(
                (in_prefix[:, None, :].expand(b, s, pmax), causal.expand(b, s, s)), dim=2
            )[:, None]
        packing, x, rope = self.packed_inputs(input_ids, attention_mask, positions)
        wanted, stop = set(layers), max(layers)
        out: dict[int, torch.Tensor] = {}
        if 0 in wanted:
            out[0] = x.index_select(0, last_packed)
        for i, layer in enumerate(self.model.layers[:stop]):
            past = None
            if prefix is not None:
                past = (
                    prefix.keys[i].index_select(0, prefix_index),
                    prefix.values[i].index_select(0, prefix_index),
                )
            if i + 1 == stop:
                # the last layer only matters at the last real token: its query, output
                # projection and MLP run on that one position per row
                if mask is None:
                    last_mask = (steps[None, :] <= last[:, None])[:, None, None, :]
                else:
                    rows = torch.arange(b, device=x.device)
                    last_mask = mask[rows, :, last][:, :, None, :]
                out[stop] = layer.forward_last(x, rope, packing, last_packed, past, last_mask)
                break
            if self.gradient_checkpointing and self.training:
                from torch.utils.checkpoint import checkpoint

                x, _, _ = checkpoint(layer, x, rope, packing, past, mask, use_reentrant=False)
            else:
                x, _, _ = layer(x, rope, packing, past, mask)
            if i + 1 in wanted:
                out[i + 1] = x.index_select(0, last_packed)
        return out


def load_decoder_weights(
    model_dir,
    model_cls: type[DecoderLM],
    config: DecoderConfig,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    quantize: str | None = None,
) -> DecoderLM:
    """Build ``model_cls(config)`` and load the weights of ``model_dir`` into it.

    The model is built on the meta device; tensors stream from the weight files one at a time,
    are cast to ``dtype`` and assigned, so a bf16 load never holds an fp32 copy of the model.
    With ``quantize="int8"`` the decoder layers' linear layers are
    :class:`~crossrank.models.int8.Int8Linear` and each of their weights is quantized as it
    streams in (no fp32 copy of them either).
    """
    from pathlib import Path

    model_dir = Path(model_dir)
    with torch.device("meta"):
        model = model_cls(config)
    int8_weights: set[str] = set()
    if quantize == "int8":
        from crossrank.models import int8

        int8.check_runtime(torch.device(device), dtype)
        int8_weights = {f"{n}.weight" for n in int8.replace_linears(model)}
    elif quantize is not None:
        raise CrossrankError(f"unknown quantize {quantize!r}; use None or 'int8'")
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    # a load that converts tensors reads each into its own memory (see iter_tensors)
    private = quantize is not None or dtype != torch.float32
    for name, tensor in iter_tensors(weight_files(model_dir), private=private):
        name = model_cls.checkpoint_renames.get(name, name)
        if name in int8_weights:
            module = name[: -len(".weight")]
            want = expected[f"{module}.qweight"].shape
            if tuple(tensor.shape) != tuple(want):
                raise ModelLoadError(
                    f"{name} in {model_dir} has shape {tuple(tensor.shape)}, expected {tuple(want)}"
                )
            rotation = model.get_submodule(module).rotation
            state[f"{module}.qweight"], state[f"{module}.wscale"] = int8.quantize_weight(
                tensor, rotation
            )
            continue
        if name.endswith(".bias") and f"{name[: -len('.bias')]}.weight" in int8_weights:
            state[name] = tensor.float()  # an int8 layer's bias stays fp32
            continue
        if name in expected:
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ModelLoadError(
                    f"{name} in {model_dir} has shape {tuple(tensor.shape)}, "
                    f"expected {tuple(expected[name].shape)}"
                )
            state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ModelLoadError(f"weights in {model_dir} lack {len(missing)} tensors: {shown}")
    model.load_state_dict(state, assign=True, strict=True)
    if int8_weights:
        int8.fuse_projections(model)
    return model.to(device).eval()
