import numpy as np
import pytest
import torch

from shared.errors import UserError
from shared.io import (
    atomic_path,
    encoder_bytes,
    encoder_lookahead,
    load_checkpoint_file,
    read_image,
    read_video,
    write_image,
    write_video,
)


def test_image_roundtrip_and_errors(tmp_path):
    img = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "a.png", img)
    assert np.array_equal(read_image(tmp_path / "a.png"), img)
    gray = img[..., 0]
    write_image(tmp_path / "g.png", gray)
    assert read_image(tmp_path / "g.png").shape == (20, 30, 3)
    with pytest.raises(UserError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match="cannot decode"):
        read_image(tmp_path / "bad.png")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_video_roundtrip_and_errors(tmp_path):
    frames = np.stack([np.full((36, 44, 3), 20 * i, np.uint8) for i in range(6)])
    write_video(tmp_path / "v.mp4", frames, fps=12)
    got, fps = read_video(tmp_path / "v.mp4")
    assert got.shape == frames.shape and fps == pytest.approx(12)
    assert np.abs(got.astype(int) - frames).mean() < 3
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(UserError, match="cannot decode video"):
        read_video(tmp_path / "bad.mp4")
    with pytest.raises(UserError, match="not found"):
        read_video(tmp_path / "none.mp4")


def test_encoder_lookahead_reaches_x264_and_fits_the_budget(tmp_path):
    """x264 writes its settings into the stream (an SEI text: ``rc_lookahead=N``) — the option really reaches the
    encoder; the look-ahead chosen for a budget is the hand count ⌊budget / (3.2 · W·H)⌋ − 18, within 4 … 40, and
    below 4 the low-memory settings (look-ahead 0: no queue, no B-frames, one reference; 6.5 frames)."""
    frames = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(4)]
    write_video(tmp_path / "a.mp4", frames, lookahead=6)
    write_video(tmp_path / "b.mp4", frames)
    write_video(tmp_path / "c.mp4", frames, lookahead=0)
    assert b"rc_lookahead=6 " in (tmp_path / "a.mp4").read_bytes()
    assert b"rc_lookahead=40 " in (tmp_path / "b.mp4").read_bytes()  # x264's own default
    low = (tmp_path / "c.mp4").read_bytes()
    assert all(f" {o} ".encode() in low for o in ("ref=1", "bframes=0", "mbtree=0"))
    assert b"bframes=3" in (tmp_path / "b.mp4").read_bytes()
    for name in ("a.mp4", "c.mp4"):
        got = read_video(tmp_path / name)[0]
        assert len(got) == 4 and np.abs(got.astype(int) - np.stack(frames)).max() <= 2
    gib = 2**30
    assert encoder_lookahead(3840, 2160, gib) == 22  # 2^30 / (3.2 · 3840 · 2160) = 40.45 frames → 40 − 18
    assert encoder_lookahead(2560, 1440, gib) == 40  # room for more than x264's 40: capped
    assert encoder_lookahead(5120, 2880, gib) == 4  # 2^30 / (3.2 · 5120 · 2880) = 22.8 frames (a 720p input)
    assert encoder_lookahead(7680, 4320, 2.4e9) == 4  # 2.4e9 / (3.2 · 7680 · 4320) = 22.6 frames
    assert encoder_lookahead(7680, 4320, gib) == 0  # no look-ahead fits: no queue at all
    assert encoder_bytes(7680, 4320, 0) == int(6.5 * 3.2 * 7680 * 4320) <= gib
    assert encoder_bytes(3840, 2160, 22) <= gib < encoder_bytes(3840, 2160, 23)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_loading_is_weights_only(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "ok.ckpt")
    assert torch.equal(load_checkpoint_file(tmp_path / "ok.ckpt")["state_dict"]["w"], torch.ones(2))
    torch.save({"obj": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match="refusing"):
        load_checkpoint_file(tmp_path / "evil.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        load_checkpoint_file(tmp_path / "text.ckpt")


def test_load_checkpoint_file_reads_the_legacy_torch_save_format(tmp_path):
    """Pre-1.6 (non-zip) files, e.g. the distributed MTCNN weights, load too — still with weights_only=True."""
    import torch

    from shared.io import load_checkpoint_file

    f = tmp_path / "old.pt"
    torch.save({"w": torch.arange(3.0)}, f, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint_file(f)["w"], torch.arange(3.0))


def test_labelled_strip_puts_panels_side_by_side_with_labels():
    from shared.io import labelled_strip, tensor_to_image

    a, b = torch.zeros(3, 40, 50), torch.full((3, 40, 50), 0.5)
    strip = labelled_strip([("SR", a), ("HR", b)], font_scale=0.35, thickness=1, origin=(3, 12))
    assert strip.shape == (40, 100, 3) and strip.dtype == np.uint8
    drawn = (strip != np.concatenate([tensor_to_image(a), tensor_to_image(b)], 1)).any(-1)
    assert drawn[:14, :50].any() and drawn[:14, 50:].any() and not drawn[14:].any()   # one label per panel, on top
    ink = strip[drawn]
    assert (ink[:, 0] == ink[:, 1]).all() and (ink[:, 2] <= ink[:, 0]).all()           # yellow, anti-aliased


def test_comparison_crops_show_the_same_region_of_each_panel():
    from shared.io import comparison_crops

    lr = np.zeros((8, 12, 3), np.uint8)
    lr[2:6, 3:9] = 200  # the centre half of the LR image, bright
    hr = np.kron(lr, np.ones((4, 4, 1), np.uint8))  # the same picture at ×4
    pic = comparison_crops([("input", lr), ("ours", hr), ("truth", hr)], size=32)
    # three 32-px-high panels of the centre half (aspect 6:4 → 48 px wide) with two 4-px gaps
    assert pic.shape == (32, 3 * 48 + 2 * 4, 3)
    for k in range(3):
        panel = pic[:, k * 52 : k * 52 + 48]
        # below the label, every panel shows the bright centre (nearest scaling keeps the value exactly)
        assert (panel[24:, :, 1] == 200).all() or (panel[24:, :, 0] == 200).all()
    assert (pic[:, 48:52] == 255).all()  # the gap
    with pytest.raises(ValueError):
        comparison_crops([("a", lr)], box=(0.5, 0.5, 0.2, 0.9))
