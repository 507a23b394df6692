"""Atomic files (lit_modules/core/files.py): a crash keeps the old file and leaves no temporary; the new file is as
readable as any other."""

import json
import os

import pytest

from lit_modules.core.files import atomic_write, atomic_write_json


def test_atomic_write_keeps_the_old_file_on_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"old": 1})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    """mkstemp makes 0600 files; results and reports must be readable like any file the user writes."""
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "r.json", "{}")
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from lit_modules.core.files import atomic_path

    path = tmp_path / "last.ckpt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="full disk"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("full disk")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
