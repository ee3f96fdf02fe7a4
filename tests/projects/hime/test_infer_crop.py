"""HIME inference on photos that are not headshots: the largest MTCNN face is cut out as a square headshot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from projects.hime.model import HIME
from projects.hime.module import HIMEModule, headshot_crop
from shared import assets
from shared.errors import UserError
from shared.io import read_image, write_image


class FakeDetector:
    """Returns one fixed face (box and points), like shared.face.mtcnn.MTCNN would."""

    def __init__(self, box, points):
        from shared.face.mtcnn import Faces

        self.faces = Faces(np.array([box], float), np.array([0.99]), np.array([points], float))

    def __call__(self, img):
        return self.faces


def test_headshot_crop_square_around_the_face_with_zero_padding():
    img = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    pts = [[40, 40], [60, 40], [50, 50], [42, 60], [58, 60]]  # mean (50, 50)
    crop = headshot_crop(img, FakeDetector([35, 30, 65, 70], pts), crop_scale=2.0)
    assert crop.shape == (80, 80, 3)  # 2 × the longer side (40)
    np.testing.assert_array_equal(crop, img[10:90, 10:90])
    edge = headshot_crop(img, FakeDetector([0, 0, 30, 30], [[5, 5]] * 5), crop_scale=2.0)
    assert edge.shape == (60, 60, 3)
    np.testing.assert_array_equal(edge[:25, :25], 0)  # outside the picture: zeros
    np.testing.assert_array_equal(edge[25:, 25:], img[:35, :35])
    assert headshot_crop(img, FakeDetector([10, 10, 70, 70], pts), 2.0, only_if_small=True) is None  # fills it


def test_face_crop_always_without_weights_is_a_user_error(tmp_path):
    module = HIMEModule(HIME(scale=4, nf=8, lr_blocks=1, hr_blocks=1, rec_blocks=1, offset_blocks=0))
    write_image(tmp_path / "in.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(UserError, match="MTCNN weights not found"):
        module.infer(tmp_path / "in.png", tmp_path / "out.png", face_crop="always", mtcnn_dir=str(tmp_path / "x"))
    with pytest.raises(UserError, match="face_crop must be"):
        module.infer(tmp_path / "in.png", tmp_path / "out.png", face_crop="sometimes")


@pytest.mark.assets
def test_infer_cuts_the_face_out_of_a_photo_with_real_mtcnn(tmp_path):
    from shared.face.mtcnn import asset_weights_dir

    try:
        weights = asset_weights_dir()
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    torch.manual_seed(0)
    module = HIMEModule(HIME(scale=2, nf=8, lr_blocks=1, hr_blocks=1, rec_blocks=1, offset_blocks=0)).eval()
    write_image(tmp_path / "photo.png", data.astronaut())
    (tmp_path / "refs").mkdir()
    write_image(tmp_path / "refs" / "r.png", data.astronaut()[:, ::-1])
    with torch.inference_mode():
        module.infer(tmp_path / "photo.png", tmp_path / "out.png", refs=str(tmp_path / "refs"),
                     face_crop="auto", mtcnn_dir=str(weights))
    out = read_image(tmp_path / "out.png")
    # the face box on astronaut is ≈ 88 × 113 px → a 2 × 113 ≈ 226 px headshot, super-resolved ×2
    assert out.shape[0] == out.shape[1] and 420 < out.shape[0] < 480
