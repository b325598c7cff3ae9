"""The encoder prepared for CPU inference: every batch norm after a convolution folded into that
convolution's weights and bias, weights in channels-last memory. Same embeddings as the eval-mode
`Encoder` up to float rounding (tested), fewer passes over memory per window (bench/window_path.py).

`inference_encoder(encoder)` is what embedding code calls: it returns the folded copy for an eval-mode
`Encoder` on the CPU (built once, rebuilt when the weights change) and the module itself otherwise
(CUDA, training mode, other modules), so training and GPU paths are untouched.
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from encoder.model import BasicBlock, Encoder

_cache: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def fold_batch_norms(encoder: Encoder) -> Encoder:
    """An eval-mode copy of ``encoder`` whose conv+batch-norm pairs are single convolutions with bias.

    The input `BatchNorm2d(1)` stays: folding it into the stem would be wrong at the zero-padded edges.
    """
    folded = copy.deepcopy(encoder).eval()
    stem = list(folded.stem)
    folded.stem = nn.Sequential(fuse_conv_bn_eval(stem[0], stem[1]), *stem[2:])
    for module in folded.stages.modules():
        if isinstance(module, BasicBlock):
            module.conv1, module.bn1 = fuse_conv_bn_eval(module.conv1, module.bn1), nn.Identity()
            module.conv2, module.bn2 = fuse_conv_bn_eval(module.conv2, module.bn2), nn.Identity()
            if isinstance(module.shortcut, nn.Sequential):
                module.shortcut = fuse_conv_bn_eval(module.shortcut[0], module.shortcut[1])
    for parameter in folded.parameters():
        parameter.requires_grad_(False)
    return folded.to(memory_format=torch.channels_last)


def _weights_version(module: nn.Module) -> tuple:
    """Changes whenever a weight or buffer is replaced or updated in place (an optimiser step)."""
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(module.parameters(), module.buffers()))


def inference_encoder(encoder: nn.Module) -> nn.Module:
    """The module to run embeddings with: a cached `fold_batch_norms` copy for an eval-mode `Encoder`
    on the CPU, else ``encoder`` itself."""
    if not isinstance(encoder, Encoder) or encoder.training:
        return encoder
    if next(encoder.parameters()).device.type != "cpu":
        return encoder
    version = _weights_version(encoder)
    with _lock:
        cached = _cache.get(encoder)
        if cached is None or cached[0] != version:
            cached = _cache[encoder] = (version, fold_batch_norms(encoder))
        return cached[1]
