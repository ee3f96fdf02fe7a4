"""The paper's ZSM run is the paper's: `+experiment=vimeo` is model (f); validation clips are held out of the
training list and never tested on; every Table 6.5 preset changes what its column says and has its hand-counted
size; tiled inference of the real network equals whole frames."""

import zlib

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from projects.zsm.module import ZSMModule
from shared.errors import UserError
from shared.io import write_image
from shared.ops.deform import ModulatedDeformConv2d
from shared.run import compose_config
from shared.tiling import tiled_forward
from tests.helpers import torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    with torch_threads(1):
        yield


# ------------------------------------------------------------------------------------------------ validation
@pytest.fixture(scope="module")
def vimeo_layout(tmp_path_factory):
    """DATA_DIR laid out like Vimeo-90K (sequences/<5d>/<4d>/im1..7.png and the five list files) and Vid4, with
    8×8 frames whose pixels encode (clip, frame) so no two frames are alike. 80 training clips, 12 test clips
    (fast/medium/slow: 4 each)."""
    root = tmp_path_factory.mktemp("data")
    vimeo = root / "vimeo_septuplet"
    train = [f"{a:05d}/{b:04d}" for a in (1, 2) for b in range(1, 41)]
    test = [f"{a:05d}/{b:04d}" for a in (1, 2) for b in range(41, 47)]
    for n, key in enumerate(train + test):
        for i in range(7):
            frame = np.zeros((8, 8, 3), np.uint8)
            frame[0, 0], frame[0, 1] = n % 256, n // 256
            frame[0, 2] = i
            write_image(vimeo / "sequences" / key / f"im{i + 1}.png", frame)
    (vimeo / "sep_trainlist.txt").write_text("\n".join(train) + "\n")
    (vimeo / "sep_testlist.txt").write_text("\n".join(test) + "\n")
    for name, part in (("fast", test[:4]), ("medium", test[4:8]), ("slow", test[8:])):
        (vimeo / f"{name}_testset.txt").write_text("\n".join(part) + "\n")
    for c, clip in enumerate(("calendar", "city", "foliage", "walk")):
        for i in range(7):
            write_image(root / "Vid4" / "HR" / clip / f"{i:08d}.png", np.full((16, 16, 3), 200 + c, np.uint8))
    return root


def frame_bytes(folder) -> set[bytes]:
    return {p.read_bytes() for p in folder.iterdir()}


def test_validation_clips_are_held_out_training_clips_never_test_clips(vimeo_layout):
    cfg = compose_config("zsm", "train", ["+experiment=vimeo", f"paths.data_dir={vimeo_layout}"])
    assert cfg.data.batch_size == 24  # the paper's global batch (Sec. 6.3.6)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dm.setup("test")
    vimeo = vimeo_layout / "vimeo_septuplet"
    listed = (vimeo / "sep_trainlist.txt").read_text().split()
    val, train = dm.val_set.keys, dm.train_set.keys
    assert len(val) == 64 and len(train) == 16 and sorted(val + train) == sorted(listed)
    assert val == sorted(val) and not dm.val_set.train  # whole frames, no crops
    # independent of the data module: every test clip's frames, by list file and by content
    test_keys = {k for n in ("fast", "medium", "slow") for k in (vimeo / f"{n}_testset.txt").read_text().split()}
    assert not set(val) & test_keys
    test_frames = set().union(*(frame_bytes(vimeo / "sequences" / k) for k in test_keys),
                              *(frame_bytes(d) for d in (vimeo_layout / "Vid4" / "HR").iterdir()))
    for key in val:
        assert not frame_bytes(vimeo / "sequences" / key) & test_frames
    assert dm.test_names == ["Vid4", "Vimeo-Fast", "Vimeo-Medium", "Vimeo-Slow"]
    # the split is seeded: the same seed gives the same clips, another seed others
    again = instantiate(cfg.data, _convert_="all")
    assert again.split_keys()[1] == val
    other = instantiate(cfg.data, val_seed=1, _convert_="all")
    assert other.split_keys()[1] != val


def test_a_test_set_that_overlaps_validation_is_refused(vimeo_layout):
    cfg = compose_config("zsm", "train", ["+experiment=vimeo", f"paths.data_dir={vimeo_layout}",
                                          "data.test_sets.Vimeo-Slow.list_file=${paths.data_dir}/vimeo_septuplet/"
                                          "sep_trainlist.txt"])
    with pytest.raises(UserError, match="also in test set Vimeo-Slow"):
        instantiate(cfg.data, _convert_="all").setup("fit")


def test_testing_alone_needs_no_training_list(vimeo_layout):
    """`eval` of a checkpoint needs only the test sets; training and validation need the training list."""
    cfg = compose_config("zsm", "eval", [f"paths.data_dir={vimeo_layout}",
                                         f"data.train_list={vimeo_layout}/missing.txt"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("test")
    assert dm.test_names == ["Vid4", "Vimeo-Fast", "Vimeo-Medium", "Vimeo-Slow"]
    with pytest.raises(UserError, match="list file not found"):
        dm.setup("fit")


# ------------------------------------------------------------------------------------------------- Table 6.5
NF, G = 8, 2
TINY = [f"model.net.nf={NF}", f"model.net.groups={G}", "model.net.front_blocks=1", "model.net.back_blocks=1",
        "model.net.gfi_blocks=1"]


def conv(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def hand_count(interpolation: str, temporal: str, gfi: bool, nf: int = NF, g: int = G, front: int = 1,
               back: int = 1, gfi_blocks: int = 1) -> int:
    """ZSM (Fig. 6.6, official layout) counted by hand."""
    rb = 2 * conv(nf, nf)
    dcn = nf * nf * 9 + nf + conv(nf, 3 * g * 9)  # DCNv2: main conv + offset/mask conv
    pyramid = 4 * conv(nf, nf)  # L2, L3: two convs each
    pcd = (conv(2 * nf, nf) + conv(nf, nf) + dcn  # L3
           + 2 * (conv(2 * nf, nf) + conv(2 * nf, nf) + conv(nf, nf) + dcn + conv(2 * nf, nf)))  # L2, L1
    two_branch = 2 * pcd
    easy_pcd = pyramid + two_branch + conv(2 * nf, nf, 1)
    cell = conv(2 * nf, 4 * nf)
    total = conv(3, nf) + front * rb + conv(2 * nf, nf, 1)  # + fusion of the interpolation (α, β of Eq. 6.4)
    total += pyramid + two_branch if interpolation == "deformable" else 2 * conv(2 * nf, 2 * nf)
    total += {"none": 0, "convlstm": cell, "dconvlstm": cell + 2 * easy_pcd,
              "bidconvlstm": cell + 2 * easy_pcd + conv(2 * nf, nf, 1)}[temporal]
    total += back * rb + 2 * conv(nf, 4 * nf) + conv(nf, nf) + conv(nf, 3)
    return total + (gfi_blocks * rb + conv(nf, 3) if gfi else 0)


def test_hand_count_is_the_official_size():
    assert hand_count("deformable", "bidconvlstm", False, 64, 8, 5, 40) == 11_102_771


COLUMNS = {"a": ("naive", "none", False), "b": ("deformable", "none", False), "c": ("deformable", "convlstm", False),
           "d": ("deformable", "dconvlstm", False), "e": ("deformable", "bidconvlstm", False),
           "f": ("deformable", "bidconvlstm", True)}


def randomise(net: torch.nn.Module) -> torch.nn.Module:
    """Parameters drawn from generators seeded by their names (shared parameters of two presets get the same values;
    offset convs are no longer zero, so deformable sampling matters)."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 / max(1, p[0].numel()) ** 0.5)
    return net


def build(overrides: list[str]) -> ZSMModule:
    cfg = compose_config("zsm", "train", [*overrides, *TINY])
    torch.manual_seed(0)
    mod = instantiate(cfg.model, _convert_="all")
    randomise(mod.net)
    mod.log = mod.log_dict = lambda *a, **k: None
    return mod


_gen = torch.Generator().manual_seed(0)
BATCH = {"lr": torch.rand(1, 3, 3, 8, 8, generator=_gen), "hr": torch.rand(1, 5, 3, 32, 32, generator=_gen),
         "lr_gt": torch.rand(1, 5, 3, 8, 8, generator=_gen)}


def run(mod: ZSMModule) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        return mod.net(BATCH["lr"]), mod.training_step(BATCH, 0).item()


@pytest.fixture(scope="module")
def paper_run():
    """`+experiment=vimeo`: the model whose numbers Tables 6.1/6.2 quote, (f) = (e) + GFI."""
    mod = build(["+experiment=vimeo"])
    assert (mod.net.lr_head is not None, tuple(mod.hparams.gfi_weights)) == (True, (1.0, 1.0, 1.0))
    return run(mod)


@pytest.mark.parametrize("column", list(COLUMNS))
def test_table_6_5_presets_change_what_their_column_says(column, paper_run):
    interpolation, temporal, gfi = COLUMNS[column]
    mod = build(["+experiment=vimeo", f"model=table6_5_{column}"])
    net = mod.net
    assert sum(p.numel() for p in net.parameters()) == hand_count(interpolation, temporal, gfi)
    assert (net.lr_head is not None) == gfi and (mod.hparams.gfi_weights[1] > 0) == gfi
    out, loss = run(mod)
    if column in "ef":  # (e) is (f) without the GFI losses: the same network output, other loss terms
        assert torch.allclose(out, paper_run[0], atol=1e-6)
        assert (loss == pytest.approx(paper_run[1], rel=1e-6)) == (column == "f")
    else:
        assert not torch.allclose(out, paper_run[0], atol=1e-4)


def test_each_column_differs_from_its_neighbour():
    """Table 6.5 reads column to column: a→b DFI, b→c ConvLSTM, c→d deformable, d→e bidirectional, e→f GFI."""
    results = {c: run(build(["+experiment=vimeo", f"model=table6_5_{c}"])) for c in COLUMNS}
    for a, b in zip("abcde", "bcdef"):
        same_out = torch.allclose(results[a][0], results[b][0], atol=1e-6)
        same_loss = results[a][1] == pytest.approx(results[b][1], rel=1e-6)
        assert not (same_out and same_loss), (a, b)


def test_gfi_checkpoint_loads_into_the_inference_network():
    """The GFI head is training-only: (f)'s weights load strictly into (e) and give the same output."""
    f, e = build(["model=table6_5_f"]), build(["model=table6_5_e"])
    e.net.load_state_dict(f.net.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(e.net(BATCH["lr"]), f.net(BATCH["lr"]))
    bad = {**f.net.state_dict(), "conv_first.weight": torch.zeros(NF, 3, 2, 2)}
    with pytest.raises(RuntimeError, match="size mismatch"):
        e.net.load_state_dict(bad)


# ------------------------------------------------------------------------------------------------------ tiling
def test_tiled_inference_of_the_real_network_equals_whole_frames():
    """The official network (bidirectional deformable ConvLSTM) at a tiny width, with non-zero learned offsets
    (mean |Δp| ≈ 0.3 px), on 80×92 LR frames in 48-px tiles overlapping by 36: within 1e-5 of the whole frames."""
    cfg = compose_config("zsm", "infer", [*TINY, "model.infer_tile=48", "model.infer_tile_overlap=36"])
    torch.manual_seed(0)
    mod = instantiate(cfg.model, _convert_="all").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in mod.net.modules():
            if isinstance(m, ModulatedDeformConv2d):
                m.conv_offset_mask.weight.copy_(torch.randn(m.conv_offset_mask.weight.shape, generator=gen))
    x = torch.rand(1, 2, 3, 80, 92, generator=gen)
    with torch.no_grad():
        whole = mod.net(x)
        tiled = tiled_forward(mod._predict, x, mod.hparams.infer_tile, mod.hparams.infer_tile_overlap, 4)
    assert tiled.shape == whole.shape == (1, 3, 3, 320, 368)
    assert (tiled - whole).abs().max() <= 1e-5
