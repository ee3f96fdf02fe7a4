"""CAJNN data (Sec. 4.4.1): training pairs in the chapter's order (whole image ↓4 → JPEG → crop), the LR cache,
and validation images that are never test images in the configs the paper runs use."""

import random
import shutil

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from shared.errors import UserError
from shared.imresize import imresize
from shared.io import write_image
from shared.run import compose_config
from shared.srdata import HRCropDataset, check_disjoint, file_digest, holdout_split


def u8(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def cv2_jpeg(img: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def find_crop(full: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """Where ``crop`` sits in ``full`` (exhaustive search; the test photo has no repeated 64-px patches)."""
    h, w = crop.shape[:2]
    hits = [(y, x) for y in range(full.shape[0] - h + 1) for x in range(full.shape[1] - w + 1)
            if np.array_equal(full[y : y + h, x : x + w], crop)]
    assert len(hits) == 1
    return hits[0]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from skimage import data

    hr = np.ascontiguousarray(data.astronaut()[40:243, 60:218])  # 203×158: modcrop(4) drops 3 rows and 2 columns
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    write_image(path, hr)
    return path, hr


def test_training_pair_is_whole_image_downsample_then_jpeg_then_crop(photo):
    """Sec. 4.4.1: LR = crop(JPEG_q(MATLAB bicubic ×1/4 of the whole modcropped image)), computed here by hand."""
    path, hr = photo
    whole = hr[:200, :156]  # modcrop 4
    clean_whole = imresize(whole, 0.25)  # 50×39: the whole image's LR
    random.seed(0)
    offgrid = 0
    for q in (10, 35, 90):
        jpeg_whole = cv2_jpeg(clean_whole, q)
        ds = HRCropDataset([path], scale=4, patch=64, jpeg_quality=(q, q), augment=False)
        for _ in range(4):
            item = ds[0]
            assert item["quality"] == q and item["lr"].shape == (3, 16, 16) and item["hr"].shape == (3, 64, 64)
            y, x = find_crop(whole, u8(item["hr"]))
            assert y % 4 == 0 and x % 4 == 0
            ly, lx = y // 4, x // 4
            assert np.array_equal(u8(item["lr"]), jpeg_whole[ly : ly + 16, lx : lx + 16])
            assert np.array_equal(u8(item["lr_clean"]), clean_whole[ly : ly + 16, lx : lx + 16])
            if ly % 8 or lx % 8:  # the JPEG grid is not the patch's: compressing the patch alone differs
                offgrid += 1
                assert not np.array_equal(u8(item["lr"]), cv2_jpeg(clean_whole[ly : ly + 16, lx : lx + 16], q))
    assert offgrid > 0


def test_augmentation_applies_one_dihedral_variant_to_the_whole_pair(photo):
    path, hr = photo
    whole = hr[:200, :156]
    jpeg_whole = cv2_jpeg(imresize(whole, 0.25), 50)
    ds = HRCropDataset([path], scale=4, patch=32, jpeg_quality=(50, 50), augment=True)
    random.seed(1)
    seen = set()
    for _ in range(24):
        item = ds[0]
        hr_c, lr_c = u8(item["hr"]), u8(item["lr"])
        variants = [np.rot90(m, r) for m in (hr_c, hr_c[:, ::-1]) for r in range(4)]  # undo any of the 8
        found = []
        for k, v in enumerate(variants):
            v = np.ascontiguousarray(v)
            hits = [(y, x) for y in range(0, 200 - 31, 4) for x in range(0, 156 - 31, 4)
                    if np.array_equal(whole[y : y + 32, x : x + 32], v)]
            found += [(k, y, x) for y, x in hits]
        assert len(found) == 1
        k, y, x = found[0]
        lr_undone = np.ascontiguousarray(np.rot90(lr_c if k < 4 else lr_c[:, ::-1], k % 4))
        assert np.array_equal(lr_undone, jpeg_whole[y // 4 : y // 4 + 8, x // 4 : x // 4 + 8])
        seen.add(k)
    assert len(seen) >= 5


def test_clean_lr_cache_gives_the_same_pairs(photo, tmp_path):
    path, _ = photo
    plain = HRCropDataset([path], scale=4, patch=64, jpeg_quality=(10, 100))
    cached = HRCropDataset([path], scale=4, patch=64, jpeg_quality=(10, 100), lr_cache_dir=tmp_path / "c")
    for seed in range(3):
        random.seed(seed)
        a = plain[0]
        random.seed(seed)
        b = cached[0]  # first call writes the cache, the next ones read it
        assert all(torch.equal(a[k], b[k]) for k in ("lr", "hr", "lr_clean")) and a["quality"] == b["quality"]
    (png,) = (tmp_path / "c" / "x4").rglob("*.png")
    assert png.stem == "astronaut"
    write_image(png, np.zeros((50, 39, 3), np.uint8))  # later reads come from the cache
    assert cached[0]["lr_clean"].abs().sum() == 0


def test_holdout_split_is_seeded_sorted_and_disjoint():
    items = [f"img{i:03d}" for i in range(50)]
    kept, held = holdout_split(items, 5, seed=3)
    assert len(held) == 5 and len(kept) == 45 and not set(kept) & set(held) and set(kept) | set(held) == set(items)
    assert holdout_split(list(reversed(items)), 5, seed=3) == (kept, held)
    assert holdout_split(items, 5, seed=4)[1] != held
    assert holdout_split(items, 0) == (items, [])
    with pytest.raises(UserError, match="cannot hold out"):
        holdout_split(items, 50)


def tiny_image(i: int, size: int = 64) -> np.ndarray:
    return (np.random.default_rng(i).random((size, size + 8, 3)) * 255).astype(np.uint8)


@pytest.fixture
def sr_layout(tmp_path):
    """DATA_DIR laid out like the real data of conf/cajnn/data/div2k.yaml, with tiny images."""
    n = 0
    folders = {"DIV2K/DIV2K_train_HR": 6, "Flickr2K/Flickr2K_HR": 4, "DIV2K/DIV2K_valid_HR": 12,
               "benchmark/Set5/HR": 5, "benchmark/Set14/HR": 3, "benchmark/B100/HR": 3, "benchmark/Urban100/HR": 2,
               "benchmark/Manga109/HR": 2}
    for folder, count in folders.items():
        for j in range(count):
            write_image(tmp_path / folder / f"{j:04d}.png", tiny_image(n))
            n += 1
    return tmp_path


def val_and_test_files(dm) -> tuple[list, dict]:
    val = list(dm.val_set.files)
    tests = {name: list(ds.files) for name, ds in zip(dm.test_names, dm.test_sets_, strict=True)}
    return val, tests


def assert_no_val_in_tests(val, tests):
    """Independent of the data module's own check: resolved paths and file bytes."""
    val_paths = {p.resolve() for p in val}
    val_bytes = {p.read_bytes() for p in val}
    for files in tests.values():
        for f in files:
            assert f.resolve() not in val_paths and f.read_bytes() not in val_bytes


def test_paper_config_validates_on_div2k_valid_never_on_a_test_set(sr_layout):
    cfg = compose_config("cajnn", "train", ["+experiment=div2k", f"paths.data_dir={sr_layout}",
                                            f"paths.cache_dir={sr_layout / 'cache'}"])
    assert (cfg.data.batch_size, cfg.data.patch) == (36, 128)  # the paper's global batch and HR patch (Sec. 4.4.1)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dm.setup("test")
    val, tests = val_and_test_files(dm)
    assert [p.parent.name for p in val] == ["DIV2K_valid_HR"] * 10
    assert len(dm.test_names) == 15  # 5 sets × QF 10/20/40
    assert_no_val_in_tests(val, tests)
    train = {p.resolve() for p in dm.train_set.files}
    assert len(train) == 10 and not train & {p.resolve() for p in val}
    # a test set that is the validation folder, or holds a copy of a validation image, is refused
    bad = compose_config("cajnn", "train", ["+experiment=div2k", f"paths.data_dir={sr_layout}",
                                            f"+data.test_sets.mine={sr_layout}/DIV2K/DIV2K_valid_HR"])
    with pytest.raises(UserError, match="also in test set mine"):
        instantiate(bad.data, _convert_="all").setup("fit")
    shutil.copy(sr_layout / "DIV2K/DIV2K_valid_HR/0003.png", sr_layout / "benchmark/Set14/HR/copy.png")
    with pytest.raises(UserError, match="same content"):
        instantiate(cfg.data, _convert_="all").setup("fit")


def test_testing_alone_needs_no_training_data(sr_layout):
    cfg = compose_config("cajnn", "eval", [f"paths.data_dir={sr_layout}", f"data.train_dirs=[{sr_layout}/none]"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("test")
    assert len(dm.test_names) == 15
    with pytest.raises(UserError, match="image folder not found"):
        dm.setup("fit")


def test_demo_config_holds_out_training_photos(sr_layout):
    (sr_layout / "demo").mkdir()
    shutil.copytree(sr_layout / "DIV2K/DIV2K_train_HR", sr_layout / "demo/train")
    shutil.copytree(sr_layout / "benchmark/Set5/HR", sr_layout / "demo/val")
    cfg = compose_config("cajnn", "train", ["+experiment=smoke", f"paths.data_dir={sr_layout}"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dm.setup("test")
    val, tests = val_and_test_files(dm)
    assert len(val) == 2 and {p.parent.name for p in val} == {"train"}
    assert not set(val) & set(dm.train_set.files) and len(dm.train_set.files) == 4
    assert_no_val_in_tests(val, tests)
    assert {file_digest(p) for p in val}.isdisjoint({file_digest(p) for p in tests["demo_q10"]})


def test_check_disjoint_by_path_and_content(tmp_path):
    a, b, c = (tmp_path / f"{n}.png" for n in "abc")
    for p, i in ((a, 0), (b, 1), (c, 0)):
        write_image(p, tiny_image(i, 8))
    check_disjoint([a], {"t": [b]})
    with pytest.raises(UserError, match="also in test set t"):
        check_disjoint([a], {"t": [b, tmp_path / "." / "a.png"]})
    with pytest.raises(UserError, match="same content"):
        check_disjoint([a], {"t": [c]})
    check_disjoint([a], {"t": [c]}, by_content=False)
