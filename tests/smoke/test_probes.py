"""The fixture designed to answer the smoke suite (the scripted tiny checkpoint) reads the suite's
requests, not a copy (that smoke imports no fixture is tests/test_layering.py)."""

from __future__ import annotations

from ascend.smoke import probes


def test_scripted_fixture_is_designed_against_the_suite_requests():
    from ascend.tiny import scripted

    assert scripted.Conversation is probes.Conversation
    assert scripted.WEATHER_TOOL_NAME == probes.WEATHER_TOOL["function"]["name"]
    assert scripted.TIME_TOOL_NAME == probes.TIME_TOOL["function"]["name"]
    kinds = {c.expect for c in probes.probe_conversations()}
    assert kinds == set(scripted.CATEGORIES)  # every kind of answer the fixture can give is asked for
