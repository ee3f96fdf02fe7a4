"""Real photos from ASSETS: MTCNN alignment of a folder tree and the demo layout (skipped if the registry is down)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from shared.assets import AssetUnavailable

pytestmark = [pytest.mark.assets, pytest.mark.slow]


@pytest.fixture(scope="module")
def photos():
    from shared.assets import asset_file
    from shared.face.mtcnn import asset_weights_dir

    try:
        files = {n: asset_file("face-recognition", f"test_images/{n}") for n in ("obama.jpg", "obama2.jpg",
                                                                                   "biden.jpg")}
        return files, asset_weights_dir()
    except AssetUnavailable as exc:
        pytest.skip(f"assets unavailable: {exc}")


def test_align_tree_on_real_photos(photos, tmp_path):
    from projects.faceset.align import align_tree
    from shared.face.align import similarity_transform, template
    from shared.io import read_image

    files, weights = photos
    src = tmp_path / "src"
    for n, f in files.items():
        (src / n.split(".")[0].rstrip("0123456789")).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, src / n.split(".")[0].rstrip("0123456789") / n)
    counts = align_tree(src, tmp_path / "dst", mtcnn_dir=weights, progress=False)
    assert counts == {"images": 3, "detected": 3, "written": 3}
    rows = (tmp_path / "dst" / "alignment.tsv").read_text().splitlines()
    assert rows[0].startswith("image\tdetected\tx1\ty1") and len(rows) == 4
    _, dst = template("sphereface")
    for row in rows[1:]:
        parts = row.split("\t")
        assert parts[1] == "1"
        pts = np.array([float(v) for v in parts[2:]]).reshape(5, 2)
        m = similarity_transform(pts, dst)
        mapped = pts @ m[:, :2].T + m[:, 2]
        err = np.linalg.norm(mapped - dst, axis=1)
        assert err.max() < 8.0 and err[:2].mean() < 4.0  # real faces are not exact similarities of the template
        crop = read_image(tmp_path / "dst" / parts[0])
        assert crop.shape == (112, 96, 3)


def test_demo_layout(tmp_path):
    from projects.faceset.demo import write_demo_sets

    try:
        counts = write_demo_sets(tmp_path, video_frames=3)
    except AssetUnavailable as exc:
        pytest.skip(f"assets unavailable: {exc}")
    assert counts == {"gallery/obama": 3, "gallery/biden": 1, "probe/obama": 2, "gallery/carphone_man": 3}
    assert len(list((tmp_path / "gallery" / "carphone_man").iterdir())) == 3
