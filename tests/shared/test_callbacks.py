import logging
from types import SimpleNamespace

import torch
from torch import nn

from shared.callbacks import OffsetMonitor
from shared.ops import ModulatedDeformConv2d


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = ModulatedDeformConv2d(4, 4, deformable_groups=1)
        self.b = ModulatedDeformConv2d(4, 4, deformable_groups=1)
        self.logged = {}

    def log_dict(self, d, **kw):
        self.logged.update(d)


def test_offset_monitor_logs_and_warns_every_n_steps(caplog):
    m = Tiny()
    with torch.no_grad():
        m.a.conv_offset_mask.bias[:18] = 150.0
    x = torch.randn(1, 4, 6, 6)
    m.a(x, x)
    m.b(x, x)
    cb = OffsetMonitor(every_n_steps=10, warn_above=100)
    cb.on_train_batch_end(SimpleNamespace(global_step=3), m, None, None, 0)
    assert m.logged == {}  # not a multiple of 10: no sync, nothing logged
    with caplog.at_level(logging.WARNING):
        cb.on_train_batch_end(SimpleNamespace(global_step=10), m, None, None, 0)
    assert m.logged["dcn/offset_abs_max"] == 150.0
    assert m.logged["dcn/offset_abs_mean"] == 75.0
    assert "exploding" in caplog.text
