"""Streaming inference: frames are read once each, one window at a time, and come out complete and in order."""

from __future__ import annotations

import numpy as np
import pytest

from projects.zsm.model import BicubicBlend
from projects.zsm.module import ZSMModule
from shared.io import read_video, write_video
from tests.helpers import run_ok

LEVELS = [20 + 25 * i for i in range(8)]  # frame i is a flat gray of LEVELS[i]: its index is in its pixels


def clip(n: int) -> list[np.ndarray]:
    return [np.full((12, 16, 3), LEVELS[i], np.uint8) for i in range(n)]


@pytest.mark.parametrize("n,window", [(8, 4), (7, 3), (2, 4), (5, 2)])
def test_each_frame_is_read_once_and_the_output_is_in_order(n, window):
    reads = []

    def reader():
        for i, f in enumerate(clip(n)):
            reads.append(i)
            yield f

    mod = ZSMModule(BicubicBlend(), infer_window=window, infer_tile=None).eval()
    out = list(mod.stream(reader(), n))
    assert reads == list(range(n))  # never asked for a frame twice, nothing skipped
    assert len(out) == 2 * n - 1 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in out)
    # even outputs are the input frames, odd ones the blend of their neighbours (the baseline's rule)
    expect = [LEVELS[k // 2] if k % 2 == 0 else (LEVELS[k // 2] + LEVELS[k // 2 + 1]) / 2 for k in range(2 * n - 1)]
    assert [float(f.mean()) for f in out] == pytest.approx(expect, abs=0.51)


def test_reader_runs_ahead_by_at_most_one_window():
    """Frames are pulled as windows need them: when the first output frame is out, only one window was read."""
    reads = []

    def reader():
        for i, f in enumerate(clip(8)):
            reads.append(i)
            yield f

    mod = ZSMModule(BicubicBlend(), infer_window=3, infer_tile=None).eval()
    frames = mod.stream(reader(), 8)
    next(frames)
    assert reads == [0, 1, 2]


def test_video_in_video_out_count_order_and_fps(tmp_path):
    write_video(tmp_path / "in.mp4", clip(8), fps=12, crf=0)
    run_ok("projects.zsm.infer", ["model=bicubic_blend", "allow_untrained=true", f"input={tmp_path / 'in.mp4'}",
                                  f"output={tmp_path / 'out.mp4'}"], tmp_path, tmp_path)
    frames, fps = read_video(tmp_path / "out.mp4")
    assert len(frames) == 15 and fps == pytest.approx(24)
    means = [float(f.mean()) for f in frames]
    expect = [LEVELS[k // 2] if k % 2 == 0 else (LEVELS[k // 2] + LEVELS[k // 2 + 1]) / 2 for k in range(15)]
    assert means == pytest.approx(expect, abs=3)  # H.264 at crf 18


def test_dry_run_counts_the_encoders_look_ahead_in_the_budget(tmp_path):
    """A 1080p clip → 7680×4320 video: x264's default look-ahead alone would hold (40 + 18) frames of 106 MB
    (6.2 GB); the plan caps it at the smallest look-ahead (4: a quarter of the default 4-GB budget fits no more,
    hand count in tests/shared/test_io.py) and says so; a dry run writes nothing."""
    write_video(tmp_path / "in.mp4", [np.zeros((1080, 1920, 3), np.uint8)] * 2, fps=25)
    res = run_ok("projects.zsm.infer", ["model=bicubic_blend", "allow_untrained=true", f"input={tmp_path / 'in.mp4'}",
                                        f"output={tmp_path / 'out.mp4'}", "infer_options.dry_run=true"],
                 tmp_path, tmp_path)
    assert "7680×4320" in res.stdout and "H.264 look-ahead 4 frames" in res.stdout
    assert not (tmp_path / "out.mp4").exists()
