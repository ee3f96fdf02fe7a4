"""Logger factories (CSV always; W&B offline automatically when no API key is configured)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path


def wandb_api_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", str(Path.home() / ".netrc")))
        return rc.authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool | None = None, **kwargs):
    """A ``WandbLogger``; ``offline=None`` means offline unless an API key is found (env or ~/.netrc)."""
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_present()
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    Path(kwargs.get("save_dir", ".")).mkdir(parents=True, exist_ok=True)
    return WandbLogger(offline=offline, **kwargs)
