"""lab.util: atomic writes (mode, no half files), the file lock, ISRC normal form."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import stat
import time

import pytest

from lab.util import atomic
from lab.util.identifiers import ISRC_PATTERN, as_isrc, normalize_isrc
from lab.util.locks import file_lock


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_write_bytes_uses_the_umask_unless_a_mode_is_asked(tmp_path):
    old = os.umask(0o022)
    try:
        assert _mode(atomic.write_bytes(tmp_path / "a.txt", b"x")) == 0o644
        os.umask(0o027)
        assert _mode(atomic.write_text(tmp_path / "b.txt", "y")) == 0o640
        assert _mode(atomic.write_bytes(tmp_path / "key.pem", b"k", mode=0o600)) == 0o600
    finally:
        os.umask(old)
    assert (tmp_path / "b.txt").read_text() == "y"


def test_open_atomic_leaves_old_file_and_no_temp_on_error(tmp_path):
    target = tmp_path / "f.bin"
    atomic.write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic.open_atomic(target) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    with atomic.open_atomic(target) as f:
        f.write(b"new ")
        f.write(b"file")
        assert target.read_bytes() == b"old"  # not visible until the block ends
    assert target.read_bytes() == b"new file"


def test_staged_path_elsewhere_lands_at_path(tmp_path):
    (tmp_path / "folder").mkdir()
    dest = tmp_path / "folder" / "sig"
    with atomic.staged_path(dest, stage_in=tmp_path) as tmp:
        assert tmp.parent == tmp_path and tmp.exists()
        tmp.write_bytes(b"bundle")
        assert not dest.exists()
    assert dest.read_bytes() == b"bundle" and not tmp.exists()


def _hold(path, started, seconds):
    with file_lock(path):
        started.set()
        time.sleep(seconds)


def test_file_lock_excludes_another_process(tmp_path):
    lock = tmp_path / "sub" / ".lock"
    ctx = mp.get_context("fork")
    started = ctx.Event()
    p = ctx.Process(target=_hold, args=(lock, started, 0.5))
    p.start()
    assert started.wait(10)
    t0 = time.monotonic()
    with file_lock(lock):
        waited = time.monotonic() - t0
    p.join(10)
    assert waited > 0.2
    with file_lock(lock):  # released, re-entrant across blocks
        pass


def test_isrc_normal_form_and_pattern():
    assert normalize_isrc("gb-lab-26-00001") == "GBLAB2600001"
    assert normalize_isrc(" GB LAB 26 00001 ") == "GBLAB2600001"
    assert normalize_isrc(None) is None
    for bad in ("GB-LAB-26", "GBLAB26000O1", "XXLAB2600001", "QQLAB2600001"):
        with pytest.raises(ValueError, match="not an ISRC"):
            normalize_isrc(bad)
    assert as_isrc("gb-lab-26-00001") == "GBLAB2600001" and as_isrc("demo-0001") is None
    assert re.fullmatch(ISRC_PATTERN, "GBLAB2600001") and not re.fullmatch(ISRC_PATTERN, "GB-LAB-26-00001")
