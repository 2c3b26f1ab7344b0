"""Rank tables: A2 (format 1.0) and A3 (1.2 SuperPoD / 1.0 typical), parsing, validation.

Expected tables are written out by hand from the CANN HCCL user guide's rank-table pages
(A2: hcclug_000067; A3: hcclug_000066) and reference/xllm.md §8.2.
"""

from __future__ import annotations

import json
import os

import pytest

from ascend.errors import ServeError
from ascend.serve.ranktable import (
    build_rank_table,
    load_rank_table,
    parse_hccn_ip,
    parse_spod_info,
    validate_rank_table,
)

HOSTS = ["10.0.0.1", "10.0.0.2"]
IPS = [["192.168.1.8", "192.168.1.9"], ["192.168.2.8", "192.168.2.9"]]


def test_a2_format_1_0():
    table = build_rank_table("ascend-910b", HOSTS, IPS)
    assert table == {
        "version": "1.0", "server_count": "2",
        "server_list": [
            {"server_id": "10.0.0.1", "device": [
                {"device_id": "0", "device_ip": "192.168.1.8", "rank_id": "0"},
                {"device_id": "1", "device_ip": "192.168.1.9", "rank_id": "1"}]},
            {"server_id": "10.0.0.2", "device": [
                {"device_id": "0", "device_ip": "192.168.2.8", "rank_id": "2"},
                {"device_id": "1", "device_ip": "192.168.2.9", "rank_id": "3"}]}],
        "status": "completed"}
    validate_rank_table(table, chip="ascend-910b", hosts=HOSTS, devices_per_node=2)


def test_a3_superpod_format_1_2():
    table = build_rank_table("ascend-a3", HOSTS, IPS, super_device_ids=[["37748736", "37748737"], ["38600711", "38600712"]])
    assert table["version"] == "1.2"
    assert table["server_list"][1] == {"server_id": "10.0.0.2", "host_ip": "10.0.0.2", "device": [
        {"device_id": "0", "super_device_id": "38600711", "device_ip": "192.168.2.8", "rank_id": "2"},
        {"device_id": "1", "super_device_id": "38600712", "device_ip": "192.168.2.9", "rank_id": "3"}]}
    assert table["super_pod_list"] == [{"super_pod_id": "0", "server_list": [{"server_id": "10.0.0.1"},
                                                                              {"server_id": "10.0.0.2"}]}]
    validate_rank_table(table, chip="ascend-a3", hosts=HOSTS, devices_per_node=2)
    # without super device ids A3 gets the typical-networking format, as in xLLM's two-node GLM-5 guide
    assert build_rank_table("ascend-a3", HOSTS, IPS)["version"] == "1.0"


def test_a3_table_rejected_on_a2_and_missing_super_ids():
    table = build_rank_table("ascend-a3", HOSTS, IPS, super_device_ids=[["1", "2"], ["3", "4"]])
    with pytest.raises(ServeError, match="takes format 1.0"):
        validate_rank_table(table, chip="ascend-910b", hosts=HOSTS, devices_per_node=2)
    del table["server_list"][0]["device"][1]["super_device_id"]
    with pytest.raises(ServeError, match="no super_device_id"):
        validate_rank_table(table, chip="ascend-a3", hosts=HOSTS, devices_per_node=2)


@pytest.mark.parametrize("mutate,message", [
    (lambda t: t["server_list"][1]["device"][0].update(device_ip="-.-.-.-"), "no address"),
    (lambda t: t["server_list"][0]["device"].pop(), "lists 1 devices"),
    (lambda t: t.update(server_count="3"), "server_count"),
    (lambda t: t["server_list"][1]["device"][1].update(rank_id="7"), "rank_id values"),
    (lambda t: t["server_list"][0].update(server_id="10.9.9.9"), "hardware.hosts"),
    (lambda t: t.update(status="initializing"), "not 'completed'"),
])
def test_validation_failures(mutate, message):
    table = build_rank_table("ascend-910b", HOSTS, IPS)
    mutate(table)
    with pytest.raises(ServeError, match=message):
        validate_rank_table(table, chip="ascend-910b", hosts=HOSTS, devices_per_node=2)


def test_generation_refuses_unconfigured_device_ip():
    with pytest.raises(ServeError, match=r"serve.device_ips\[1\]\[0\].*no address"):
        build_rank_table("ascend-910b", HOSTS, [IPS[0], ["-.-.-.-", "192.168.2.9"]])


def test_tool_output_parsing():
    # `hccn_tool -i 0 -ip -g` prints one "key:value" per line
    assert parse_hccn_ip("ipaddr:192.168.1.8\nnetmask:255.255.255.0\n") == "192.168.1.8"
    with pytest.raises(ServeError, match="no address"):
        parse_hccn_ip("ipaddr:-.-.-.-\nnetmask:-.-.-.-\n")
    with pytest.raises(ServeError, match="no 'ipaddr:' line"):
        parse_hccn_ip("Command execute failed\n")
    spod = "SDID                           : 37748736\nSuper Pod Size                 : 48\nSuper Pod ID                   : 2\n"
    assert parse_spod_info(spod) == ("37748736", "2")


def test_load_rank_table(tmp_path):
    good = tmp_path / "rt.json"
    good.write_text(json.dumps(build_rank_table("ascend-910b", HOSTS, IPS)))
    plan = dict(chip="ascend-910b", hosts=HOSTS, devices_per_node=2)
    assert load_rank_table(good, **plan)["server_count"] == "2"
    link = tmp_path / "link.json"
    os.symlink(good, link)
    with pytest.raises(ServeError, match="symlink"):
        load_rank_table(link, **plan)
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1.0", // comment\n}')
    with pytest.raises(ServeError, match="not valid JSON"):
        load_rank_table(bad, **plan)
    with pytest.raises(ServeError, match="does not exist"):
        load_rank_table(tmp_path / "none.json", **plan)
