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


def test_image_strip_goes_to_image_loggers():
    from types import SimpleNamespace

    import numpy as np
    import torch

    from shared.sr import log_image_strip

    calls = []
    wandb_like = SimpleNamespace(log_image=lambda key, images, step: calls.append(("wandb", key, images, step)))
    tb_like = SimpleNamespace(experiment=SimpleNamespace(add_image=lambda key, img, step: calls.append(
        ("tb", key, img, step))))
    csv_like = SimpleNamespace()
    module = SimpleNamespace(loggers=[wandb_like, tb_like, csv_like], global_step=7)
    a, b = torch.zeros(3, 4, 5), torch.ones(3, 4, 5)
    log_image_strip(module, "val/sample_0", [a, b, torch.full((3, 4, 5), 2.0)])
    (kind, key, images, step), (kind2, key2, img2, step2) = calls
    assert (kind, key, step, kind2, step2) == ("wandb", "val/sample_0", 7, "tb", 7)
    assert images[0].shape == (4, 15, 3) and images[0].dtype == np.uint8
    assert images[0][0, 0, 0] == 0 and images[0][0, 5, 0] == 255 and images[0][0, 14, 0] == 255  # clamped to 1
    assert img2.shape == (3, 4, 15)
