"""Chat templates (Jinja) written for the tiny checkpoints, one per prompt format.

Each renders the public prompt format of its family (thinking on/off, tools, tool calls, tool
results), for ``transformers``' ``apply_chat_template`` and ``ascend.chat.ChatTemplate`` alike
(``trim_blocks`` / ``lstrip_blocks``, ``tojson`` with ``ensure_ascii=False``):

- ``GLM47``: GLM-4.7 / GLM-5 (xLLM parsers ``glm47`` / ``glm5``). ``[gMASK]<sop>``, role tokens
  with no newlines, ``<think>…</think>`` kept only after the last user turn, tool calls as
  ``<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>``, tool results in
  ``<|observation|><tool_response>…</tool_response>``; the generation prompt is
  ``<|assistant|><think>`` (thinking on, the default) or ``<|assistant|></think>``.
- ``GLM45``: GLM-4.5 / 4.6 (``glm45``). Same tokens with newlines after role tokens, one
  ``<arg_key>``/``<arg_value>`` per line, ``/nothink`` appended to the user turn and
  ``<|assistant|>\\n<think></think>`` when thinking is off.

GLM tool-call ``arguments`` must be a mapping (transformers' convention; ``ascend.chat``
decodes OpenAI's JSON strings before rendering); DeepSeek accepts a string or a mapping.
- ``DEEPSEEK_V31``: DeepSeek-V3.1 style (``deepseekv3`` / ``deepseekv31`` tool parsers):
  ``<｜begin▁of▁sentence｜>{system}``, ``<｜User｜>…<｜Assistant｜>`` with ``<think>`` (thinking on)
  or ``</think>`` (off; the default, variable ``thinking``, ``enable_thinking`` also accepted),
  tool calls ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>name<｜tool▁sep｜>{json}<｜tool▁call▁end｜>…``,
  results ``<｜tool▁output▁begin｜>…<｜tool▁output▁end｜>``.
"""

from __future__ import annotations

_GLM_TOOLS_HEAD = (
    "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)

GLM47 = (
    "[gMASK]<sop>\n"
    "{%- if tools -%}\n" + _GLM_TOOLS_HEAD.replace("\n", "\\n").join(["{{- '", "' -}}\n"]) +
    "{%- for tool in tools -%}\n"
    "{{- (tool.function if tool.function is defined else tool) | tojson -}}{{- '\\n' -}}\n"
    "{%- endfor -%}\n"
    "{{- '</tools>\\n\\nFor each function call, output the function name and arguments within the following XML format:\\n"
    "<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key><arg_value>{arg-value-1}</arg_value>"
    "<arg_key>{arg-key-2}</arg_key><arg_value>{arg-value-2}</arg_value>...</tool_call>' -}}\n"
    "{%- endif -%}\n"
    "{%- macro text(content) -%}\n"
    "{%- if content is string -%}{{- content -}}\n"
    "{%- elif content is iterable and content is not mapping -%}\n"
    "{%- for item in content -%}{%- if item is mapping and item.type == 'text' -%}{{- item.text -}}"
    "{%- elif item is string -%}{{- item -}}{%- endif -%}{%- endfor -%}\n"
    "{%- elif content is not none -%}{{- content -}}{%- endif -%}\n"
    "{%- endmacro -%}\n"
    "{%- set ns = namespace(last_user=-1) -%}\n"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}\n"
    "{%- for m in messages -%}\n"
    "{%- if m.role == 'system' -%}<|system|>{{- text(m.content) -}}\n"
    "{%- elif m.role == 'user' -%}<|user|>{{- text(m.content) -}}\n"
    "{%- elif m.role == 'assistant' -%}<|assistant|>\n"
    "{%- set content = text(m.content) -%}\n"
    "{%- set reasoning = m.reasoning_content if m.reasoning_content is string else '' -%}\n"
    "{%- if '</think>' in content -%}\n"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] -%}\n"
    "{%- set content = content.split('</think>')[-1] -%}\n"
    "{%- endif -%}\n"
    "{%- if loop.index0 > ns.last_user and reasoning.strip() -%}{{- '<think>' + reasoning.strip() + '</think>' -}}"
    "{%- else -%}{{- '</think>' -}}{%- endif -%}\n"
    "{{- content.strip() -}}\n"
    "{%- for tc in (m.tool_calls or []) -%}\n"
    "{%- set f = tc.function if tc.function is defined else tc -%}\n"
    "{%- set args = f.arguments -%}\n"
    "{{- '<tool_call>' + f.name -}}\n"
    "{%- for k, v in args.items() -%}"
    "{{- '<arg_key>' + k + '</arg_key><arg_value>' -}}{{- v if v is string else v | tojson -}}{{- '</arg_value>' -}}"
    "{%- endfor -%}{{- '</tool_call>' -}}\n"
    "{%- endfor -%}\n"
    "{%- elif m.role == 'tool' or m.role == 'observation' -%}\n"
    "{%- if loop.first or messages[loop.index0 - 1].role not in ['tool', 'observation'] -%}<|observation|>{%- endif -%}\n"
    "{{- '<tool_response>' + text(m.content) + '</tool_response>' -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}<|assistant|>"
    "{{- '</think>' if (enable_thinking is defined and not enable_thinking) else '<think>' -}}{%- endif -%}\n"
)

GLM45 = (
    "[gMASK]<sop>\n"
    "{%- if tools -%}\n" + _GLM_TOOLS_HEAD.replace("\n", "\\n").join(["{{- '", "' -}}\n"]) +
    "{%- for tool in tools -%}{{- tool | tojson -}}{{- '\\n' -}}{%- endfor -%}\n"
    "{{- '</tools>\\n\\nFor each function call, output the function name and arguments within the following XML format:\\n"
    "<tool_call>{function-name}\\n<arg_key>{arg-key-1}</arg_key>\\n<arg_value>{arg-value-1}</arg_value>\\n"
    "<arg_key>{arg-key-2}</arg_key>\\n<arg_value>{arg-value-2}</arg_value>\\n...\\n</tool_call>' -}}\n"
    "{%- endif -%}\n"
    "{%- macro text(content) -%}\n"
    "{%- if content is string -%}{{- content -}}\n"
    "{%- elif content is iterable and content is not mapping -%}\n"
    "{%- for item in content -%}{%- if item is mapping and item.type == 'text' -%}{{- item.text -}}"
    "{%- elif item is string -%}{{- item -}}{%- endif -%}{%- endfor -%}\n"
    "{%- elif content is not none -%}{{- content -}}{%- endif -%}\n"
    "{%- endmacro -%}\n"
    "{%- set ns = namespace(last_user=-1) -%}\n"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}\n"
    "{%- set nothink = enable_thinking is defined and not enable_thinking -%}\n"
    "{%- for m in messages -%}\n"
    "{%- if m.role == 'system' -%}{{- '<|system|>\\n' + text(m.content) -}}\n"
    "{%- elif m.role == 'user' -%}{{- '<|user|>\\n' + text(m.content) -}}"
    "{{- '/nothink' if nothink and not text(m.content).endswith('/nothink') else '' -}}\n"
    "{%- elif m.role == 'assistant' -%}<|assistant|>\n"
    "{%- set content = text(m.content) -%}\n"
    "{%- set reasoning = m.reasoning_content if m.reasoning_content is string else '' -%}\n"
    "{%- if '</think>' in content -%}\n"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] -%}\n"
    "{%- set content = content.split('</think>')[-1] -%}\n"
    "{%- endif -%}\n"
    "{%- if loop.index0 > ns.last_user and reasoning.strip() -%}{{- '\\n<think>' + reasoning.strip() + '</think>' -}}"
    "{%- else -%}{{- '\\n<think></think>' -}}{%- endif -%}\n"
    "{%- if content.strip() -%}{{- '\\n' + content.strip() -}}{%- endif -%}\n"
    "{%- for tc in (m.tool_calls or []) -%}\n"
    "{%- set f = tc.function if tc.function is defined else tc -%}\n"
    "{%- set args = f.arguments -%}\n"
    "{{- '\\n<tool_call>' + f.name -}}\n"
    "{%- for k, v in args.items() -%}"
    "{{- '\\n<arg_key>' + k + '</arg_key>\\n<arg_value>' -}}{{- v if v is string else v | tojson -}}{{- '</arg_value>' -}}"
    "{%- endfor -%}{{- '\\n</tool_call>' -}}\n"
    "{%- endfor -%}\n"
    "{%- elif m.role == 'tool' or m.role == 'observation' -%}\n"
    "{%- if loop.first or messages[loop.index0 - 1].role not in ['tool', 'observation'] -%}<|observation|>{%- endif -%}\n"
    "{{- '\\n<tool_response>\\n' + text(m.content) + '\\n</tool_response>' -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}<|assistant|>{{- '\\n<think></think>' if nothink else '' -}}{%- endif -%}\n"
)

DEEPSEEK_V31 = (
    "{%- set thinking = thinking if thinking is defined else (enable_thinking if enable_thinking is defined else false) -%}\n"
    "{%- set ns = namespace(system='', after_user=false, in_tool=false, first_sys=true) -%}\n"
    "{%- for m in messages -%}{%- if m.role == 'system' -%}\n"
    "{%- set ns.system = ns.system + ('' if ns.first_sys else '\\n\\n') + m.content -%}{%- set ns.first_sys = false -%}\n"
    "{%- endif -%}{%- endfor -%}\n"
    "{%- if tools -%}\n"
    "{%- set ns.system = ns.system + ('\\n\\n' if ns.system else '') + '## Tools\\nYou have access to the following tools:\\n' -%}\n"
    "{%- for tool in tools -%}{%- set f = tool.function if tool.function is defined else tool -%}\n"
    "{%- set ns.system = ns.system + '\\n### ' + f.name + '\\nDescription: ' + (f.description or '') + '\\n\\nParameters: ' + (f.parameters | tojson) + '\\n' -%}\n"
    "{%- endfor -%}\n"
    "{%- set ns.system = ns.system + '\\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\\n"
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_call_name<｜tool▁sep｜>tool_call_arguments<｜tool▁call▁end｜>"
    "{{additional_tool_calls}}<｜tool▁calls▁end｜>\\n\\nWhere:\\n\\n"
    "- `tool_call_name` must be an exact match to one of the available tools\\n"
    "- `tool_call_arguments` must be valid JSON that strictly follows the tool\\'s Parameters Schema\\n"
    "- For multiple tool calls, chain them directly without separators or spaces\\n' -%}\n"
    "{%- endif -%}\n"
    "{{- bos_token + ns.system -}}\n"
    "{%- for m in messages -%}\n"
    "{%- if m.role == 'user' -%}{{- '<｜User｜>' + m.content -}}{%- set ns.after_user = true -%}{%- set ns.in_tool = false -%}\n"
    "{%- elif m.role == 'assistant' -%}\n"
    "{%- if ns.after_user -%}{{- '<｜Assistant｜></think>' -}}{%- endif -%}\n"
    "{%- set content = m.content or '' -%}\n"
    "{%- if '</think>' in content -%}{%- set content = content.split('</think>')[-1] -%}{%- endif -%}\n"
    "{{- content -}}\n"
    "{%- if m.tool_calls -%}{{- '<｜tool▁calls▁begin｜>' -}}\n"
    "{%- for tc in m.tool_calls -%}{%- set f = tc.function if tc.function is defined else tc -%}\n"
    "{{- '<｜tool▁call▁begin｜>' + f.name + '<｜tool▁sep｜>' -}}{{- f.arguments if f.arguments is string else f.arguments | tojson -}}"
    "{{- '<｜tool▁call▁end｜>' -}}\n"
    "{%- endfor -%}{{- '<｜tool▁calls▁end｜>' -}}{%- endif -%}\n"
    "{{- '<｜end▁of▁sentence｜>' -}}\n"
    "{%- set ns.after_user = false -%}{%- set ns.in_tool = false -%}\n"
    "{%- elif m.role == 'tool' -%}{{- '<｜tool▁output▁begin｜>' + m.content + '<｜tool▁output▁end｜>' -}}\n"
    "{%- set ns.after_user = false -%}{%- set ns.in_tool = true -%}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt and not ns.in_tool -%}{{- '<｜Assistant｜>' + ('<think>' if thinking else '</think>') -}}{%- endif -%}\n"
)

TEMPLATES = {"glm_moe_dsa": GLM47, "glm4_moe": GLM45, "deepseek_v3": DEEPSEEK_V31, "deepseek_v32": DEEPSEEK_V31}
