"""Files mapped side by side into one contiguous, read-only array (Linux): how a BagStore
reads a block of raw chunk files without copying them. Mapping chunks that are in the page
cache costs about a tenth of copying them (9 ms against 60-100 ms for 380 MB of 3.5 MB
chunks, measured), and the kernels need each block's features contiguous, which separate
maps of the files are not.

Python's ``mmap`` cannot map at a given address, so the file parts are mapped with the C
library's ``mmap(MAP_FIXED)`` over one anonymous, read-only region that Python's ``mmap``
owns: when the last array viewing the region is gone, its ``munmap`` unmaps the parts too.

A mapped page is read when it is touched: if its file has been truncated by then, or the
disk fails, the process gets SIGBUS instead of an exception. Only files that nothing
rewrites in place may be mapped; ``LFAGG_MAP_CHUNKS=0`` in the environment turns mapping
off (every part is then read, as elsewhere than Linux).
"""
from __future__ import annotations

import ctypes
import mmap
import os
import platform
import sys

import numpy as np

#: MAP_FIXED, which Python's mmap does not export: 0x10 on these architectures (not on all).
_MAP_FIXED = 0x10
AVAILABLE = (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64")
             and hasattr(mmap, "MAP_POPULATE") and os.environ.get("LFAGG_MAP_CHUNKS", "1") != "0")
#: The smallest part worth a mapping of its own: each costs a few system calls and one of
#: the process's ``vm.max_map_count`` (65,530) mappings, which 64 MiB blocks of 4 KiB
#: chunks would use up at four blocks alive.
MIN_PART_BYTES = 1 << 20


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    return libc


_LIBC = _libc() if AVAILABLE else None


def part_bytes_mappable(part_bytes: int) -> bool:
    """Whether parts of ``part_bytes`` bytes are mapped side by side in this process: on
    Linux, whole pages, at least MIN_PART_BYTES."""
    return AVAILABLE and part_bytes >= MIN_PART_BYTES and part_bytes % mmap.PAGESIZE == 0


def map_side_by_side(paths, part_bytes: int, start: int, stop: int, fill) -> np.ndarray:
    """Bytes [start, stop) of the files ``paths`` laid end to end, each ``part_bytes``
    long, as a read-only (stop - start,) uint8 array: the pages of each file that the range
    needs are mapped; where ``paths[i]`` is None, or the file is missing, shorter or
    cannot be mapped, ``fill(i, target)`` writes part i's bytes of the range into
    ``target`` (a writable uint8 memoryview) instead.

    Raises OSError when the memory cannot be mapped (the caller reads instead).
    part_bytes must be :func:`part_bytes_mappable`.
    """
    page = mmap.PAGESIZE
    region = mmap.mmap(-1, max(len(paths) * part_bytes, 1), access=mmap.ACCESS_READ)  # every view read only
    try:
        base = np.frombuffer(region, np.uint8).ctypes.data
        for i, path in enumerate(paths):
            first, end = max(start - i * part_bytes, 0), min(stop - i * part_bytes, part_bytes)
            if end <= first:
                continue
            lo, hi = first // page * page, min(-(-end // page) * page, part_bytes)  # the pages holding them
            if path is None or not _map_file(base + i * part_bytes + lo, hi - lo, path, lo):
                writable = _map(base + i * part_bytes + lo, hi - lo, mmap.PROT_READ | mmap.PROT_WRITE,
                                mmap.MAP_ANONYMOUS, -1, 0)
                fill(i, memoryview((ctypes.c_char * (end - first)).from_address(writable + first - lo)).cast("B"))
        return np.frombuffer(region, np.uint8, count=stop - start, offset=start)
    except BaseException:
        region.close()
        raise


def _map_file(address: int, size: int, path, offset: int) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if os.fstat(fd).st_size < offset + size:
            return False
        _map(address, size, mmap.PROT_READ, mmap.MAP_POPULATE, fd, offset)
        return True
    except OSError:  # a file system that cannot map files: the part is read instead
        return False
    finally:
        os.close(fd)


def _map(address: int, size: int, prot: int, flags: int, fd: int, offset: int) -> int:
    got = _LIBC.mmap(address, size, prot, mmap.MAP_PRIVATE | _MAP_FIXED | flags, fd, offset)
    if got != address:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mmap of {size} bytes failed: {os.strerror(errno)}")
    return got
