"""Compressed inputs (`.gz`, `.zst`, `.bz2`, `.xz`), read as a decompressing stream.

Every stream here must fail on a file that is cut short (an interrupted download, a full disk): gzip, bz2 and
lzma raise EOFError by themselves, but zstandard's `stream_reader` simply stops at the end of its input, so a
truncated `.jsonl.zst` read as the rows before the cut with no error: half a dataset, silently. `ZstdStream`
checks that the last frame ended.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path
from typing import IO, Any

# Each suffix with the command that undoes it (named in errors).
COMPRESSED = {".gz": "gunzip", ".zst": "zstd -d", ".bz2": "bunzip2", ".xz": "unxz"}
TRUNCATED = "Compressed file ended before the end-of-stream marker was reached"  # gzip/bz2/lzma's own words
_READ = 1 << 20  # compressed bytes per read


def open_stream(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed on the fly for .gz, .zst, .bz2 and .xz."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    if suffix == ".zst":
        return io.BufferedReader(ZstdStream(path), buffer_size=_READ)
    return open(path, "rb")


class ZstdStream(io.RawIOBase):
    """A zstd file's decompressed bytes, frame after frame (zstd -T, pzstd and `cat a.zst b.zst` write several);
    EOFError when the file ends inside a frame, as gzip.open does."""

    def __init__(self, path: Path) -> None:
        import zstandard  # only for .zst inputs

        self._file = open(path, "rb")  # noqa: SIM115 (closed by close(): the stream owns it)
        self._dctx: Any = zstandard.ZstdDecompressor()
        self._obj: Any = self._dctx.decompressobj()
        self._in_frame = False  # bytes of the current frame were fed and its end not yet seen
        self._out = memoryview(b"")  # decompressed, not yet read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._out:
            data = self._file.read(_READ)
            if not data:
                if self._in_frame:
                    raise EOFError(TRUNCATED)
                return 0
            self._out = memoryview(self._feed(data))
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        self._out = self._out[n:]  # a view: no copy of what is left
        return n

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._obj.decompress(data))
            self._in_frame = True
            if not self._obj.eof:
                break
            data, self._in_frame = self._obj.unused_data, False  # the next frame starts here
            self._obj = self._dctx.decompressobj()
        return b"".join(out)

    def close(self) -> None:
        self._file.close()
        super().close()
