"""Inference settings of the SR networks (Ch. 4–6): channels_last memory gives the contiguous result (≤1e-5) with
every convolution reading NHWC input (no layout round-trips), and the bf16 path on CPU — with its fallback."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from shared import inference
from shared.errors import UserError
from shared.inference import precision_context, use_channels_last
from shared.ops.deform import ModulatedDeformConv2d
from shared.run import compose_config

INPUTS = {  # tiny networks, inputs not multiples of their internal strides
    "zsm": lambda: (torch.rand(1, 3, 3, 22, 18),),
    "cajnn": lambda: (torch.rand(1, 3, 22, 18),),
    "hime": lambda: (torch.rand(1, 3, 16, 12), torch.rand(1, 2, 3, 64, 48)),
}


def tiny_net(project: str) -> nn.Module:
    torch.manual_seed(0)
    net = instantiate(compose_config(project, "train", ["model=tiny"]).model.net).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ModulatedDeformConv2d):  # learned-looking offsets, not the zero init
                m.conv_offset_mask.weight.normal_(0, 0.05)
    return net


@pytest.mark.parametrize("project", list(INPUTS))
def test_channels_last_equals_contiguous_without_layout_round_trips(project):
    net, x = tiny_net(project), INPUTS[project]()
    with torch.inference_mode():
        ref = net(*x)
    use_channels_last(net, True)
    seen, not_nhwc = [], []

    def check(module, args, out):
        t = args[0]
        if t.dim() == 4 and t.shape[1] > 3:  # a 3-channel image is the network's own input
            seen.append(module)
            if not t.is_contiguous(memory_format=torch.channels_last):
                not_nhwc.append((type(module).__name__, tuple(t.shape)))

    hooks = [m.register_forward_hook(check) for m in net.modules()
             if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | ModulatedDeformConv2d)]
    with torch.inference_mode():
        out = net(*x)
    for h in hooks:
        h.remove()
    assert len(seen) > 10 and not_nhwc == []
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    use_channels_last(net, False)
    assert all(p.is_contiguous() for p in net.parameters())


@pytest.mark.parametrize("project", list(INPUTS))
def test_bf16_on_cpu_stays_close_to_fp32(project, monkeypatch):
    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: True)
    net, x = tiny_net(project), INPUTS[project]()
    with torch.inference_mode():
        ref = net(*x)
        with precision_context(torch.device("cpu"), "bf16"):
            out = net(*x)
    assert out.dtype in (torch.bfloat16, torch.float32)
    err = (out.float() - ref).abs()
    # bf16 keeps 8 significant bits: outputs in [0, 1] move by a few 1/256 at most, on average far less
    assert float(err.max()) < 0.03 and float(err.mean()) < 3e-3, (float(err.max()), float(err.mean()))


def test_bf16_without_cpu_support_warns_once_and_runs_fp32(monkeypatch, caplog):
    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(inference, "_warned", set())
    net, x = tiny_net("cajnn"), INPUTS["cajnn"]()
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="shared.inference"):
        ref = net(*x)
        for _ in range(3):
            with precision_context(torch.device("cpu"), "bf16"):
                out = net(*x)
            assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert [r.getMessage() for r in caplog.records].count(
        "infer_precision=bf16: this CPU has no native bf16 instructions; running fp32") == 1


@pytest.mark.parametrize("precision,message", [("fp16", "needs a CUDA GPU"), ("half", "must be fp32, bf16 or fp16")])
def test_precision_mistakes_are_user_errors(precision, message):
    with pytest.raises(UserError, match=message):
        precision_context(torch.device("cpu"), precision)


def test_fp32_is_a_no_op():
    assert not torch.is_autocast_enabled("cpu")
    with precision_context(torch.device("cpu"), None), precision_context(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")
