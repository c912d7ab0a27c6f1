"""The decoder: embeddings → N pre-norm blocks → final norm → LM head (tied to the embeddings by default).

    h = h + Attention(RMSNorm(h));  h = h + MLP-or-MoE(RMSNorm(h))

Module names follow transformers' Qwen3ForCausalLM (`model.embed_tokens`, `model.layers.{i}.self_attn.q_proj`,
…, `lm_head`), so `state_dict()` keys are the checkpoint's tensor names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minimind.config import ModelConfig
from minimind.model.cache import KVCache
from minimind.model.deltanet import GatedDeltaNet
from minimind.model.layers import MLP, Attention, Linear, RMSNorm
from minimind.model.loss import IGNORE_INDEX, cross_entropy_sum
from minimind.model.moe import MoE
from minimind.model.rope import RotaryEmbedding
from minimind.model.save import save_model


@dataclass
class ModelOutput:
    logits: torch.Tensor | None          # [B, T_kept, vocab]; None when only the loss was asked for
    loss: torch.Tensor | None = None     # shifted cross-entropy + aux_loss, when labels are given
    aux_loss: torch.Tensor | None = None  # MoE load-balancing loss summed over layers (0 for a dense model)


class Block(nn.Module):
    """A decoder layer. Its token mixer is attention (`self_attn`, full or sliding-window), or in a hybrid model a
    Gated DeltaNet layer (`linear_attn`, `minimind.model.deltanet`), as `layer_types` says."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.linear = config.attention_types[layer_idx] == "linear_attention"
        if self.linear:
            self.linear_attn = GatedDeltaNet(config, layer_idx)
        else:
            self.self_attn = Attention(config, layer_idx)
        self.window = config.window(layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MoE(config) if config.is_moe else MLP(config.hidden_size, config.intermediate_size)

    def mix(self, x, cos, sin, mask, is_causal, cache, token_mask, position_ids):
        """The token mixer on the normalised input: attention reads the mask, DeltaNet the tokens' own mask."""
        if self.linear:
            return self.linear_attn(x, token_mask, cache, position_ids)
        return self.self_attn(x, cos, sin, mask, is_causal, cache)

    def forward(self, h, cos, sin, mask, is_causal, cache=None, token_mask=None, position_ids=None):
        """h [B, T, hidden] → (h [B, T, hidden], aux loss [] or None)."""
        h = h + self.mix(self.input_layernorm(h), cos, sin, mask, is_causal, cache, token_mask, position_ids)
        if isinstance(self.mlp, MoE):
            y, aux = self.mlp(self.post_attention_layernorm(h), token_mask)
            return h + y, aux
        return h + self.mlp(self.post_attention_layernorm(h)), None


class Backbone(nn.Module):
    """Embeddings, blocks and the final norm (transformers' Qwen3Model): input_ids → hidden states.

    Attention is causal, or, for a diffusion model (`config.objective`), bidirectional: every token sees every
    other token of its document (padding excepted), and there is no KV cache to extend.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.causal = not config.is_diffusion
        self.window = config.sliding_window if config.is_windowed else None   # the sliding layers' window
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids [B, T] → (hidden [B, T, H], aux loss or None).

        attention_mask [B, past+T]: 1 = token, 0 = padding (left or right).
        position_ids [B, T]: packed rows; each 0 starts a document that attends only within itself.
        inputs_embeds [B, T, H]: the embeddings to run in place of embed_tokens(input_ids) (image features spliced
        in by `minimind.model.vlm`).
        """
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if attention_mask is not None and attention_mask.shape != (B, past + T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected {(B, past + T)} "
                             "(it covers the cached positions too)")
        if cache is not None and not self.causal:
            raise ValueError("a bidirectional (diffusion) model has no KV cache: every position changes with the rest")
        window = self.window
        if position_ids is not None:
            if attention_mask is not None or cache is not None:
                raise ValueError("position_ids (packed documents) cannot be combined with attention_mask or cache")
            positions = position_ids
            masks = {None: (self.document_mask(position_ids), False)}
            if window:
                masks[window] = (self.document_mask(position_ids, window), False)
        else:
            positions = _positions(attention_mask, past, T, input_ids.device)
            masks = {None: _attention_mask(attention_mask, past, T, input_ids.device) if self.causal
                     else (_key_mask(attention_mask), False)}
            if window and cache is not None:        # the sliding layers attend to their ring, then the new positions
                masks[window] = (_ring_prefill_mask(cache.slot_pos, attention_mask, past, T, window), False)
            elif window:
                masks[window] = (_window_mask(attention_mask, past, T, window, input_ids.device), False)
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        cos, sin = self.rotary(positions, h.dtype)
        token_mask = attention_mask[:, past:] if attention_mask is not None else None
        aux = None
        for layer in self.layers:
            h, layer_aux = layer(h, cos, sin, *masks[layer.window], cache, token_mask, position_ids)
            if layer_aux is not None:
                aux = layer_aux if aux is None else aux + layer_aux
        if cache is not None:
            cache.advance(T)
        return self.norm(h), aux

    def document_mask(self, position_ids: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """Attention within documents [B, 1, T, T] (True = may attend): in row b, query q may see key k when both
        lie in the same document (each 0 of position_ids starts one), in a causal model k ≤ q, and with a window
        q − k < window."""
        doc = document_index(position_ids)
        same = doc[:, :, None] == doc[:, None, :]
        if self.causal:
            T = position_ids.shape[1]
            same &= torch.ones(T, T, dtype=torch.bool, device=position_ids.device).tril()
        if window:
            T = position_ids.shape[1]
            same &= torch.ones(T, T, dtype=torch.bool, device=position_ids.device).triu(1 - window)
        return same[:, None]

    def decode_step(self, input_ids: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None,
                    cache: KVCache) -> torch.Tensor:
        """One new token per row, each row at its own cache index (KVCache.write_at): input_ids and rotary
        positions [B, 1], key_mask [B, capacity] (False = padding) → hidden [B, 1, H]. Row b attends to the
        positions ≤ write_at[b] among the first cache.length that key_mask allows. key_mask None: every row
        attends to all cache.length positions (no padding, all rows at the same position; SDPA runs faster
        without a mask)."""
        masks = {None: None}
        S = cache.length
        if key_mask is not None:
            written = torch.arange(S, device=input_ids.device) <= cache.write_at[:, None]        # [B, S]
            masks[None] = (key_mask[:, :S] & written)[:, None, None, :]
        if self.window:                        # the sliding layers attend to their ring of the last `window` positions
            cache.claim_slots()
            masks[self.window] = _ring_decode_mask(cache.slot_pos, cache.write_at, key_mask, self.window)
        h = self.embed_tokens(input_ids)
        cos, sin = self.rotary(positions, h.dtype)
        for layer in self.layers:
            h, _ = layer(h, cos, sin, masks[layer.window], False, cache)
        return self.norm(h)


def _positions(attention_mask, past: int, T: int, device) -> torch.Tensor:
    """Rotary positions [B or 1, T]: each row counts only its real tokens, so padding never shifts them."""
    if attention_mask is None:
        return torch.arange(past, past + T, device=device)[None]
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]


def _attention_mask(attention_mask, past: int, T: int, device) -> tuple[torch.Tensor | None, bool]:
    """The SDPA mask (True = may attend) [B or 1, 1, T, past+T] and is_causal flag.

    Without padding the common cases need no mask at all. A padding query attends to itself only, so that
    no row of the softmax is empty (an empty row gives NaN, which would leak through 0·NaN in later layers).
    """
    if attention_mask is None and past == 0:
        return None, T > 1
    if attention_mask is None and T == 1:
        return None, False
    q_pos = torch.arange(past, past + T, device=device)[:, None]
    k_pos = torch.arange(past + T, device=device)[None, :]
    allowed = k_pos <= q_pos                                                # [T, S] causal
    if attention_mask is None:
        return allowed[None, None], False
    allowed = allowed & (attention_mask.bool()[:, None, :] | (k_pos == q_pos))     # [B, T, S]
    return allowed[:, None], False


def _window_mask(attention_mask, past: int, T: int, window: int, device) -> torch.Tensor:
    """A sliding layer's SDPA mask [B or 1, 1, T, past+T]: `_attention_mask`'s, and q − k < window (positions as
    cache indices: left padding comes before every real token, so it never shortens a window)."""
    q_pos = torch.arange(past, past + T, device=device)[:, None]
    k_pos = torch.arange(past + T, device=device)[None, :]
    allowed = (k_pos <= q_pos) & (q_pos - k_pos < window)                   # [T, S]
    if attention_mask is None:
        return allowed[None, None]
    return (allowed & (attention_mask.bool()[:, None, :] | (k_pos == q_pos)))[:, None]


def _ring_prefill_mask(slot_pos: torch.Tensor, attention_mask, past: int, T: int, window: int) -> torch.Tensor:
    """A ring layer's mask while prefilling into a cache [B, 1, T, window + T] (`KVCache`'s ring): the slots first —
    a position written before, within the window of the query, not padding — then the T new positions as
    `_window_mask` sees them."""
    q_pos = torch.arange(past, past + T, device=slot_pos.device)[None, :, None]               # [1, T, 1]
    held = slot_pos[:, None, :]                                                               # [B, 1, W]
    ring = (held >= 0) & (q_pos - held < window)                                              # [B, T, W]
    if attention_mask is not None:
        ring = ring & attention_mask.bool().gather(1, slot_pos.clamp(min=0))[:, None, :]
    new = _window_mask(attention_mask[:, past:] if attention_mask is not None else None, 0, T, window,
                       slot_pos.device)
    return torch.cat([ring[:, None], new.expand(ring.shape[0], -1, -1, -1)], -1)


def _ring_decode_mask(slot_pos: torch.Tensor, write_at: torch.Tensor, key_mask, window: int) -> torch.Tensor:
    """A ring layer's mask for one new token per row [B, 1, 1, window]: the slots holding one of the row's last
    `window` positions (its new one included), padding excluded."""
    held = (slot_pos >= 0) & (slot_pos > write_at[:, None] - window)
    if key_mask is not None:
        held = held & key_mask.gather(1, slot_pos.clamp(min=0))
    return held[:, None, None, :]


def _key_mask(attention_mask) -> torch.Tensor | None:
    """Bidirectional attention's SDPA mask [B, 1, 1, S] (True = may attend): every query sees every real token;
    None without padding. (A padding query still has keys, so no softmax row is empty.)"""
    return None if attention_mask is None else attention_mask.bool()[:, None, None, :]


def document_index(position_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] → [B, T]: which of its row's documents each token belongs to (0, 1, …; each 0 position starts one)."""
    return (position_ids == 0).cumsum(dim=-1) - 1


class Transformer(nn.Module):
    """The causal language model (transformers' Qwen3ForCausalLM / Qwen3MoeForCausalLM)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cache: KVCache | None = None,
                logits_to_keep: int | None = None, position_ids: torch.Tensor | None = None,
                reduction: str = "mean", inputs_embeds: torch.Tensor | None = None) -> ModelOutput:
        """input_ids [B, T] → logits [B, T, vocab] (only the last `logits_to_keep` positions if given).

        labels [B, T] are the input ids themselves (the shift happens here): loss = mean over positions t with
        labels[t+1] != -100 of -log p(labels[t+1] | tokens ≤ t), plus the MoE aux loss; with reduction="sum",
        the sum of those terms without the aux loss (the caller divides and adds `aux_loss`). With labels the
        logits are returned only for the last `logits_to_keep` positions, and are None without it (the fused
        loss of `minimind.model.kernels` never forms them).
        position_ids [B, T] describe packed rows; inputs_embeds replace the token embeddings (see Backbone.forward).
        """
        h, aux = self.model(input_ids, attention_mask, cache, position_ids, inputs_embeds)
        if aux is None:
            aux = h.new_zeros((), dtype=torch.float32)
        logits = loss = None
        if labels is None or logits_to_keep:
            logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        if labels is not None:
            targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)         # targets[t] = labels[t+1]
            loss = self.lm_loss(h, targets)
            if reduction == "mean":
                loss = loss / (targets != IGNORE_INDEX).sum().clamp(min=1) + aux
        return ModelOutput(logits=logits, loss=loss, aux_loss=aux)

    def lm_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Σ_t −log softmax(lm_head(h_t))[targets_t] over targets ≠ -100: h [B, T, hidden] → [] fp32."""
        return cross_entropy_sum(self.lm_head(h), targets)

    def decode_step(self, input_ids: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None,
                    cache: KVCache) -> torch.Tensor:
        """Backbone.decode_step, then the LM head: next-token logits [B, vocab]."""
        return self.lm_head(self.model.decode_step(input_ids, positions, key_mask, cache)[:, -1])

    # ---- initialisation ------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self) -> None:
        """Every matrix ~ N(0, σ) with σ = initializer_range; the matrices that write into the residual stream
        (o_proj, down_proj) get σ/√(2·layers) (GPT-2's scaling, so the residual's variance does not grow
        with depth); norm weights = 1."""
        std = self.config.initializer_range
        out_std = std / math.sqrt(2 * self.config.num_hidden_layers)
        for name, p in self.named_parameters():
            if name.endswith("A_log"):               # DeltaNet's decay rates keep their spread (deltanet.py)
                continue
            if p.ndim == 1:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight", "experts.down_proj")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    # ---- size and cost ---------------------------------------------------------------------------------------

    def num_params(self, active: bool = False) -> int:
        """Parameters (tied weights counted once); with active=True only those one token uses (top-k experts)."""
        total = sum(p.numel() for p in self.parameters())
        if active and self.config.is_moe:
            per_expert = sum(p[0].numel() for p in self.model.layers[0].mlp.experts.parameters())
            idle = self.config.num_experts - self.config.num_experts_per_tok
            total -= idle * per_expert * self.config.num_hidden_layers
        return total

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward); the LM head is a matmul, the embedding a lookup
        (unless the two are tied: then the one matrix counts once, as the head)."""
        c = self.config
        return training_flops(self, seq_len, lookup=0 if c.tie_word_embeddings else c.vocab_size * c.hidden_size)

    def save(self, path: str | Path, dtype: torch.dtype | None = None, tokenizer=None) -> Path:
        """Write a Hugging Face Qwen3 model directory atomically; see `minimind.model.save.save_model`."""
        return save_model(self, path, dtype=dtype, tokenizer=tokenizer)


def with_layer_types(model: Transformer, layer_types: list[str] | ModelConfig) -> Transformer:
    """The model with other layer types (`layer_types`, or a whole config differing only in its mixers: e.g. a dense
    model made a DeltaNet hybrid, MiniMind-Linear's start): every tensor the two share is kept (embeddings, norms,
    MLPs, the layers that stay attention); the new mixers are fresh."""
    config = (layer_types if isinstance(layer_types, ModelConfig)
              else model.config.replace(layer_types=list(layer_types)))
    out = Transformer(config)
    shared = {k: v for k, v in model.state_dict().items() if k in out.state_dict()}
    out.load_state_dict(shared, strict=False)
    out.tie_weights()
    return out.to(model.lm_head.weight.device)


def checkpoint_blocks(module: nn.Module, layers: Iterable[int] | None = None) -> list[int]:
    """Activation checkpointing: recompute the activations of the blocks numbered `layers` (default: all) in the
    backward pass instead of storing them, in every backbone inside `module` (PPO's critic has its own). Memory per
    such block drops to its input. Returns the layers checkpointed."""
    from torch.utils.checkpoint import checkpoint as recompute

    chosen = None if layers is None else set(layers)
    done = set()
    for backbone in (m for m in module.modules() if isinstance(m, Backbone)):
        for i, block in enumerate(backbone.layers):
            if chosen is None or i in chosen:
                forward = block.forward
                block.forward = lambda *args, _f=forward, **kwargs: recompute(_f, *args, use_reentrant=False, **kwargs)
                done.add(i)
    return sorted(done)


def training_flops(model, seq_len: int, lookup: int) -> int:
    """PaLM's estimate of training FLOPs per token: 6·N + 12·Σ_attention layers (H·d)·T, where N counts the active
    parameters that take part in matmuls: all but the norms' and `lookup` (the embedding table's); a sliding layer
    attends to min(T, window) positions, a DeltaNet layer's recurrence is left out (its matmuls are in N)."""
    c = model.config
    norms = sum(p.numel() for p in model.parameters() if p.ndim == 1)
    matmul = model.num_params(active=True) - norms - lookup
    seen = sum(min(seq_len, c.window(i) or seq_len) for i, t in enumerate(c.attention_types)
               if t != "linear_attention")
    return 6 * matmul + 12 * c.num_attention_heads * c.head_dim * seen
