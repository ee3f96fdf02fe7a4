"""Streaming inference: frames are read once each, one window at a time, and come out complete and in order."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from projects.zsm.model import BicubicBlend
from projects.zsm.module import ZSMModule
from shared.inference import TiledRunner
from shared.io import encoder_bytes, encoder_lookahead, read_video, write_video
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


def test_a_window_is_freed_before_the_next_is_computed(monkeypatch):
    """Memory holds one window: when window k+1 starts, nothing of window k's output (its 8-bit frames, its input)
    is alive any more except the shared frame in float."""
    alive = []
    window = ZSMModule._window

    def spy(self, x, runner, fixed, pending):
        assert all(ref() is None for ref in alive), "the previous window's frames are still held"
        body, last = window(self, x, runner, fixed, pending)
        alive.extend([weakref.ref(body), weakref.ref(x)])
        return body, last

    monkeypatch.setattr(ZSMModule, "_window", spy)
    mod = ZSMModule(BicubicBlend(), infer_window=3, infer_tile=None).eval()
    assert len(list(mod.stream(iter(clip(7)), 7))) == 13 and len(alive) == 6


def test_every_window_runs_the_plan_that_counts_the_encoder(tmp_path, monkeypatch):
    """The tile plan printed counts the video encoder's memory; every window must run that same plan, not one made
    again without it (which would pick larger tiles than the budget allows)."""
    asked = []
    plan = TiledRunner.plan

    def spy(self, h, w, fixed=0):
        asked.append(fixed)
        return plan(self, h, w, fixed)

    monkeypatch.setattr(TiledRunner, "plan", spy)
    write_video(tmp_path / "in.mp4", clip(7), fps=12, crf=0)
    mod = ZSMModule(BicubicBlend(), infer_window=3, infer_tile="auto").eval()
    mod.infer(tmp_path / "in.mp4", tmp_path / "out.mp4")
    held = ZSMModule._window_bytes(3, 12, 16) + encoder_bytes(64, 48, encoder_lookahead(64, 48, 2**30))
    assert asked == [held] * 4  # the plan line, then the windows of frames 0–2, 2–4, 4–6
    assert len(read_video(tmp_path / "out.mp4")[0]) == 13


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
    (6.2 GB), its smallest (4) still 22 frames (2.3 GB); a quarter of the default 4-GB budget fits neither, so the
    plan takes x264 without a queue (6.5 frames, 0.64 GiB; hand count in tests/shared/test_io.py) and says so; a
    dry run writes nothing."""
    write_video(tmp_path / "in.mp4", [np.zeros((1080, 1920, 3), np.uint8)] * 2, fps=25)
    res = run_ok("projects.zsm.infer", ["model=bicubic_blend", "allow_untrained=true", f"input={tmp_path / 'in.mp4'}",
                                        f"output={tmp_path / 'out.mp4'}", "infer_options.dry_run=true"],
                 tmp_path, tmp_path)
    assert "7680×4320" in res.stdout and "H.264 no look-ahead, no B-frames (low memory, larger file): 0.64 GiB" \
        in res.stdout
    assert not (tmp_path / "out.mp4").exists()
