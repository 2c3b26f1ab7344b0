"""Eval items from local JSONL files or from ModelScope datasets (downloaded by id at run time).

Record fields (the published datasets' own; a local file uses the same names):

- ``math``: ``question`` and ``answer`` (GSM8K: worked solution ending ``#### 72``, or just ``72``).
- ``choice``: ``question`` (or ``input``), the options as ``choices`` / ``options`` (a list, MMLU)
  or as keys ``A``, ``B``, ... (C-Eval), and ``answer`` (or ``target``): a letter or a 0-based index.

A bad record is an :class:`EvalDataError` (exit 2) naming the file and line or the dataset id.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ascend.errors import AscendError
from ascend.evaluate.scoring import LETTERS, choice_prompt, gold_number, math_prompt

DATA_DIR = Path(__file__).parent / "data"
PACKAGED = "package:"  # `path: package:tiny-math.jsonl` = a file shipped in ascend/evaluate/data


class EvalDataError(AscendError):
    """A task's dataset cannot be loaded or a record is malformed."""


@dataclass(frozen=True)
class Item:
    """One question: the user message sent, and what a correct reply must give."""

    id: str
    prompt: str
    gold: Any  # float (math) or a letter (choice)
    options: tuple[str, ...] = ()


def resolve_path(path: str) -> Path:
    return DATA_DIR / path[len(PACKAGED):] if path.startswith(PACKAGED) else Path(path)


def load_items(task: Any, cache_dir: Path | None = None, endpoint: str | None = None) -> list[Item]:
    """The first ``task.samples`` items of ``task`` (a recipe ``eval.tasks`` entry); ``endpoint``:
    a ModelScope endpoint other than the client's default (``MODELSCOPE_ENDPOINT``)."""
    if task.path:
        records = read_file(resolve_path(task.path))
    else:
        records = read_modelscope(task.dataset, task.subset, task.split, cache_dir, endpoint)
    items = []
    for where, rec in records:
        items.append(to_item(task.kind, rec, where))
        if task.samples and len(items) >= task.samples:
            break
    if not items:
        raise EvalDataError(f"task {task.name}: no records in {task.path or task.dataset}", fix="check the file / subset / split")
    return items


def to_item(kind: str, rec: Any, where: str) -> Item:
    if not isinstance(rec, dict):
        raise EvalDataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    try:
        if kind == "math":
            gold = gold_number(str(rec["answer"]))
            if gold is None:
                raise EvalDataError(f"{where}: answer {str(rec['answer'])[-40:]!r} has no final number",
                                    fix="end it with '#### <number>' or give just the number")
            return Item(where, math_prompt(str(rec["question"])), gold)
        question = rec["question"] if "question" in rec else rec["input"]
        options = _options(rec)
        gold = _letter(rec["answer"] if "answer" in rec else rec["target"], len(options))
    except KeyError as err:
        raise EvalDataError(f"{where}: missing field {err.args[0]!r}", fix=f"{kind} records need the fields in docs/bench-and-eval.md") from None
    if gold is None:
        raise EvalDataError(f"{where}: answer is not one of the {len(options)} options")
    return Item(where, choice_prompt(str(question), options), gold, tuple(options))


def _options(rec: dict) -> list[str]:
    listed = rec.get("choices", rec.get("options"))
    options = [str(o) for o in listed] if isinstance(listed, list) else [str(rec[k]) for k in LETTERS if k in rec]
    if len(options) < 2:
        raise KeyError("choices")
    return options


def _letter(answer: Any, n: int) -> str | None:
    if isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit()):
        i = int(answer)
        return LETTERS[i] if 0 <= i < n else None
    letter = str(answer).strip().upper()
    return letter if len(letter) == 1 and letter in LETTERS[:n] else None


# ------------------------------------------------------------------------------------ files


def read_file(path: Path) -> Iterable[tuple[str, Any]]:
    """(``file:line``, record) for every record of a JSONL, JSON (list) or CSV file."""
    if not path.is_file():
        raise EvalDataError(f"eval data file {path} does not exist", fix="fix eval.tasks[].path (or use dataset: for ModelScope)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise EvalDataError(f"cannot read {path}: {err}") from None
    if path.suffix == ".csv":
        return [(f"{path}:{i + 2}", row) for i, row in enumerate(csv.DictReader(io.StringIO(text)))]
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise EvalDataError(f"{path}: not valid JSON ({err})") from None
        return [(f"{path}[{i}]", rec) for i, rec in enumerate(data if isinstance(data, list) else [data])]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((f"{path}:{n}", json.loads(line)))
            except ValueError as err:
                raise EvalDataError(f"{path}:{n}: not valid JSON ({err.msg})", fix="one JSON object per line") from None
    return out


# ------------------------------------------------------------------------------- ModelScope

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def read_modelscope(dataset: str, subset: str | None, split: str, cache_dir: Path | None,
                    endpoint: str | None = None) -> Iterable[tuple[str, Any]]:
    """Download the split's data files of a ModelScope dataset repo (``modelscope`` client) and
    read them. Files are chosen by path: under the subset's folder when given, and named after
    the split (``test.jsonl``, ``main/test-00000-of-00001.parquet``, ``val/x_val.csv``)."""
    from modelscope import dataset_snapshot_download

    local = Path(cache_dir or Path.home() / ".cache" / "ascend" / "datasets") / dataset.replace("/", "__")
    try:
        root = Path(dataset_snapshot_download(dataset, local_dir=str(local), endpoint=endpoint,
                                              allow_patterns=[f"*{s}" for s in DATA_SUFFIXES]))
    except Exception as err:  # noqa: BLE001 - the hub client raises many kinds; one line says which
        raise EvalDataError(f"dataset {dataset}: download from ModelScope failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
                            fix="check the id and the network, or download it and use path: with a local file") from None
    files = pick_files([p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()], subset, split)
    if not files:
        raise EvalDataError(f"dataset {dataset}: no {split!r} data file{f' in subset {subset!r}' if subset else ''}",
                            fix="set eval.tasks[].subset / split to ones the dataset has")
    records: list[tuple[str, Any]] = []
    for rel in files:
        path = root / rel
        if path.suffix == ".parquet":
            records += _read_parquet(path, dataset)
        else:
            records += read_file(path)
    return records


def pick_files(paths: list[str], subset: str | None, split: str) -> list[str]:
    data = [p for p in paths if p.endswith(DATA_SUFFIXES)]
    if subset:
        data = [p for p in data if subset in p.split("/")[:-1] or p.rsplit("/", 1)[-1].startswith(subset)]
    return sorted(p for p in data if fnmatch.fnmatch(p.rsplit("/", 1)[-1], f"*{split}*") or split in p.split("/")[:-1])


def _read_parquet(path: Path, dataset: str) -> list[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise EvalDataError(f"dataset {dataset}: {path.name} is Parquet, which needs pyarrow",
                            fix="pip install pyarrow, or convert it to JSONL and use path:") from None
    rows = pq.read_table(path).to_pylist()
    return [(f"{dataset}:{path.name}[{i}]", r) for i, r in enumerate(rows)]
