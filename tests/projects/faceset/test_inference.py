"""Gallery/probe set collection for inference (identity folders, one folder, images, lists) and its errors."""

from __future__ import annotations

import pytest

from projects.faceset.inference import collect_sets
from shared.errors import UserError


def test_collect_sets(faceset_data, tmp_path):
    test = faceset_data / "faceset_tiny" / "test"
    sets = collect_sets(test, "gallery")
    assert sorted(sets) == [f"test{i:03d}" for i in range(6)] and all(len(v) == 4 for v in sets.values())
    one = collect_sets(test / "test002", "gallery")
    assert list(one) == ["test002"] and len(one["test002"]) == 4
    files = sorted((test / "test001").iterdir())[:2]
    assert collect_sets(",".join(map(str, files)), "probe") == {"probe": files}
    assert collect_sets([str(f) for f in files], "probe") == {"probe": files}
    assert collect_sets(str(files[0]), "probe") == {files[0].stem: [files[0]]}
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty set"):
        collect_sets(tmp_path / "empty", "probe")
    with pytest.raises(UserError, match="image not found"):
        collect_sets(str(tmp_path / "nope.jpg"), "probe")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not an image or video file"):
        collect_sets(str(tmp_path / "notes.txt"), "probe")
