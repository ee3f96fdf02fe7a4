import csv

from shared import loggers
from shared.loggers import csv_logger, wandb_api_key_present, wandb_logger


def test_wandb_offline_without_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_api_key_present()
    lg = wandb_logger(project="p", save_dir=str(tmp_path / "w"))
    assert lg._offline is True


def test_wandb_online_with_key_in_netrc(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    rc = tmp_path / "netrc"
    rc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    rc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(rc))
    assert wandb_api_key_present()
    import wandb

    monkeypatch.setattr(loggers, "_reachable", lambda url, timeout: True)
    monkeypatch.setattr(wandb, "login", lambda **kw: True)
    assert wandb_logger(project="p", save_dir=str(tmp_path / "w"))._offline is False


def test_wandb_with_a_key_but_no_server_logs_offline_after_one_warning(tmp_path, monkeypatch, capsys):
    """A key is set, but nothing answers (a compute node without internet): one warning line, offline, and fast —
    the server check gives up after ``connect_timeout`` however long a name lookup would hang."""
    import time

    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    t0 = time.perf_counter()
    lg = wandb_logger(project="p", save_dir=str(tmp_path / "w"), connect_timeout=1.0)
    assert lg._offline is True and time.perf_counter() - t0 < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: W&B server http://127.0.0.1:9 not reachable")


def test_wandb_refusing_the_key_logs_offline_after_one_warning(tmp_path, monkeypatch, capsys):
    import wandb

    monkeypatch.setenv("WANDB_API_KEY", "not-a-key")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(loggers, "_reachable", lambda url, timeout: True)

    def refuse(**kw):
        raise wandb.errors.AuthenticationError("API key must be 40 characters long")

    monkeypatch.setattr(wandb, "login", refuse)
    assert wandb_logger(project="p", save_dir=str(tmp_path / "w"))._offline is True
    assert capsys.readouterr().err.startswith("warning: W&B login failed (API key must be 40 characters long)")


def test_csv_logger_keeps_the_rows_of_a_resumed_run(tmp_path):
    """Lightning's CSVLogger deletes metrics.csv when its folder is reused; ours keeps the rows logged before the
    checkpoint and drops only those that are logged again (steps ≥ the first new one)."""
    first = csv_logger(str(tmp_path))
    for step in range(6):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    resumed = csv_logger(str(tmp_path))  # resumed from a checkpoint of step 4: steps 4, 5 come again
    resumed.log_metrics({"train/loss": 40.0}, step=4)
    resumed.log_metrics({"train/loss": 50.0, "val/psnr": 30.0}, step=5)
    resumed.save()
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert [(r["step"], r["train/loss"], r["val/psnr"]) for r in rows] == [
        ("0", "0.0", ""), ("1", "1.0", ""), ("2", "2.0", ""), ("3", "3.0", ""), ("4", "40.0", ""),
        ("5", "50.0", "30.0")]


def test_reachable_answers_for_a_listening_port_and_gives_up_on_a_closed_one():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert loggers._reachable(f"http://127.0.0.1:{server.getsockname()[1]}", 2.0) is True
    assert loggers._reachable("http://127.0.0.1:9", 0.5) is False
