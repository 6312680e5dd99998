"""GGUF key/value metadata (the vocabulary: tokens, merges or scores, token types, special ids)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import gguf

_SCALAR_FORMATS = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """All key/value metadata of a GGUF file (tensors are not read; vocab GGUFs have none).

    `gguf.GGUFReader` builds a numpy view per array element, which takes 37 s for gemma-4's 777k strings;
    this walks the same layout (GGUF v2/v3, little-endian) with the gguf package's type codes in < 1 s.
    tests/dataprep/test_fetch_tokenizers.py checks it against GGUFReader.
    """
    buf = path.read_bytes()
    magic, version = struct.unpack_from("<II", buf, 0)
    if magic != gguf.GGUF_MAGIC or version not in (2, 3):
        raise ValueError(f"{path}: not a little-endian GGUF v2/v3 file (magic {magic:#x}, version {version})")
    _n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
    off = 24

    def read_str(o: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", buf, o)
        # Strict UTF-8: tokenizer.json can only hold text, so a vocab with raw-byte pieces must fail here.
        return buf[o + 8 : o + 8 + n].decode("utf-8"), o + 8 + n

    def read_value(vtype: int, o: int) -> tuple[Any, int]:
        if vtype == gguf.GGUFValueType.STRING:
            return read_str(o)
        if vtype == gguf.GGUFValueType.ARRAY:
            itype, count = struct.unpack_from("<IQ", buf, o)
            o += 12
            if itype in _SCALAR_FORMATS:
                fmt = _SCALAR_FORMATS[gguf.GGUFValueType(itype)]
                size = struct.calcsize(fmt)
                items = [v for (v,) in struct.iter_unpack(fmt, buf[o : o + size * count])]
                return items, o + size * count
            out = []
            for _ in range(count):
                item, o = read_value(itype, o)
                out.append(item)
            return out, o
        fmt = _SCALAR_FORMATS[gguf.GGUFValueType(vtype)]
        return struct.unpack_from(fmt, buf, o)[0], o + struct.calcsize(fmt)

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key, off = read_str(off)
        (vtype,) = struct.unpack_from("<I", buf, off)
        meta[key], off = read_value(vtype, off + 4)
    return meta
