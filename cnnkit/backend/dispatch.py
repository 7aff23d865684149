"""Which algorithm runs an op, and the measured thresholds behind each choice.

The ops in ``cnnkit.functional`` hold math only: each algorithm is its own ``Function``
(``Conv2dIm2colOp`` and ``Conv2dDirectOp``, ``MaxPool2dOp`` and ``MaxPool2dFusedOp``, ...).
The public wrappers (``F.conv2d``, ``F.max_pool2d``, ``F.relu``) ask this module which
one to run. Every threshold here was measured on the project's machine (2 vCPUs of an
AMD EPYC, Zen 4 with AVX-512, 24 GiB; NumPy's bundled OpenBLAS); each comment says how.
``docs/performance.md`` collects them.

A compiled kernel is picked only when ``kernels_usable``: numba is installed, the
kernels are switched on (``config.kernels_enabled()``), the arrays are NumPy arrays and
their dtype is float32 or float64. Otherwise every op runs its NumPy reference path.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from .. import config
from .kernels import AVAILABLE, FLOATS, flat

__all__ = [
    "kernels_usable", "conv2d_algorithm", "direct_conv_kernel", "blocked_conv_applies", "DIRECT_CONV_BLOCKED", "DIRECT_CONV_LANE_ROWS", "DIRECT_CONV_PLANES", "DIRECT_CONV_PLANES_GRAD_W", "DIRECT_CONV_STACKED", "DIRECT_CONV_LANES_GRAD_W", "DIRECT_CONV_LANES_FORWARD", "STRIDED_PLANES", "STRIDED_PLANES_MAX_CHANNELS", "strided_planes_applies", "max_pool2d_algorithm", "MAX_POOL_2X2_SIMD", "MAX_POOL_2X2_PACKED_ROWS", "batch_norm_algorithm", "FUSE_BATCH_NORM_RELU", "FUSE_BATCH_NORM_ADD_RELU", "FUSE_CONV_BATCH_NORM_RELU", "FUSE_CONV_BATCH_NORM", "FUSE_CONV_RELU", "relu_kernel_applies", "inference_grain", "RELU_KEEPS_OUTPUT_MAX_BYTES", "relu_keeps_output",
    "DIRECT_CONV_MAX_MACS", "POLYPHASE_MAX_CHANNELS", "POLYPHASE_MIN_IMAGE_MACS", "POLYPHASE_DIRECT", "POLYPHASE_DIRECT_BAND_ROWS", "POLYPHASE_BLOCK_BYTES", "POLYPHASE_OFFSETS_CACHE", "DIRECT_CONV_SMALL_MAP_MACS", "DIRECT_CONV_SMALL_MAP", "WINOGRAD_MIN_CHANNELS",
    "CONV_GRADS_ONE_REGION", "CONV_GRAIN_PRESENT_IMAGES", "FUSE_RELU_INTO_MAX_POOL_BACKWARD", "FUSE_MAX_POOL_BACKWARD_INTO_CONV", "FUSE_CONV_WEIGHT_GRADS_INTO_NEXT_CONV",
    "WINOGRAD2_MIN_TILES", "WINOGRAD4_MIN_TILES", "WINOGRAD4_MAX_FILTER_PAIRS", "WINOGRAD4_MIN_SIZE",
    "WINOGRAD2_MIN_TILES_PREPACKED", "WINOGRAD4_MIN_TILES_PREPACKED",
    "WINOGRAD_BLOCK_BYTES", "WINOGRAD_FILTER_KERNEL_MAX_BYTES", "WINOGRAD_FILTER_MIN_ELEMENTS", "WINOGRAD_ROWWISE_TRANSFORMS", "WINOGRAD_ROWWISE_INPUT_MIN_TW", "WINOGRAD_ROWWISE_INPUT_MAX_TILES", "winograd_rowwise", "WINOGRAD_ROWS_MAX_ELEMENTS", "WINOGRAD_ROWS_MAX_FILTER_BYTES", "ROWS_PER_THREAD",
    "WINOGRAD_FILTER_BLOCK", "WINOGRAD_FILTER_BLOCKS_PER_THREAD", "WINOGRAD_FILTER_BLOCK_MIN_TILES",
    "WINOGRAD_FILTER_BLOCK_MAX_TILES", "WINOGRAD_FILTER_BLOCK_MAX_IMAGES", "WINOGRAD4_FILTER_BLOCK",
    "WINOGRAD4_FILTER_BLOCK_MIN_TILES", "WINOGRAD4_FILTER_BLOCK_MAX_TILES", "winograd_filter_block",
    "winograd_by_rows", "GEMM_ROWS_MAX_PIXELS", "gemm_by_rows", "GEMM_CHANNEL_GROUPS", "GEMM_CHANNEL_GROUPS_MIN_MACS", "gemm_by_channels", "IM2COL_PADDED", "IM2COL_STRIDE2", "IM2COL_MIN_ELEMENTS", "PARALLEL_MIN_MACS", "PARALLEL_MIN_ELEMENTS", "INFERENCE_MIN_ELEMENTS", "POOL_SPIN_US", "POOL_SPIN_PREEMPTED_US", "POOL_SPIN_BACKOFF_S", "POOL_PIN", "POOL_LARGE_CHUNKS_FIRST", "POOL_PIN_MAX_OTHERS", "POOL_PIN_CHECK_S", "POOL_LEAN_JOB", "POOL_SPIN_GIL", "POOL_SPIN_GIL_FREE_US", "POOL_VALUES_MIN_ELEMENTS", "ELEMENTWISE_MIN_SIZE",
    "SGD_KERNEL", "CROSS_ENTROPY_KERNEL",
    "CONV_SHORT_ROW", "CONV_GROUP", "SMALL_PRODUCT_MACS",
    "BUFFER_POOL", "POOL_MIN_BYTES", "POOL_CHUNK_BYTES", "POOL_MAX_IDLE_BYTES", "SCRATCH_FROM_POOL",
    "NO_GRAD_DIRECT", "CONV_PLANS", "generation",
]


def kernels_usable(xp, dtype) -> bool:
    """True when compiled kernels may run on arrays of module ``xp`` and ``dtype``."""
    return AVAILABLE and config.kernels_enabled() and xp is np and np.dtype(dtype) in FLOATS


# ----------------------------------------------------------------------------- convolution
# The convolution thresholds below come from benchmarks/conv_dispatch.py (every algorithm
# on each layer shape of LeNet-5, the CIFAR nets at batch 128, ResNet-18 at batch 1 and
# 8 and VGG-16 at batch 4; forward, and forward + both gradients; 2 threads, medians of
# 5 interleaved calls; the tables are in docs/performance.md).

# Direct convolution wins while a filter bank is small: its loops run over one image at
# a time in cache. It won every layer up to F*C*KH*KW = 2**14 (LeNet-5, the CIFAR nets'
# 16- and 32-channel layers; fwd+bwd 2.1-4.2x faster than Winograd there), and the
# 64-channel 3x3 layers on 8x8 maps unless F(4x4) Winograd has its WINOGRAD4_MIN_TILES
# (batch 64 and up there), but not on larger maps (64 channels at 32x32: 1.07x slower; at
# 56x56: 1.4x). On 8x8 maps, `conv_dispatch.py` (2 threads, quiet machine, Dec 3 evening,
# NumPy's SkylakeX kernels; fwd / fwd+bwd ms, direct vs F(4x4)): batch 16 1.83 vs 2.18 /
# 6.33 vs 6.24, batch 32 3.33 vs 2.86 / 12.2 vs 10.0, batch 128 11.3 vs 7.6 / 23.6 vs 21.6
# (with OPENBLAS_CORETYPE=Haswell: 43.4 vs 30.9). The 32-channel 16x16 layers stay direct:
# forward 7.5 vs 10.9 ms at batch 128, fwd+bwd 31.8 vs 27.2 (SkylakeX) but 24.7 vs 33.6
# (Haswell). An earlier table (direct 1.7x faster than F(4x4) at 8x8, batch 128) predates
# the Winograd op's blocked transforms. Those figures are the "rows" kernel's. The blocked
# kernel (DIRECT_CONV_BLOCKED, below) takes the small maps back from F(4x4) at any batch:
# `conv_dispatch.py --threads 1 --clock cpu` (Dec 3 night, load 2-6), 64 channels on 8x8,
# fwd+bwd ms blocked vs F(4x4): batch 128 23.8 vs 25.4, batch 64 13.1 vs 15.6; on 6x6,
# batch 128, 18.0 vs 33.3; forward with F(4x4)'s filters prepacked, batch 128 7.68 vs 7.45
# (level), batch 64 4.08 vs 4.57. ResNet-20 training at batch 128 (`dispatch_ab.py
# WINOGRAD4_MIN_TILES=1000000000 --model resnet20 --batch 128 --train --threads 1 --clock
# cpu`, with the blocked kernel): 0.924x the time with its 8x8 layers on F(4x4).
DIRECT_CONV_MAX_MACS = 2**14
DIRECT_CONV_SMALL_MAP_MACS = 2**16
DIRECT_CONV_SMALL_MAP = 64           # output pixels (8x8)

# Winograd's transforms cost per filter bank (U: a*a*F*C values per call) and per tile;
# its savings grow with the tiles T = N*ceil(OH/m)*ceil(OW/m) per filter. F(2x2) won
# from about 100 tiles on (ResNet-18 at batch 1: 128 channels at 28x28, 196 tiles, 1.5x
# faster than im2col; 256 channels at 14x14, 49 tiles, 1.2x slower than im2col, so
# im2col keeps it); F(4x4) needs more (ResNet-18 batch 8 at 14x14, 128 tiles: 1.1x slower
# than F(2x2); at 28x28, 392 tiles: 1.4x faster) and loses on 512x512 filter banks, whose
# 36-position transformed filters outweigh the smaller products (VGG-16's 14x14 layers:
# 1.17x slower than F(2x2)). Both need enough channels for their products to reach
# BLAS's speed.
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD2_MIN_TILES = 96
WINOGRAD4_MIN_TILES = 256
WINOGRAD4_MAX_FILTER_PAIRS = 256 * 256
WINOGRAD4_MIN_SIZE = 4               # F(4x4) on 2x2 maps would compute 4x the outputs

# With the transformed filters prepacked (an inference layer, backend/prepack.py) the
# per-call cost that held Winograd back on few tiles and large filter banks is gone.
# Measured with `python benchmarks/conv_dispatch.py --prepacked --threads 1 --clock cpu`
# (forward, one thread, CPU time, load 2): F(4x4) beat F(2x2) on ResNet-18's 512x7x7
# layers at batch 8 (32 tiles: 15.4 vs 18.4 ms) and on 28x28 and 56x56 maps, was level
# at batch 4 on 7x7 (16 tiles) and on 14x14 maps, where F(4x4) pads 14 to 16 (256
# channels, batch 8: 14.6 vs 14.7 ms; batch 2: 1.14x slower); F(2x2) beat gemm from 32
# tiles (512x7x7 at batch 2: 6.6 vs 7.1 ms; 256x14x14 at batch 1, 49 tiles: 3.3 vs 3.6)
# and lost at 16 (512x7x7 at batch 1: 4.6 vs 4.1 ms).
WINOGRAD2_MIN_TILES_PREPACKED = 32
WINOGRAD4_MIN_TILES_PREPACKED = 32


def conv2d_algorithm(xp, dtype, x_shape, w_shape, stride, pads, dilation, groups: int,
                     prepacked: bool = False) -> str:
    """The convolution algorithm: "winograd4", "winograd2", "direct", "gemm" or "im2col".

    x_shape is (C, H, W) or (N, C, H, W); pads (top, bottom, left, right). ``prepacked``:
    Winograd's transformed filters are prepared already (``backend/prepack.py``).

    - "direct" (``Conv2dDirectOp``): stride 1, no dilation, one group, a kernel larger
      than 1x1, and F*C*KH*KW <= DIRECT_CONV_MAX_MACS, or <= DIRECT_CONV_SMALL_MAP_MACS
      on outputs of at most DIRECT_CONV_SMALL_MAP pixels when its blocked kernel applies
      (``direct_conv_kernel``) or F(4x4) Winograd does not have its WINOGRAD4_MIN_TILES
      (with prepacked filters too).
    - "winograd4" / "winograd2" (``Conv2dWinogradOp``, F(4x4, 3x3) / F(2x2, 3x3)): 3x3,
      stride 1, no dilation, one group, padding <= 2, at least WINOGRAD_MIN_CHANNELS in
      and out; F(4x4) with at least WINOGRAD4_MIN_TILES tiles, at most
      WINOGRAD4_MAX_FILTER_PAIRS filter-channel pairs and outputs at least
      WINOGRAD4_MIN_SIZE on each side; else F(2x2) with at least WINOGRAD2_MIN_TILES tiles,
      or where it splits by blocks of filters (``winograd_filter_block``: WINOGRAD_FILTER_BLOCK
      on, WINOGRAD_FILTER_BLOCK_MIN_TILES to _MAX_TILES tiles of one image); F(4x4) below
      WINOGRAD4_MIN_TILES too where it splits by blocks of filters (WINOGRAD4_FILTER_BLOCK).
      With ``prepacked`` filters: F(4x4) from WINOGRAD4_MIN_TILES_PREPACKED tiles on
      outputs that 4x4 tiles cover with no more padding than 2x2 tiles (each side 4k or
      4k - 1: 7, 28, 56, not 14), any filter bank; else F(2x2) from
      WINOGRAD2_MIN_TILES_PREPACKED tiles.
    - "strided" (``Conv2dStridedPlanesOp``): 3x3 stride-2 layers with padding 1 on the input's
      stride phases as planes, where ``strided_planes_applies`` (ResNet-20's downsampling layers).
    - "polyphase" (``Conv2dPolyphaseOp``): strided, undilated, ungrouped, a kernel larger
      than 1x1, at most POLYPHASE_MAX_CHANNELS input channels and at least
      POLYPHASE_MIN_IMAGE_MACS multiply-adds per image (ResNet's 7x7/2 stem).
    - "gemm" (``Conv2dGemmOp``): everything else, on compiled kernels.
    - "im2col" (``Conv2dIm2colOp``): the NumPy reference, when kernels are not usable.
    """
    F, Cg, KH, KW = w_shape
    if not kernels_usable(xp, dtype):
        return "im2col"
    C = x_shape[-3]
    if groups != 1 or tuple(dilation) != (1, 1):
        return "gemm"
    if tuple(stride) != (1, 1):
        itemsize = np.dtype(dtype).itemsize
        if STRIDED_PLANES and strided_planes_applies(x_shape, w_shape, stride, pads, dilation, groups, itemsize):
            return "strided"
        H, W = x_shape[-2:]
        OH = (H + pads[0] + pads[1] - KH) // stride[0] + 1
        OW = (W + pads[2] + pads[3] - KW) // stride[1] + 1
        small = C <= POLYPHASE_MAX_CHANNELS and KH * KW > 1
        return "polyphase" if small and F * C * KH * KW * OH * OW >= POLYPHASE_MIN_IMAGE_MACS else "gemm"
    N = x_shape[0] if len(x_shape) == 4 else 1
    H, W = x_shape[-2:]
    OH, OW = H + pads[0] + pads[1] - KH + 1, W + pads[2] + pads[3] - KW + 1
    macs = F * Cg * KH * KW
    winograd = None
    full4 = False                                   # F(4x4) has its WINOGRAD4_MIN_TILES (small maps yield to it)
    if (KH, KW) == (3, 3) and max(pads) <= 2 and min(C, F) >= WINOGRAD_MIN_CHANNELS and min(OH, OW) >= 1:
        tiles4 = N * -(-OH // 4) * -(-OW // 4)
        tiles2 = N * -(-OH // 2) * -(-OW // 2)
        full4 = (tiles4 >= WINOGRAD4_MIN_TILES or winograd_filter_block(N, OH, OW, 4) > 0) and C * F <= WINOGRAD4_MAX_FILTER_PAIRS and min(OH, OW) >= WINOGRAD4_MIN_SIZE
        if prepacked:
            snug = OH % 4 in (0, 3) and OW % 4 in (0, 3)              # 4x4 tiles pad no more than 2x2
            if tiles4 >= WINOGRAD4_MIN_TILES_PREPACKED and snug and min(OH, OW) >= WINOGRAD4_MIN_SIZE:
                winograd = "winograd4"
            elif tiles2 >= WINOGRAD2_MIN_TILES_PREPACKED:
                winograd = "winograd2"
        elif full4:
            winograd = "winograd4"
        elif tiles2 >= WINOGRAD2_MIN_TILES or winograd_filter_block(N, OH, OW, 2):
            winograd = "winograd2"
    if KH * KW > 1 and macs <= DIRECT_CONV_MAX_MACS:
        return "direct"
    small_map = macs <= DIRECT_CONV_SMALL_MAP_MACS and OH * OW <= DIRECT_CONV_SMALL_MAP
    if KH * KW > 1 and small_map and (not full4 or direct_conv_kernel(w_shape, pads) == "blocked"):
        return "direct"
    return winograd or "gemm"


# The "direct" algorithm has two kernels: flat rows with accumulators in memory
# (kernels/conv_direct.py, "rows") and the register-blocked one (kernels/conv_blocked.py,
# "blocked": a tile of output channels x pixel vectors held in AVX-512 registers over all
# taps). "blocked" handles padding up to the kernel size minus one and won every shape
# measured: `python benchmarks/conv_dispatch.py [--backward] --threads 1 --clock cpu
# --torch --repeats 9 --shapes ...` (Dec 3 night, load 5-6; ms, rows / blocked / PyTorch):
# 16->16 32x32 b128 fwd 14.2 / 8.0 / 10.9, fwd+bwd 48.3 / 27.3 / 45.1; 32->32 16x16 b128
# 10.3 / 7.4 / 6.9, 36.4 / 23.8 / 21.7; 64->64 8x8 b128 11.1 / 7.8 / 5.9, 36.9 / 23.8 /
# 17.6; LeNet-5 conv1 (1->6 5x5 pad 2, 28x28) b64 0.71 / 0.55 / 1.12, 1.78 / 1.57 / 7.89;
# conv2 (6->16 5x5, 14x14) b64 0.93 / 0.72 / 0.80, 2.39 / 2.19 / 2.58; b256 conv1
# 2.24 / 1.66 / 3.51, 6.81 / 5.36 / 30.7; conv2 2.91 / 2.27 / 2.16, 8.67 / 7.95 / 8.28.
# ResNet-20 training, batch 128: `dispatch_ab.py DIRECT_CONV_BLOCKED=0 --model resnet20
# --batch 128 --train --threads 1 --clock cpu` 1.354x slower with "rows" (1165 vs 871 ms).
# DIRECT_CONV_BLOCKED = 0 sends every direct layer back to "rows" (A/B runs).
DIRECT_CONV_BLOCKED = 1

# The blocked kernel's backward runs the input gradient and the weight gradient in one
# parallel region (conv_blocked.conv2d_blocked_grads); 0: one region each (A/B runs).
# Measured: docs/performance.md, "LeNet-5 training on two threads".
CONV_GRADS_ONE_REGION = 1

# The blocked kernel's regions count the multiply-adds of a work item (a pack of lane-row or
# stacked images, a weight-gradient group) for the images it holds, at most the batch's N
# (``conv_blocked._present``), when they set the grain. Before (0, A/B runs), a stacked item
# counted its 4 images and a weight-gradient group its 16 at any batch: LeNet-5's conv2
# backward at batch 1 (one image, 0.7M multiply-adds in all) looked like two units of 1.9M and
# 3.8M and ran as a two-thread region, the one region of the batch-1 step, whose wake-up and
# join cost more than its work. Same units, same chunks of work, same bits.
# Measured: docs/performance.md, "LeNet-5: the cost of the second thread (Dec 6)".
CONV_GRAIN_PRESENT_IMAGES = 1

# The blocked kernel's "lane rows" (kernels/conv_blocked.row_layout): small maps (OW <= 16
# float32 lanes) packed several images to a vector, one input copy per column tap, no junk
# columns, where that computes at most 0.9 of flat rows' entries (ResNet-20's 8x8 and 16x16 layers).
# 0: flat rows everywhere (A/B runs). Measured: docs/performance.md, "Lane rows".
DIRECT_CONV_LANE_ROWS = 1

# The blocked kernel's forward (and input gradient) on "same"-size maps whose planes are whole
# vectors (kernels/conv_blocked.plane_forward): taps read straight from the unpadded input
# planes under lane masks and tiles stored straight into the output planes (no padded copy,
# no junk columns, no output copy). 0: lane rows / flat rows (A/B runs).
# Measured: docs/performance.md, "Planes".
DIRECT_CONV_PLANES = 1
# The weight gradient on the same planes (conv_blocked.plane_grad_w; 3-column kernels, F a
# multiple of 8): x and gy read in place under lane masks. Off (0: lane rows / flat rows): 1.16-1.22x
# faster in most processes, 1.4-2x slower in some (the same arrays and code, one process against
# the next; not understood), level on the whole ResNet-20 step (0.88-1.04x in four runs).
# Measured: docs/performance.md, "Planes".
DIRECT_CONV_PLANES_GRAD_W = 0
# The blocked kernel on "full" convolutions (padding KH - 1, KW - 1 on every side: the input
# gradient of an unpadded layer, LeNet-5's conv2) over stacked rows (kernels/conv_blocked.
# stacked_forward): a batch's images one after the other in rows as wide as the output, the
# padding shared between neighbouring rows and images, so no junk entry and no output copy.
# 0: lane rows / flat rows (A/B runs). LeNet-5 conv2's gx, one thread, CPU time: b64 0.96 -> 0.59
# ms, b256 3.91 -> 2.38; training step b64 1.102x (`dispatch_ab.py DIRECT_CONV_STACKED=0 --model
# lenet5 --batch 64 --train --steps 20 --threads 1 --clock cpu --repeats 21`, Dec 5).
# docs/performance.md, "LeNet-5 convolutions (Dec 5)".
DIRECT_CONV_STACKED = 1
# The blocked kernel's weight gradient with the filters in the vector lanes (kernels/conv_lanes.py:
# 5x5 kernels, F a multiple of the lanes: LeNet-5's conv2): per output pixel one vector of gy's
# filters times the window's 25 input values, each broadcast; no junk column, no lane sums.
# 0: lane rows / flat rows (A/B runs). LeNet-5 conv2's gW + gb, one thread, CPU time: b64 0.54
# -> 0.32 ms, b256 1.97 -> 1.30; step b64 1.075x (same command). Only 5x5 kernels are compiled.
DIRECT_CONV_LANES_GRAD_W = 1
# The blocked kernel's forward (and input gradient) with the filters in the vector lanes
# (kernels/conv_lanes.lanes_forward: F a multiple of the lanes, output rows of at most 16 pixels,
# an output smaller than its input: LeNet-5's conv2): tiles of whole output rows, no junk columns.
# 0: flat rows / lane rows (A/B runs). LeNet-5 conv2's forward, one thread, CPU time: b64 0.45 ->
# 0.32 ms, b256 1.81 -> 1.32; step b64 1.043x (same command). Only 10-pixel rows are compiled.
DIRECT_CONV_LANES_FORWARD = 1


def blocked_conv_applies(w_shape, pads) -> bool:
    """True when the blocked direct kernel handles the layer: every padding below the kernel size."""
    KH, KW = w_shape[2:]
    pt, pb, pl, pr = pads
    return max(pt, pb) <= KH - 1 and max(pl, pr) <= KW - 1


def direct_conv_kernel(w_shape, pads) -> str:
    """The kernel of a "direct" convolution: "blocked", or "rows" (paddings of the kernel size or more)."""
    return "blocked" if DIRECT_CONV_BLOCKED and blocked_conv_applies(w_shape, pads) else "rows"


# 3x3 stride-2 convolutions with padding 1 on maps whose rows and stride phases are whole
# 64-byte vectors run on the phases as planes (kernels/strided.py, Conv2dStridedPlanesOp):
# forward, input and weight gradient without columns or col2im. 0: polyphase / gemm as before
# (A/B runs). `benchmarks/conv_phases.py --strided --threads 1 --clock cpu --against
# STRIDED_PLANES=0` (b128, CNHW, Dec 4 late night, load 2.3): ResNet-20's 16->32 / 32->64 layers
# fwd 1.88x / 2.11x, gx 2.71x / 2.15x faster than polyphase / gemm (against PyTorch, one thread:
# fwd 1.10x / 1.04x, gx 1.88x / 1.56x, gW 1.19x / 1.22x); `--shapes 8,64,64,32,2
# 32,64,128,16,2 128,3,16,32,2 --phases fwd,bwd`: fwd 1.64x / 1.92x / 2.37x, fwd+bwd 1.17x /
# 1.56x / 1.46x faster than gemm; up to 64 input channels, as measured. ResNet-20 training b128
# (`dispatch_ab.py STRIDED_PLANES=0 --model resnet20 --batch 128 --train --threads 1 --clock
# cpu`): 1.088x. docs/performance.md, "Stride-2 layers on phase planes".
STRIDED_PLANES = 1
STRIDED_PLANES_MAX_CHANNELS = 64


def strided_planes_applies(x_shape, w_shape, stride, pads, dilation, groups: int, itemsize: int) -> bool:
    """True when ``kernels/strided.py`` handles the layer: 3x3, stride 2, padding 1, no dilation, one
    group, F a multiple of 8 (the weight gradient's tiles), at most STRIDED_PLANES_MAX_CHANNELS input
    channels, H and W even, an input row and a stride phase (H/2 x W/2) whole 64-byte vectors."""
    C, H, W = x_shape[-3:]
    VL = 64 // itemsize
    return (tuple(w_shape[2:]) == (3, 3) and w_shape[0] % 8 == 0 and C <= STRIDED_PLANES_MAX_CHANNELS
            and tuple(stride) == (2, 2) and tuple(pads) == (1, 1, 1, 1) and tuple(dilation) == (1, 1) and groups == 1
            and H % 2 == 0 and W % VL == 0 and (H // 2) * (W // 2) % VL == 0)


# Strided convolutions on few input channels (ResNet's 7x7/2 stem on RGB) run as
# polyphase columns + products in blocks (Conv2dPolyphaseOp) up to this many input
# channels. Measured with benchmarks/conv_dispatch.py --strided (one thread, CPU time,
# batch 8 unless said): the 7x7/2 stem on 224x224 forward 1.15-1.55x faster than im2col
# (gemm) on 1 to 16 channels and batch 1 to 16 (still 1.2x on 32 and 64 channels: in no
# zoo model, left to gemm), forward + weight gradient 1.2-1.5x; 3x3/2 on 16 channels
# 1.16x, on 3 channels level; ResNet-18's 3x3/2 layers on 64 to 256 channels 1.03-1.5x slower, its 1x1/2
# shortcuts 1.7x slower (a 1x1 kernel reads one phase of four), so those keep gemm.
# Each block costs a few microseconds of Python around its product, so an image needs
# enough work: ResNet-20's 3x3/2 16->32 layer (32x32 input, 1.2M multiply-adds per image,
# batch 128) ran 1.17x faster forward and 1.08x forward + backward, a 3x3/2 3->16 layer
# (0.11M per image) 1.3x slower forward.
POLYPHASE_MAX_CHANNELS = 16
POLYPHASE_MIN_IMAGE_MACS = 2**20
# POLYPHASE_DIRECT: its forward runs the register-blocked direct kernel on the phases (no
# columns; 0: columns and products, for A/B), in bands of POLYPHASE_DIRECT_BAND_ROWS output
# rows of one image. ResNet-18's stem, one thread, CPU time (Dec 4, load 5-6): batch 1 3.1-3.4 ms against the columns'
# 4.4-4.7 (PyTorch 3.0-3.1); bands of 4, 8 and 16 rows within noise of each other.
POLYPHASE_DIRECT = 1
POLYPHASE_DIRECT_BAND_ROWS = 8
# Columns of a block of output rows: at most this many bytes (they stay in the core's
# L2 cache between being written and read by the product).
POLYPHASE_BLOCK_BYTES = 512 * 2**10
# POLYPHASE_OFFSETS_CACHE: the direct forward's tap offsets (``kernels/polyphase.py``,
# ``_tap_offsets``) made once per geometry (0: per call, a meshgrid and a dozen NumPy
# operations: 24 us hot, ~0.2 ms as the first op of a ResNet-18 pass). Same integer offsets:
# same bits. docs/performance.md, "ResNet-18 at batch 1: the time with no region open (Dec 6)".
POLYPHASE_OFFSETS_CACHE = 1


# Winograd's transformed tiles (V, M) are built for blocks of images of at most this
# many bytes each: scratch memory stays bounded (VGG-16's first layers at batch 4 would
# take 115 MB each at once) and a block stays within what the allocator keeps mapped.
WINOGRAD_BLOCK_BYTES = 32 * 2**20

# Winograd's filter transform U = K w (K = kron(G, G), a*a x 9) runs a compiled kernel
# (``kernels/winograd.py``, ``_filter_block``) instead of one BLAS product with an inner
# dimension of 9 when U takes at most this many bytes (0: the product everywhere, A/B).
# One thread, CPU time, BLAS / kernel (us): F(2x2) 64x64 58/29, 128x128 188/107, 256x256
# 687/391 (float64 1022/665); F(4x4) 64x64 88/55, 128x128 383/208; above 8 MiB level or
# slower (F(4x4) 256x256 1277/1279, 512x512 6138/7225). Section "ResNet-18 at batch 1,
# eval (Dec 4 night)" of docs/performance.md.
WINOGRAD_FILTER_KERNEL_MAX_BYTES = 8 * 2**20

# The compiled filter transform gives each thread at least this many elements of U (was
# PARALLEL_MIN_ELEMENTS, 2**19: in the eager ResNet-18 at batch 1 every bank but the 256x256
# ones, 0.46 ms of filter transforms per pass, ran on one thread).
WINOGRAD_FILTER_MIN_ELEMENTS = 2**16

# Winograd's input and output transforms by ``winograd_input_rowwise`` / ``winograd_output_rowwise``
# (``kernels/winograd.py``): B^T on whole input rows before the per-tile gather, output rows
# written whole (F(2x2)) or merged by lane interleaves (F(4x4)); the same arithmetic in the same
# order, the same bits. 0: ``winograd_input`` / ``winograd_output`` (A/B runs). One thread,
# ResNet-18 b1's 64x56x56 layer, input + output transform, F(2x2) 1.00 -> 0.51 ms, F(4x4) 1.17 ->
# 0.65 ms. The rowwise input transform works image by image, where ``winograd_input``'s loops run
# over a tile row of every image of the call: it takes calls on rows of at least
# WINOGRAD_ROWWISE_INPUT_MIN_TW tile columns, or of at most WINOGRAD_ROWWISE_INPUT_MAX_TILES tiles
# over all their images (batch 1); on narrow maps of many images it was 1.1-2x slower (128x16x16
# at batch 64 F(2x2) 11.1 -> 12.7 ms, 512x4x4 5.0 -> 9.8). The rowwise F(4x4) output transform
# needs 4 tile columns (on 1-2 it was 1.04-1.24x slower). Measured: docs/performance.md,
# "Winograd's transforms on whole rows (Dec 6)".
WINOGRAD_ROWWISE_TRANSFORMS = 1
WINOGRAD_ROWWISE_INPUT_MIN_TW = 14
WINOGRAD_ROWWISE_INPUT_MAX_TILES = 16


def winograd_rowwise(m: int, nimg: int, TW: int) -> tuple[bool, bool]:
    """(input, output): whether Winograd F(m x m)'s transforms on ``nimg`` images of ``TW`` tile
    columns run the rowwise kernels (WINOGRAD_ROWWISE_TRANSFORMS)."""
    if not WINOGRAD_ROWWISE_TRANSFORMS:
        return False, False
    return (TW >= WINOGRAD_ROWWISE_INPUT_MIN_TW or nimg * TW <= WINOGRAD_ROWWISE_INPUT_MAX_TILES,
            m == 2 or TW >= 4)

# Winograd's forward on small inputs (ResNet-18 at batch 1) splits the threads by tile rows,
# each running the whole pipeline (input transform, products, output transform) on its rows,
# where the phase-by-phase split leaves it on one thread: an input of fewer than
# WINOGRAD_ROWS_MAX_ELEMENTS elements keeps the input and output transforms on one thread
# (their grain is a quarter of PARALLEL_MIN_ELEMENTS per thread), and the 56x56 layers'
# products (29M multiply-adds) stay under SMALL_PRODUCT_MACS. Every thread reads all of the
# transformed filters U, so only banks of at most WINOGRAD_ROWS_MAX_FILTER_BYTES do (F(4x4)
# 256x256 is 9.4 MB, F(2x2) 512x512 16.8 MB). Measured (Dec 3 night, loaded machine,
# `benchmarks/two_thread_model.py --optimized`: ResNet-18 at batch 1, one core's CPU time
# with the two-thread splits modelled): the 64- and 128-channel F(4x4) layers from 1.00x to
# 1.6-1.9x, the 256x14x14 F(2x2) ones from 1.4-1.5x to 1.7-1.9x; one thread level
# (`dispatch_ab.py WINOGRAD_ROWS_MAX_ELEMENTS=0 GEMM_ROWS_MAX_PIXELS=0 --batch 1 --optimized
# --threads 1 --clock cpu`: 1.02x). Batch 2 and up at 56x56, batch 8 everywhere, training
# (ResNet-18 b16, ResNet-20 b128), VGG keep the phase split (their inputs are larger).
WINOGRAD_ROWS_MAX_ELEMENTS = 2**18
WINOGRAD_ROWS_MAX_FILTER_BYTES = 8 * 2**20


def winograd_by_rows(input_elements: int, filter_bytes: int) -> bool:
    """True when Winograd's forward on an input of ``input_elements`` splits the threads by tile rows."""
    return input_elements < WINOGRAD_ROWS_MAX_ELEMENTS and filter_bytes <= WINOGRAD_ROWS_MAX_FILTER_BYTES


# Eager F(2x2) Winograd (filters transformed in the call) on few tiles: one region over fixed
# blocks of WINOGRAD_FILTER_BLOCK output channels (``kernels/winograd.py``, ``_forward_by_filters``):
# each thread computes the input transform V^T (16, T, C) for itself, then per block the block's
# filter transform, its 16 products, output transform and epilogue (conv + BN + ReLU), the
# transforms vectorized over the channels or filters (V^T, U^T, M^T layouts); U is never written
# whole. ResNet-18's 256x256 3x3 layers at 14x14, batch 1 (49 tiles), eager, where gemm by
# channel groups ran before (F(2x2) had WINOGRAD2_MIN_TILES = 96). 0: off (A/B runs). Blocks of
# 64 filters: one thread CPU 1.31-1.36 ms (32: 1.36-1.43; gemm 2.70, PyTorch 2.00); two threads
# wall 0.88-0.94 ms (32: 1.00-1.47; gemm 1.52-1.61, PyTorch 1.12-1.14). 512x512 at 7x7 (16 tiles)
# gains nothing on the model (MIN_TILES 16 against 49: 0.993x). ResNet-18 b1 eager, two threads:
# `dispatch_ab.py WINOGRAD_FILTER_BLOCK=0 --batch 1 --threads 2` 1.087x (31 pairs); optimized and
# b8 level (path not taken). Measured: docs/performance.md, "ResNet-18 at batch 1: eager F(2x2)
# by blocks of filters (Dec 6)".
WINOGRAD_FILTER_BLOCK = 64
WINOGRAD_FILTER_BLOCKS_PER_THREAD = 4
WINOGRAD_FILTER_BLOCK_MIN_TILES = 49
WINOGRAD_FILTER_BLOCK_MAX_TILES = 95
# Only one image: larger batches won on the layer alone (docs/performance.md) but were not
# measured on their models, and a batch of small maps falls in the tile range (VGG-11 CIFAR
# training at batch 64 has 64 tiles on its 2x2 maps, where GEMM runs, and a backward).
WINOGRAD_FILTER_BLOCK_MAX_IMAGES = 1
# F(4x4) on the same path (``_forward_by_filters`` with ``_tiles_block``), eager or prepacked:
# blocks of WINOGRAD4_FILTER_BLOCK filters on one image of WINOGRAD4_FILTER_BLOCK_MIN_TILES to
# _MAX_TILES tiles (ResNet-18's 128-channel 28x28 layers at batch 1: 49 tiles, four blocks of 32;
# its 64-channel 56x56 layers: 196 tiles, two blocks), where F(2x2) by tile rows ran eager, F(4x4)
# by tile rows prepacked (28x28: 7 tile rows, products of 14 columns, every thread reading all of
# U). The input transform is a region of its own split by channels (V in the tile layout,
# shared). ResNet-18 b1, two threads, 28x28 only (_MAX_TILES 127): `dispatch_ab.py
# WINOGRAD4_FILTER_BLOCK=0 --batch 1 --threads 2` 1.016-1.053x (six runs of 31 pairs, median
# 1.039x), --optimized 1.011-1.024x (three of 21); one thread CPU 1.035x (15). The 56x56 layers
# too (`WINOGRAD4_FILTER_BLOCK_MAX_TILES=196` against 127 as is then; below 1: 196 wins): 0.972x,
# 0.990x, 0.992x, 0.972x (31 pairs each), --optimized 0.992x (21), one thread CPU 0.939x (15), the
# layer alone (`--layer 64,64,56,3`) 0.930x (41); after, 127 against 196 0.982x (31; median of
# the five: 196 ahead by 1%). Both sizes, `WINOGRAD4_FILTER_BLOCK=0`: 1.052x (31), --optimized
# 1.011x (21). Blocks of 64: level (1.002x); of 16: 1.019x slower. 0: off (A/B runs).
# Measured: docs/performance.md, "Winograd F(4x4) at batch 1 by filter blocks (Dec 6)".
WINOGRAD4_FILTER_BLOCK = 32
WINOGRAD4_FILTER_BLOCK_MIN_TILES = 49
WINOGRAD4_FILTER_BLOCK_MAX_TILES = 196


def winograd_filter_block(images: int, OH: int, OW: int, m: int) -> int:
    """Filters per block where Winograd F(m x m) on ``images`` of OH x OW outputs splits the
    threads by output channels (``kernels/winograd._forward_by_filters``), else 0."""
    block, low, high = ((WINOGRAD_FILTER_BLOCK, WINOGRAD_FILTER_BLOCK_MIN_TILES, WINOGRAD_FILTER_BLOCK_MAX_TILES)
                        if m == 2 else
                        (WINOGRAD4_FILTER_BLOCK, WINOGRAD4_FILTER_BLOCK_MIN_TILES, WINOGRAD4_FILTER_BLOCK_MAX_TILES))
    if not block or images > WINOGRAD_FILTER_BLOCK_MAX_IMAGES:
        return 0
    tiles = images * -(-OH // m) * -(-OW // m)
    return block if low <= tiles <= high else 0


# Splits by rows (Winograd's tile rows, GEMM's output rows) hand out up to this many pieces
# per thread, each piece at least PARALLEL_MIN_MACS multiply-adds (each has the fixed cost of
# its BLAS call: ResNet-18's 1x1/2 shortcut at 28x28 in four pieces of 1.6M took 0.57 ms of
# CPU against 0.39 in one piece).
ROWS_PER_THREAD = 2


# Flat rows (see kernels/conv_direct.py) of at most CONV_SHORT_ROW entries interleave
# CONV_GROUP images (image index innermost): each pass over a short row costs a fixed
# overhead that longer rows spread over more multiply-adds, and with 16 images every tap
# starts on a 64-byte boundary (aligned vector loads). Measured per kernel on one thread
# (batch 64, float32): LeNet-5's conv2 (rows of 136 entries) forward 2.2x and backward
# 1.9x faster; 3x3 layers on 16x16 images (286 entries) forward 1.9x faster; conv1
# (892 entries) is as fast without.
CONV_SHORT_ROW = 512
CONV_GROUP = 16


# ------------------------------------------------------------------------- threads (grain)
# Work below which one more thread does not pay for its wake-up (~20-70 us here, median
# 22 us): ~2e6 multiply-adds of a direct convolution, ~2**19 elements through pooling or
# ReLU (a quarter of that through the general pooling kernel, slower per element).
# Measured: LeNet-5 at batch 64 took 3.9 ms/step on one thread, 4.1 ms on two with
# every kernel split, 3.4 ms with these thresholds (PyTorch: 3.4 ms).
PARALLEL_MIN_MACS = 2_000_000
PARALLEL_MIN_ELEMENTS = 2**19

# The one-pass elementwise kernels of inference (ReLU without its mask, eval-mode batch norm)
# give each thread at least this many elements instead of PARALLEL_MIN_ELEMENTS: ResNet-18's
# stem at batch 1 (64x112x112, 0.8M elements: batch norm 0.22 ms, ReLU 0.13 ms on one core)
# splits; its 64x56x56 maps and training's passes (gradient masks, batch statistics) keep
# their grain, and at batch 8 every split is as before. 0: PARALLEL_MIN_ELEMENTS (A/B runs).
# Measured with POOL_VALUES_MIN_ELEMENTS = 2**18 and GEMM_CHANNEL_GROUPS_MIN_MACS below
# (together: ResNet-18 b1 0.2-1.9% faster eager, -1.3 to +3.3% optimized, two threads,
# within the host's spread): docs/performance.md, "ResNet-18 at batch 1: the serial stem
# and shortcuts (Dec 5 night)".
INFERENCE_MIN_ELEMENTS = 2**18


def inference_grain() -> int:
    """Elements per thread of inference's one-pass elementwise kernels (INFERENCE_MIN_ELEMENTS)."""
    return INFERENCE_MIN_ELEMENTS or PARALLEL_MIN_ELEMENTS

# After a parallel region the kernel pool's helpers wait this many microseconds for the
# next one spinning without the GIL (``kernels/spin.py``), then sleep; the calling thread
# waits as long for a helper's last chunk. Only in pinned regions (POOL_PIN below). 0:
# helpers sleep at once (the pool before Dec 4). Measured (`dispatch_ab.py POOL_SPIN_US=300
# --threads 2`, pinning on, quiet machine, load 0.3-0.6, Dec 4 17:30): ResNet-18 b1 0.979x
# the time (optimized 0.996x), LeNet-5 training b64 0.955x, b256 0.957x, ResNet-20 training
# b128 0.987x; 1000 us: 0.982x, 0.965x. Without pinning it lost (1000 us: 1.058x, 1.053x):
# a helper that shares the caller's CPU spins in its way.
POOL_SPIN_US = 300
# A spinning thread that finds two loop iterations this far apart lost its CPU (the machine
# has more runnable threads than cores): it sleeps, and no thread spins for the next
# POOL_SPIN_BACKOFF_S seconds.
POOL_SPIN_PREEMPTED_US = 300
POOL_SPIN_BACKOFF_S = 0.05
# Where the threads of a parallel region run (``cores._pin``), when the calling thread has at
# least as many CPUs as threads and other processes kept at most POOL_PIN_MAX_OTHERS CPUs
# busy over the last POOL_PIN_CHECK_S seconds: 1, the helpers on the caller's other CPUs
# (away from the CPU it runs on); 2, also the caller held on its CPU until the region ends
# (its CPU set is then restored); 0, the scheduler places them (before Dec 4). Left to the
# scheduler, a woken helper often ran on the caller's CPU while the other stayed idle, and
# a region took the sum of both threads' times (docs/performance.md, "Two cores").
POOL_PIN = 2
# parallel_for's chunks differ in size by at most one; 1: the larger ones first (the last
# chunks handed out are the small ones), 0: in the order of count * k // pieces (A/B runs).
POOL_LARGE_CHUNKS_FIRST = 1
POOL_PIN_MAX_OTHERS = 0.25
POOL_PIN_CHECK_S = 0.2
# A parallel region's job object (``cores._Job``): 1, finished chunks counted by an
# ``itertools.count`` and the end announced by a lock taken when the job is made, each chunk
# list made once per (count, pieces); 0, a lock per finished chunk, a ``threading.Event`` and
# the chunk list built per region (before Dec 6, for A/B runs). The same chunks in the same
# order either way. Measured: docs/performance.md, "The parallel region's fixed cost (Dec 6)".
POOL_LEAN_JOB = 1
# A helper that sees a new job while spinning goes on spinning (within POOL_SPIN_US) until the
# interpreter's GIL has been free for POOL_SPIN_GIL_FREE_US (``cores._gil_word``: CPython 3.11
# only), then takes it without sleeping on it; 0: it asks for the GIL at once (the caller holds
# it until its first chunk enters compiled code) and sleeps on it until the caller lets it go
# (~20 us to wake a halted vCPU here). Measured (pinned regions, `dispatch_ab.py POOL_SPIN_GIL=0
# --threads 2 --quiet 15-21`): ResNet-18 b1 eager 1.016x, 1.017x, LeNet-5 b64 training 1.037x,
# 0.994x; docs/performance.md, "The parallel region's fixed cost (Dec 6)".
POOL_SPIN_GIL = 1
POOL_SPIN_GIL_FREE_US = 2.0


# --------------------------------------------------------------------------------- pooling
def max_pool2d_algorithm(xp, dtype) -> str:
    """"fused" (``MaxPool2dFusedOp``, one compiled pass) when kernels are usable, else
    "reference" (``MaxPool2dOp``, one NumPy pass per kernel tap).

    The fused kernel was faster at every shape measured (LeNet-5, ResNet's 3x3/2 stem
    pooling, VGG's 2x2 pools): it reads each input once instead of KH*KW times.
    """
    return "fused" if kernels_usable(xp, dtype) else "reference"


# 2x2/2 max pooling's forward (values and tap bytes) in explicit 64-byte vectors
# (``pool.max_pool2d_forward_2x2_simd``) instead of the scalar kernel, whose stride-2 loads
# LLVM does not vectorize; bit-identical. 0 switches it off (A/B runs). Measured: see
# docs/performance.md, "Vector 2x2/2 max pooling".
MAX_POOL_2X2_SIMD = 1

# With MAX_POOL_2X2_SIMD, maps narrow enough that two or more output rows' windows fit in one
# vector (OW <= 8 in float32: LeNet-5's second pooling, 5 windows a row) take that many rows per
# vector op (``pool.max_pool2d_forward_2x2_rows``, ``max_pool2d_backward_2x2_rows``); bit-identical.
# 0 switches it off (A/B runs). docs/performance.md, "LeNet-5 at batch 64 (Dec 5)".
MAX_POOL_2X2_PACKED_ROWS = 1

# Without a backward to come, 3x3/2 max pooling computes the maxima alone (separable,
# ``pool.max_pool2d_values_3x3s2``): ResNet-18's stem pooling at batch 1 (64x112x112),
# one thread, CPU time: 0.42-0.43 ms against 0.92-1.0 ms with the tap index (Dec 4).
# Each thread gets at least this many input elements (2**19 until Dec 5 night: the stem's
# 0.8M-element pooling at batch 1 ran on one thread; 2**18 splits it, modelled 0.47 -> 0.30
# ms; see INFERENCE_MIN_ELEMENTS).
POOL_VALUES_MIN_ELEMENTS = 2**18

# The compiled max pooling's backward applies the mask of a ReLU right before it (when the
# pooling is the ReLU's only consumer), and the ReLU's backward pass is skipped
# (functional/pool.py, _relu_before): LeNet-5's and VGG's conv -> ReLU -> max-pool.
# 0 switches it off (A/B runs). Measured: see docs/performance.md, "LeNet-5 training on two threads".
FUSE_RELU_INTO_MAX_POOL_BACKWARD = 1

# A 2x2/2 max pooling whose output feeds a blocked direct convolution (LeNet-5's pool 1 ->
# conv2) has its backward (with the ReLU mask above, where it applies) run inside the
# convolution's backward region where its own pass would run on one thread (under two threads'
# PARALLEL_MIN_ELEMENTS): each thread scatters the images whose input gradient it has just computed (conv_blocked.conv2d_blocked_grads' ``then``, functional/pool.py,
# MaxPool2dFusedOp.backward_by_images); the pooling's backward then passes that array on, if it
# is the gradient it receives (the convolution was its output's only consumer). Bit-identical
# (the same kernels on the same planes). 0 switches it off (A/B runs). Measured: see
# docs/performance.md, "Max pooling's backward inside the convolution's (Dec 6)".
FUSE_MAX_POOL_BACKWARD_INTO_CONV = 1

# With FUSE_MAX_POOL_BACKWARD_INTO_CONV, the convolution before that pooling (and its ReLU), when
# it needs no input gradient (LeNet-5's conv1), computes its weight and bias gradients in the same
# region too: each block of images, once scattered, runs its weight-gradient groups on the same
# thread (functional/conv.py, Conv2dDirectOp.weight_grads_by_images), and conv1's own region is
# gone. The same groups summed in the same order: bit-identical. 0 switches it off (A/B runs).
# Measured: docs/performance.md, "Max pooling's backward inside the convolution's (Dec 6)".
FUSE_CONV_WEIGHT_GRADS_INTO_NEXT_CONV = 1


# ---------------------------------------------------------------------------- batch norm
def batch_norm_algorithm(xp, dtype, ndim: int) -> str:
    """"fused" (``BatchNorm2dFusedOp``) for 4-D inputs when kernels are usable, else
    "reference" (``BatchNormOp``, NumPy).

    The fused kernels make one pass over memory per direction where NumPy makes seven
    (forward) or eight (backward); measured on ResNet-18 and the CIFAR nets' layers they
    were faster at every shape (docs/performance.md).
    """
    return "fused" if ndim == 4 and kernels_usable(xp, dtype) else "reference"


# Eval-mode batch norm and the ReLU after it (and a residual sum between them: ResNet's
# relu(bn2(conv2(x)) + identity)) in one compiled pass (``kernels/batchnorm._affine_relu``)
# instead of two (three), where nothing can observe the batch norm's output: ResNet's
# blocks and stem call ``nn.batch_norm_relu``, which fuses only for an exact BatchNorm2d in
# eval mode with running statistics and an exact ReLU, no hooks on either, and
# ``F.batch_norm_relu`` only when no op would be recorded (grad off or nothing requiring it).
# The same bits as the unfused ops. 0 switches it off (A/B runs): FUSE_BATCH_NORM_RELU the
# pairs without a residual, FUSE_BATCH_NORM_ADD_RELU those with one. docs/performance.md,
# "ResNet-18 at batch 1: batch norm + ReLU in one pass (Dec 6)".
FUSE_BATCH_NORM_RELU = 1
FUSE_BATCH_NORM_ADD_RELU = 1
# Further, the same pass applied by the convolution before it to the output it has just
# written (``F.conv2d_batch_norm_relu``, through ``nn.norm.conv_batch_norm_relu``: the gate
# above plus an exact, unhooked Conv2d without bias or prepacked weights): by each thread
# on its own rows where Winograd or GEMM split the output rows, in the sum pass of GEMM's
# channel groups, else in a pass of its own; other algorithms run the conv, then the pass
# above. The same bits. 0 switches it off (A/B runs). docs/performance.md, "ResNet-18 at
# batch 1: batch norm + ReLU in the convolution's output (Dec 6)".
FUSE_CONV_BATCH_NORM_RELU = 1
# The same without the ReLU for a convolution and the eval batch norm after it (``F.conv2d_batch_norm``,
# through ``nn.norm.conv_batch_norm``: ResNet's shape-changing shortcuts, a 1x1 convolution and
# a BatchNorm2d in an exact, unhooked Sequential): the batch norm applied in the convolution's
# output pass (at batch 1 in the channel groups' sum pass) instead of a module call and a pass of
# its own. The same bits. Eval and no recorded op only (training, gradients, hooks: the module
# calls). 0: the Sequential's module calls (A/B runs). The shortcuts alone at b1 (ms, module
# calls / fused): two threads 0.211/0.196, 0.189/0.174, 0.184/0.177; one thread 0.280/0.267,
# 0.241/0.233, 0.239/0.235. `dispatch_ab.py FUSE_CONV_BATCH_NORM=0` ResNet-18 b1 two threads:
# 1.018x and 1.002x (31 pairs each), one thread CPU 0.985x (21; level: ~0.04 ms of 43).
# docs/performance.md, "ResNet-18 at batch 1: the shortcut's batch norm in the convolution's
# output (Dec 6)".
FUSE_CONV_BATCH_NORM = 1
# The same for an optimized model's convolution (batch norm folded in: a bias, prepacked
# weights) and the ReLU (and sum) after it (``F.conv2d_relu``, through
# ``nn.norm.conv_batch_norm_relu`` when the batch norm is an unhooked Identity): the epilogue
# with scale 1 and the bias as shift (GEMM; Winograd adds its bias itself). 0: the
# convolution, then the sum and ReLU's pass (A/B runs).
FUSE_CONV_RELU = 1


# ----------------------------------------------------------------------------- elementwise
# Elementwise ops go to the kernels from this many elements on; below it one NumPy call
# is as cheap as the kernel's call overhead. ReLU through F.relu, one thread, CPU time
# (Dec 4; NumPy's maximum runs ~0.45 ns an element here, the kernel ~0.1): no_grad /
# with mask / backward, NumPy against the kernel, us: 4096 elements 5.9/8.2/6.4 vs
# 6.0/7.7/3.9; 16384 11.5/15.4/19.8 vs 6.5/9.8/5.1; 25088 (ResNet-18's 512x7x7 at batch
# 1) 15.3/20.1/28.2 vs 7.0/9.5/6.2. The grain (PARALLEL_MIN_ELEMENTS) keeps such sizes on
# one thread.
ELEMENTWISE_MIN_SIZE = 2**12


def relu_kernel_applies(xp, x) -> bool:
    """True when ReLU runs its one-pass kernel: a large float NumPy array laid out in one block."""
    return kernels_usable(xp, x.dtype) and x.size >= ELEMENTWISE_MIN_SIZE and flat(x) is not None


# A ReLU (on the kernels) whose output takes at most this many bytes keeps that output for its
# backward as its mask (y is nonzero exactly where the mask is set) instead of writing a bool
# mask: one array less to allocate and write per call. Larger outputs keep the 1-byte mask,
# a quarter of y's memory held until backward (ResNet-18's stem ReLU at b16 feeds max pooling,
# which keeps only its taps: y would hold 38 MB more at the step's peak). 0: the mask everywhere
# (A/B runs). LeNet-5 b64's conv ReLUs (1.2 and 0.4 MB): step 1.013x two threads, 1.012x one
# thread. docs/performance.md, "LeNet-5 at batch 64 (Dec 5)".
RELU_KEEPS_OUTPUT_MAX_BYTES = 2**21


def relu_keeps_output(x) -> bool:
    """True when ReLU on ``x`` (its kernel applies) keeps its output as the mask for backward."""
    return x.size * x.itemsize <= RELU_KEEPS_OUTPUT_MAX_BYTES


# ------------------------------------------------------------------------ loss and optimizer
# cross_entropy on (M, K) float logits with integer targets (no class weights, no label
# smoothing) in one compiled pass each way (``kernels/loss.py``) instead of some 25 NumPy calls
# on a (64, 10) array; values within a few ulp of the NumPy path. 0: the NumPy path (A/B runs).
# LeNet-5 b64 loss fwd + bwd 51 -> 23 us (one thread). docs/performance.md, "LeNet-5 at batch
# 64 (Dec 5)".
CROSS_ENTROPY_KERNEL = 1
# optim.SGD's update of a float parameter in one compiled pass (``kernels/optim.py``) with
# PyTorch's fused roundings (bit-identical to torch.optim.SGD) instead of one NumPy pass per
# term. 0: the NumPy update (A/B runs). LeNet-5's ten parameters 56 -> 34 us a step (one
# thread). docs/performance.md, "LeNet-5 at batch 64 (Dec 5)".
SGD_KERNEL = 1


# ------------------------------------------------------------------------ matrix products
# Matrix products up to this many multiply-adds run on one BLAS thread: waking BLAS's
# second thread costs more than it saves on them, and its spinning afterwards slows the
# convolution kernels that run next. Measured on LeNet-5 training (batch 64 and 256):
# its linear layers on one BLAS thread lifted cnnkit from 0.79x to 0.94x of PyTorch.
# VGG's 25088 x 4096 classifier (hundreds of millions) keeps every thread.
SMALL_PRODUCT_MACS = 2**25

# Larger products are split over the pool's threads by blocks of this many result
# columns or rows (a multiple of the BLAS kernels' panels), handed out four per thread.
MATMUL_BLOCK = 256

# Conv2dGemmOp on few output pixels (ResNet-18's strided layers at batch 1) splits the
# threads by output rows, each building the columns of its rows and multiplying them,
# where the usual split (im2col by channels under PARALLEL_MIN_ELEMENTS, then the product
# by blocks of columns) leaves the columns to one thread and moves them between cores.
# Every thread reads all of the weights, so only weights no larger than the columns do:
# ResNet-18's 512x256x3x3 (4.7 MB against 0.45 MB of columns at 7x7) and its 1x1/2 shortcuts
# at 14x14 and 7x7 keep the product split by filter rows. Measured with
# `benchmarks/two_thread_model.py --optimized` (see WINOGRAD_ROWS_MAX_ELEMENTS): the 3x3/2
# 64->128 layer at 28x28 from 1.43x to 1.68x. One image only: rows of several images make
# one product per image (ResNet-18's 1x1/2 shortcut at batch 8 that way: 2.15 ms against
# 1.63 in one product, one thread). And more than SMALL_PRODUCT_MACS multiply-adds: each
# piece's fixed cost (a compiled im2col call with 17 arguments, a BLAS call) made the 1x1/2
# shortcut at 28x28 (6.4M) slower modelled on two threads (0.56 ms) than on one (0.39).
GEMM_ROWS_MAX_PIXELS = 1024


def gemm_by_rows(images: int, pixels: int, weight_bytes: int, column_bytes: int, macs: int) -> bool:
    """True when Conv2dGemmOp's forward on ``images`` of ``pixels`` output pixels each (OH*OW),
    ``macs`` multiply-adds in all, splits the threads by output rows."""
    return (images == 1 and pixels <= GEMM_ROWS_MAX_PIXELS and weight_bytes <= column_bytes
            and macs > SMALL_PRODUCT_MACS)


# Conv2dGemmOp on one image of few output pixels that ``gemm_by_rows`` leaves alone (weights
# larger than the columns: ResNet-18's 14x14 and 7x7 layers at batch 1): the input channels in
# GEMM_CHANNEL_GROUPS groups, each group's columns built and multiplied by W's matching columns
# on one thread (no columns built on one thread and read on the other, one region instead of
# two), the groups' products summed in a fixed order (the same bits on any thread count;
# rounding differs from one product by the grouping of the sum). 0: one product (A/B).
GEMM_CHANNEL_GROUPS = 2
# ... on layers of more than this many multiply-adds: ResNet-18's three 1x1/2 shortcuts at
# batch 1 (6.4M each, 0.24-0.28 ms on one core, under SMALL_PRODUCT_MACS, so one thread
# until Dec 5 night) split into two groups too (see INFERENCE_MIN_ELEMENTS).
GEMM_CHANNEL_GROUPS_MIN_MACS = 2**22


def gemm_by_channels(images: int, pixels: int, channels: int, macs: int) -> bool:
    """True when Conv2dGemmOp's forward on ``images`` of ``pixels`` output pixels each runs
    as GEMM_CHANNEL_GROUPS products over groups of its ``channels`` input channels."""
    return (GEMM_CHANNEL_GROUPS >= 2 and images == 1 and pixels <= GEMM_ROWS_MAX_PIXELS
            and channels >= GEMM_CHANNEL_GROUPS and macs > GEMM_CHANNEL_GROUPS_MIN_MACS)


# Conv2dGemmOp's columns of stride-1 kernels larger than 1x1 come from a zero-padded copy of
# each plane (`kernels/im2col.py`, im2col_rows_padded: plain copies without per-row bounds);
# 0: the per-row kernel everywhere (A/B). The same values either way. One thread, the kernel
# alone (us, per-row / padded; Dec 4): 512x7x7 b1 343/226, 256x14x14 b1 520/347, 64x56x56
# b1 1763/955, 256x14x14 b8 4060/3246, 512x7x7 b8 2337/1955; inside ResNet-18 b1 eager
# (medians of interleaved passes) 512x7x7 352/253, 256x14x14 525/373. Strided kernels keep the
# per-row kernel: 3x3/2 at b8 was up to 1.3x slower padded (128x28x28 3782/5024), level at b1;
# so does 1x1 (1x1/2 19/45).
IM2COL_PADDED = 1
# Conv2dGemmOp's columns of kernels wider than 1 with a column stride of 2 (ResNet's 3x3/2
# layers) come from `kernels/im2col.py`'s im2col_rows_stride2: each input row split once into
# its two column phases, then unit-stride copies over 1-D slices indexed from 0, where
# im2col_rows gathers `src[h, ow*SW + off]` per tap (stride 2, an offset index: not vectorized).
# The same values (the same bits); 0: im2col_rows (A/B). One thread, the kernel alone, whole
# columns at b1 (us, rows / stride2; Dec 6): 64x56x56 3x3/2 396/151, 128x28x28 255/142,
# 256x14x14 159/108. The 1x1/2 shortcuts keep im2col_rows (one read per input entry; the
# split is a second pass: 47/62 us at 64x56x56). `dispatch_ab.py IM2COL_STRIDE2=0` ResNet-18:
# b1 two threads 0.996x and 1.014x (31 pairs each), one thread CPU 1.009x (21), training b16
# 1.007x (7). docs/performance.md, "ResNet-18 at batch 1: the stride-2 columns (Dec 6)".
IM2COL_STRIDE2 = 1
# Conv2dGemmOp's im2col gives each thread at least this many column entries (a quarter of
# PARALLEL_MIN_ELEMENTS; 2**17 entries take ~0.1 ms to copy, several wake-ups). At batch 1
# the 14x14 and 7x7 layers' columns (451K and 225K entries, 0.3-0.4 ms each) ran on one
# thread under the larger grain; the 14x14 ones now split (the 7x7 ones would need 2**16).
# Two threads, one process, alternating passes with the grain of PARALLEL_MIN_ELEMENTS
# (docs/performance.md, "ResNet-18 at batch 1, eval"): ResNet-18 b1 eager, old / new time
# 1.055, 1.016, 1.023, 0.983, 1.051, 1.009 (31-41 pairs each); optimized 1.005, 1.003; b8
# 1.043, 1.011; training b16 0.990, 0.999 (7-11 pairs).
IM2COL_MIN_ELEMENTS = 2**17

# im2col columns (Conv2dGemmOp) and stride phases (Conv2dPolyphaseOp) are built for blocks
# of images of at most this many bytes, into a reused buffer, and rebuilt in backward
# instead of being kept.
COLUMNS_BLOCK_BYTES = 32 * 2**20


# ---------------------------------------------------------------------------- buffer pool
# The large outputs of the compiled ops (convolutions, batch norm, ReLU, max-pool, their
# gradients) take their memory from ``backend/buffers.py``'s pool: blocks kept across
# training steps instead of mapped and faulted in afresh each step. 0: every array from
# NumPy (A/B; results are the same bit for bit). Arrays below POOL_MIN_BYTES stay with the
# C library; at most POOL_MAX_IDLE_BYTES of returned blocks are kept.
BUFFER_POOL = 1
POOL_MIN_BYTES = 2**20
POOL_CHUNK_BYTES = 256 * 2**20
POOL_MAX_IDLE_BYTES = 2**30
# The kernels' scratch buffers (``backend/workspace.py``) of at least POOL_MIN_BYTES come
# from the pool and go back to it when the call drops them, instead of being kept per name
# and thread beside the pool. ResNet-18 training at batch 16 (``benchmarks/peak_rss.py``,
# docs/performance.md, "Scratch buffers from the pool (Dec 6)"): peak RSS lower by the
# ~110 MB of Winograd's V and M and im2col's columns that were kept. 0: kept (A/B).
SCRATCH_FROM_POOL = 1


# ------------------------------------------------------------------------ per-call Python
# Under no_grad ``Function.__call__`` runs the op's forward straight from its Tensor inputs:
# no graph bookkeeping to consider (``function.py``). 0: the general path (A/B runs); the
# results are the same arrays either way. docs/performance.md, "ResNet-18 at batch 1: the
# per-call Python (Dec 6)".
NO_GRAD_DIRECT = 1
# ``F.conv2d`` keeps, per input shape, weight shape, dtype and arguments, what it derived from
# them: the normalized stride, dilation and padding and the algorithm this module picks
# (``functional/conv.py``, ``_plan``); a plan is exact for its key as long as these settings
# stay as they were, and any assignment to an attribute of this module (an A/B switch, a
# test's monkeypatch) bumps ``generation``, which is part of the key. 0: derived on every
# call (A/B runs). Same reference as NO_GRAD_DIRECT.
CONV_PLANS = 1

# Bumped by every assignment to an attribute of this module from outside it (``_Settings``).
generation = 0


class _Settings(types.ModuleType):
    """This module's type: an assignment to any of its attributes (``dispatch.X = v``,
    ``monkeypatch.setattr(dispatch, "X", v)``, ``dispatch_ab.py``) counts in ``generation``,
    so that choices cached from the settings (``functional/conv.py``'s plans) are made anew."""

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name != "generation":
            self.__dict__["generation"] += 1


sys.modules[__name__].__class__ = _Settings
