"""How many images a device holds at once: ``--batch-size auto``.

On a CUDA device the evaluation's chunk is found by doubling a batch of the data's own
images through a forward and an input-gradient backward (what every gradient attack
does each step) until the device runs out of memory; the chunk is half the largest batch
that fit, leaving room for the attacks' own state (their iterates, best points, momenta,
and APGD-T's targets attacked side by side). It runs before any unit, so an
out-of-memory error here loses no work. A CPU has no such wall: the default is kept.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

__all__ = ["CPU_BATCH_SIZE", "auto_batch_size"]

logger = logging.getLogger(__name__)

#: ``--batch-size auto`` on a CPU: the default chunk
CPU_BATCH_SIZE = 100


def auto_batch_size(model: nn.Module, images: Tensor, *, start: int = 32, limit: int = 4096) -> int:
    """The chunk for ``model`` on its device: on CUDA half the largest power-of-two batch (from ``start`` up to
    ``limit``) of ``images`` repeated whose forward and input-gradient backward fit; on a CPU :data:`CPU_BATCH_SIZE`.

    Args:
        model: the classifier, on its device, in eval mode.
        images: a few of the data's images ``[B, C, H, W]`` (repeated to each batch size tried).
        start: the first batch tried.
        limit: the largest batch tried (e.g. the number of samples).
    """
    device = images.device
    if device.type != "cuda":
        return min(CPU_BATCH_SIZE, limit)
    fitted = 0
    size = max(1, min(start, limit))
    while size <= limit:
        try:
            batch = images[torch.arange(size, device=device) % images.shape[0]].clone().requires_grad_(True)
            logits = model(batch)
            torch.autograd.grad(logits.float().logsumexp(dim=1).sum(), batch)
            del batch, logits
            fitted = size
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        if size == limit:
            break
        size = min(size * 2, limit)
    if fitted == 0:
        raise torch.cuda.OutOfMemoryError(f"batch-size auto: even {start} images do not fit on {device}")
    chosen = max(1, fitted // 2) if fitted < limit else fitted
    logger.info("batch size auto: %d images (the largest batch that fit on %s was %d)", chosen, device, fitted)
    return chosen
