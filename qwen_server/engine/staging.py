"""The host staging buffer of one replica: a batch's pixels reach the device in one copy.

Prepared shots wait in the queue in ordinary (pageable) host memory. At collate time the
replica writes the batch's pixel rows into its one reusable buffer, then copies the filled
prefix to the device in a single ``non_blocking`` transfer. For a CUDA device the buffer is
pinned (page-locked), which is what makes that copy asynchronous and fast; pinning a tensor
per queued shot instead held 7-12 GB of page-locked memory at a 1,024-shot queue.

The CPU runs the very same path with a plain buffer and a real copy (``copy=True``), so tests
on the CPU exercise the layout, the growth and the aliasing rules that matter on the GPU.

Not thread-safe: one buffer per replica, used by that replica's generate thread only.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger("qwen_server.engine")

_ALIGN = 64  # bytes: every group starts aligned, so its dtype view is valid on any device
_GROWTH = 1.5  # grow geometrically: a slowly rising batch size does not re-pin every batch
_MiB = 1 << 20


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class PixelStaging:
    """One growable host buffer (pinned for CUDA) and the copy of a batch's pixels through it."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        # Guarded: pinning needs a CUDA runtime, and a CPU build has none.
        self.pinned = self.device.type == "cuda" and torch.cuda.is_available()
        self._buffer: torch.Tensor | None = None  # 1-D uint8
        self._copied: torch.cuda.Event | None = None  # the last copy out of the buffer
        self.grown = 0  # times the buffer was (re)allocated

    @property
    def capacity_bytes(self) -> int:
        return 0 if self._buffer is None else self._buffer.numel()

    def to_device(self, groups: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Per group, its 2-D tensors concatenated along rows, on the device.

        All groups (e.g. a batch's images and its videos) share one fill of the buffer and one
        host-to-device copy; each result is a view into that one device block. Every tensor of
        a group must have the same dtype and row width.
        """
        layout: list[tuple[int, int, torch.dtype, int]] = []  # offset, rows, dtype, width
        total = 0
        for tensors in groups:
            first = tensors[0]
            rows = sum(t.shape[0] for t in tensors)
            nbytes = rows * first.shape[1] * first.element_size()
            layout.append((total, rows, first.dtype, first.shape[1]))
            total += _aligned(nbytes)
        buffer = self._reserve(total)
        for (offset, rows, dtype, width), tensors in zip(layout, groups, strict=True):
            destination = self._view(buffer, offset, rows, dtype, width)
            torch.cat(tensors, out=destination)
        # copy=True: a real copy on the CPU too, so no result ever aliases the reused buffer.
        block = buffer[:total].to(self.device, non_blocking=self.pinned, copy=True)
        if self.pinned:
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(self.device))
        return [self._view(block, *entry) for entry in layout]

    def _reserve(self, nbytes: int) -> torch.Tensor:
        """The buffer, at least ``nbytes`` long, once its previous copy has left it."""
        if self._copied is not None:
            # The async copy of the previous batch may still be reading the buffer.
            self._copied.synchronize()
            self._copied = None
        if self._buffer is None or self._buffer.numel() < nbytes:
            size = max(nbytes, int(self.capacity_bytes * _GROWTH))
            size = -(-size // _MiB) * _MiB
            self._buffer = None  # release the old one before pinning the new one
            self._buffer = torch.empty(size, dtype=torch.uint8, pin_memory=self.pinned)
            self.grown += 1
            logger.debug(
                "pixel staging buffer: %.0f MiB (%s)",
                size / _MiB,
                "pinned" if self.pinned else "plain",
            )
        return self._buffer

    @staticmethod
    def _view(
        block: torch.Tensor, offset: int, rows: int, dtype: torch.dtype, width: int
    ) -> torch.Tensor:
        itemsize = torch.empty((), dtype=dtype).element_size()
        nbytes = rows * width * itemsize
        return block[offset : offset + nbytes].view(dtype).view(rows, width)
