"""The Fig. 1.11 sweep collector: jobs' results.json → one ROC table + plot with the chosen cost circled."""

import json

from projects.printdefect.roc import collect, main
from shared.report import Table, write_report


def _job(root, name, cost, miss, fa):
    t = Table("t", ["test set", "cost", "miss rate", "false alarm"],
              [{"test set": "demo", "cost": cost, "miss rate": miss, "false alarm": fa}])
    write_report([t], root / name)


def test_collect_and_plot(tmp_path, capsys):
    _job(tmp_path, "0", 4.0, 0.1, 0.4)
    _job(tmp_path, "1", 1.0, 0.3, 0.1)
    _job(tmp_path, "2", 2.0, 0.2, float("nan"))          # stored as "nan" by the report writer
    rows = collect(tmp_path)
    assert [(r["cost"], r["job"]) for r in rows] == [(1.0, "1"), (2.0, "2"), (4.0, "0")]
    assert main([str(tmp_path), "--chosen", "1"]) == 0
    assert (tmp_path / "roc_demo.png").is_file()
    saved = json.loads((tmp_path / "roc.json").read_text())[0]["rows"]
    assert [r["miss rate"] for r in saved] == [0.3, 0.2, 0.1]
    assert "circled: cost 1" in capsys.readouterr().out
    assert main([str(tmp_path / "none")]) == 2
