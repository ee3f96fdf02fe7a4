from shared.loggers import wandb_api_key_present, wandb_logger


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
    assert wandb_logger(project="p", save_dir=str(tmp_path / "w"))._offline is False
