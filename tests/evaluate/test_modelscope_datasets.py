"""Datasets by ModelScope id, downloaded at run time by the real ``modelscope`` client, here
from a local stand-in hub (CI has no network): the split's files are picked from the repo's
layout, and a hub failure is one line naming the dataset id (exit 2)."""

from __future__ import annotations

import json

import pytest
from fake_modelscope_datasets import FakeDatasetHub

from ascend.evaluate.tasks import EvalDataError, load_items, pick_files
from ascend.recipe.schema import EvalTask

GSM8K_ID = "modelscope/gsm8k"


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.fixture
def hub():
    files = {
        "main/train.jsonl": jsonl([{"question": "train q", "answer": "#### 1"}]),
        "main/test.jsonl": jsonl([{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(5)]),
        "socratic/test.jsonl": jsonl([{"question": "socratic q", "answer": "#### 9"}]),
        "README.md": b"# gsm8k\n",
    }
    with FakeDatasetHub(GSM8K_ID, files) as h:
        yield h


def test_downloads_the_subset_split_and_reads_it(hub, tmp_path):
    task = EvalTask(name="gsm8k", kind="math", dataset=GSM8K_ID, subset="main", split="test", samples=3)
    items = load_items(task, cache_dir=tmp_path, endpoint=hub.endpoint)
    assert [i.gold for i in items] == [0, 1, 2]
    assert items[0].prompt.startswith("q0")
    assert f"/api/v1/datasets/{GSM8K_ID}/repo?FilePath=main/test.jsonl" in hub.requests
    assert not any("README" in r for r in hub.requests)  # data files only


def test_unknown_dataset_is_one_line_with_the_id(hub, tmp_path):
    task = EvalTask(name="x", kind="math", dataset="nobody/nothing", split="test")
    with pytest.raises(EvalDataError) as err:
        load_items(task, cache_dir=tmp_path, endpoint=hub.endpoint)
    line = err.value.line()
    assert "dataset nobody/nothing: download from ModelScope failed" in line and "\n" not in line
    assert hub.requests and all("nobody/nothing" in r for r in hub.requests)  # the hub said no, not the network


def test_missing_split_names_the_dataset(hub, tmp_path):
    task = EvalTask(name="x", kind="math", dataset=GSM8K_ID, subset="main", split="validation")
    with pytest.raises(EvalDataError, match="dataset modelscope/gsm8k: no 'validation' data file in subset 'main'"):
        load_items(task, cache_dir=tmp_path, endpoint=hub.endpoint)


def test_file_choice_in_published_layouts():
    # Hugging Face parquet mirrors, C-Eval's per-subject CSV folders, evalscope-style flat files
    paths = ["main/test-00000-of-00001.parquet", "main/train-00000-of-00001.parquet", "socratic/test-00000-of-00001.parquet"]
    assert pick_files(paths, "main", "test") == ["main/test-00000-of-00001.parquet"]
    ceval = ["val/computer_network_val.csv", "test/computer_network_test.csv", "val/accountant_val.csv"]
    assert pick_files(ceval, "computer_network", "val") == ["val/computer_network_val.csv"]
    assert pick_files(["test.jsonl", "train.jsonl", "README.md"], None, "test") == ["test.jsonl"]
