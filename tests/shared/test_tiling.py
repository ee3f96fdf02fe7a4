"""Band-by-band tiled inference (shared.tiling) and the memory-budgeted tile choice (shared.inference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shared.inference import TiledRunner, peak_during, plan_tile, process_memory
from shared.tiling import balanced_tile, into, shift_up, tiled_apply, tiled_forward, to_uint8


def pointwise(x):
    """A network without spatial context: tiling must not change a single value (independent reference)."""
    return F.interpolate(torch.sigmoid(3 * x - 1), scale_factor=2, mode="nearest")


@pytest.mark.parametrize("tile,overlap,batch", [(16, 6, 1), (16, 6, 3), (10, 3, 8), (40, 9, 2), (64, 8, 1)])
def test_tiles_blend_to_the_whole_result(tile, overlap, batch):
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    ref = pointwise(x)
    got = tiled_forward(pointwise, x, tile, overlap, 2, batch)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    q = torch.zeros(2, 3, 74, 106, dtype=torch.uint8)
    tiled_apply(pointwise, x, tile, overlap, 2, into(q, quantize=True), batch)
    assert torch.equal(q, to_uint8(ref))


def test_a_conv_net_tiled_matches_whole_frames():
    torch.manual_seed(0)
    nn = torch.nn
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(conv, x, 24, 12, 2, batch=2), conv(x), atol=1e-5, rtol=0)


def test_balanced_tiles_cover_with_the_fewest_pixels():
    """By hand: 640 px at most 320 per tile, overlap 16 → three tiles are needed either way; 3 × 224 covers
    (224 + 2 × 208 = 640) where 3 × 320 did; 360 px → two tiles of 188 (188 + 172 = 360)."""
    assert balanced_tile(640, 320, 16) == 224 and balanced_tile(360, 320, 16) == 188
    assert balanced_tile(300, 320, 16) == 300 and balanced_tile(321, 320, 16) == 172   # fits / just over
    seen = []

    def count(x):
        seen.append(x.shape[-2] * x.shape[-1])
        return pointwise(x)

    x = torch.rand(1, 3, 360, 640)
    torch.testing.assert_close(tiled_forward(count, x, 320, 16, 2), pointwise(x), atol=1e-6, rtol=0)
    assert len(seen) == 6 and sum(seen) == 6 * 224 * 188 <= 1.15 * 360 * 640   # was 6 × 320² = 2.7 × the frame


def test_finished_rows_arrive_once_in_order_one_band_at_a_time():
    x = torch.rand(1, 3, 50, 30)
    calls = []
    tiled_apply(pointwise, x, 16, 4, 2, lambda row, rows: calls.append((row, rows.shape[-2])))
    assert calls[0][0] == 0 and all(r1 == r0 + n0 for (r0, n0), (r1, _) in zip(calls, calls[1:]))
    assert sum(n for _, n in calls) == 100
    assert max(n for _, n in calls) <= 2 * 16  # never more than one band of float rows


def test_plan_tile_takes_the_largest_tile_within_the_budget():
    """A probe whose peak is 16 KiB per LR pixel: the plan (with its margin) must fit the budget and the next size up
    must not."""
    per_px = 16 * 1024

    def probe(side):
        t = torch.ones(side * side * per_px // 4)  # the one tensor alive at the peak
        return float(t.sum())

    budget, fixed = 96 * 2**20, 8 * 2**20
    band = lambda t: 12 * 4 * t * 1000  # noqa: E731
    plan = plan_tile(probe, torch.device("cpu"), 900, 700, 16, budget, band, fixed)
    assert plan.tile is not None and plan.tile % 16 == 0
    assert abs(plan.per_pixel - 1.5 * per_px) / per_px < 0.1  # measured, plus the planner's CPU margin (×1.5)
    need = lambda t: 1.5 * per_px * t * t + band(t) + fixed  # noqa: E731
    assert need(plan.tile) <= budget * 1.05 and need(plan.tile + 16) > budget * 0.95
    whole = plan_tile(probe, torch.device("cpu"), 40, 30, 16, budget, band, fixed)
    assert whole.tile is None  # fits whole


def test_auto_tiles_a_real_network_within_its_budget_and_equals_whole_frames():
    from hydra.utils import instantiate

    from shared.run import compose_config

    torch.manual_seed(0)
    net = instantiate(compose_config("cajnn", "train", ["model=tiny"]).model.net).eval()
    x = torch.rand(1, 3, 320, 480)
    with torch.inference_mode():
        whole = net(x)
    room = 120 * 2**20  # about a quarter of what whole frames need at this size (~3.3 KiB per LR pixel)
    # an overlap wider than the tiny net's reach (16 px is not, for CAJNN: 3e-3 apart), so tiles = whole
    runner = TiledRunner(net, "auto", 32, 4, torch.device("cpu"), lambda s: net(torch.zeros(1, 3, s, s)),
                         out_planes=3, max_memory_gb=(process_memory() + room) / 2**30)
    with torch.inference_mode():
        plan = runner.plan(320, 480)
        assert plan.tile is not None and plan.tile < 320 and plan.bytes_needed <= plan.bytes_available
        out = torch.empty_like(whole)
        peak = peak_during(lambda: runner.run(x, into(out)), torch.device("cpu"))
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=0)
    assert peak <= room, peak / 2**20  # tensor bytes, as the planner counts them


@pytest.mark.parametrize("rows", [0, 3, 5, 6, 9])
def test_shift_up_matches_concatenation(rows):
    """The in-place shift of the blending band equals the concatenation it replaces (rows kept below, above and
    equal to the rows dropped; everything dropped), and leaves the tensor it was given holding the result."""
    band = torch.randn(2, 3, 9, 4)
    keep = max(9 - rows, 0)
    expect = torch.cat([band[..., rows:, :], torch.zeros(2, 3, 9 - keep, 4)], dim=-2)
    ptr = band.data_ptr()
    shift_up(band, rows)
    assert torch.equal(band, expect) and band.data_ptr() == ptr


def test_to_uint8_leaves_its_input_alone():
    x = torch.tensor([-0.2, 0.0, 0.5, 0.501, 1.0, 1.7])
    before = x.clone()
    assert to_uint8(x).tolist() == [0, 0, 128, 128, 255, 255]  # round(127.5) = 128 (half to even), 127.755 → 128
    assert torch.equal(x, before)
