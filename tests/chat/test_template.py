"""Chat-template rendering, checked against transformers' ``apply_chat_template`` (independent oracle)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ascend.chat import ChatTemplate, TemplateError
from ascend.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from engine_fixtures import GLM_TEMPLATE, write_model_dir  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CONVERSATIONS = [
    ([{"role": "user", "content": "Hi"}], None, {}),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], None, {"enable_thinking": False}),
    ([{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
          "name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], TOOLS, {"enable_thinking": True}),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("tpl") / "m")


@pytest.mark.parametrize("messages,tools,kwargs", CONVERSATIONS)
def test_matches_transformers(model_dir, messages, tools, kwargs):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), chat_template=GLM_TEMPLATE)
    expected = hf.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True, **kwargs)
    ours = ChatTemplate.from_model_dir(model_dir).render(messages, tools=tools, **kwargs)
    assert ours == expected


def test_thinking_switch_and_openai_arguments(model_dir):
    tpl = ChatTemplate.from_model_dir(model_dir)
    on = tpl.render([{"role": "user", "content": "Hi"}])
    off = tpl.render([{"role": "user", "content": "Hi"}], enable_thinking=False)
    assert on.endswith("<|assistant|><think>") and off.endswith("<|assistant|></think>")
    # OpenAI clients send arguments as a JSON string; templates iterate a dict.
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": "Oslo", "days": 2})}}]}]
    text = tpl.render(msgs, tools=TOOLS)
    assert "<|user|>a\nb" in text
    assert "<arg_key>city</arg_key><arg_value>Oslo</arg_value><arg_key>days</arg_key><arg_value>2</arg_value>" in text


def test_sandbox_and_template_errors(tmp_path):
    evil = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError):
        evil.render([{"role": "user", "content": "x"}])
    strict = ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok")
    with pytest.raises(TemplateError, match="first must be user"):
        strict.render([{"role": "system", "content": "x"}])
    with pytest.raises(TemplateError, match="not valid JSON"):
        strict.render([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": "{broken"}}]}])
    with pytest.raises(TemplateError, match="text content parts"):
        strict.render([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    with pytest.raises(CheckpointError, match="syntax error"):
        ChatTemplate("{% if %}")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no chat template"):
        ChatTemplate.from_model_dir(tmp_path)


def test_named_templates_and_jinja_file(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "{{ bos_token }}DEFAULT"}],
        "bos_token": {"content": "<s>", "__type": "AddedToken"}}))
    assert ChatTemplate.from_model_dir(tmp_path).render([]) == "<s>DEFAULT"
    other = tmp_path / "b"
    other.mkdir()
    (other / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert ChatTemplate.from_model_dir(other).render([{"role": "user", "content": "z"}]) == "z"
