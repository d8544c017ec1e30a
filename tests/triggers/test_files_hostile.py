"""Names in a watched folder are chosen by whoever writes there: each is data, never a path out.

Every regular file gets one run whose key is its raw name URL-encoded (plain ASCII, as S3
encodes keys in notifications) and decodes back exactly; what cannot be processed gets one
clear log line and an audit entry; nothing is ever read, deleted or moved outside the folder,
and the trigger keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import random
import string
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.files import MakeFileTrigger, keys, md5
from tests.support.hypothesis_profiles import examples
from tests.support.waiting import wait_until
from triggers import folder
from triggers.readiness import read_file
from triggers.s3 import decode_key, encode_key

pytestmark = pytest.mark.timeout(60)

HOSTILE: list[bytes] = [
    b"new\nline.csv",
    b"carriage\rreturn.csv",
    b"tab\there.csv",
    b"bell\x07esc\x1b[31mred\x1b[0m.csv",
    b"del\x7f.csv",
    b"ctl\x01\x02\x1f.csv",
    b"bad-\xff\xfe.csv",
    b"half-\xc3.csv",
    b"-rf",
    b"--help",
    b"-",
    b"a..b",
    b"x%2F..%2F..%2Fetc%2Fpasswd",  # (a name starting with "." is a temp name: never fires)
    b"%2e%2e",
    b"back\\slash",
    b"quote'\"`$(id).csv",
    b"sp ace+plus%pct.csv",
    b"\xe6\x96\x87" * 85,  # 255 bytes of UTF-8
    b"L" * 255,
]


def write(path: bytes, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def raw(key: str) -> bytes:
    """What an S3 handler gets back from a key: ``unquote_plus`` to the exact bytes of the name."""
    return unquote_to_bytes(key.replace("+", " "))


def safe_key(key: str) -> bool:
    return all(c in string.ascii_letters + string.digits + "%+-_.~/*" for c in key)


async def test_every_hostile_name_gives_one_run_with_a_safe_key(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in HOSTILE:
        write(os.path.join(os.fsencode(inbox), name), name)
    running = await make_file_trigger()
    await running.emit.wait_for(len(HOSTILE))  # found by the start-up scan, after its quiet period
    events = await running.barrier(inbox)
    got = {raw(k): e for k, e in zip(keys(events), events, strict=True)}
    assert sorted(got) == sorted(HOSTILE)
    for name, emitted in got.items():
        obj = emitted.event["detail"]["object"]
        assert safe_key(obj["key"]), obj["key"]
        assert obj["etag"] == md5(name) and obj["size"] == len(name)
        assert encode_key(decode_key(obj["key"])) == obj["key"]
    assert running.emit.calls == len(HOSTILE) + 1


async def test_hostile_folder_names_in_recursive_mode(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger(recursive=True)
    # built aside and moved in: watchdog warns (an error under pytest) on nested mkdirs racing its watches
    staged = os.path.join(os.fsencode(tmp_path), b"dir\n\xff-x")
    os.makedirs(os.path.join(staged, b"--deep"))
    write(os.path.join(staged, b"--deep", b"f\x1b.csv"), b"deep")
    os.rename(staged, os.path.join(os.fsencode(inbox), b"dir\n\xff-x"))
    (got,) = await running.emit.wait_for(1)
    key = got.event["detail"]["object"]["key"]
    assert key == "dir%0A%FF-x/--deep/f%1B.csv" and safe_key(key)
    assert keys(await running.barrier(inbox)) == [key]


async def test_long_names_moved_twice_keep_both_inside_done(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    running = await make_file_trigger(after="move:done")
    name = "Ü" * 123 + ".csv"  # 250 bytes: no room for a ".<sequencer>" tag without shortening
    (inbox / name).write_bytes(b"one")
    await running.emit.wait_for(1)
    await wait_until(lambda: (inbox / "done" / name).exists())
    (inbox / name).write_bytes(b"two")
    await running.emit.wait_for(2)
    await wait_until(lambda: len(os.listdir(inbox / "done")) == 2)
    assert sorted((inbox / "done" / n).read_bytes() for n in os.listdir(inbox / "done")) == [b"one", b"two"]
    assert not (inbox / name).exists()


async def test_a_subfolder_that_is_a_symlink_out_is_never_followed(
    make_file_trigger: MakeFileTrigger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triggers.files")
    inbox = tmp_path / "inbox"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.csv").write_bytes(b"keep me")
    inbox.mkdir()
    (inbox / "escape").symlink_to(outside, target_is_directory=True)
    running = await make_file_trigger(recursive=True, after="delete")
    assert keys(await running.barrier(inbox)) == []
    assert (outside / "precious.csv").read_bytes() == b"keep me"
    assert "refused 'escape': symlink (not followed)" in caplog.text


def test_a_folder_swapped_for_a_symlink_after_the_event_is_refused(tmp_path: Path) -> None:
    """The race the watcher cannot see: ``sub`` was a folder when the event came, a link when read."""
    root, outside = tmp_path / "inbox", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.csv").write_bytes(b"outside")
    st = os.stat(outside / "x.csv")
    os.rmdir(root / "sub")
    (root / "sub").symlink_to(outside, target_is_directory=True)

    read = read_file(root, "sub/x.csv", None, "now", 0.0)
    assert read.facts is None and read.refused == "a folder on the path is a symlink (not followed)"
    with pytest.raises(folder.Escape):
        folder.delete(root, "sub/x.csv", st.st_size, st.st_mtime_ns)
    done = root / "done"
    done.mkdir()
    with pytest.raises(folder.Escape):
        folder.move(root, "sub/x.csv", st.st_size, st.st_mtime_ns, done, lambda: "1")
    for rel in ("..", "../outside/x.csv", "sub/../../outside/x.csv", "", "a//b"):
        assert read_file(root, rel, None, "now", 0.0).facts is None
    assert (outside / "x.csv").read_bytes() == b"outside"


async def test_a_move_target_swapped_for_a_symlink_moves_nothing_out(
    make_file_trigger: MakeFileTrigger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triggers.files")
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    outside.mkdir()
    running = await make_file_trigger(after="move:done")
    os.rmdir(inbox / "done")
    (inbox / "done").symlink_to(outside, target_is_directory=True)
    (inbox / "m.csv").write_bytes(b"m")
    await running.emit.wait_for(1)
    await wait_until(lambda: "could not move 'm.csv'" in caplog.text)
    assert os.listdir(outside) == [] and (inbox / "m.csv").read_bytes() == b"m"


async def test_refused_files_are_audited_once(make_file_trigger: MakeFileTrigger, tmp_path: Path) -> None:
    audited: list[tuple[str, str, dict[str, Any]]] = []

    async def audit(kind: str, subject: str, detail: dict[str, Any]) -> None:
        audited.append((kind, subject, detail))

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(os.path.join(os.fsencode(inbox), b"pipe\n\xff.csv"))
    (inbox / "link.csv").symlink_to("/etc/passwd")
    running = await make_file_trigger(audit=audit, rescan_s=0.3)
    await wait_until(lambda: len(audited) >= 2)
    await asyncio.sleep(1.0)  # three more periodic re-scans find them again
    assert keys(await running.barrier(inbox)) == []
    assert sorted(audited, key=lambda a: a[2]["key"]) == [
        ("file-refused", "wf/drop", {"workflow": "wf", "trigger": "drop", "key": "link.csv",
                                     "reason": "symlink (not followed)"}),
        ("file-refused", "wf/drop", {"workflow": "wf", "trigger": "drop", "key": "pipe%0A%FF.csv",
                                     "reason": "not a regular file"}),
    ]  # fmt: skip
    assert len(audited) == 2  # the periodic re-scans found them again: not audited again


def random_names(rnd: random.Random, count: int) -> list[bytes]:
    """Names of any byte but ``/`` and NUL, 1 to 255 long, none a temp name (those never fire)."""
    alphabet = [bytes([b]) for b in range(1, 256) if b != ord("/")]
    names: set[bytes] = set()
    while len(names) < count:
        name = b"".join(rnd.choices(alphabet, k=rnd.choice([1, 2, 8, 40, 255])))
        if not any(fnmatch.fnmatchcase(os.fsdecode(name), p) for p in folder.TEMP_PATTERNS):
            names.add(name)
    return sorted(names)


async def test_two_hundred_random_byte_names_each_give_one_run(
    make_file_trigger: MakeFileTrigger, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SLUICE_SEED", "1913"))
    print(f"names seed: {seed}")
    names = random_names(random.Random(seed), 200)
    inbox = tmp_path / "inbox"
    running = await make_file_trigger()
    for name in names:
        write(os.path.join(os.fsencode(inbox), name), name)
    await running.emit.wait_for(len(names))
    events = await running.barrier(inbox)
    assert sorted(raw(k) for k in keys(events)) == names
    assert all(safe_key(k) for k in keys(events))
    assert running.runner.processed == len(names) + 1  # nothing refused, nothing twice, still running
    assert not running.task.done()


@pytest.fixture(scope="module")
def maze(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder with files inside, a link out, and an outside file worth protecting."""
    tmp_path = tmp_path_factory.mktemp("maze")
    root, outside = tmp_path / "inbox", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "in.csv").write_bytes(b"in")
    (root / "sub" / "deep.csv").write_bytes(b"deep")
    (outside / "x.csv").write_bytes(b"outside")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "up").symlink_to("../..", target_is_directory=True)
    return root, outside


PARTS = st.sampled_from(
    ["..", ".", "", "link", "sub", "up", "x.csv", "in.csv", "deep.csv", "outside", "inbox"]
)


@examples(300)
@given(rel=st.one_of(st.lists(PARTS, min_size=1, max_size=6).map("/".join), st.text(max_size=40)))
def test_no_relative_path_reads_or_deletes_outside(maze: tuple[Path, Path], rel: str) -> None:
    root, outside = maze
    st_out = os.stat(outside / "x.csv")
    read = read_file(root, rel, None, "now", 0.0)
    if read.facts is not None:
        assert rel in ("in.csv", "sub/deep.csv")
    with contextlib.suppress(OSError):  # refused, never another exception
        folder.delete(root, rel, st_out.st_size, st_out.st_mtime_ns)
    assert (outside / "x.csv").read_bytes() == b"outside"


@examples(500)
@given(name=st.binary(min_size=1, max_size=255).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_any_name_gives_a_plain_ascii_key_that_decodes_to_its_bytes(name: bytes) -> None:
    key = encode_key(os.fsdecode(name))
    assert safe_key(key)
    assert raw(key) == name and os.fsencode(decode_key(key)) == name
