"""The scripted checkpoint's design: the markers, categories and output scripts chosen from
the real tiny tokenizer and chat template (see ``ascend.tiny.scripted`` for the whole
construction)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

# A request the model is designed for, rendered through the checkpoint's chat template. The smoke
# suite owns the type (and its requests): this fixture is built to answer the suite, not the reverse.
from ascend.smoke.probes import TIME_TOOL, WEATHER_TOOL, Conversation

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
WEATHER_TOOL_NAME, TIME_TOOL_NAME = WEATHER_TOOL["function"]["name"], TIME_TOOL["function"]["name"]

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
    GLM special token -> id (``ascend.tiny.configs.special_tokens``).
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
