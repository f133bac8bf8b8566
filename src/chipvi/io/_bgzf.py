"""BGZF block decoding with libdeflate, callable from numba ``nogil`` code.

A BAM file is a series of BGZF blocks: gzip members of at most 64 KiB whose header carries the
member's total size (``BSIZE``), so blocks can be found without inflating anything. We call
libdeflate directly from numba (the ``deflate`` package ships it, with its symbols exported), so
block parsing, inflation, CRC check and record counting all run in one compiled loop that
releases the GIL and scales with threads.
"""

from __future__ import annotations

import numba
import numpy as np
from deflate import _deflate
from llvmlite import binding as _llvm
from numba import types

# Make libdeflate's symbols visible to numba-compiled code (also when loaded from numba's cache,
# where the symbols are resolved by name).
_llvm.load_library_permanently(_deflate.__file__)

# Pointers travel as uintp (the address of a numpy buffer + an offset), which is what a C
# pointer is on every platform numba supports.
_alloc_decompressor = types.ExternalFunction("libdeflate_alloc_decompressor", types.uintp())
_free_decompressor = types.ExternalFunction("libdeflate_free_decompressor", types.void(types.uintp))
_deflate_decompress = types.ExternalFunction(
    "libdeflate_deflate_decompress",
    types.int32(types.uintp, types.uintp, types.uintp, types.uintp, types.uintp, types.uintp),
)
_crc32 = types.ExternalFunction(
    "libdeflate_crc32", types.uint32(types.uint32, types.uintp, types.uintp)
)

#: The 28-byte empty block every complete BGZF file ends with (SAM/BAM specification §4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")

#: Largest BGZF block, compressed or not.
MAX_BLOCK = 65536

# Error codes returned by the kernels (see ``block_error_message``).
OK = 0
ERR_HEADER = 1
ERR_INFLATE = 2
ERR_CRC = 3
ERR_BUFFER = 4


def block_error_message(code: int, path: str, offset: int) -> str:
    """Explain a kernel error code for the BGZF block at file ``offset`` of ``path``."""
    what = {
        ERR_HEADER: "is not a BGZF block header",
        ERR_INFLATE: "could not be inflated (corrupt deflate data)",
        ERR_CRC: "failed its CRC32 check",
    }.get(code, f"caused decoder error {code}")
    return (
        f"{path}: the block at byte {offset} {what}; the BAM file is corrupt. "
        "Re-create it (e.g. samtools view -b, samtools sort) and index it again."
    )


@numba.njit(cache=True, nogil=True)
def new_decompressor() -> int:
    """Allocate a libdeflate decompressor (free it with :func:`free_decompressor`)."""
    return _alloc_decompressor()


@numba.njit(cache=True, nogil=True)
def free_decompressor(handle: int) -> None:
    """Free a decompressor made by :func:`new_decompressor`."""
    _free_decompressor(handle)


@numba.njit(cache=True, nogil=True, inline="always")
def read_u16(buf, i):
    return np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8)


@numba.njit(cache=True, nogil=True, inline="always")
def read_u32(buf, i):
    return (
        np.int64(buf[i])
        | (np.int64(buf[i + 1]) << 8)
        | (np.int64(buf[i + 2]) << 16)
        | (np.int64(buf[i + 3]) << 24)
    )


@numba.njit(cache=True, nogil=True, inline="always")
def read_i32(buf, i):
    v = read_u32(buf, i)
    return v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


@numba.njit(cache=True, nogil=True)
def block_size(comp, pos, end):
    """Total size of the BGZF block starting at ``comp[pos]``.

    Returns 0 if the header (or the block) is not complete within ``comp[pos:end]`` and -1 if the
    bytes are not a BGZF header.
    """
    if end - pos < 18:
        return 0
    if comp[pos] != 31 or comp[pos + 1] != 139 or comp[pos + 2] != 8 or (comp[pos + 3] & 4) == 0:
        return -1
    xlen = read_u16(comp, pos + 10)
    if end - pos < 12 + xlen:
        return 0
    x = pos + 12
    xend = x + xlen
    bsize = -1
    while x + 4 <= xend:
        slen = read_u16(comp, x + 2)
        if comp[x] == 66 and comp[x + 1] == 67 and slen == 2:
            bsize = read_u16(comp, x + 4) + 1
        x += 4 + slen
    if bsize < 0:
        return -1
    if end - pos < bsize:
        return 0
    return bsize


@numba.njit(cache=True, nogil=True)
def inflate_block(handle, comp, pos, bsize, out, opos, check_crc):
    """Inflate the block of ``bsize`` bytes at ``comp[pos]`` into ``out[opos:]``.

    Returns ``(error_code, n_bytes_written)``.
    """
    xlen = read_u16(comp, pos + 10)
    cstart = pos + 12 + xlen
    clen = bsize - xlen - 19
    isize = read_u32(comp, pos + bsize - 4)
    if clen < 0 or isize > MAX_BLOCK:
        return ERR_HEADER, 0
    if opos + isize > out.size:
        return ERR_BUFFER, 0
    if isize == 0:
        return OK, 0
    got = np.zeros(1, np.uintp)
    res = _deflate_decompress(
        handle,
        comp.ctypes.data + cstart,
        clen,
        out.ctypes.data + opos,
        isize,
        got.ctypes.data,
    )
    if res != 0 or got[0] != isize:
        return ERR_INFLATE, 0
    if check_crc:
        crc = _crc32(np.uint32(0), out.ctypes.data + opos, isize)
        if np.int64(crc) != read_u32(comp, pos + bsize - 8):
            return ERR_CRC, 0
    return OK, isize


@numba.njit(cache=True, nogil=True)
def inflate_all(handle, comp, end, out, check_crc):
    """Inflate every complete block in ``comp[:end]``, each over the start of ``out``.

    This is the decompression-only work of counting (the benchmark ceiling). Returns
    ``(error_code, bytes_consumed, bytes_inflated)``.
    """
    pos = 0
    total = 0
    while pos < end:
        bsize = block_size(comp, pos, end)
        if bsize == 0:
            break
        if bsize < 0:
            return ERR_HEADER, pos, total
        err, n = inflate_block(handle, comp, pos, bsize, out, 0, check_crc)
        if err != OK:
            return err, pos, total
        total += n
        pos += bsize
    return OK, pos, total
