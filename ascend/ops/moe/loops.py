"""Plain per-token / per-expert loop twins of every operator: slow, obviously correct.

Written straight from the operator descriptions (``docs/operators.md``), sharing no code with the
backends, so tests and ``ascend ops check`` can compare any backend against them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gating_topk(logits, k, *, bias=None, n_group=1, topk_group=1, group_select_mode=1, norm_type=1, renorm=0,
                routed_scaling_factor=1.0, eps=1e-20):
    """Token by token: score, pick groups, pick experts by (-score, id), normalize, scale."""
    num_tokens, num_experts = logits.shape
    per_group = num_experts // n_group
    weights = torch.zeros((num_tokens, k), dtype=torch.float32)
    ids = torch.zeros((num_tokens, k), dtype=torch.int32)
    for t in range(num_tokens):
        row = logits[t].float()
        scores = torch.softmax(row, dim=0) if norm_type == 0 else torch.sigmoid(row)
        choice = scores + bias.float() if bias is not None else scores
        values = choice.tolist()
        group_score = []
        for g in range(n_group):
            members = sorted(values[g * per_group:(g + 1) * per_group], reverse=True)
            group_score.append(members[0] if group_select_mode == 0 else
                               float(torch.tensor(members[0]) + torch.tensor(members[1])))
        kept = sorted(range(n_group), key=lambda g: (-group_score[g], g))[:topk_group] if n_group > 1 else [0]
        candidates = [e for e in range(num_experts) if e // per_group in kept]
        chosen = sorted(candidates, key=lambda e: (-values[e], e))[:k]
        w = scores[chosen]
        if norm_type == 1 or renorm == 1:
            w = w / (w.sum() + eps)
        weights[t] = w * routed_scaling_factor
        ids[t] = torch.tensor(chosen, dtype=torch.int32)
    return weights.to(logits.dtype), ids


def init_routing(x, expert_ids, num_experts, *, active_expert_range=None, expert_tokens_num_type=1):
    """Walk experts in order, and within an expert the flat slots i*K+k in order."""
    start, end = active_expert_range or (0, num_experts)
    num_tokens, top_k = expert_ids.shape
    flat = expert_ids.reshape(-1).tolist()
    expanded_x = torch.zeros((num_tokens * top_k, x.shape[1]), dtype=x.dtype)
    row_idx = torch.full((num_tokens * top_k,), -1, dtype=torch.int32)
    counts = torch.zeros(end - start, dtype=torch.int64)
    row = 0
    for e in range(start, end):
        for f, expert in enumerate(flat):
            if expert == e:
                expanded_x[row] = x[f // top_k]
                row_idx[f] = row
                counts[e - start] += 1
                row += 1
    return expanded_x, row_idx, counts if expert_tokens_num_type == 1 else counts.cumsum(0)


def grouped_matmul(x, weight, group_list, group_list_type=1):
    """Row by row: find the row's group, multiply by that group's weight."""
    counts = group_list.tolist() if group_list_type == 1 else torch.diff(group_list, prepend=group_list.new_zeros(1)).tolist()
    y = torch.zeros((x.shape[0], weight.shape[2]), dtype=x.dtype)
    row = 0
    for e, n in enumerate(counts):
        for _ in range(n):
            y[row] = (x[row : row + 1] @ weight[e])[0]
            row += 1
    return y


def token_unpermute(permuted, sorted_indices, probs=None):
    """Token by token, slot by slot."""
    top_k = 1 if probs is None else probs.shape[1]
    num_tokens = sorted_indices.numel() // top_k
    out = torch.zeros((num_tokens, permuted.shape[1]), dtype=permuted.dtype)
    for t in range(num_tokens):
        parts = torch.zeros((top_k, permuted.shape[1]), dtype=permuted.dtype)
        for k in range(top_k):
            j = int(sorted_indices[t * top_k + k])
            if j >= 0:
                p = 1.0 if probs is None else probs[t, k].to(permuted.dtype)
                parts[k] = permuted[j] * p
        out[t] = parts.sum(dim=0)
    return out


def dynamic_quant(x, *, smooth_scales=None):
    """Row by row: amax / 127, divide, round half to even."""
    flat = x.reshape(-1, x.shape[-1]).float()
    q = torch.zeros(flat.shape, dtype=torch.int8)
    scale = torch.zeros(flat.shape[0], dtype=torch.float32)
    for r in range(flat.shape[0]):
        row = flat[r] * smooth_scales.float() if smooth_scales is not None else flat[r]
        scale[r] = row.abs().max() / 127.0
        if scale[r] > 0:
            q[r] = torch.round(row / scale[r]).to(torch.int8)
    return q.view(x.shape), scale.view(x.shape[:-1])


def expert(x, w13_e, w2_e):
    """One SwiGLU expert: x [n, H], w13_e [2I, H], w2_e [H, I] -> [n, H]."""
    gate, up = F.linear(x, w13_e).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, w2_e)


def expert_mlp(x_sorted, tokens_per_expert, w13, w2, group_list_type=1):
    """Row by row through the expert of its group."""
    counts = tokens_per_expert.tolist() if group_list_type == 1 else torch.diff(tokens_per_expert, prepend=tokens_per_expert.new_zeros(1)).tolist()
    out = torch.zeros((x_sorted.shape[0], w2.shape[1]), dtype=x_sorted.dtype)
    row = 0
    for e, n in enumerate(counts):
        for _ in range(n):
            out[row] = expert(x_sorted[row : row + 1], w13[e], w2[e])[0]
            row += 1
    return out


def fused_moe(x, router_logits, w13, w2, *, top_k, bias=None, n_group=1, topk_group=1, routed_scaling_factor=1.0,
              norm_topk_prob=True, scoring_func="sigmoid"):
    """DeepSeek-style: gate, then for each expert add weight * expert(x) into the tokens that chose it."""
    norm_type = 0 if scoring_func == "softmax" else 1
    weights, ids = gating_topk(router_logits.float(), top_k, bias=bias, n_group=n_group, topk_group=topk_group,
                               norm_type=norm_type, renorm=int(norm_topk_prob))
    if norm_type == 1 and not norm_topk_prob:  # raw sigmoid of the chosen experts
        weights = torch.sigmoid(router_logits.float()).gather(1, ids.long())
    weights = weights * routed_scaling_factor
    y = torch.zeros(x.shape, dtype=torch.float32)
    for e in range(w13.shape[0]):
        for t, k in (ids == e).nonzero().tolist():
            y[t] += weights[t, k] * expert(x[t : t + 1], w13[e], w2[e])[0].float()
    return y.to(x.dtype)
