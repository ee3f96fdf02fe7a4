import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from projects.zsm.convert_official import convert, official_to_ours, ours_to_official
from projects.zsm.model import ZSM

MANIFEST = Path(__file__).with_name("official_state_dict.tsv")


def official_manifest() -> dict[str, tuple[int, ...]]:
    rows = (ln.split("\t") for ln in MANIFEST.read_text().splitlines() if ln.strip())
    return {name: tuple(int(s) for s in shape.split(",")) for name, shape in rows}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_default_is_the_official_network():
    net = ZSM()
    assert n_params(net) == 11_102_771
    manifest = official_manifest()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert len(ours) == len(manifest) == 416
    assert {official_to_ours(k): s for k, s in manifest.items()} == ours
    assert {ours_to_official(k) for k in ours} == set(manifest)


def test_convert_official_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    official = {f"module.{k}": torch.randn(s, generator=gen) for k, s in official_manifest().items()}
    src, dst = tmp_path / "official.pth", tmp_path / "ours.pth"
    torch.save(official, src)
    res = subprocess.run([sys.executable, "-m", "projects.zsm.convert_official", str(src), str(dst)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ours = torch.load(dst, weights_only=True)
    net = ZSM()
    net.load_state_dict(ours, strict=True)
    for k, v in official.items():
        assert torch.equal(ours[official_to_ours(k)], v)
    # a wrong checkpoint is one clear line and exit 2
    torch.save({"conv_first.weight": torch.zeros(64, 3, 3, 3)}, src)
    res = subprocess.run([sys.executable, "-m", "projects.zsm.convert_official", str(src), str(dst)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: not an official ZSM checkpoint")


def test_convert_rejects_wrong_shapes():
    state = {k: torch.zeros(s) for k, s in official_manifest().items()}
    state["conv_first.weight"] = torch.zeros(32, 3, 3, 3)
    with pytest.raises(RuntimeError, match="size mismatch"):
        convert(state)


def tiny(**kw):
    return ZSM(nf=8, groups=2, front_blocks=1, back_blocks=1, **kw)


@pytest.mark.parametrize("n,h,w", [(2, 8, 8), (3, 7, 6), (4, 10, 13), (5, 9, 9), (6, 8, 11), (7, 5, 7)])
def test_shapes_any_n_and_size(n, h, w):
    torch.manual_seed(0)
    out = tiny()(torch.rand(1, n, 3, h, w))
    assert out.shape == (1, 2 * n - 1, 3, 4 * h, 4 * w)


def test_padding_matches_explicit_zero_pad():
    """Odd sizes: the output equals running on the zero-padded input (bottom/right) and cropping back."""
    torch.manual_seed(0)
    net = tiny().eval()
    x = torch.rand(1, 2, 3, 9, 10)
    padded = F.pad(x.view(2, 3, 9, 10), (0, 2, 0, 3)).view(1, 2, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(net(x), net(padded)[..., :36, :40], atol=1e-6)


@pytest.mark.parametrize("kw", [dict(interpolation="naive", temporal="none"), dict(temporal="none"),
                                dict(temporal="convlstm"), dict(temporal="dconvlstm")])
def test_ablation_variants_run_and_backprop(kw):
    net = tiny(**kw)
    out = net(torch.rand(2, 3, 3, 8, 8))
    assert out.shape == (2, 5, 3, 32, 32)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_gfi_head_outputs():
    net = tiny(gfi=True)
    aux = net(torch.rand(1, 4, 3, 9, 8), return_aux=True)
    assert aux["out"].shape == (1, 7, 3, 36, 32)
    assert aux["lr_interp1"].shape == (1, 3, 3, 9, 8)  # frames 2, 4, 6 (Eq. 6.8)
    assert aux["lr_interp2"].shape == (1, 2, 3, 9, 8)  # frames 3, 5 re-interpolated (Eq. 6.9)
    assert n_params(ZSM(gfi=True)) - n_params(ZSM()) == 5 * 73_856 + 1_731


def test_first_frame_without_bidirection_ignores_the_future():
    """Forward-only DConvLSTM: output frame 0 depends on frames 0-1 only through the interpolation of (0, 1)."""
    torch.manual_seed(0)
    net = tiny(temporal="dconvlstm").eval()
    x = torch.rand(1, 3, 3, 8, 8)
    y = x.clone()
    y[:, 2] = torch.rand(3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x)[:, :3], net(y)[:, :3], atol=1e-6)
        assert not torch.allclose(net(x)[:, 4], net(y)[:, 4])


def test_bad_input_and_options():
    with pytest.raises(ValueError, match="N ≥ 2"):
        tiny()(torch.rand(1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="temporal"):
        tiny(temporal="gru")
    with pytest.raises(ValueError, match="interpolation"):
        tiny(interpolation="linear")


def test_full_size_forward_on_cpu():
    net = ZSM().eval()
    with torch.no_grad():
        out = net(torch.rand(1, 2, 3, 8, 12))
    assert out.shape == (1, 3, 3, 32, 48) and torch.isfinite(out).all()


@pytest.mark.parametrize("variant,temporal", [("a", "none"), ("b", "none"), ("c", "convlstm"), ("d", "dconvlstm"),
                                              ("e", "bidconvlstm"), ("f", "bidconvlstm")])
def test_table_6_5_presets_compose(variant, temporal):
    from hydra.utils import instantiate

    from shared.run import compose_config

    cfg = compose_config("zsm", "train", ["+experiment=vimeo", f"model=table6_5_{variant}"])
    assert cfg.model.net.temporal == temporal
    assert (cfg.model.net.interpolation == "naive") == (variant == "a")
    assert cfg.model.net.gfi == (variant == "f") and (cfg.model.gfi_weights[1] > 0) == (variant == "f")
    if variant == "e":
        assert n_params(instantiate(cfg.model.net)) == 11_102_771


@pytest.mark.parametrize("experiment", ["vimeo", "smoke"])
def test_experiments_compose(experiment):
    from shared.run import compose_config

    cfg = compose_config("zsm", "train", [f"+experiment={experiment}"])
    assert cfg.model.net._target_ == "projects.zsm.model.ZSM"


def test_global_skip_adds_bicubic_blend_without_parameters():
    from projects.zsm.model import BicubicBlend

    net = tiny(global_skip=True)
    assert n_params(net) == n_params(tiny())
    with torch.no_grad():
        net.conv_last.weight.zero_()
        net.conv_last.bias.zero_()
        x = torch.rand(1, 3, 3, 9, 10)
        assert torch.allclose(net(x), BicubicBlend(4)(x), atol=1e-6)
