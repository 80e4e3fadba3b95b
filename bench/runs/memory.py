"""Keep freed memory in the process instead of handing it back to the OS after every tensor.

A sweep allocates and frees the same large temporaries thousands of times: score slabs,
masks, k-means distance tables. By default glibc serves every block above its mmap threshold
(at most 32 MB) with a fresh mapping and unmaps it when the block is freed. The kernel then
maps and zeroes those pages again at the next allocation. On the 2-core CPU machine this
paging took about a quarter of a sweep's CPU time (one layer of the quick grid on
shakespeare-mlm: 47 s of CPU without the settings, 35 s with them).
:func:`reuse_freed_memory` tells glibc to serve every block from the heap and to keep freed
memory for reuse.

No figure changes: where a tensor's memory comes from never changes a value. The price is
resident memory: freed blocks stay with the process until it exits. ``sparsebench sweep``,
``accuracy`` and ``run`` call it; the speed harness measures in processes of its own and does
not.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["reuse_freed_memory"]

# mallopt parameters of glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_SETTINGS = (
    (_M_MMAP_MAX, 0),  # no block gets a mapping of its own: all come from the heap
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # never give the top of the heap back
    (_M_TOP_PAD, 64 << 20),  # grow the heap 64 MB at a time
)


def reuse_freed_memory() -> bool:
    """Make glibc's allocator keep freed memory for reuse, for the rest of this process.

    Returns:
        Whether the allocator took the settings: ``False`` where the C library is not glibc
        (macOS, Windows, musl), which keep their own behaviour.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _SETTINGS)
