"""Calibration data: a small built-in mixed set, or a JSONL file; rendered with the model's chat
template and tokenized with its ``tokenizer.json``.

The built-in set (written for this project) mixes Chinese and English chat, code and math, like
the practice's mixed calibration sets (quantization.md §5), plus a few tool-use conversations
(tool schemas, a call, its result): agentic models read those template sections in production,
and a static activation range that never saw them clips what they drive. A ``--calib FILE`` is
JSONL, one object per line with either ``"text"`` (used as is) or ``"messages"`` (OpenAI chat
messages, rendered with the chat template; optional ``"tools"``, OpenAI tool definitions). Every
problem in a file is one line naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path

from ascend.errors import ConvertError

# (user, assistant) pairs; each becomes one two-turn conversation.
BUILTIN: list[tuple[str, str]] = [
    # Chinese chat
    ("你好，请简单介绍一下你自己。", "你好！我是一个语言模型助手，可以回答问题、写作、翻译和编写代码。"),
    ("北京有哪些值得去的地方？", "可以去故宫、天坛、颐和园和长城，胡同里也有很多老北京的小吃。"),
    ("请把这句话翻译成英文：今天的天气非常好。", "The weather is very nice today."),
    ("如何提高睡眠质量？", "保持规律作息，睡前少用手机，避免咖啡因，卧室保持安静、黑暗和凉爽。"),
    ("写一首关于秋天的四行短诗。", "秋风吹落满山黄，\n雁字南飞过远乡。\n一盏清茶听夜雨，\n月明如水照西窗。"),
    ("解释一下什么是机器学习。", "机器学习是让计算机从数据中学习规律，并用这些规律对新数据做出预测的方法。"),
    ("我明天要面试，有什么建议吗？", "提前了解公司和岗位，准备好项目经历的例子，准时到达，回答时先给结论再讲细节。"),
    ("长江和黄河哪个更长？", "长江更长，全长约六千三百公里，黄河约五千四百六十公里。"),
    # English chat
    ("What is the capital of Australia?", "The capital of Australia is Canberra, not Sydney."),
    ("Give me three tips for writing a clear email.", "Put the request in the first line, keep paragraphs short, and end with a concrete next step."),
    ("Summarize the plot of Romeo and Juliet in two sentences.",
     "Two young lovers from feuding families in Verona marry in secret. A chain of misunderstandings ends in both of their deaths, which reconciles the families."),
    ("Why is the sky blue?", "Air molecules scatter short (blue) wavelengths of sunlight much more than long (red) ones, so blue light reaches us from every direction."),
    ("Can you recommend a good habit for learning a language?", "Practise a little every day: fifteen minutes of reading aloud or speaking beats one long session a week."),
    ("Explain what a hash table is to a beginner.",
     "A hash table stores values under keys. A hash function turns each key into a slot number, so looking a key up takes about the same time however many items are stored."),
    ("What should I pack for a weekend hiking trip?", "Water, layers of clothing, a rain jacket, snacks, a map, a first-aid kit, a headlamp and sturdy shoes."),
    ("Translate to French: Where is the train station?", "Où est la gare ?"),
    # code
    ("Write a Python function that reverses a string.", "```python\ndef reverse(s: str) -> str:\n    return s[::-1]\n```"),
    ("用 Python 写一个判断素数的函数。",
     "```python\ndef is_prime(n: int) -> bool:\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n        if n % i == 0:\n            return False\n        i += 1\n    return True\n```"),
    ("How do I read a JSON file in JavaScript (Node.js)?",
     "```javascript\nconst fs = require('fs');\nconst data = JSON.parse(fs.readFileSync('config.json', 'utf8'));\nconsole.log(data.name);\n```"),
    ("Write a SQL query that counts orders per customer.",
     "```sql\nSELECT customer_id, COUNT(*) AS orders\nFROM orders\nGROUP BY customer_id\nORDER BY orders DESC;\n```"),
    ("What does this C code print?\n```c\nint x = 5; printf(\"%d\", x++ + ++x);\n```",
     "It is undefined behaviour: `x` is modified twice without a sequence point, so any output is allowed."),
    ("Write a binary search in C++.",
     "```cpp\nint search(const std::vector<int>& a, int t) {\n  int lo = 0, hi = (int)a.size() - 1;\n  while (lo <= hi) {\n    int mid = lo + (hi - lo) / 2;\n    if (a[mid] == t) return mid;\n    if (a[mid] < t) lo = mid + 1; else hi = mid - 1;\n  }\n  return -1;\n}\n```"),
    ("解释这段 Rust 代码：`let v: Vec<i32> = (1..=5).map(|x| x * x).collect();`",
     "它把 1 到 5 的每个数平方，收集成向量 `[1, 4, 9, 16, 25]`。"),
    ("Write a bash one-liner that counts lines in all .py files.", "```bash\nfind . -name '*.py' -print0 | xargs -0 wc -l | tail -n 1\n```"),
    # math
    ("What is 17 times 23?", "17 × 23 = 17 × 20 + 17 × 3 = 340 + 51 = 391."),
    ("Solve for x: 3x + 7 = 22.", "Subtract 7: 3x = 15. Divide by 3: x = 5."),
    ("一个长方形的长是 8 厘米，宽是 5 厘米，面积是多少？", "面积 = 长 × 宽 = 8 × 5 = 40 平方厘米。"),
    ("What is the derivative of x^3 * sin(x)?", "By the product rule: 3x^2 sin(x) + x^3 cos(x)."),
    ("小明有 12 个苹果，给了小红三分之一，还剩几个？", "三分之一是 12 ÷ 3 = 4 个，所以还剩 12 − 4 = 8 个。"),
    ("Prove that the sum of two even numbers is even.", "Write them as 2a and 2b. Their sum is 2a + 2b = 2(a + b), which is a multiple of 2, hence even."),
    ("Compute the integral of 2x from 0 to 3.", "The antiderivative is x^2, so the integral is 3^2 − 0^2 = 9."),
    ("求方程 x^2 - 5x + 6 = 0 的解。", "因式分解得 (x − 2)(x − 3) = 0，所以 x = 2 或 x = 3。"),
    ("What is the probability of rolling two sixes with two dice?", "Each die shows six with probability 1/6, so both do with probability 1/36 ≈ 2.8%."),
    ("Convert 0.375 to a fraction.", "0.375 = 375/1000 = 3/8."),
]




def _tool(name: str, description: str, **params: str) -> dict:
    props = {k: {"type": "string", "description": v} for k, v in params.items()}
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": props, "required": list(params)}}}


WEATHER = _tool("get_weather", "Get the current weather for a city.", city="City name")
CLOCK = _tool("get_time", "Get the current time on the server.")
SEARCH = _tool("search_web", "Search the web and return the top results.", query="Search terms")
CALC = _tool("calculator", "Evaluate an arithmetic expression.", expression="For example 2 * (3 + 4)")

# (tools, user, (tool name, arguments JSON, tool result) or None, final assistant answer)
TOOL_USE: list[tuple[list[dict], str, tuple[str, str, str] | None, str]] = [
    ([WEATHER, CLOCK], "Thanks, that's all I needed!", None, "You're welcome! Have a nice day."),
    ([WEATHER], "What's the weather like in Paris right now?",
     ("get_weather", '{"city": "Paris"}', '{"city": "Paris", "temperature_c": 18, "condition": "sunny"}'),
     "It is sunny in Paris at the moment, about 18 °C."),
    ([WEATHER, SEARCH], "杭州今天下雨吗？",
     ("get_weather", '{"city": "杭州"}', '{"city": "杭州", "temperature_c": 22, "condition": "小雨"}'),
     "杭州今天有小雨，气温约 22 摄氏度，出门记得带伞。"),
    ([CLOCK], "What time is it on the server?",
     ("get_time", "{}", '{"time": "14:05:09", "timezone": "UTC"}'), "The server's clock reads 14:05 UTC."),
    ([SEARCH, CALC], "Who wrote the novel Pride and Prejudice?",
     ("search_web", '{"query": "Pride and Prejudice author"}', '[{"title": "Pride and Prejudice", "snippet": "a novel by Jane Austen, published in 1813"}]'),
     "Pride and Prejudice was written by Jane Austen and published in 1813."),
    ([CALC], "What is 12.5% of 640?",
     ("calculator", '{"expression": "0.125 * 640"}', '{"result": 80}'), "12.5% of 640 is 80."),
]


def builtin_samples() -> list[dict]:
    """The built-in set as ``{"messages": [...]}`` records (tool-use ones with ``"tools"``), in
    a fixed order: the every-8th hold-out takes chat, code, math and tool use alike."""
    chats = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in BUILTIN]
    tools = []
    for defs, question, call, answer in TOOL_USE:
        messages = [{"role": "user", "content": question}]
        if call:
            name, arguments, result = call
            messages += [{"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": name, "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": result}]
        tools.append({"messages": [*messages, {"role": "assistant", "content": answer}], "tools": defs})
    return chats + tools


def load_jsonl(path: str | Path) -> list[dict]:
    """Records of a calibration JSONL file; one-line ``ConvertError`` (exit 2) naming file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConvertError(f"{path}: cannot read the calibration file", why=str(err)) from None
    fix = ('each line must be a JSON object with "text" (a string) or "messages" (a list of {"role", "content"}), '
           'optionally with "tools" (a list of tool definitions)')
    records = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConvertError(f"{path}:{no}: not valid JSON", why=err.msg, fix=fix) from None
        problem = _problem(obj)
        if problem:
            raise ConvertError(f"{path}:{no}: {problem}", fix=fix)
        records.append(obj)
    if not records:
        raise ConvertError(f"{path}: no calibration samples", fix=fix)
    return records


def _problem(obj) -> str | None:
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if "text" in obj:
        return None if isinstance(obj["text"], str) and obj["text"].strip() else '"text" must be a non-empty string'
    messages = obj.get("messages")
    if messages is None:
        return 'no "text" or "messages" key'
    if not isinstance(messages, list) or not messages:
        return '"messages" must be a non-empty list'
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f'messages[{i}] must be an object with string "role" and "content"'
    tools = obj.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        return '"tools" must be a list of tool definitions (objects)'
    return None


def tokenize_samples(model_dir: str | Path, records: list[dict], *, samples: int, max_len: int) -> list[list[int]]:
    """The first ``samples`` records as token lists of at most ``max_len`` tokens each: ``messages``
    rendered with the checkpoint's chat template (no generation prompt), ``text`` as is."""
    from tokenizers import Tokenizer

    from ascend.chat.template import ChatTemplate, TemplateError
    from ascend.errors import CheckpointError

    model_dir = Path(model_dir)
    tok_path = model_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise CheckpointError(f"{tok_path}: missing", fix="calibration tokenizes with the checkpoint's tokenizer.json; copy it from the source")
    tokenizer = Tokenizer.from_file(str(tok_path))
    template = None
    out = []
    for i, rec in enumerate(records[:samples]):
        if "text" in rec:
            text = rec["text"]
        else:
            template = template or ChatTemplate.from_model_dir(model_dir)
            try:
                text = template.render(rec["messages"], tools=rec.get("tools"), add_generation_prompt=False)
            except TemplateError as err:
                raise ConvertError(f"calibration sample {i + 1}: {err}", fix="fix the messages (roles the template accepts)") from None
        ids = tokenizer.encode(text, add_special_tokens=False).ids[:max_len]
        if ids:
            out.append(ids)
    if not out:
        raise ConvertError("calibration: every sample tokenized to nothing", fix="use non-empty samples")
    return out
