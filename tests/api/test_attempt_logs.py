"""Reading attempt logs from a cursor: only new bytes, whatever the other attempts did meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.api import attempt_logs
from engine.api.attempt_logs import BadCursor, decode_cursor, encode_cursor, read_logs


def attempt(data: Path, step: str, number: int, index: int | None = None) -> dict[str, Any]:
    path = data / "logs" / f"{step}.{index}.{number}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return {"step": step, "index": index, "attempt": number, "log_path": str(path)}


def write(att: dict[str, Any], text: str | bytes) -> None:
    with open(att["log_path"], "ab") as fh:
        fh.write(text.encode() if isinstance(text, str) else text)


def test_a_follow_gets_each_byte_once_when_attempts_appear_before_others(tmp_path: Path) -> None:
    b = attempt(tmp_path, "b", 1)
    write(b, "b one\n")
    text, cursor = read_logs(tmp_path, [b])
    assert text == "==> b attempt 1 <==\nb one\n"
    a = attempt(tmp_path, "a", 1, index=0)  # a fan-out item listed before b from now on
    write(a, "a one\n")
    write(b, "b two\n")
    text, cursor = read_logs(tmp_path, [a, b], after=cursor)
    assert text == "==> a[0] attempt 1 <==\na one\nb two\n"
    write(a, "a two")  # no newline yet: printed as it is, continued next time
    text, cursor = read_logs(tmp_path, [a, b], after=cursor)
    assert text == "a two"
    write(a, " and more\n")
    b2 = attempt(tmp_path, "b", 2)  # a retry: its header goes on a line of its own
    write(b2, "retry\n")
    text, cursor = read_logs(tmp_path, [a, b, b2], after=cursor)
    assert text == " and more\n==> b attempt 2 <==\nretry\n"
    assert read_logs(tmp_path, [a, b, b2], after=cursor) == ("", cursor)


def test_a_character_cut_in_half_waits_for_its_other_half(tmp_path: Path) -> None:
    a = attempt(tmp_path, "a", 1)
    snowman = "☃".encode()
    write(a, b"cold " + snowman[:2])
    text, cursor = read_logs(tmp_path, [a], single=True, after={})
    assert text == "cold "
    write(a, snowman[2:] + b"\n")
    assert read_logs(tmp_path, [a], single=True, after=cursor)[0] == "☃\n"


def test_a_flood_since_the_last_read_is_cut_to_its_end_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attempt_logs, "MAX_LOG_BYTES", 10)
    a = attempt(tmp_path, "a", 1)
    _, cursor = read_logs(tmp_path, [a], single=True)
    write(a, "0123456789abcdefghij")
    text, cursor = read_logs(tmp_path, [a], single=True, after=cursor)
    assert text == "[... 10 bytes skipped ...]\nabcdefghij"
    assert cursor == {"a[]#1": 20}


def test_cursors_round_trip_and_a_tampered_one_is_refused() -> None:
    assert decode_cursor(encode_cursor({"a[]#1": 5, "b[3]#2": 0})) == {"a[]#1": 5, "b[3]#2": 0}
    for bad in ("", "!!!", encode_cursor({"a": -1}), "WyJub3QgYSBkaWN0Il0="):  # last: ["not a dict"]
        with pytest.raises(BadCursor, match="Sluice-Log-Cursor"):
            decode_cursor(bad)
