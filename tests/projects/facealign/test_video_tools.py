"""Pseudo-video augmentation (Section 3.4.1) and flow fusion (Eq. 3.12)."""

import numpy as np
import pytest

from projects.facealign import metrics as M
from projects.facealign.demo_data import background, random_face_params, render_face
from projects.facealign.fusion import FlowFusion
from projects.facealign.landmarks import apply_homography
from projects.facealign.pseudo_video import Shot, homography, motion_blur_kernel, pseudo_video, random_storyboard


def dots_image(pts, size=(120, 140)):
    import cv2

    img = np.zeros((*size, 3), np.float32)
    for x, y in pts:
        img[int(y), int(x)] = 1.0
    return (np.clip(cv2.GaussianBlur(img, (0, 0), 1.2) * 12, 0, 1) * 255).astype(np.uint8)


def blob_centre(frame, near, r=4):
    x0, y0 = int(round(near[0])) - r, int(round(near[1])) - r
    patch = frame[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1, 0].astype(float)
    patch = np.clip(patch - 0.25 * patch.max(), 0, None)
    yy, xx = np.mgrid[0:2 * r + 1, 0:2 * r + 1]
    return np.array([(xx * patch).sum() / patch.sum() + x0, (yy * patch).sum() / patch.sum() + y0])


def test_pseudo_video_landmarks_follow_the_pixels():
    """Isolated bright dots are rendered through the warp; their centroids sit on the transformed landmarks."""
    pts = np.array([[40.0, 40.0], [100.0, 45.0], [70.0, 80.0], [45.0, 90.0], [95.0, 85.0]])
    img = dots_image(pts)
    start = Shot()
    end = Shot(scale=1.15, rotation=7, shift_x=0.04, shift_y=-0.03, persp_x=0.12, persp_y=-0.08, gain=1.0)
    frames, warped, hms = pseudo_video(img, pts, start, end, fps=10, duration=0.8)
    assert frames.shape == (8, 120, 140, 3) and warped.shape == (8, 5, 2)
    np.testing.assert_allclose(warped[0], pts, atol=1e-4)
    for t in range(8):
        for k in range(5):
            assert np.linalg.norm(blob_centre(frames[t], warped[t, k]) - warped[t, k]) < 0.25
    # landmarks equal the analytic homography of the end state
    np.testing.assert_allclose(warped[-1], apply_homography(homography(end, 140, 120), pts), atol=1e-4)
    h = hms[-1]
    q = np.c_[pts, np.ones(5)] @ h.T
    np.testing.assert_allclose(warped[-1], q[:, :2] / q[:, 2:], atol=1e-4)


def test_pseudo_video_changes_smoothly():
    rng = np.random.default_rng(0)
    img, pts = render_face(random_face_params(rng, 128), background((128, 128), rng))
    start, end = Shot(gain=1.0), Shot(gain=0.6, scale=1.25, shift_x=0.05, blur=4, persp_x=0.1)
    frames, warped, _ = pseudo_video(img, pts, start, end, fps=25, duration=1.0)
    assert len(frames) == 25
    step = np.linalg.norm(np.diff(warped, axis=0), axis=-1).max(1)
    total = np.linalg.norm(warped[-1] - warped[0], axis=-1).max()
    assert total > 5 and step.max() < 3 * total / 24  # no jumps: eased steps, at most ~1.5× the average
    assert step[0] < step[12] and step[-1] < step[12]  # smoothstep: slow at both storyboard states
    means = frames.reshape(25, -1).mean(1)
    assert np.all(np.diff(means) <= 0.5) and means[-1] < 0.75 * means[0]  # brightness falls monotonically


def test_motion_blur_kernel_is_symmetric_and_normalised():
    assert motion_blur_kernel(0.5, 0) is None
    for angle in (0, 30, 90, 135):
        k = motion_blur_kernel(7, angle)
        assert k.sum() == pytest.approx(1.0) and np.allclose(k, k[::-1, ::-1])
        yy, xx = np.mgrid[: k.shape[0], : k.shape[1]]
        c = (k.shape[0] - 1) / 2
        assert (k * xx).sum() == pytest.approx(c) and (k * yy).sum() == pytest.approx(c)


def test_random_storyboard_strength_zero_is_identity():
    rng = np.random.default_rng(0)
    a, b = random_storyboard(rng, 0.0)
    assert np.allclose(homography(a, 50, 40), np.eye(3)) and a.noise == 0 and b.gain == 1


def moving_face_video(n=40, noise_px=1.5, seed=0):
    """A textured face translating/rotating smoothly; a noisy 'detector' = truth + Gaussian jitter."""
    rng = np.random.default_rng(seed)
    bg = background((160, 160), rng)
    p = random_face_params(rng, 160)
    frames, truth = [], []
    for t in range(n):
        q = dict(p, tx=p["tx"] + 0.6 * t, ty=p["ty"] + 0.3 * np.sin(t / 6) * 4, angle=p["angle"] + 0.2 * t)
        shifted = np.roll(bg, (t // 2, t), axis=(0, 1))
        img, pts = render_face(q, shifted)
        frames.append(img)
        truth.append(pts)
    truth = np.stack(truth).astype(np.float64)
    det = truth + rng.normal(0, noise_px, size=truth.shape)
    return np.stack(frames), truth, det


def test_fusion_reduces_jitter_and_stays_on_the_face():
    frames, truth, det = moving_face_video()  # jitter σ = 1.5 px ≈ 0.03 d per coordinate
    fused, alpha = FlowFusion(tau_fwd=0.12)(frames, det)  # τ_fwd ≈ 4σ
    sdd_det, sdd_fused = M.sdd(det, truth).mean(), M.sdd(fused, truth).mean()
    assert sdd_fused < 0.6 * sdd_det
    step_det = np.linalg.norm(np.diff(det - truth, axis=0), axis=-1).mean()
    step_fused = np.linalg.norm(np.diff(fused - truth, axis=0), axis=-1).mean()
    assert step_fused < 0.5 * step_det
    assert M.nme(fused, truth).mean() < M.nme(det, truth).mean()  # closer to the truth too
    assert np.all(alpha[0] == 1) and 0.05 <= alpha[1:].mean() < 0.5


def test_fusion_falls_back_to_detection_when_tracking_is_meaningless():
    rng = np.random.default_rng(3)
    frames = (rng.random((6, 96, 96, 3)) * 255).astype(np.uint8)  # unrelated noise frames
    truth = np.repeat((np.stack([np.linspace(20, 70, 68), np.linspace(30, 60, 68)], 1))[None], 6, 0)
    det = truth + np.arange(6)[:, None, None] * 4.0  # the detector moves 4 px per frame
    fused, alpha = FlowFusion(tau_fb=0.01)(frames, det)
    assert alpha[1:].mean() > 0.9
    np.testing.assert_allclose(fused, det, atol=1.5)
    with pytest.raises(ValueError):
        FlowFusion(track_from="kalman")


def test_300vw_annotation_correction_removes_injected_jitter(fa_data, tmp_path, capsys):
    import shutil

    from projects.facealign.correct_300vw import jitter, main
    from projects.facealign.landmarks import add_annotation_noise, read_pts, write_pts

    src = fa_data / "300VW" / "114"
    noisy_root = tmp_path / "vw"
    shutil.copytree(src, noisy_root / "114")
    rng = np.random.default_rng(0)
    clean = np.stack([read_pts(p) for p in sorted((src / "annot").glob("*.pts"))]).astype(np.float64)
    noisy = np.stack([add_annotation_noise(p, rng, sigma=0.03) for p in clean]).astype(np.float64)
    for k, p in enumerate(noisy, start=1):
        write_pts(noisy_root / "114" / "annot" / f"{k:06d}.pts", p)
    assert main([str(noisy_root), str(tmp_path / "out")]) == 0
    fixed = np.stack([read_pts(p) for p in sorted((tmp_path / "out" / "114" / "annot").glob("*.pts"))])
    assert fixed.shape == clean.shape and "| 114 |" in capsys.readouterr().out
    assert jitter(fixed.astype(np.float64)) < 0.7 * jitter(noisy)
    err = lambda p: np.linalg.norm(p - clean, axis=-1).mean()  # noqa: E731
    assert err(fixed) < err(noisy)
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "o2")]) == 2


def test_pseudo_video_cli(fa_data, tmp_path, capsys):
    import json

    from projects.facealign.landmarks import read_pts
    from projects.facealign.pseudo_video import main
    from shared.io import read_video

    img = sorted((fa_data / "300W" / "ibug").glob("*.png"))[0]
    out = tmp_path / "pv.mp4"
    assert main([str(img), str(img.with_suffix(".pts")), str(out), "--fps", "10", "--seconds", "0.6", "--draw"]) == 0
    frames, fps = read_video(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    pts = np.array(meta["points"])
    assert frames.shape[0] == 6 and fps == pytest.approx(10) and pts.shape == (6, 68, 2)
    start = Shot(**meta["start"])
    np.testing.assert_allclose(pts[0], apply_homography(homography(start, 96, 96), read_pts(img.with_suffix(".pts"))),
                               atol=1e-3)
    assert main([str(img), str(tmp_path / "missing.pts"), str(tmp_path / "x.mp4")]) == 2
    assert "landmark file not found" in capsys.readouterr().err


def test_video_track_box_cannot_collapse_or_explode():
    """A detector that returns a half-size face every frame would shrink a naive landmark-box track to a point;
    next_box keeps the crop within ½–2× the detected face, and nearest_box follows the tracked face."""
    from projects.facealign.module import nearest_box, next_box

    ref = np.array([100.0, 100.0, 200.0, 200.0])
    box = ref.copy()
    for _ in range(10):
        c, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 4  # "landmarks" spanning half of the crop box
        pts = np.stack([c - half, c + half, c])
        box = next_box(pts, ref)
    np.testing.assert_allclose(box[2:] - box[:2], [50.0, 50.0])  # clamped at ½ of the detected side
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, [150.0, 150.0])
    pts = np.array([[0.0, 0.0], [1000.0, 1000.0]])
    np.testing.assert_allclose(next_box(pts, ref), [400.0, 400.0, 600.0, 600.0])  # ≤ 2× the detected side (100)
    pts = np.array([[120.0, 110.0], [190.0, 190.0]])
    np.testing.assert_allclose(next_box(pts, ref), [120.0, 110.0, 190.0, 190.0])  # plausible: the landmark box
    boxes = np.array([[0.0, 0.0, 50.0, 50.0], [140.0, 160.0, 230.0, 250.0]])
    np.testing.assert_allclose(nearest_box(boxes, ref), boxes[1])
