"""Chat templates from a checkpoint's tokenizer_config.json, rendered in a sandboxed Jinja env.

Follows what transformers does (``apply_chat_template``): ``trim_blocks``/``lstrip_blocks``, the
``tojson`` filter with ``ensure_ascii=False``, ``raise_exception`` and ``strftime_now`` globals,
special tokens (``bos_token``, ``eos_token``, …) as variables. The environment is Jinja's
``ImmutableSandboxedEnvironment``: a template shipped with a downloaded model cannot reach
Python internals.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ascend.errors import CheckpointError


class TemplateError(ValueError):
    """The template raised (``raise_exception``) or the messages do not fit it: a client error."""


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # {"content": "<s>", "__type": "AddedToken", ...}
        return value.get("content")
    return value


class ChatTemplate:
    """A compiled chat template plus the special-token variables it may reference."""

    def __init__(self, source: str, special_tokens: dict[str, str | None] | None = None):
        try:
            self.template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as err:
            raise CheckpointError(f"chat template: Jinja syntax error at line {err.lineno}: {err.message}") from None
        self.source = source
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> "ChatTemplate":
        """From ``tokenizer_config.json`` (``chat_template``: a string or a list of named templates),
        else ``chat_template.jinja`` / ``chat_template.json`` next to it."""
        model_dir = Path(model_dir)
        config: dict = {}
        cfg_path = model_dir / "tokenizer_config.json"
        if cfg_path.is_file():
            config = json.loads(cfg_path.read_text())
        source = config.get("chat_template")
        if isinstance(source, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
            named = {t.get("name"): t.get("template") for t in source}
            source = named.get("default") or next(iter(named.values()), None)
        if not source and (model_dir / "chat_template.jinja").is_file():
            source = (model_dir / "chat_template.jinja").read_text()
        if not source and (model_dir / "chat_template.json").is_file():
            source = json.loads((model_dir / "chat_template.json").read_text()).get("chat_template")
        if not source:
            raise CheckpointError(
                f"{model_dir}: no chat template (tokenizer_config.json has no chat_template, no chat_template.jinja)",
                fix="copy the tokenizer files and chat template from the source checkpoint",
            )
        tokens = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        return cls(source, tokens)

    def render(
        self,
        messages: list[dict],
        *,
        tools: list[dict] | None = None,
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> str:
        """The prompt text. ``kwargs`` are ``chat_template_kwargs`` (e.g. ``enable_thinking``)."""
        context = dict(self.special_tokens)
        context.update(kwargs)
        context.update(messages=[normalize_message(m) for m in messages], tools=tools or None,
                       add_generation_prompt=add_generation_prompt)
        try:
            return self.template.render(**context)
        except TemplateError:
            raise
        except jinja2.exceptions.SecurityError as err:
            raise TemplateError(f"chat template refused: {err}") from None
        except (jinja2.TemplateError, TypeError, KeyError, AttributeError) as err:
            raise TemplateError(f"messages do not fit the chat template: {err}") from None


def normalize_message(message: dict) -> dict:
    """OpenAI message → what model templates expect: text parts joined with newlines (as xLLM
    does), tool-call ``arguments`` decoded from their JSON string into a dict."""
    msg = dict(message)
    content = msg.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise TemplateError("only text content parts are supported by this (LLM) backend")
            texts.append(str(part.get("text", "")))
        msg["content"] = "\n".join(texts)
    calls = msg.get("tool_calls")
    if calls:
        fixed = []
        for call in calls:
            call = dict(call)
            fn = dict(call.get("function") or {})
            args = fn.get("arguments")
            if isinstance(args, str):
                try:
                    fn["arguments"] = json.loads(args) if args.strip() else {}
                except json.JSONDecodeError:
                    raise TemplateError(f"tool call {fn.get('name')!r}: arguments are not valid JSON") from None
            call["function"] = fn
            fixed.append(call)
        msg["tool_calls"] = fixed
    return msg
