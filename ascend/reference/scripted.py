"""A tiny GLM-5 checkpoint with *known* behaviour: constructed weights, not trained ones.

Random tiny checkpoints test numerics; they cannot test behaviour (thinking, tool calls), because
their output is noise. This checkpoint is built by hand so that, through the real architecture
(MLA + DSA indexer + MoE with sigmoid routing, as converted and served by this toolkit), greedy
decoding follows a small script:

- thinking on (prompt ends ``<think>``):  ``<reasoning></think><answer><eos>``;
- thinking off (prompt ends ``</think>``): ``<answer><eos>``;
- tools offered, ``get_weather`` among them: ``<tool_call>get_weather<arg_key>city</arg_key>
  <arg_value>Paris</arg_value></tool_call><|observation|>`` (GLM-4.7/5 grammar);
- tools offered without it: ``<tool_call>get_time</tool_call><|observation|>``;
- after a tool result (``<|observation|>`` in the prompt): a short answer about the result.

Every step of that computation runs through a part of the model that a wrong conversion breaks,
so a conversion bug makes the smoke checks fail instead of passing by accident.

Construction (hidden size h = 160; all norms weight 1; ``s`` = the RMSNorm scale, fixed because
every position's residual has the same number of unit-valued active coordinates):

Residual coordinates: ``const`` (1 for every token), ``other`` (1 for tokens the script never
reads), one ``tok[u]`` per token the script reads, four flag *pairs* ``on[f]`` / ``off[f]``
(``off`` starts at 1, attention moves it to ``on``), four category coordinates ``cat[c]`` and
one ``out[v]`` per token the script writes.

1. Embedding: ``const + tok[u] (or other) + sum_f off[f]``.
2. Layer 0 attention (MLA, 4 heads = 4 flags): flag ``f`` is "a marker token of kind f occurs in
   the context": ``conv`` (``[gMASK]``, every conversation), ``tools`` (a token only the tools
   section of the template emits), ``weather`` (a token only ``get_weather``'s schema emits),
   ``obs`` (``<|observation|>``, a tool result). ``kv_a`` maps marker tokens to latent
   coordinate f, ``kv_b`` gives head f a key and a value there, ``q_a``/``q_b`` give head f a
   constant query on its own nope coordinate f (heads are not interchangeable, so a wrong head
   split of ``q_b``/``kv_b``/``o_proj`` loses or permutes the flags), so head f's softmax puts weight ~1 on a marker of kind f when one is visible
   (score ~25 against 0) and its value (through ``o_proj``) moves 1 from ``off[f]`` to ``on[f]``.
   The DSA indexer must *select* those keys (``index_topk`` is 4): its keys are marker
   coordinates after ``k_norm``, its query is constant with priorities obs > tools > conv >
   weather, so the four kinds fit in four slots.
3. Layer 0 dense MLP: the category (answer, call_weather, call_time, after_tool) as an AND of
   flag pairs: one SwiGLU unit per category, gate ``16 * (sum of its conditions - (k - 0.5) const)``
   (+0.5 margin when all k hold, <= -0.5 otherwise; SiLU of +-40 is a clean switch), up = const,
   down writes ~1 into ``cat[c]``.
4. Layer 1 MoE: the script table ``(category, current token) -> next token``. Each transition is
   one SwiGLU unit ``tok[u] AND cat[c] AND on[conv]`` writing ``out[v]``, placed in routed expert
   ``e(u)``. The router scores e(u) at sigmoid(+9.5) and every other expert at sigmoid(-9.5) for
   token u, so e(u) gets the whole routing weight (2.5) and a lost, swapped or mis-split expert
   loses the transition. Transitions shared by every category (``<think>`` -> reasoning ->
   ``</think>``) live in the shared expert.
5. lm_head: ``out[v]`` -> logit of v, and a constant logit (about half a script logit) for a
   *fallback* token. Whenever a transition is lost or only weakly routed the fallback wins, so a
   broken conversion shows up as ``???`` instead of quietly still winning an argmax against zeros.
   Layer 2 and the MTP layer are zero (identity residual).

All weight values have at most four significant bits and FP8 blocks use power-of-two scales
(``ue8m0``), so the FP8 source dequantizes exactly; W8A8 (per-channel int8) changes each weight by
< 0.4 %, far inside the 0.5 margins. Script tokens are chosen (a tokenization search over the
byte-level vocabulary) so that within one category no token repeats: the next token is then a
function of (category, current token) alone.

This is a *known-behaviour* model keyed to the conversations it is designed against (the smoke
suite's, passed in by the caller): which markers mean "tools" and "weather" is derived by
rendering those conversations through the checkpoint's own chat template and tokenizer; every
conversation is checked to land in its category, and the finished checkpoint is run greedily on
one conversation per category (``check_scripted``) before it is accepted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

FAMILY = "glm_moe_dsa"
FLAGS = ("conv", "tools", "weather", "obs")  # layer-0 head f detects flag f
PRIORITY = {"obs": 4, "tools": 3, "conv": 2, "weather": 1}  # indexer preference (top-4 slots)
CATEGORIES = ("answer", "call_weather", "call_time", "after_tool")
# category -> [(flag, on?)]: all must hold
CONDITIONS: dict[str, list[tuple[str, bool]]] = {
    "answer": [("obs", False), ("tools", False)],
    "call_weather": [("obs", False), ("tools", True), ("weather", True)],
    "call_time": [("obs", False), ("tools", True), ("weather", False)],
    "after_tool": [("obs", True)],
}
WEATHER_TOOL_NAME, TIME_TOOL_NAME = "get_weather", "get_time"

# Texts the model says; the first candidate that tokenizes without repeats is used.
REASONING_TEXTS = ["The user said hello", "Just say hello", "Easy question"]
ANSWER_TEXTS = ["Hello to you and your world!", "Hello there, my friend!", "Hello, dear user!"]
AFTER_TOOL_TEXTS = ["It is warm in Paris!", "Result: 18 celsius", "Paris has 18 celsius now"]

# Weight constants (each has <= 4 significant bits: exact in FP8 e4m3 with power-of-two scales).
GATE = 16.0  # SwiGLU gate weight per condition
ATTN_QK = 1.5  # q_b and kv_b key entries: score ~25 for a marker
ATTN_O = 0.125  # o_proj: value 8 (normed latent) * 0.125 = 1 flag unit
CAT_DOWN = 1.25 * 2**-8  # dense down_proj: category coordinate ~1.04
OUT_DOWN = 2**-6  # routed expert down_proj into out[v] (x routing weight 2.5)
SHARED_DOWN = 2**-5  # shared expert down_proj into out[v] (not routed)
ROUTER = 2.0  # router weight on tok[u] for its expert
HEAD = 4.0  # lm_head weight on out[v]
DEFAULT_LOGIT = 16.0  # lm_head weight on const for the fallback token: beats a weakened script


class ScriptError(RuntimeError):
    """The design cannot be built for this tokenizer/template (message says what is missing)."""


# ------------------------------------------------------------------------------------ design


@dataclass
class Conversation:
    """A request the model is designed for: rendered through the checkpoint's chat template.

    ``expect``: ``answer`` | ``call_weather`` | ``call_time`` | ``after_tool``.
    """

    name: str
    messages: list[dict[str, Any]]
    expect: str
    tools: list[dict[str, Any]] | None = None
    thinking: bool = False


@dataclass
class Design:
    """Which tokens are markers and what the model says per category (token ids)."""

    markers: dict[str, set[int]]
    reasoning: list[int]  # between <think> and </think>
    bodies: dict[str, list[int]]  # category -> tokens after </think>, ending with its eos
    think: int
    end_think: int
    assistant: int
    fallback: int  # what the model says when its script is broken (a plain visible token)
    shared: dict[int, int] = field(default_factory=dict)  # current -> next, every category
    routed: dict[str, dict[int, int]] = field(default_factory=dict)  # category -> current -> next

    def __post_init__(self) -> None:
        chain = [self.assistant, self.think, *self.reasoning, self.end_think]
        self.shared = {u: v for u, v in zip(chain, chain[1:])}
        self.routed = {}
        for cat, body in self.bodies.items():
            seq = [self.end_think, *body]
            self.routed[cat] = {u: v for u, v in zip(seq, seq[1:])}

    def inputs(self) -> list[int]:
        """Tokens the model reads (its tok[u] coordinates), in a stable order."""
        seen: dict[int, None] = {}
        for t in [*self.shared, *(u for table in self.routed.values() for u in table)]:
            seen.setdefault(t, None)
        for f in FLAGS:
            for t in sorted(self.markers[f]):
                seen.setdefault(t, None)
        return list(seen)

    def outputs(self) -> list[int]:
        seen: dict[int, None] = {}
        for t in [*self.shared.values(), *(v for table in self.routed.values() for v in table.values())]:
            seen.setdefault(t, None)
        return list(seen)

    def category(self, prompt_ids: Sequence[int]) -> str:
        """The category the model will compute for a prompt (the flags are marker presence)."""
        present = set(prompt_ids)
        flags = {f: bool(self.markers[f] & present) for f in FLAGS}
        if not flags["conv"]:
            return "none"
        for cat in CATEGORIES:
            if all(flags[f] == on for f, on in CONDITIONS[cat]):
                return cat
        return "none"

    def expected_output(self, prompt_ids: Sequence[int]) -> list[int]:
        """The token ids greedy decoding produces after ``prompt_ids`` (the script)."""
        cat = self.category(prompt_ids)
        out, cur = [], prompt_ids[-1]
        for _ in range(64):
            nxt = self.shared.get(cur) if cur in self.shared else self.routed.get(cat, {}).get(cur)
            if nxt is None:
                break
            out.append(nxt)
            cur = nxt
        return out


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable-char map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def segment(text: str, vocab: dict[str, int], banned: set[int]) -> list[int] | None:
    """Token ids spelling ``text`` (byte-level) with no id repeated and none in ``banned``.

    Depth-first, longest token first; texts are a few words so this is instant.
    """
    table = bytes_to_unicode()
    s = "".join(table[b] for b in text.encode("utf-8"))
    longest = max(len(k) for k in vocab)

    def walk(i: int, used: set[int]) -> list[int] | None:
        if i == len(s):
            return []
        for j in range(min(len(s), i + longest), i, -1):
            tid = vocab.get(s[i:j])
            if tid is None or tid in used or tid in banned:
                continue
            rest = walk(j, used | {tid})
            if rest is not None:
                return [tid, *rest]
        return None

    return walk(0, set())


def _pick(texts: Sequence[str], vocab: dict[str, int], banned: set[int], decode: Callable[[list[int]], str]) -> list[int]:
    for text in texts:
        ids = segment(text, vocab, banned)
        if ids is not None and decode(ids) == text:
            return ids
    raise ScriptError(f"none of {list(texts)} can be spelled with distinct tokens of this vocabulary")


def design(
    tokenizer: Any,
    render: Callable[[Conversation], str],
    conversations: Sequence[Conversation],
    specials: dict[str, int],
) -> Design:
    """Derive markers from how ``conversations`` render, then choose the script tokens.

    ``tokenizer``: a ``tokenizers.Tokenizer``; ``render(conv)`` -> prompt text; ``specials``:
    GLM special token -> id (``ascend.models.tiny.special_tokens``).
    """
    enc = {c.name: tokenizer.encode(render(c), add_special_tokens=False).ids for c in conversations}
    by = {cat: [enc[c.name] for c in conversations if c.expect == cat] for cat in CATEGORIES}
    if not by["call_weather"] or not by["call_time"] or not by["answer"]:
        raise ScriptError("the design needs answer, call_weather and call_time conversations")
    with_tools = [enc[c.name] for c in conversations if c.tools]
    without_tools = [enc[c.name] for c in conversations if not c.tools]
    obs = specials["<|observation|>"]
    script_specials = {specials[t] for t in ("<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>",
                                             "</arg_key>", "<arg_value>", "</arg_value>", "<|user|>", "<|assistant|>")}

    def in_all(groups: list[list[int]]) -> set[int]:
        sets = [set(g) for g in groups]
        return set.intersection(*sets) if sets else set()

    def in_any(groups: list[list[int]]) -> set[int]:
        return set().union(*map(set, groups)) if groups else set()

    every = list(enc.values())
    conv = sorted(t for t in in_all(every) if all(Counter(g)[t] == 1 for g in every) and t not in script_specials)
    if not conv:
        raise ScriptError("no token occurs exactly once in every conversation (expected [gMASK])")
    # Prefer a special token (the template's conversation start) for the conversation marker.
    special_ids = set(specials.values())
    conv_marker = next((t for t in conv if t in special_ids), conv[0])
    tools = in_all(with_tools) - in_any(without_tools) - script_specials - {obs, conv_marker}
    tools_once = [t for t in tools if all(Counter(g)[t] == 1 for g in with_tools)]
    if not tools_once:
        raise ScriptError("no token marks the tools section exactly once in every tools conversation")
    # Prefer plain text of the tools header over a special token (a system message would be one),
    # and the most specific (longest) text.
    tools_marker = min(tools_once, key=lambda t: (t in special_ids, -len(tokenizer.decode([t])), t))
    weather = in_all(by["call_weather"]) - in_any(by["call_time"]) - script_specials - {obs, conv_marker, tools_marker}
    named = {t for t in weather if len(tokenizer.decode([t]).strip()) >= 4 and tokenizer.decode([t]).strip() in WEATHER_TOOL_NAME}
    weather = named or weather  # prefer pieces of the tool's name
    if not weather:
        raise ScriptError(f"no token tells {WEATHER_TOOL_NAME}'s schema apart from {TIME_TOOL_NAME}'s")
    markers = {"conv": {conv_marker}, "tools": {tools_marker}, "weather": weather, "obs": {obs}}
    if any(obs in g for g in (*by["answer"], *by["call_weather"], *by["call_time"])):
        raise ScriptError("<|observation|> occurs in a conversation without a tool result")

    vocab = tokenizer.get_vocab()
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    # Never say a marker that would change the category: conv/tools/obs markers anywhere,
    # weather markers where only the weather flag decides (reasoning, the get_time call).
    banned = markers["conv"] | markers["tools"] | markers["obs"] | special_ids
    reasoning = _pick(REASONING_TEXTS, vocab, banned | weather, decode)
    banned_bodies = banned | set(reasoning)
    answer = _pick(ANSWER_TEXTS, vocab, banned_bodies, decode)
    after = _pick(AFTER_TOOL_TEXTS, vocab, banned_bodies, decode)
    # The words of one tool call must not share tokens either: spell them one after another.
    parts: dict[str, list[int]] = {}
    taken: set[int] = set()
    for text in (WEATHER_TOOL_NAME, "city", "Paris"):
        parts[text] = _pick([text], vocab, banned_bodies | taken, decode)
        taken |= set(parts[text])
    parts[TIME_TOOL_NAME] = _pick([TIME_TOOL_NAME], vocab, banned_bodies | weather, decode)
    sp = specials
    call_weather = [sp["<tool_call>"], *parts[WEATHER_TOOL_NAME], sp["<arg_key>"], *parts["city"], sp["</arg_key>"],
                    sp["<arg_value>"], *parts["Paris"], sp["</arg_value>"], sp["</tool_call>"], obs]
    bodies = {
        "answer": [*answer, sp["<|user|>"]],
        "call_weather": call_weather,
        "call_time": [sp["<tool_call>"], *parts[TIME_TOOL_NAME], sp["</tool_call>"], obs],
        "after_tool": [*after, sp["<|user|>"]],
    }
    used = set().union(*bodies.values(), reasoning, *markers.values(), special_ids)
    fallback = next((vocab[t] for t in ("?", "!", "#") if t in vocab and vocab[t] not in used), None)
    if fallback is None:
        fallback = min(i for i in vocab.values() if i not in used)
    d = Design(markers, reasoning, bodies, think=sp["<think>"], end_think=sp["</think>"], assistant=sp["<|assistant|>"],
               fallback=fallback)
    for c in conversations:
        got = d.category(enc[c.name])
        if got != c.expect:
            raise ScriptError(f"conversation {c.name!r} would be handled as {got!r}, not {c.expect!r}")
    return d


# ------------------------------------------------------------------------------------ weights


@dataclass
class Layout:
    """Residual coordinates (see the module docstring)."""

    hidden: int
    tok: dict[int, int]
    out: dict[int, int]
    const: int = 0
    other: int = 1

    @staticmethod
    def on(f: str) -> int:
        return 2 + 2 * FLAGS.index(f)

    @staticmethod
    def off(f: str) -> int:
        return 3 + 2 * FLAGS.index(f)

    @staticmethod
    def cat(c: str) -> int:
        return 2 + 2 * len(FLAGS) + CATEGORIES.index(c)

    @classmethod
    def for_design(cls, d: Design, hidden: int) -> "Layout":
        first = 2 + 2 * len(FLAGS) + len(CATEGORIES)
        ins, outs = d.inputs(), d.outputs()
        need = first + len(ins) + len(outs)
        if need > hidden:
            raise ScriptError(f"the script needs {need} residual coordinates, hidden_size is {hidden}")
        tok = {t: first + i for i, t in enumerate(ins)}
        out = {t: first + len(ins) + i for i, t in enumerate(outs)}
        return cls(hidden, tok, out)


def scripted_tensors(args: Any, d: Design) -> dict[str, torch.Tensor]:
    """The designed float32 tensors by name (everything not listed is zero, norms one).

    ``args``: ``ascend.models.ModelArgs`` of a glm_moe_dsa checkpoint with >= 2 layers, a dense
    layer 0 and MoE layer 1, >= 4 attention heads, >= 1 shared expert.
    """
    a = args
    if a.family != FAMILY or not a.has_indexer:
        raise ScriptError(f"scripted checkpoints are built for {FAMILY}, not {a.family}")
    if a.num_hidden_layers < 2 or a.is_moe_layer(0) or not a.is_moe_layer(1) or a.num_attention_heads < len(FLAGS):
        raise ScriptError("need layer 0 dense, layer 1 MoE and >= 4 attention heads")
    h, L = a.hidden_size, Layout.for_design(d, a.hidden_size)
    dn, dr, dv, qr, kvr = a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim, a.q_lora_rank, a.kv_lora_rank
    T: dict[str, torch.Tensor] = {}
    z = lambda *shape: torch.zeros(*shape)  # noqa: E731

    # 1. embedding
    emb = z(a.vocab_size, h)
    emb[:, L.const] = 1.0
    emb[:, L.other] = 1.0
    for f in FLAGS:
        emb[:, L.off(f)] = 1.0
    for t, dim in L.tok.items():
        emb[t, L.other] = 0.0
        emb[t, dim] = 1.0
    T["model.embed_tokens.weight"] = emb

    # 2. layer 0 attention: head f detects flag f
    p = "model.layers.0.self_attn"
    q_a, q_b = z(qr, h), z(a.num_attention_heads * (dn + dr), qr)
    kv_a, kv_b = z(kvr + dr, h), z(a.num_attention_heads * (dn + dv), kvr)
    o = z(h, a.num_attention_heads * dv)
    q_a[0, L.const] = 1.0
    for j, f in enumerate(FLAGS):
        # query and key of head j on nope coordinate j: heads are not interchangeable, so a
        # wrong head split of q_b / kv_b / o_proj loses or permutes the flags
        q_b[j * (dn + dr) + j, 0] = ATTN_QK
        for t in d.markers[f]:
            kv_a[j, L.tok[t]] = 1.0
        kv_b[j * (dn + dv) + j, j] = ATTN_QK  # key
        kv_b[j * (dn + dv) + dn + j, j] = 1.0  # value
        o[L.on(f), j * dv + j] = ATTN_O
        o[L.off(f), j * dv + j] = -ATTN_O
    T.update({f"{p}.q_a_proj.weight": q_a, f"{p}.q_b_proj.weight": q_b, f"{p}.kv_a_proj_with_mqa.weight": kv_a,
              f"{p}.kv_b_proj.weight": kv_b, f"{p}.o_proj.weight": o})
    # DSA indexer: select marker keys, by priority
    D, HI = a.index_head_dim, a.index_n_heads
    wq, wk, wp = z(HI * D, qr), z(D, h), z(HI, h)
    for j, f in enumerate(FLAGS):
        wq[dr + j, 0] = 0.125 * PRIORITY[f]
        for t in d.markers[f]:
            wk[dr + j, L.tok[t]] = 1.0
    wp[0, L.const] = 1.0
    T.update({f"{p}.indexer.wq_b.weight": wq, f"{p}.indexer.wk.weight": wk, f"{p}.indexer.weights_proj.weight": wp})

    # 3. layer 0 dense MLP: categories
    I = a.intermediate_size
    gate, up, down = z(I, h), z(I, h), z(h, I)
    for u, cat in enumerate(CATEGORIES):
        conds = CONDITIONS[cat]
        for f, on in conds:
            gate[u, L.on(f) if on else L.off(f)] = GATE
        gate[u, L.const] = -GATE * (len(conds) - 0.5)
        up[u, L.const] = 1.0
        down[L.cat(cat), u] = CAT_DOWN
    T.update({"model.layers.0.mlp.gate_proj.weight": gate, "model.layers.0.mlp.up_proj.weight": up,
              "model.layers.0.mlp.down_proj.weight": down})

    # 4. layer 1 MoE: routed transitions by current token's expert, shared ones in the shared expert
    E, I_e = a.n_routed_experts, a.moe_intermediate_size
    p = "model.layers.1.mlp"
    router = z(E, h)
    bias = -torch.arange(E, dtype=torch.float32) / 64  # deterministic order among unselected experts
    experts = {e: (z(I_e, h), z(I_e, h), z(h, I_e)) for e in range(E)}
    used = Counter()
    routed_inputs = list(dict.fromkeys(u for table in d.routed.values() for u in table))
    expert_of = {u: i % E for i, u in enumerate(routed_inputs)}
    for cat in CATEGORIES:
        for u, v in d.routed.get(cat, {}).items():
            e = expert_of[u]
            k = used[e]
            if k >= I_e:
                raise ScriptError(f"expert {e} is full ({I_e} units)")
            used[e] += 1
            g, up_e, dn_e = experts[e]
            g[k, L.tok[u]] = GATE
            g[k, L.cat(cat)] = GATE
            g[k, L.on("conv")] = GATE
            g[k, L.const] = -GATE * 2.5
            up_e[k, L.const] = 1.0
            dn_e[L.out[v], k] = OUT_DOWN
    for u, e in expert_of.items():
        router[:, L.tok[u]] = -ROUTER  # every other expert scores ~0 for u: weight ~all on e(u)
        router[e, L.tok[u]] = ROUTER
    T[f"{p}.gate.weight"] = router
    T[f"{p}.gate.e_score_correction_bias"] = bias
    for e, (g, up_e, dn_e) in experts.items():
        T[f"{p}.experts.{e}.gate_proj.weight"] = g
        T[f"{p}.experts.{e}.up_proj.weight"] = up_e
        T[f"{p}.experts.{e}.down_proj.weight"] = dn_e
    I_s = a.moe_intermediate_size * a.n_shared_experts
    g, up_s, dn_s = z(I_s, h), z(I_s, h), z(h, I_s)
    if len(d.shared) > I_s:
        raise ScriptError(f"the shared expert has {I_s} units, the script needs {len(d.shared)}")
    for k, (u, v) in enumerate(d.shared.items()):
        g[k, L.tok[u]] = GATE
        g[k, L.on("conv")] = GATE
        g[k, L.const] = -GATE * 1.5
        up_s[k, L.const] = 1.0
        dn_s[L.out[v], k] = SHARED_DOWN
    T.update({f"{p}.shared_experts.gate_proj.weight": g, f"{p}.shared_experts.up_proj.weight": up_s,
              f"{p}.shared_experts.down_proj.weight": dn_s})
    # deeper MoE layers: zero experts, same deterministic router bias
    for layer in range(2, a.num_hidden_layers):
        if a.is_moe_layer(layer):
            T[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"] = bias.clone()

    # 5. head
    head = z(a.vocab_size, h)
    for v, dim in L.out.items():
        head[v, dim] = HEAD
    # A fallback token with a constant logit of about half a script logit: when a transition is
    # lost or only weakly routed (a swapped or dropped expert, a broken router), the model says
    # this token instead of quietly still winning the argmax with a tiny output.
    head[d.fallback, L.const] = DEFAULT_LOGIT
    T["lm_head.weight"] = head
    return T


def full_tensors(args: Any, designed: dict[str, torch.Tensor], *, mtp: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint (per ``tensor_specs``) as float32: designed ones, norms
    (``*norm.weight``) one, the rest zero. FP8 scale tensors are not included."""
    from ascend.models.tensors import tensor_specs

    out: dict[str, torch.Tensor] = {}
    for spec in tensor_specs(args, mtp=mtp):
        if spec.scale_of is not None:
            continue
        shape = tuple(spec.weight_shape or spec.shape)
        if spec.name in designed:
            t = designed[spec.name]
            if tuple(t.shape) != shape:
                raise ScriptError(f"{spec.name}: built {tuple(t.shape)}, checkpoint needs {shape}")
        elif spec.component == "norm" and spec.name.endswith("weight"):
            t = torch.ones(shape)
        else:
            t = torch.zeros(shape)
        out[spec.name] = t
    return out


def encode_tensors(args: Any, tensors: dict[str, torch.Tensor], *, fp8: bool, mtp: bool = True) -> dict[str, torch.Tensor]:
    """Cast to the checkpoint's stored dtypes: FP8 block weights (power-of-two scales, exact for
    the designed values) + ``weight_scale_inv``, BF16 or float32 for the rest."""
    from ascend.checkpoint.fp8 import dequantize_fp8_block, quantize_fp8_block
    from ascend.models.tensors import tensor_specs

    dtypes = {"bf16": torch.bfloat16, "f32": torch.float32, "fp32": torch.float32, "f8_e4m3": torch.float8_e4m3fn}
    stored: dict[str, torch.Tensor] = {}
    for spec in tensor_specs(args, mtp=mtp):
        if spec.scale_of is not None:
            continue
        t = tensors[spec.name]
        if spec.dtype == "f8_e4m3":
            if not fp8:
                raise ScriptError(f"{spec.name} is FP8 in the specs of a non-FP8 config")
            q, scale = quantize_fp8_block(t, scale_fmt="ue8m0")
            if not torch.equal(dequantize_fp8_block(q, scale), t):
                raise ScriptError(f"{spec.name}: designed values are not exact in FP8 (a constant has too many bits)")
            stored[spec.name], stored[f"{spec.name}_scale_inv"] = q, scale
        else:
            dtype = dtypes.get(spec.dtype, torch.bfloat16)
            cast = t.to(dtype)
            if dtype == torch.bfloat16 and spec.name in ("lm_head.weight", "model.embed_tokens.weight") and not torch.equal(cast.float(), t):
                raise ScriptError(f"{spec.name}: designed values are not exact in BF16")
            stored[spec.name] = cast.contiguous()
    return stored


# ------------------------------------------------------------------------------ checkpoint I/O


def default_conversations() -> list[Conversation]:
    """A minimal set of conversations (the CLI passes the smoke suite's own, see ascend.smoke)."""
    weather = {"type": "function", "function": {"name": WEATHER_TOOL_NAME, "description": "Get the current weather for a city.",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    clock = {"type": "function", "function": {"name": TIME_TOOL_NAME, "description": "Get the server's current time.",
             "parameters": {"type": "object", "properties": {}}}}
    ask = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    return [
        Conversation("plain", [{"role": "user", "content": "Say hello."}], "answer"),
        Conversation("plain-thinking", [{"role": "user", "content": "Say hello."}], "answer", thinking=True),
        Conversation("weather", ask, "call_weather", tools=[weather]),
        Conversation("clock", [{"role": "user", "content": "What time is it? Use the tool."}], "call_time", tools=[clock]),
        Conversation("after-tool", [*ask, {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": WEATHER_TOOL_NAME, "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": '{"temperature_c": 18}'}], "after_tool", tools=[weather]),
    ]


def load_design(model_dir: str | Path, conversations: Sequence[Conversation] | None = None) -> tuple[Design, Callable[[Conversation], str], Any]:
    """Design for a checkpoint dir holding a GLM tokenizer + chat template (``ascend tiny``'s)."""
    from tokenizers import Tokenizer

    from ascend.chat.template import ChatTemplate
    from ascend.models.tiny import special_tokens

    model_dir = Path(model_dir)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    template = ChatTemplate.from_model_dir(model_dir)

    def render(c: Conversation) -> str:
        return template.render(c.messages, tools=c.tools, enable_thinking=c.thinking)

    d = design(tokenizer, render, list(conversations or default_conversations()), special_tokens(FAMILY))
    return d, render, tokenizer


def write_scripted_checkpoint(
    out_dir: str | Path,
    family: str = FAMILY,
    *,
    fp8: bool = True,
    seed: int = 0,
    layers: int | None = None,
    experts: int | None = None,
    mtp: bool = True,
    conversations: Sequence[Conversation] | None = None,
    check: bool = True,
) -> Path:
    """Write the scripted checkpoint: ``ascend tiny``'s config, tokenizer and chat template, with
    the constructed weights in place of the random ones (same files, same tensor names).

    ``check`` runs the finished checkpoint (reference model, greedy) on every conversation and
    raises ScriptError unless each produces its script.
    """
    from ascend.models.args import load_model_args
    from ascend.reference.tiny import write_tiny_checkpoint

    if family != FAMILY:
        raise ScriptError(f"scripted checkpoints exist for {FAMILY} only, not {family}")
    out = Path(write_tiny_checkpoint(out_dir, family, fp8=fp8, seed=seed, layers=layers, experts=experts, mtp=mtp) or out_dir)
    conversations = list(conversations or default_conversations())
    d, render, tokenizer = load_design(out, conversations)
    args = load_model_args(out)
    stored = encode_tensors(args, full_tensors(args, scripted_tensors(args, d), mtp=mtp), fp8=fp8, mtp=mtp)
    replace_weights(out, stored)
    if fp8:  # the block scales written here are powers of two: say so, as DeepSeek-V3.1+ configs do
        cfg_path = out / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["quantization_config"]["scale_fmt"] = "ue8m0"
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "ascend-scripted.json").write_text(json.dumps(describe(d, tokenizer), indent=2) + "\n")
    if check:  # one conversation per category (thinking on where there is one) keeps this short
        seen: dict[str, Conversation] = {}
        for c in sorted(conversations, key=lambda c: not c.thinking):
            seen.setdefault(c.expect, c)
        check_scripted(out, d, [(c.name, tokenizer.encode(render(c), add_special_tokens=False).ids) for c in seen.values()])
    return out


def replace_weights(model_dir: Path, stored: dict[str, torch.Tensor]) -> None:
    """Rewrite every safetensors file of ``model_dir`` with ``stored`` (same names per file)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    else:
        weight_map = {}
        for f in sorted(model_dir.glob("*.safetensors")):
            with safe_open(str(f), "pt") as h:
                weight_map.update({k: f.name for k in h.keys()})
    missing = set(weight_map) ^ set(stored)
    if missing:
        raise ScriptError(f"tensor names differ from the tiny checkpoint's: {sorted(missing)[:4]}")
    files: dict[str, dict[str, torch.Tensor]] = {}
    for name, file in weight_map.items():
        files.setdefault(file, {})[name] = stored[name]
    for file, tensors in files.items():
        path = model_dir / file
        tmp = path.with_name(path.name + ".partial")
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        tmp.replace(path)


def describe(d: Design, tokenizer: Any) -> dict[str, Any]:
    """A readable record of the design (written as ``ascend-scripted.json`` next to the weights)."""
    dec = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False)  # noqa: E731
    return {
        "family": FAMILY,
        "markers": {f: [dec([t]) for t in sorted(ts)] for f, ts in d.markers.items()},
        "reasoning": dec(d.reasoning),
        "scripts": {cat: dec(body) for cat, body in d.bodies.items()},
        "note": "constructed weights; see ascend/reference/scripted.py",
    }


def greedy(model: Any, prompt: list[int], max_new: int, eos: set[int]) -> list[int]:
    """Greedy continuation of ``prompt`` with a single-process ``ReferenceModel`` (KV cache)."""
    from ascend.reference.model import Sequence as Seq

    seq = Seq()
    out: list[int] = []
    toks = list(prompt)
    with torch.no_grad():
        for _ in range(max_new):
            hidden = model.forward([seq], [toks])
            nxt = int(model.logits(hidden[-1:])[0].argmax())
            out.append(nxt)
            if nxt in eos:
                break
            toks = [nxt]
    return out


def check_scripted(model_dir: str | Path, d: Design, prompts: Sequence[tuple[str, list[int]]]) -> None:
    """Run every prompt; raise ScriptError naming the first whose output is not its script."""
    from ascend.reference.model import ReferenceModel

    model = ReferenceModel(model_dir, mtp=False)
    eos = {d.bodies[c][-1] for c in d.bodies}
    for name, ids in prompts:
        want = d.expected_output(ids)
        got = greedy(model, ids, len(want) + 2, eos)
        if got != want:
            raise ScriptError(f"{model_dir}: conversation {name!r} produced {got}, the script says {want}")


__all__ = [
    "CATEGORIES", "Conversation", "Design", "ScriptError", "check_scripted", "default_conversations", "design",
    "encode_tensors", "full_tensors", "greedy", "load_design", "scripted_tensors", "segment", "write_scripted_checkpoint",
]
