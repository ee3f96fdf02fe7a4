"""Network building blocks shared by the projects (each cites the dissertation equation it implements)."""

from shared.ops.blocks import RRDB, ResidualBlockNoBN, ResidualDenseBlock, make_layer, scaled_kaiming_
from shared.ops.context import ASPP, MultiScaleNonLocal, NonLocalBlock, SequentialAtrous, make_context
from shared.ops.correlation import correlation
from shared.ops.deform import ModulatedDeformConv2d, deform_conv2d, set_default_backend
from shared.ops.pcd import FeaturePyramid, PCDAlign
from shared.ops.upsample import PixelShuffleUpsampler, SpaceToDepth, icnr_, space_to_depth

__all__ = [
    "ASPP", "RRDB", "FeaturePyramid", "ModulatedDeformConv2d", "MultiScaleNonLocal", "NonLocalBlock", "PCDAlign",
    "PixelShuffleUpsampler", "ResidualBlockNoBN", "ResidualDenseBlock", "SequentialAtrous", "SpaceToDepth",
    "correlation", "deform_conv2d", "icnr_", "make_context", "make_layer", "scaled_kaiming_",
    "set_default_backend", "space_to_depth",
]
