import csv
import json

import yaml

from shared.sweep_table import main


def fake_run(d, overrides, rows):
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    table = {"title": "t", "columns": ["test set", "PSNR-Y", "SSIM-Y"], "rows": rows, "notes": [], "precision": 4}
    (d / "results.json").write_text(json.dumps([table]))


def test_sweep_table_long_and_pivot(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    fake_run(sweep / "0", ["+experiment=vimeo", "model=table6_5_a"],
             [{"test set": "Vid4", "PSNR-Y": 25.18, "SSIM-Y": 0.7}, {"test set": "Vimeo-Fast", "PSNR-Y": 34.93}])
    fake_run(sweep / "1", ["+experiment=vimeo", "model=table6_5_b"],
             [{"test set": "Vid4", "PSNR-Y": 25.34, "SSIM-Y": 0.71}, {"test set": "Vimeo-Fast", "PSNR-Y": 35.66}])
    (sweep / "multirun.yaml").write_text("x: 1")
    assert main([str(sweep), "--metric", "PSNR-Y", "--label", "model"]) == 0
    out = capsys.readouterr().out
    assert "| Vid4 | 25.1800 | 25.3400 |" in out and "| Vimeo-Fast | 34.9300 | 35.6600 |" in out
    rows = list(csv.DictReader((sweep / "sweep_table.csv").open()))
    assert rows == [{"test set": "Vid4", "table6_5_a": "25.18", "table6_5_b": "25.34"},
                    {"test set": "Vimeo-Fast", "table6_5_a": "34.93", "table6_5_b": "35.66"}]
    assert "| table6_5_b | Vid4 | 25.3400 | 0.7100 |" in (sweep / "sweep_table.md").read_text()


def test_sweep_table_errors(tmp_path, capsys):
    assert main([str(tmp_path / "none")]) == 2
    assert main([str(tmp_path)]) == 2
    fake_run(tmp_path / "r", [], [{"test set": "A", "PSNR-Y": 1.0}])
    assert main([str(tmp_path / "r"), "--metric", "LPIPS"]) == 2
    assert "not in the results" in capsys.readouterr().err


def test_sweep_table_where_filter(tmp_path, capsys):
    for i, m in enumerate(["table4_4_base", "table4_4_3"]):
        d = tmp_path / str(i)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model={m}"]))
        rows = [{"QF": 20, "Method": "Bicubic", "Set5 PSNR": 25.0},
                {"QF": 20, "Method": f"C{i}", "Set5 PSNR": 27.0 + i}]
        (d / "results.json").write_text(json.dumps([{"title": "t", "columns": ["QF", "Method", "Set5 PSNR"],
                                                     "rows": rows, "notes": [], "precision": 3}]))
    assert main([str(tmp_path), "--by", "QF", "--where", "Method!=Bicubic", "--metric", "Set5 PSNR",
                 "--label", "model"]) == 0
    assert "| 20 | 27.0000 | 28.0000 |" in capsys.readouterr().out
    assert main([str(tmp_path), "--where", "nonsense"]) == 2
    assert main([str(tmp_path), "--label", "dir", "--by", "QF", "--where", "Method!=Bicubic",
                 "--metric", "Set5 PSNR"]) == 0
    assert "| QF | 0 | 1 |" in capsys.readouterr().out
