"""Attention per instance for a packed batch: each instance alone in a row of a group of similar widths.

A packed batch is one row of instances end to end (components/core/packing.py). A block-diagonal
mask over it would have SDPA compute every score of the row, and on CPU in training (dropout on)
SDPA runs its math kernel, whose softmax, dropout and matmuls cost the whole masked area. Here the
query, key and value slots of each instance are gathered into group rows [instances, group width]
(components.core.packing.attention_groups), attended with a mask of the instance's own tokens and
scattered back to the packed layout; the linear layers run once over the packed row. Each token
attends to exactly its own instance's tokens, so outputs at real tokens equal the unpacked ones.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from components.core.packing import GROUP_WIDTHS


class _Regather(torch.autograd.Function):
    """Rows of x (a zero row appended at len(x)) in the order `index`; the backward gathers too, by `back_index`.

    The layouts are one-to-one between real tokens and real group slots, so each gradient row has one
    source, and a gather finds it: index_select's own backward (a scatter-add) took 70% of a tiny-512
    step on CPU. Correct where the rows nothing points back to get zero gradients: padding slots, whose
    outputs are dropped and which no real query attends to (exp(-inf) = 0).
    """

    @staticmethod
    def forward(ctx, x, index, back_index):
        ctx.save_for_backward(back_index)
        return torch.cat([x, x.new_zeros(1, x.shape[1])]).index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (back_index,) = ctx.saved_tensors
        return torch.cat([grad, grad.new_zeros(1, grad.shape[1])]).index_select(0, back_index), None, None


class InstanceGroups:
    """The attention layout of one packed batch, passed to the model as its attention_mask.

    slots, counts, inverse: components.core.packing.attention_groups's, as tensors (counts on the CPU).
    """

    def __init__(self, slots: torch.Tensor, counts: torch.Tensor, inverse: torch.Tensor):
        self.shape = inverse.shape
        self.inverse = inverse.reshape(-1)
        self.groups, start = [], 0
        for width, count in zip(GROUP_WIDTHS, counts.tolist()):
            if count:
                real = slots[start : start + count * width].view(count, width) >= 0
                start += count * width
                # Real queries see their instance's tokens; slots past the end see everything (their output is
                # dropped, and a row with nothing to attend to would be NaN, which the backward would spread).
                allowed = real[:, None, None, :] | ~real[:, None, :, None]
                bias = torch.zeros(allowed.shape, dtype=torch.float32, device=slots.device).masked_fill_(~allowed, float("-inf"))
                self.groups.append(((count, width), bias))
        self.slots = torch.where(slots >= 0, slots, self.inverse.numel())  # past an instance's end: the zero row

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, dropout_p: float) -> torch.Tensor:
        """Attention over [rows, width, hidden] projections, per instance; returns [rows, width, hidden]."""
        hidden = query.shape[-1]
        sizes = [count * width for (count, width), _ in self.groups]
        # split, not slicing: a slice's backward fills a zero gradient of the whole input, once per group
        gathered = [_Regather.apply(projection.reshape(-1, hidden), self.slots, self.inverse).split(sizes) for projection in (query, key, value)]
        outputs = []
        for ((count, width), bias), *qkv in zip(self.groups, *gathered):
            q, k, v = (rows.view(count, width, heads, -1).transpose(1, 2) for rows in qkv)
            attended = functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p)
            outputs.append(attended.transpose(1, 2).reshape(count * width, hidden))
        return _Regather.apply(torch.cat(outputs), self.inverse, self.slots).view(*self.shape, hidden)
