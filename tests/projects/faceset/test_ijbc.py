"""IJB-C meta parsing on tiny fixtures in the original formats, and media-then-template aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from projects.faceset.ijbc import (
    media_template_features,
    read_1n_csv,
    read_5pts,
    read_face_tid_mid,
    read_template_pairs,
    template_index,
)
from projects.faceset.model import MeanPool, MultiColumn
from shared.errors import UserError


def test_parse_meta_files(tmp_path):
    (tmp_path / "tid_mid.txt").write_text("1.jpg 1 69544\n2.jpg 1 69544\n3.jpg 1 70000\n4.jpg 7 123\n")
    names, tids, mids = read_face_tid_mid(tmp_path / "tid_mid.txt")
    assert names == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert tids.tolist() == [1, 1, 1, 7] and mids.tolist() == [69544, 69544, 70000, 123]
    (tmp_path / "pairs.txt").write_text("1 7 0\n1 1 1\n7 1 0\n")
    t1, t2, lab = read_template_pairs(tmp_path / "pairs.txt")
    assert t1.tolist() == [1, 1, 7] and t2.tolist() == [7, 1, 1] and lab.tolist() == [False, True, False]
    (tmp_path / "5pts.txt").write_text("1.jpg 10 11 20 11.5 15 16 11 20 19 20.5 0.998\n")
    pts = read_5pts(tmp_path / "5pts.txt")
    np.testing.assert_allclose(pts["1.jpg"][0], [[10, 11], [20, 11.5], [15, 16], [11, 20], [19, 20.5]])
    assert pts["1.jpg"][1] == pytest.approx(0.998)
    (tmp_path / "G1.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n5,100,img/1.jpg\n5,100,img/2.jpg\n"
                                     "3,200,img/3.jpg\n")
    tids, sids = read_1n_csv(tmp_path / "G1.csv")
    assert tids.tolist() == [3, 5] and sids.tolist() == [200, 100]


def test_meta_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_face_tid_mid(tmp_path / "missing.txt")
    (tmp_path / "p.txt").write_text("1 2 1\n3 4\n")
    with pytest.raises(UserError, match="triples"):
        read_template_pairs(tmp_path / "p.txt")
    (tmp_path / "p2.txt").write_text("1 2 3\n")
    with pytest.raises(UserError, match="0 or 1"):
        read_template_pairs(tmp_path / "p2.txt")
    (tmp_path / "g.csv").write_text("TEMPLATE_ID,SUBJECT_ID\n1,2\n1,3\n")
    with pytest.raises(UserError, match="more than one SUBJECT_ID"):
        read_1n_csv(tmp_path / "g.csv")
    with pytest.raises(UserError, match="no faces"):
        template_index(np.array([1, 3]), np.array([3, 2]), "pairs")


def test_media_then_template_pooling_by_hand():
    feats = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0], [3.0, 4.0, 0]])
    tids, mids = np.array([9, 9, 9, 4]), np.array([1, 1, 2, 5])
    templates, out = media_template_features(feats, tids, mids)
    assert templates.tolist() == [4, 9]
    # template 9: media 1 = mean(e1, e2) = (.5, .5, 0); media 2 = e3 (normalised) → sum (.5, .5, 1) → normalise
    torch.testing.assert_close(out[1], F.normalize(torch.tensor([0.5, 0.5, 1.0]), dim=0))
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8, 0.0]))


def test_learned_aggregation_over_media_matches_per_template_calls():
    torch.manual_seed(0)
    agg = MultiColumn(8, hidden=(3,))
    feats = torch.randn(30, 8)
    rng = np.random.default_rng(0)
    tids, mids = rng.integers(0, 6, 30), rng.integers(0, 4, 30)
    with torch.no_grad():
        templates, out = media_template_features(feats, tids, mids, agg, chunk=2)
        for row, t in enumerate(templates):
            media = [F.normalize(feats[(tids == t) & (mids == m)], dim=1).mean(0)
                     for m in np.unique(mids[tids == t])]
            ref = F.normalize(agg(torch.stack(media)[None])[0], dim=0)
            torch.testing.assert_close(out[row], ref)
        _, mean = media_template_features(feats, tids, mids, MeanPool(8, normalize=False))
        _, base = media_template_features(feats, tids, mids)
    torch.testing.assert_close(mean, base)  # mean of media = normalised sum of media
