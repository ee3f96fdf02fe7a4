"""HIME runs are the paper's: one resampling kernel for the LR input and the references RFA compares with it,
validation identities that are never tested on, Tables 5.2–5.5 presets that change what their rows say (with the
parameter count of each row counted by hand), and tiled inference equal to the whole image."""

import zlib

import numpy as np
import pytest
import torch
import torchvision
from hydra.utils import instantiate

from projects.hime.data import HeadshotRefDataset, split_identities
from projects.hime.model import HIME, matlab_downsample
from projects.hime.module import HIMEModule
from shared.errors import UserError
from shared.imresize import imresize
from shared.io import write_image
from shared.ops.deform import ModulatedDeformConv2d
from shared.run import compose_config


# ------------------------------------------------------------------------------------------------ one kernel
def test_references_are_downsampled_exactly_like_the_lr_input(tmp_path):
    """F_refL and F_L (Eq. 5.2) come from one degradation: with the target itself as its reference, the LR
    extractor sees the data's LR input bit for bit (MATLAB bicubic ×1/s rounded to 8 bits)."""
    rng = np.random.default_rng(0)
    people = []
    for p in range(2):
        for i in range(3):
            write_image(tmp_path / f"p{p}" / f"{i}.png", (rng.random((70, 64, 3)) * 255).astype(np.uint8))
        people.append(sorted((tmp_path / f"p{p}").iterdir()))
    ds = HeadshotRefDataset(people, scale=8, lr_size=6, num_refs=2, train=False)
    item = ds[0]
    hr_u8 = (item["hr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal((item["lr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                          imresize(hr_u8, 1 / 8))
    assert torch.equal(matlab_downsample(item["hr"][None], 8)[0], item["lr"])
    net = HIME(scale=8, nf=8, lr_blocks=1, hr_blocks=1, rec_blocks=1, deformable_groups=2, offset_blocks=0).eval()
    seen = []
    net.lr_extractor.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        net(item["lr"][None], item["hr"][None, None])
    lr_in, ref_in = seen  # first the input, then the downsampled references
    assert torch.equal(lr_in, item["lr"][None]) and torch.equal(ref_in, item["lr"][None])


# ------------------------------------------------------------------------------------------------ validation
@pytest.fixture(scope="module")
def celeba_layout(tmp_path_factory):
    """DATA_DIR laid out like CelebAMask-HQ + CelebA identities: 12 identities of 4 photos (HQ index 4·id + j),
    every photo different."""
    root = tmp_path_factory.mktemp("data")
    hq = root / "CelebAMask-HQ"
    lines, ident = ["idx         orig_idx        orig_file"], []
    rng = np.random.default_rng(0)
    for n in range(48):
        orig = 1000 + 7 * n
        lines.append(f"{n:<11} {orig - 1:<15} {orig:06d}.jpg")
        ident.append(f"{orig:06d}.jpg {100 + n // 4}")
        write_image(hq / "CelebA-HQ-img" / f"{n}.jpg", (rng.random((32, 32, 3)) * 255).astype(np.uint8))
    (hq / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(lines) + "\n")
    (root / "CelebA" / "Anno").mkdir(parents=True)
    (root / "CelebA" / "Anno" / "identity_CelebA.txt").write_text("\n".join(ident) + "\n")
    return root


def test_paper_split_sizes_and_disjointness():
    cfg = compose_config("hime", "train", ["+experiment=celeba_x8"])
    h = cfg.data
    assert (h.n_train_ids, h.n_eval_ids, h.n_val_ids, h.val_root) == (2600, 287, 30, None)
    assert h.batch_size == 128  # the paper's (global) batch for 16×16 inputs (Sec. 5.5.1)
    train, evals, val = split_identities(list(range(2917)), 2600, 287, h.split_seed, n_val=30)
    assert (len(train), len(evals), len(val)) == (2600, 287, 30)
    assert len(set(train) | set(evals) | set(val)) == 2917  # 2,917 = 6,217 − 3,300 identities with ≥ 4 photos


def test_validation_identities_are_held_out_of_training_and_never_tested(celeba_layout):
    cfg = compose_config("hime", "train", ["+experiment=celeba_x8", f"paths.data_dir={celeba_layout}",
                                           "data.n_train_ids=8", "data.n_eval_ids=2", "data.n_val_ids=2",
                                           "data.cache_dir=null", "lr_size=2"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dm.setup("test")
    files = lambda ds: {p for g in ds.groups for p in g}  # noqa: E731
    val, test, train = files(dm.val_set), files(dm.test_sets_[0]), files(dm.train_set)
    assert (len(val), len(test), len(train)) == (8, 8, 32)
    # independent of the data module: identities from the CelebA files, photos by path and by content
    lines = (celeba_layout / "CelebAMask-HQ" / "CelebA-HQ-to-CelebA-mapping.txt").read_text().splitlines()[1:]
    orig = {int(ln.split()[0]): ln.split()[2] for ln in lines}
    who = dict(ln.split() for ln in (celeba_layout / "CelebA/Anno/identity_CelebA.txt").read_text().splitlines())
    ids = lambda fs: {who[orig[int(p.stem)]] for p in fs}  # noqa: E731
    assert not ids(val) & ids(test) and not ids(val) & ids(train) and not ids(train) & ids(test)
    assert not {p.read_bytes() for p in val} & {p.read_bytes() for p in test}
    assert len(dm.val_set) == 8 and not dm.val_set.train
    # another seed, another split; a validation folder that is the test set is refused
    other = instantiate(cfg.data, split_seed=1, _convert_="all")
    other.setup("fit")
    assert files(other.val_set) != val
    bad = instantiate(cfg.data, kind="folders", root=str(celeba_layout / "CelebAMask-HQ"), n_train_ids=None,
                      n_eval_ids=None, val_root=str(celeba_layout / "CelebAMask-HQ"), min_images=4, _convert_="all")
    with pytest.raises(UserError, match="also in test set"):
        bad.setup("fit")


@pytest.mark.parametrize("flip", ["none", "uneven", "even"])
def test_table_5_6_flip_reaches_training_only(celeba_layout, flip):
    cfg = compose_config("hime", "train", ["+experiment=celeba_x8", f"paths.data_dir={celeba_layout}",
                                           "data.n_train_ids=8", "data.n_eval_ids=2", "data.n_val_ids=2",
                                           "data.cache_dir=null", f"data.flip={flip}"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_set.flip == flip and dm.train_set.train
    assert not dm.val_set.train and not dm.test_sets_[0].train  # evaluation items are never flipped


# ------------------------------------------------------------------------------------------- Tables 5.2–5.5
TINY = ["model.net.nf=8", "model.net.lr_blocks=1", "model.net.hr_blocks=1", "model.net.rec_blocks=1",
        "model.net.deformable_groups=2", "model.net.offset_blocks=1"]


def conv(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def hand_count(alignment: str = "dconv_lr", aggregation: str = "cofa", references: bool = True, scale: int = 8,
               nf: int = 8, groups: int = 2, offset_blocks: int = 1) -> int:
    """HIME layout (README 'Network') counted by hand, one residual block per stage at this width."""
    block = 2 * conv(nf, nf)
    total = conv(3, nf) + block + block + conv(nf, nf) + conv(nf, 3 * scale * scale)  # LR extractor + reconstruction
    if references:
        total += conv(3, 1, 1) + conv(scale * scale, nf) + block  # HR extractor
        total += conv(2 * nf, nf) + offset_blocks * block + conv(nf, nf)  # g of Eq. 5.2, in every RFA variant
        total += conv(2 * nf, nf) if alignment == "conv" else nf * nf * 9 + nf + conv(nf, 3 * groups * 9)
        total += 2 * conv(nf, nf) if aggregation == "cofa" else 0  # g1, g2 of Eq. 5.6
    return total


ROWS = {  # preset → (net settings, data.num_refs, non-zero loss terms)
    "table5_2_conv": ({"alignment": "conv"}, 3, {"rec"}),
    "table5_2_dconv_lr": ({}, 3, {"rec"}),
    "table5_2_dconv_ref": ({"alignment": "dconv_ref"}, 3, {"rec"}),
    "table5_3_average": ({"aggregation": "average"}, 3, {"rec"}),
    "table5_3_max": ({"aggregation": "max"}, 3, {"rec"}),
    "table5_3_cofa": ({}, 3, {"rec"}),
    "table5_4_ref0": ({"references": False}, 0, {"rec"}),
    "table5_4_ref1": ({}, 1, {"rec"}),
    "table5_4_ref3": ({}, 3, {"rec"}),
    "table5_5_rec": ({}, 3, {"rec"}),
    "table5_5_rec_cor": ({}, 3, {"rec", "cor"}),
    "table5_5_p_nocor": ({}, 3, {"rec", "adv", "per"}),
    "table5_5_p": ({}, 3, {"rec", "adv", "per", "cor"}),
}
TABLES = [[r for r in ROWS if r.startswith(t)] for t in ("table5_2", "table5_3", "table5_4", "table5_5")]


@pytest.fixture(scope="module")
def vgg_path(tmp_path_factory):
    torch.manual_seed(0)
    feats = torchvision.models.vgg19(weights=None).features[:8]
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    return path


def randomise(net: torch.nn.Module) -> torch.nn.Module:
    """Parameters from generators seeded by their names: shared parameters of two presets are equal, the zero-
    initialised offset convs stop hiding the alignment branch."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 / max(1, p[0].numel()) ** 0.5)
    return net


_gen = torch.Generator().manual_seed(0)
LR, HR, REFS = torch.rand(2, 3, 4, 4, generator=_gen), torch.rand(2, 3, 32, 32, generator=_gen), \
    torch.rand(2, 3, 3, 32, 32, generator=_gen)


def build(preset: str, vgg: str) -> tuple[HIMEModule, int]:
    if preset.startswith("table5_4"):
        over = [f"+experiment={preset}"]
    else:
        over = ["+experiment=celeba_x8", f"model={preset}"]
    cfg = compose_config("hime", "train", [*over, *TINY, f"model.vgg_weights={vgg}", "model.vgg_layer=conv2_2",
                                           "++model.discriminator.image_size=32", "++model.discriminator.nf=8",
                                           "++model.discriminator.max_nf=16"])
    if not cfg.model.loss_weights.adv:
        cfg.model.discriminator = None
    torch.manual_seed(0)
    mod = instantiate(cfg.model, _convert_="all")
    randomise(mod.net)
    return mod, cfg.data.num_refs


def run(mod: HIMEModule, n_refs: int) -> tuple[torch.Tensor, dict[str, float]]:
    torch.manual_seed(1)
    with torch.no_grad():
        out = mod.net(LR, REFS[:, :n_refs])
        terms = mod.generator_losses(out, HR)
    return out, {k: v.item() for k, v in terms.items()}


@pytest.fixture(scope="module")
def default(vgg_path):
    """The paper's HIME_rec at (16, ×8): dconv_lr alignment, CoFA, 3 references, L_rec."""
    mod, n = build("table5_5_rec", str(vgg_path))
    assert sum(p.numel() for p in mod.net.parameters()) == hand_count()
    return run(mod, n)


@pytest.mark.parametrize("preset", list(ROWS))
def test_preset_changes_what_its_row_says(preset, default, vgg_path):
    net_kw, n_refs, terms = ROWS[preset]
    mod, n = build(preset, str(vgg_path))
    assert n == n_refs and sum(p.numel() for p in mod.net.parameters()) == hand_count(**net_kw)
    out, losses = run(mod, n)
    assert set(losses) - {"loss"} == terms
    arch_differs = bool(net_kw) or n_refs != 3
    assert (not torch.allclose(out, default[0], atol=1e-6)) == arch_differs
    if not arch_differs:
        assert (losses["loss"] == pytest.approx(default[1]["loss"], rel=1e-6)) == (terms == {"rec"})


@pytest.mark.parametrize("rows", TABLES, ids=["5.2", "5.3", "5.4", "5.5"])
def test_rows_of_a_table_differ_from_each_other(rows, vgg_path):
    results = {r: run(*build(r, str(vgg_path))) for r in rows}
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            same_out = torch.allclose(results[a][0], results[b][0], atol=1e-6)
            same_loss = results[a][1]["loss"] == pytest.approx(results[b][1]["loss"], rel=1e-6)
            assert not (same_out and same_loss), (a, b)


def test_table_5_2_parameter_count_per_row_at_full_size():
    """The Conv row keeps RFA's offset network: it differs from the paper's row by DCN vs a 3×3 conv only."""
    counts = {a: sum(p.numel() for p in HIME(scale=8, alignment=a).parameters())
              for a in ("conv", "dconv_lr", "dconv_ref")}
    assert counts == {"conv": 851_620, "dconv_lr": 904_828, "dconv_ref": 904_828}
    assert counts["dconv_lr"] - counts["conv"] == (32 * 32 * 9 + 32 + conv(32, 3 * 8 * 9)) - conv(64, 32)


# ------------------------------------------------------------------------------------------------------ tiling
def test_tiled_inference_of_the_real_network_equals_the_whole_image():
    """HIME (RFA with non-zero learned offsets, CoFA) at a tiny width, 60×68 LR input with two 240×272
    references, 32-px tiles overlapping by 24 (references cut into the matching ×4 tiles): equal to 1e-5."""
    cfg = compose_config("hime", "infer", ["model=tiny", "model.infer_tile=32", "model.infer_tile_overlap=24"])
    torch.manual_seed(0)
    mod = instantiate(cfg.model, _convert_="all").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in mod.net.modules():
            if isinstance(m, ModulatedDeformConv2d):
                m.conv_offset_mask.weight.copy_(torch.randn(m.conv_offset_mask.weight.shape, generator=gen))
    lr, refs = torch.rand(1, 3, 60, 68, generator=gen), torch.rand(1, 2, 3, 240, 272, generator=gen)
    with torch.no_grad():
        for r in (refs, None):
            whole, tiled = mod.net(lr, r), mod.predict(lr, r)
            assert tiled.shape == whole.shape == (1, 3, 240, 272)
            assert (tiled - whole).abs().max() <= 1e-5
    with pytest.raises(UserError, match="references must be 4×"):
        mod.predict(lr, refs[..., :200, :])
