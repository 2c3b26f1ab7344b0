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
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ascend.fileio import atomic_path, write_json
from ascend.tiny.scripted_design import (  # FAMILY and the tool names: public surface
    CATEGORIES,
    FAMILY,
    TIME_TOOL_NAME,
    WEATHER_TOOL_NAME,
    Conversation,
    Design,
    ScriptError,
    design,
    segment,
)
from ascend.tiny.scripted_weights import encode_tensors, full_tensors, scripted_tensors

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
    from ascend.tiny.configs import special_tokens

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
    from ascend.tiny.writer import write_tiny_checkpoint

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
        write_json(cfg_path, cfg)
    write_json(out / "ascend-scripted.json", describe(d, tokenizer))
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
        with atomic_path(model_dir / file) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})


def describe(d: Design, tokenizer: Any) -> dict[str, Any]:
    """A readable record of the design (written as ``ascend-scripted.json`` next to the weights)."""
    dec = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False)  # noqa: E731
    return {
        "family": FAMILY,
        "markers": {f: [dec([t]) for t in sorted(ts)] for f, ts in d.markers.items()},
        "reasoning": dec(d.reasoning),
        "scripts": {cat: dec(body) for cat, body in d.bodies.items()},
        "note": "constructed weights; see ascend/tiny/scripted.py",
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
