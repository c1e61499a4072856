"""The gateway's merge of auth's and risk's audit trails (gateway/blueprints/audit.py)."""

import pytest

from gateway.blueprints.audit import _decode, _encode, merge
from shared.errors import BadRequest


def entry(position, at):
    return {"entry_id": f"e{position}", "position": str(position), "at": at}


def test_the_newest_entries_of_both_trails_and_where_each_trail_stands():
    pages = {
        "auth": {
            "items": [entry(9, "2026-12-05T10:00:03+00:00"), entry(8, "2026-12-05T10:00:01+00:00")],
            "next_cursor": "8",
        },
        "risk": {
            "items": [entry(4, "2026-12-05T10:00:02+00:00"), entry(3, "2026-12-05T10:00:00+00:00")],
            "next_cursor": "3",
        },
    }
    items, after = merge(pages, {"auth": None, "risk": None}, limit=2)
    assert [(e["service"], e["entry_id"]) for e in items] == [("auth", "e9"), ("risk", "e4")]
    assert after == {"auth": "9", "risk": "4"}


def test_a_trail_read_to_its_end_is_marked_so_and_an_untouched_one_keeps_its_place():
    pages = {
        "auth": {"items": [entry(2, "2026-12-05T10:00:05+00:00")], "next_cursor": None},
        "risk": {"items": [entry(7, "2026-12-05T10:00:01+00:00")], "next_cursor": None},
    }
    items, after = merge(pages, {"auth": "3", "risk": "8"}, limit=1)
    assert [e["entry_id"] for e in items] == ["e2"]
    assert after == {"auth": "end", "risk": "8"}
    # Microseconds or none: compared as times, not as strings.
    pages["risk"]["items"] = [entry(7, "2026-12-05T10:00:05.500000+00:00")]
    items, _ = merge(pages, {"auth": "3", "risk": "8"}, limit=1)
    assert [e["entry_id"] for e in items] == ["e7"]


def test_cursors_round_trip_and_anything_else_is_a_bad_request():
    positions = {"auth": "12", "risk": "end"}
    assert _decode(_encode(positions)) == positions
    assert _decode(None) == {"auth": None, "risk": None}
    for bad in ("not-a-cursor", _encode({"auth": "1"}), _encode({"auth": "x", "risk": None})):
        with pytest.raises(BadRequest):
            _decode(bad)
