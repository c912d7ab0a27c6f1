"""Packed rows on a GPU: the document mask as a flex-attention BlockMask, attended through compiled flex attention.

Replaces `Backbone.document_mask` (a dense [B, 1, T, T] bool mask) and SDPA with that mask. Justified by: with a
dense mask SDPA falls back from its flash kernel to a slower one on a GPU and computes every T×T tile, while the
BlockMask skips the 128 × 128 tiles that lie across documents (not yet timed: no GPU has been lent; the CPU has
no flex-attention backward, so there the dense mask stays; docs/performance.md, "The GPU path").
"""

from __future__ import annotations

import functools

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from minimind.model.transformer import Backbone

FLEX_ATTENTION_DEVICES = {"cuda"}   # packed rows attend through flex attention here; on the CPU it has no backward


def document_block_mask(position_ids: torch.Tensor, causal: bool = True, window: int | None = None) -> BlockMask:
    """`Backbone.document_mask` as a BlockMask [B, 1, T, T]: query q may see key k of its row when both lie in the
    same document, (causal) k ≤ q, and (window) q − k < window."""
    B, T = position_ids.shape
    doc = (position_ids == 0).cumsum(dim=-1)     # document_index + 1: with its "- 1", Inductor's CPU flex kernel
                                                 # found no lowering (torch 2.13, the compiled-model test)

    def same_document_causal(b, h, q, k):
        return (k <= q) & (doc[b, q] == doc[b, k])

    def same_document(b, h, q, k):
        return doc[b, q] == doc[b, k]

    def same_document_window(b, h, q, k):
        return (k <= q) & (q - k < window) & (doc[b, q] == doc[b, k])

    rule = same_document_window if window else same_document_causal if causal else same_document
    return create_block_mask(rule, B, None, T, T, device=position_ids.device)


@functools.cache
def compiled_flex_attention():
    """flex_attention compiled once per process, for eager models (uncompiled it computes the full T×T scores).
    Shapes are static: a training run's rows all have one length."""
    return torch.compile(flex_attention, dynamic=False)


def flex_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    """q [B, H, T, d], k/v [B, H_kv, T, d] → [B, H, T, d]; inside a compiled model Dynamo fuses flex_attention
    itself."""
    flex = flex_attention if torch.compiler.is_compiling() else compiled_flex_attention()
    return flex(q, k, v, block_mask=block_mask, enable_gqa=k.shape[1] != q.shape[1])


class FlexBackbone(Backbone):
    """`Backbone` whose packed rows on a flex-attention device get a BlockMask (attention then takes `flex_attend`)."""

    def document_mask(self, position_ids: torch.Tensor, window: int | None = None) -> torch.Tensor | BlockMask:
        if position_ids.device.type in FLEX_ATTENTION_DEVICES:
            return document_block_mask(position_ids, self.causal, window)
        return super().document_mask(position_ids, window)
