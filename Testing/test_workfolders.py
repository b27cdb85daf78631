"""Run folders: one per run, unique, listed with what would be lost, removed only on request."""

import time

from SegUncertaintyLib.review.session import SESSION_FILE
from SegUncertaintyLib.workfolders import list_run_folders, new_run_folder, remove_run_folders


def test_run_folders_are_unique_named_after_the_volume_and_listed(tmp_path, monkeypatch):
    base = tmp_path / "runs"
    assert list_run_folders(base) == []  # no base folder yet
    monkeypatch.setattr(time, "strftime", lambda *args: "20261201-120000")
    first, second = new_run_folder(base, "chest CT (demo)"), new_run_folder(base, "chest CT (demo)")
    assert first != second and first.parent == base == second.parent
    assert first.name.startswith("chest_CT_demo-20261201-120000-")
    assert new_run_folder(base, "???").name.startswith("volume-")
    (second / "review").mkdir()
    (second / "review" / SESSION_FILE).write_text("{}")
    (first / "input.nrrd").write_bytes(b"x" * 1000)
    listed = {f.path: f for f in list_run_folders(base)}
    assert set(listed) == {p for p in base.iterdir()} and len(listed) == 3
    assert listed[second].reviewed and not listed[first].reviewed
    assert listed[first].size_bytes == 1000
    remove_run_folders([listed[first], listed[second]])
    assert [f.path.name for f in list_run_folders(base)] == [p.name for p in base.iterdir()]
    assert not first.exists() and not second.exists()
