"""The face-set project through the shared driver: smoke backbone training → tables + plots, aggregation training
on the frozen backbone, eval, gallery/probe inference, and one-line errors (exit code 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from projects.faceset.align import main as align_main
from tests.helpers import run_cli, run_dir_of, run_ok, train_once

pytestmark = pytest.mark.slow
SMOKE = ["+experiment=smoke", "callbacks.rich_progress_bar=null"]


@pytest.fixture(scope="module")
def trained(faceset_data, tmp_path_factory):
    return train_once("faceset", SMOKE, faceset_data, tmp_path_factory.mktemp("facesetlogs"))


def test_smoke_training_writes_the_tables_and_plots(trained):
    run_dir, _ = trained
    tables = {t["title"].split(" (")[0]: t for t in json.loads((run_dir / "results.json").read_text())}
    assert set(tables) == {"Set-vs-set verification and identification", "Table 2.1 layout: alignment policies",
                           "IJB-C 1:1 verification", "Table 2.3 layout: IJB-C 1:N open-set identification"}
    policies = tables["Table 2.1 layout: alignment policies"]["rows"]
    assert [r["policy"] for r in policies] == ["ignore", "mixed", "both_unaligned", "none_aligned"]
    assert policies[0]["pairs"] < policies[1]["pairs"] == 12  # undetected faces are left out by policy 1 only
    for t in tables.values():
        for row in t["rows"]:
            assert all(0.0 <= v <= 1.0 for k, v in row.items() if k.startswith(("TAR", "TPIR", "Rank", "AUC")))
    assert {p.name for p in (run_dir / "plots").iterdir()} == {
        "sets_roc.png", "sets_cmc.png", "lfw_roc.png", "ijbc_1to1_roc.png", "ijbc_1toN_roc.png", "ijbc_cmc.png"}
    lfw = np.load(run_dir / "features" / "lfw.npz")
    assert lfw["feats"].shape == lfw["feats_unaligned"].shape == (15, 32) and (~lfw["detected"]).sum() == 2
    assert np.load(run_dir / "features" / "ijbc.npz")["feats"].shape == (24, 32)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6 and "head.weight" in ckpt["state_dict"]
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["optimized_metric"] == "val/auc" and 0.0 <= final["value"] <= 1.0


def test_aggregation_training_keeps_the_backbone(trained, faceset_data, tmp_path):
    run_dir, _ = trained
    backbone = run_dir / "checkpoints" / "last.ckpt"
    res = run_ok("projects.faceset.train", ["+experiment=smoke_multicolumn", "callbacks.rich_progress_bar=null",
                                            f"model.backbone_ckpt={backbone}", "data.test_sets.lfw=null",
                                            "data.test_sets.ijbc=null", "trainer.max_steps=3"], faceset_data, tmp_path)
    agg_dir = run_dir_of(tmp_path, "faceset", "smoke_multicolumn")
    before = torch.load(backbone, weights_only=True)["state_dict"]
    after = torch.load(agg_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    bb = [k for k in before if k.startswith("net.backbone.")]
    assert bb and all(torch.equal(before[k], after[k]) for k in bb)
    agg = [k for k in after if k.startswith("net.aggregator.")]
    assert sum(after[k].numel() for k in agg) == (32 * 4 + 4 + 4 + 1) + (64 * 4 + 4 + 4 + 1)
    assert "| sets |" in res.stdout


def test_eval_and_inference(trained, faceset_data, tmp_path):
    run_dir, logs = trained
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    # eval re-scores the training run's cached per-face features (mean pooling: the same table as the run's test)
    res = run_ok("projects.faceset.eval", ["model=tiny", "data=tiny", f"ckpt_path={ckpt}", "data.test_sets.lfw=null",
                                           "data.test_sets.ijbc=null", f"data.features_dir={run_dir / 'features'}"],
                 faceset_data, tmp_path)
    assert "Set-vs-set verification and identification (sets)" in res.stdout
    eval_dir = run_dir_of(tmp_path, "faceset", "eval")
    ours = json.loads((eval_dir / "results.json").read_text())[0]["rows"]
    assert ours == json.loads((run_dir / "results.json").read_text())[0]["rows"]
    test = faceset_data / "faceset_tiny" / "test"
    probe = tmp_path / "probe" / "someone"
    probe.mkdir(parents=True)
    for f in sorted((test / "test003").iterdir())[:2]:
        shutil.copy(f, probe / f.name)
    out = tmp_path / "matches.json"
    res = run_cli("projects.faceset.infer", ["model=tiny", f"ckpt_path={ckpt}", f"gallery={test}",
                                             f"probe={probe.parent}", f"output={out}", "infer_options.align=false"],
                  faceset_data, tmp_path, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())["results"][0]
    assert result["probe"] == "someone" and result["ranked"][0]["identity"] == "test003"
    scores = [r["score"] for r in result["ranked"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5


def _module(ckpt):
    from hydra.utils import instantiate

    from shared.checkpoint import load_weights
    from shared.run import compose_config

    module = instantiate(compose_config("faceset", "infer", ["model=tiny"]).model, _convert_="all")
    load_weights(module, str(ckpt))
    return module.eval()


def test_same_different_decision_and_errors(trained, faceset_data, tmp_path):
    from shared.errors import UserError

    run_dir, _ = trained
    module = _module(run_dir / "checkpoints" / "last.ckpt")
    test = faceset_data / "faceset_tiny" / "test"
    probe = ",".join(str(p) for p in sorted((test / "test004").iterdir())[:2])
    kw = dict(probe=probe, align=False)
    with torch.no_grad():
        rep = module.infer(test / "test003", tmp_path / "a.json", threshold=1.01, **kw)
        assert rep["results"][0]["decision"] == "different"
        rep = module.infer(test / "test003", tmp_path / "b.json", threshold=-1.01, **kw)
        assert rep["results"][0]["decision"] == "same"
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"\xff\xd8 not really a jpeg")
        with pytest.raises(UserError, match="cannot decode image"):
            module.infer(test / "test003", tmp_path / "c.json", probe=str(bad), align=False)
    assert not (tmp_path / "c.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("projects.faceset.infer", ["model=tiny", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                             f"gallery={test}", f"probe={empty}", "infer_options.align=false"],
                  faceset_data, tmp_path, tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"error: probe: empty set — no images in {empty}"]


def test_training_data_errors(faceset_data, tmp_path):
    from projects.faceset.data import FaceSetDataModule
    from shared.errors import UserError

    with pytest.raises(UserError, match="identity folder root not found: /no/faces"):
        FaceSetDataModule(train_root="/no/faces").setup("fit")
    dm = FaceSetDataModule(train_root=str(faceset_data / "faceset_tiny" / "train"), batch_size=1000, num_workers=0,
                           val_identities=3)
    dm.setup("fit")
    with pytest.raises(UserError, match="fewer than batch_size=1000"):
        dm.train_dataloader()


def test_align_cli_errors(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert align_main([str(tmp_path / "src"), str(tmp_path / "dst")]) == 2
    assert "error: no images under" in capsys.readouterr().err
    Path(tmp_path / "src" / "a.png").write_bytes(b"x")
    assert align_main([str(tmp_path / "src"), str(tmp_path / "dst"), "--mtcnn-dir", str(tmp_path)]) == 2
    assert "error: MTCNN weights not found" in capsys.readouterr().err


def test_two_process_ddp_eval_and_aggregation_training(trained, faceset_data, tmp_path):
    """Under 2 gloo ranks: evaluating the run's best checkpoint gives the run's own tables (each face's feature
    gathered exactly once, in dataset order), and aggregation training on the frozen backbone runs and keeps it."""
    run_dir, _ = trained
    (best,) = [p for p in (run_dir / "checkpoints").iterdir() if p.name != "last.ckpt"]
    run_ok("projects.faceset.eval", ["model=tiny", "data=tiny", f"ckpt_path={best}", "trainer=ddp_cpu"],
           faceset_data, tmp_path, timeout=300)
    eval_dir = run_dir_of(tmp_path, "faceset", "eval")
    ddp = json.loads((eval_dir / "results.json").read_text())
    single = json.loads((run_dir / "results.json").read_text())
    assert [t["title"] for t in ddp] == [t["title"] for t in single]
    for a, b in zip(ddp, single, strict=True):
        for ra, rb in zip(a["rows"], b["rows"], strict=True):
            assert ra.keys() == rb.keys()
            for k in ra:
                assert ra[k] == (pytest.approx(rb[k], abs=1e-6) if isinstance(rb[k], float) else rb[k]), (k, a["title"])
    assert np.load(eval_dir / "features" / "ijbc.npz")["feats"].shape == (24, 32)

    res = run_ok("projects.faceset.train", ["+experiment=smoke_multicolumn", "callbacks.rich_progress_bar=null",
                                            f"model.backbone_ckpt={best}", "trainer=ddp_cpu", "trainer.max_steps=2",
                                            "test_after_fit=false"], faceset_data, tmp_path, timeout=300)
    agg_dir = run_dir_of(tmp_path, "faceset", "smoke_multicolumn")
    before = torch.load(best, weights_only=True)["state_dict"]
    after = torch.load(agg_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "`max_steps=2` reached" in res.stdout + res.stderr and after["global_step"] >= 1
    assert all(torch.equal(before[k], after["state_dict"][k]) for k in before if k.startswith("net.backbone."))
