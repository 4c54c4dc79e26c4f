"""BERT / RoBERTa / XLM-RoBERTa cross-encoders: our own forward pass, driven by config.json.

The math matches transformers' ``*ForSequenceClassification`` (post-LN encoder, classification
head on the first token). Two implementation choices differ from transformers without changing
the result: query/key/value are one fused matrix product, and the linear layers run on the
real tokens only (padding is dropped before them and restored around attention), so padded
positions cost no matrix-product FLOPs. On CUDA in fp16 / bf16 attention also runs on the
packed tokens (variable-length kernels, :mod:`crossrank.models.attention`), so padding costs
no attention FLOPs either. The last layer works on each sequence's first token only (keys and
values still come from every token): the classification head reads nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossrank.config import EncoderConfig
from crossrank.models.activations import activation
from crossrank.models.attention import VarlenKernel, pack_rows, select_kernel, unpack_rows
from crossrank.models.dropout import Dropout, dropout


def position_ids_for(config: EncoderConfig, attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a right-padded batch.

    RoBERTa / XLM-R count real tokens from ``pad_token_id + 1`` and give pads ``pad_token_id``;
    BERT numbers every position from 0.
    """
    if config.family == "roberta":
        mask = attention_mask.to(torch.long)
        return torch.cumsum(mask, dim=1) * mask + config.pad_token_id
    seq = attention_mask.shape[1]
    return torch.arange(seq, device=attention_mask.device).unsqueeze(0).expand_as(attention_mask)


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(float(config.raw.get("hidden_dropout_prob", 0.1)))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        pos = position_ids_for(self.config, attention_mask)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class Layer(nn.Module):
    """One post-LN transformer layer working on packed tokens ``[n_tokens, hidden]``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(h, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, h)
        self.ffn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.act = activation(config.hidden_act)
        self.dropout = Dropout(float(config.raw.get("hidden_dropout_prob", 0.1)))
        self.attn_dropout = float(config.raw.get("attention_probs_dropout_prob", 0.1))

    def forward(self, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        if layout.kernel is not None and not (self.training and self.attn_dropout > 0):
            qkv = self.qkv(x).view(x.shape[0], 3, self.num_heads, self.head_dim)
            attn = layout.kernel(qkv[:, 0], qkv[:, 1], qkv[:, 2], layout)
            attn = attn.reshape(x.shape[0], -1)
        else:
            attn = self._padded_attention(x, layout)
        x = self.attn_norm(x + self.dropout(self.attn_out(attn)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))

    def forward_first(self, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """The layer's output at each sequence's first token only: ``[batch, hidden]``.

        Keys and values still come from every token, but the query projection, attention
        output, feed-forward block and layer norms run on one row per sequence. The result
        equals ``forward(x, layout)[layout.first]``; used for the last layer, whose other
        rows the classification head never reads.
        """
        b, t, h = layout.batch, layout.seq, x.shape[1]
        first = x.index_select(0, layout.first)
        q = F.linear(first, self.qkv.weight[:h], self.qkv.bias[:h])
        kv = layout.unpack(F.linear(x, self.qkv.weight[h:], self.qkv.bias[h:]))
        kv = kv.view(b, t, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = self._attention(q.view(b, self.num_heads, 1, self.head_dim), kv[0], kv[1], layout)
        x = self.attn_norm(first + self.dropout(self.attn_out(attn.reshape(b, h))))
        return self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))

    def _padded_attention(self, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        b, t = layout.batch, layout.seq
        qkv = layout.unpack(self.qkv(x))  # [b * t, 3h]
        qkv = qkv.view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = self._attention(qkv[0], qkv[1], qkv[2], layout)
        return layout.pack(attn.transpose(1, 2).reshape(b * t, -1))

    def _attention(self, q, k, v, layout: PackedLayout) -> torch.Tensor:
        """Attention over ``[batch, heads, seq, head_dim]``; in CPU training with attention
        dropout written out, so the probabilities' mask comes from :func:`dropout`."""
        p = self.attn_dropout if self.training else 0.0
        if p == 0.0 or q.device.type != "cpu":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=layout.attn_mask, dropout_p=p)
        scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)
        if layout.attn_mask is not None:
            scores = scores.masked_fill(~layout.attn_mask, float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        return dropout(probs, p) @ v


class PackedLayout:
    """Where the real tokens of a right-padded ``[batch, seq]`` batch sit.

    ``pack`` keeps the rows of real tokens of a ``[batch * seq, d]`` tensor, ``unpack`` puts
    packed rows back (zeros at padded positions). Without padding both are the identity.
    """

    def __init__(self, attention_mask: torch.Tensor, kernel: VarlenKernel | None = None) -> None:
        self.batch, self.seq = attention_mask.shape
        #: varlen attention kernel on packed tokens (None: padded attention)
        self.kernel = kernel
        flat = attention_mask.reshape(-1).bool()
        self.n_tokens = int(flat.sum())
        self.padded = self.n_tokens < flat.numel()
        if self.padded:
            self.indices = torch.nonzero(flat, as_tuple=False).squeeze(1)
            self.attn_mask = attention_mask.bool()[:, None, None, :]
        else:
            self.indices = None
            self.attn_mask = None
        lengths = attention_mask.sum(dim=1)
        #: index (in the packed rows) of each sequence's first token
        self.first = torch.cumsum(lengths, 0) - lengths
        self.lengths = lengths
        #: ``[batch + 1]`` int32 offsets of the sequences in the packed rows
        self.cu_seqlens = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
        self.max_seqlen = self.seq

    def length_groups(self) -> list[tuple[int, torch.Tensor]]:
        """``(length, rows)`` per distinct sequence length; ``rows[i]`` are the packed row
        indices of the i-th sequence of that length."""
        groups = []
        lengths = self.lengths.tolist()
        for length in sorted(set(lengths)):
            if length == 0:
                continue
            seqs = [i for i, n in enumerate(lengths) if n == length]
            starts = self.first[seqs].unsqueeze(1)
            groups.append((length, starts + torch.arange(length, device=starts.device)))
        return groups

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        if self.indices is None:
            return x
        return pack_rows(x, self.indices)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        if self.indices is None:
            return x
        return unpack_rows(x, self.indices, self.batch * self.seq)


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False
        #: attention kernel: "auto", "padded", "grouped", "torch-varlen" or "flash"
        #: (see :mod:`crossrank.models.attention`)
        self.attention = "auto"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        first_only: bool = False,
    ) -> tuple[torch.Tensor, PackedLayout]:
        """Hidden states of the last layer and their layout.

        Packed ``[n_real_tokens, hidden]`` rows, or with ``first_only`` just each sequence's
        first token ``[batch, hidden]``: the last layer then skips the rows nobody reads
        (:meth:`Layer.forward_first`), the same numbers for less work.
        """
        x = self.embeddings(input_ids, attention_mask, token_type_ids)
        layout = PackedLayout(attention_mask, select_kernel(self.attention, x.device, x.dtype))
        x = layout.pack(x.reshape(layout.batch * layout.seq, -1))
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            step = layer.forward_first if first_only and i == last else layer
            if self.gradient_checkpointing and self.training:
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(step, x, layout, use_reentrant=False)
            else:
                x = step(x, layout)
        return x, layout


class ClassificationHead(nn.Module):
    """Dense + tanh on the first token, then a projection to one logit.

    BERT calls the first part the pooler; RoBERTa / XLM-R keep both parts in ``classifier``.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)
        p = config.classifier_dropout
        if p is None:
            p = float(config.raw.get("hidden_dropout_prob", 0.1))
        self.dropout = Dropout(float(p))
        self.family = config.family

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        if self.family == "roberta":
            first_token = self.dropout(first_token)
        pooled = self.dropout(torch.tanh(self.dense(first_token)))
        return self.out_proj(pooled)


class CrossEncoder(nn.Module):
    """A cross-encoder reranker: token ids in, one relevance logit per sequence out."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.head = ClassificationHead(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[batch]`` for a right-padded batch."""
        first, _ = self.encoder(input_ids, attention_mask, token_type_ids, first_only=True)
        return self.head(first).squeeze(-1)

    def init_head(self, parts: tuple[str, ...] = ("dense", "out_proj")) -> None:
        """Fresh head weights as transformers initialises them: N(0, initializer_range), zero bias.

        ``parts`` names the head's linear layers to initialise (``dense``, ``out_proj``); the
        global torch RNG is used, so ``torch.manual_seed`` makes the head reproducible.
        """
        std = self.config.initializer_range
        for part in parts:
            linear = getattr(self.head, part)
            with torch.no_grad():
                nn.init.normal_(linear.weight, mean=0.0, std=std)
                nn.init.zeros_(linear.bias)
