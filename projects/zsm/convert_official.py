"""Map the official Zooming-Slow-Mo checkpoint onto :class:`projects.zsm.model.ZSM`.

    python -m projects.zsm.convert_official xiang2020zooming.pth zsm_official.pth

The input is read with ``torch.load(weights_only=True)`` (the official file is a plain state dict, possibly with a
``module.`` prefix from DataParallel); the output is our network's state dict, verified with ``strict=True``
before it is written (atomically). Eval and infer accept the output as ``ckpt_path``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from shared.errors import UserError, one_line, report
from shared.io import atomic_torch_save, load_checkpoint_file

# official name pattern → ours (applied in order, first match wins per rule set)
_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^ConvBLSTM\.forward_net\.cell_list\.0\.conv\."), "temporal.forward_net.cell.conv."),
    (re.compile(r"^ConvBLSTM\."), "temporal."),
    (re.compile(r"(^|\.)(fea_L[23]_conv[12])\."), r"\1pyramid.\2."),
    (re.compile(r"(^|\.)pcd_align\.(L[123]_(?:offset_conv[123]|dcnpack|fea_conv))_([12])\."),
     r"\1pcd_align.branch\3.\2."),
]


def official_to_ours(key: str) -> str:
    key = key.removeprefix("module.")
    for pattern, repl in _RULES:
        key = pattern.sub(repl, key)
    return key


def ours_to_official(key: str) -> str:
    """Inverse mapping (used to export our weights in the official layout)."""
    key = re.sub(r"(^|\.)pcd_align\.branch([12])\.(\w+)\.", r"\1pcd_align.\3_\2.", key)
    key = re.sub(r"(^|\.)pyramid\.(fea_L[23]_conv[12])\.", r"\1\2.", key)
    key = key.replace("temporal.forward_net.cell.conv.", "ConvBLSTM.forward_net.cell_list.0.conv.")
    return re.sub(r"^temporal\.", "ConvBLSTM.", key)


def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official state dict → ours, checked against the default network with ``strict=True``."""
    from projects.zsm.model import ZSM

    if "params" in state and isinstance(state["params"], dict):
        state = state["params"]
    ours = {official_to_ours(k): v for k, v in state.items()}
    net = ZSM()
    result = net.load_state_dict(ours, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"not an official ZSM checkpoint: {len(result.missing_keys)} missing keys "
                        f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
                        f"(e.g. {result.unexpected_keys[:2]})")
    return net.state_dict()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python -m projects.zsm.convert_official IN.pth OUT.pth\n")
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    try:
        state = load_checkpoint_file(src)
        converted = convert(state)
    except UserError as exc:
        return report(exc)
    except RuntimeError as exc:  # shape mismatches from load_state_dict
        sys.stderr.write(f"error: checkpoint {src} does not fit ZSM: {one_line(exc)[:300]}\n")
        return 2
    atomic_torch_save(converted, dst)
    print(f"wrote {dst} ({sum(v.numel() for v in converted.values()):,} parameters, {len(converted)} tensors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
