"""Logger factories (CSV always; W&B offline automatically when no API key is configured)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from shared.errors import one_line


def wandb_api_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", str(Path.home() / ".netrc")))
        return rc.authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _reachable(url: str, timeout: float) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (name lookup included: it runs in
    a daemon thread, since a lookup without network can hang far longer than any socket timeout)."""
    import socket
    import threading
    from urllib.parse import urlparse

    parsed = urlparse(url)
    host, port = parsed.hostname or url, parsed.port or (80 if parsed.scheme == "http" else 443)
    ok: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


def _go_offline(reason: str) -> None:
    import sys

    sys.stderr.write(f"warning: W&B {reason}; logging offline (sync later with `wandb sync <run dir>/wandb`)\n")
    os.environ["WANDB_MODE"] = "offline"


def wandb_logger(offline: bool | None = None, connect_timeout: float = 5.0, **kwargs):
    """A ``WandbLogger``; ``offline=None`` means offline unless an API key is found (env or ~/.netrc). With a key,
    the W&B server must answer within ``connect_timeout`` s and accept the key; otherwise the run logs offline
    after one ``warning:`` line instead of failing (a training run never dies for its logger)."""
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_present()
        if not offline:
            url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
            if not _reachable(url, connect_timeout):
                _go_offline(f"server {url} not reachable within {connect_timeout:g} s")
                offline = True
            else:
                import wandb

                try:
                    wandb.login(key=os.environ.get("WANDB_API_KEY") or None, verify=True,
                                timeout=max(1, int(connect_timeout)))
                except Exception as exc:  # noqa: BLE001 - any login failure: bad key, server error, time-out
                    _go_offline(f"login failed ({one_line(exc)[:120]})")
                    offline = True
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    Path(kwargs.get("save_dir", ".")).mkdir(parents=True, exist_ok=True)
    return WandbLogger(offline=offline, **kwargs)


def _keep_rows_writer():
    """Lightning's CSV experiment writer, except that an existing ``metrics.csv`` (a run resumed in its own folder:
    a requeued job, ``hydra.run.dir=…``) is kept: rows from after the checkpoint being resumed — the steps that are
    trained again — are dropped when the first new row arrives, the rest stay, and new rows are appended."""
    import csv
    import io

    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    from shared.io import atomic_write_text

    class KeepRowsWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
            self._trim_from: bool = self._fs.isfile(self.metrics_file_path)
            if self._trim_from:
                with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                    header = next(csv.reader(f), [])
                self.metrics_keys = list(header)  # appended rows follow the file's own column order

        def log_metrics(self, metrics_dict, step=None) -> None:
            super().log_metrics(metrics_dict, step)
            if self._trim_from:
                self._trim_from = False
                self._drop_rows_from(self.metrics[-1]["step"])

        def _drop_rows_from(self, step: int) -> None:
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or self.metrics_keys
                rows = [r for r in reader if not (r.get("step", "").isdigit() and int(r["step"]) >= step)]
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(self.metrics_file_path, buf.getvalue())

    return KeepRowsWriter


def csv_logger(save_dir: str, name: str = "csv", version: str = "", **kwargs):
    """Lightning's ``CSVLogger`` that keeps the rows of an earlier, resumed run in the same folder (see
    :func:`_keep_rows_writer`) instead of deleting them."""
    from lightning.pytorch.loggers import CSVLogger

    writer_cls = _keep_rows_writer()

    class KeepRowsCSVLogger(CSVLogger):
        @property
        def experiment(self):
            if self._experiment is None and self._is_rank_zero():
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = writer_cls(log_dir=self.log_dir)
            return super().experiment

        @staticmethod
        def _is_rank_zero() -> bool:
            from lightning.pytorch.utilities import rank_zero_only

            return rank_zero_only.rank == 0

    return KeepRowsCSVLogger(save_dir=save_dir, name=name, version=version, **kwargs)
