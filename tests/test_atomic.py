"""``bigkg.atomic``: what a failing writer leaves behind."""

from __future__ import annotations

import errno

import pytest

from bigkg.atomic import OutputError, atomic_directory, atomic_file


def test_a_full_disk_names_the_output_and_leaves_the_old_one_whole(tmp_path):
    out = tmp_path / "emb.parquet"
    out.write_text("the previous export")
    with pytest.raises(OutputError, match=f"cannot write {out}: the disk is full"):
        with atomic_file(out) as tmp:
            tmp.write_text("half of")
            raise OSError(errno.ENOSPC, "No space left on device")
    folder = tmp_path / "dataset"
    with pytest.raises(OutputError, match=f"cannot write {folder}: the disk is full"):
        with atomic_directory(folder) as tmp:
            (tmp / "bucket.h5").write_text("half of")
            raise OSError("Can't write data (file write failed: errno = 28, error message = 'No space left on device')")
    assert out.read_text() == "the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.parquet"]


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_file(tmp_path / "x"):
            raise PermissionError(errno.EACCES, "denied")
    assert list(tmp_path.iterdir()) == []
