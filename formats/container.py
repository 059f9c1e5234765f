"""The ``.inrv`` container, low level: a fixed prefix, a msgpack header, checksummed byte sections.

This module knows nothing about volumes or models; ``formats/inrvfile.py`` maps an ``Encoded`` onto
it. The byte layout is specified in ``docs/format.md``; in one screen::

    offset size  field
    0      9     magic     89 49 4E 52 56 0D 0A 1A 0A   ("\\x89INRV\\r\\n\\x1a\\n", PNG-style)
    9      1     major     u8 (1)        a reader refuses a major it does not know
    10     1     minor     u8 (0)        additive changes only
    11     1     flags     u8            bit 0: header is one zstd frame; bit 1: ... using the
                                         built-in dictionary "hd1"; other bits must be 0
    12     4     hdr_len   u32 LE        stored header length N
    16     4     hdr_crc   u32 LE        CRC-32 of bytes 9..15 followed by the N stored header bytes
    20     N     header    msgpack map (zstd-compressed when flag bit 0 is set)
    20+N   ...   sections  stored back to back, in the order of the header's section table
    EOF          file size == 20 + N + sum(stored lengths): no holes, no trailing bytes

The header map holds the caller's keys plus one reserved key, ``"_s"``: the section table, a list
of ``[name, codec, stored_len, crc32]`` (codec 0 = raw) or ``[name, codec, stored_len, crc32,
raw_len]`` (codec 1 = one zstd frame). ``crc32`` covers the *stored* bytes, so integrity can be
checked without decompressing anything.

Reading is safe for untrusted input: every length is checked against :class:`Limits` before
anything is allocated, and a zstd frame's declared content size must equal the header's
``raw_len`` (python-zstandard allocates whatever a frame declares, whatever ``max_output_size``
says). Every failure is a :class:`~inrv.errors.FormatError` subclass:
``ChecksumError``, ``LimitError``, ``UnsupportedVersionError`` or plain ``FormatError``.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import msgpack
import zstandard

from ..errors import ChecksumError, FormatError, InputError, LimitError, UnsupportedVersionError
from .discovery import has_dicom_preamble

MAGIC = b"\x89INRV\r\n\x1a\n"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
PREFIX = struct.Struct("<9sBBBII")      # magic, major, minor, flags, hdr_len, hdr_crc
PREFIX_SIZE = PREFIX.size               # 20

FLAG_HEADER_ZSTD = 0x01
FLAG_HEADER_DICT = 0x02      # with FLAG_HEADER_ZSTD: compressed with the built-in dictionary hd1
KNOWN_FLAGS = FLAG_HEADER_ZSTD | FLAG_HEADER_DICT

CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_ZSTD: "zstd"}

SECTION_TABLE_KEY = "_s"
_ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")
_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Limits:
    """Safety limits checked before anything is allocated. Generous defaults; tighten for servers.

    Attributes:
        max_file_bytes: whole file.
        max_header_bytes: the msgpack header, stored and (when compressed) decompressed.
        max_sections: entries in the section table.
        max_section_bytes: decoded size of one section.
        max_total_section_bytes: decoded size of all sections together.
        max_zstd_window: window a zstd frame may ask for beyond its own content size.
        max_depth: nesting of maps/arrays in the header.
        max_voxels: product of the volume shape (checked by ``inrvfile``; decode allocates it).
    """

    max_file_bytes: int = 1 << 30
    max_header_bytes: int = 16 << 20
    max_sections: int = 256
    max_section_bytes: int = 256 << 20
    max_total_section_bytes: int = 512 << 20
    max_zstd_window: int = 1 << 27
    max_depth: int = 32
    max_voxels: int = 1 << 31


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class SectionEntry:
    """One row of the section table. ``offset`` is absolute in the file."""

    name: str
    codec: str              # "raw" or "zstd"
    offset: int
    stored_bytes: int
    raw_bytes: int
    crc32: int


@dataclass(frozen=True)
class Layout:
    """What :func:`read_header` learns without decompressing any section."""

    version: tuple[int, int]
    flags: int
    header: dict[str, Any]          # the caller's header (without the reserved section table)
    sections: tuple[SectionEntry, ...]
    header_bytes: int               # fixed prefix + stored header
    header_compressed: bool
    file_bytes: int

    @property
    def header_codec(self) -> str:
        """How the header is stored: "raw", "zstd" or "zstd+hd1" (the built-in dictionary)."""
        if not self.flags & FLAG_HEADER_ZSTD:
            return "raw"
        return "zstd+hd1" if self.flags & FLAG_HEADER_DICT else "zstd"


# --------------------------------------------------------------------------- writing

def pack(header: Mapping[str, Any], sections: Mapping[str, bytes], *, limits: Limits = DEFAULT_LIMITS,
         level: int = 19) -> bytes:
    """Serialise ``header`` (a msgpack-able dict with str keys) and named byte ``sections``.

    Each section (and the header) is stored zstd-compressed only when that makes the file smaller.
    Raises ``InputError`` for a header that cannot be stored, ``LimitError`` for a file our own
    reader would refuse under ``limits``.
    """
    if not isinstance(header, Mapping):
        raise InputError("container header must be a dict")
    for k in header:
        if not isinstance(k, str):
            raise InputError(f"container header keys must be str, got {k!r}")
        if k.startswith("_"):
            raise InputError(f"container header key {k!r}: keys starting with '_' are reserved")
    if len(sections) > limits.max_sections:
        raise LimitError(f"{len(sections)} sections exceed the limit of {limits.max_sections}")
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=False, write_content_size=True)
    table: list[list[Any]] = []
    payloads: list[bytes] = []
    total = 0
    for name, data in sections.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InputError(f"bad section name {name!r}: 1-64 characters of A-Z a-z 0-9 _ . -")
        data = bytes(data)
        if len(data) > limits.max_section_bytes:
            raise LimitError(f"section {name!r} has {len(data)} bytes, over the limit of {limits.max_section_bytes}")
        total += len(data)
        stored, entry = data, [name, CODEC_RAW, len(data), zlib.crc32(data)]
        if data:
            # level 19 costs ~1 s/MB: keep it for model-sized payloads, be quicker on huge ones
            z = (cctx if len(data) <= 8 << 20 else zstandard.ZstdCompressor(
                level=min(level, 9), write_checksum=False, write_content_size=True)).compress(data)
            # the zstd row carries raw_len too: count its msgpack bytes in the comparison
            if len(z) + len(msgpack.packb(len(data))) < len(data):
                stored, entry = z, [name, CODEC_ZSTD, len(z), zlib.crc32(z), len(data)]
        table.append(entry)
        payloads.append(stored)
    if total > limits.max_total_section_bytes:
        raise LimitError(f"sections total {total} bytes, over the limit of {limits.max_total_section_bytes}")
    full = dict(header)
    full[SECTION_TABLE_KEY] = table
    try:
        raw_header = msgpack.packb(full, use_bin_type=True, use_single_float=False, default=_msgpack_default,
                                   strict_types=False)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"container header is not storable as msgpack: {e}") from None
    try:
        _check_tree(_unpack_msgpack(raw_header), limits.max_depth)  # what the reader will check
    except LimitError:
        raise
    except FormatError as e:  # e.g. a nested map with a non-str key
        raise InputError(f"container header is not storable: {e}") from None
    if len(raw_header) > limits.max_header_bytes:
        raise LimitError(f"header of {len(raw_header)} bytes exceeds the limit of {limits.max_header_bytes}")
    # the smallest of: plain msgpack, zstd, zstd with the built-in dictionary (ties: the simpler)
    flags, stored_header = 0, raw_header
    for f, z in ((FLAG_HEADER_ZSTD, cctx.compress(raw_header)),
                 (FLAG_HEADER_ZSTD | FLAG_HEADER_DICT,
                  zstandard.ZstdCompressor(level=level, write_checksum=False, write_content_size=True,
                                           write_dict_id=False, dict_data=_header_dict()).compress(raw_header))):
        if len(z) < len(stored_header):
            flags, stored_header = f, z
    prefix_wo_crc = struct.pack("<BBBI", FORMAT_MAJOR, FORMAT_MINOR, flags, len(stored_header))
    crc = zlib.crc32(stored_header, zlib.crc32(prefix_wo_crc))
    out = b"".join([MAGIC, prefix_wo_crc, struct.pack("<I", crc), stored_header, *payloads])
    if len(out) > limits.max_file_bytes:
        raise LimitError(f"file of {len(out)} bytes exceeds the limit of {limits.max_file_bytes}")
    return out


def _msgpack_default(obj: Any) -> Any:
    """numpy scalars -> Python scalars; anything else is refused."""
    item = getattr(obj, "item", None)
    if item is not None and getattr(obj, "shape", None) == ():
        return item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


# --------------------------------------------------------------------------- reading

def is_inrv(buf: bytes) -> bool:
    """True when ``buf`` starts with the ``.inrv`` magic."""
    return bytes(buf[: len(MAGIC)]) == MAGIC


def describe_foreign(buf: bytes) -> str:
    """A short guess at what a non-.inrv file is, for error messages ('' when unknown)."""
    b = bytes(buf[:512])
    if b[:2] == b"\x1f\x8b":
        return "a gzip file (e.g. .nii.gz)"
    if len(b) >= 4 and struct.unpack("<i", b[:4])[0] in (348, 540) or b[:4] in (b"\x00\x00\x01\x5c", b"\x00\x00\x02\x1c"):
        return "a NIfTI file"
    if has_dicom_preamble(b):
        return "a DICOM file"
    if b[:4] == b"NRRD":
        return "an NRRD file"
    if b[:10] == b"ObjectType" or b[:6] == b"NDims ":
        return "a MetaImage (.mha/.mhd) file"
    if b[:4] == _ZSTD_FRAME_MAGIC:
        return "a zstd file"
    if b[:2] == b"PK":
        return "a zip file (a PyTorch checkpoint?)"
    if not b:
        return "an empty file"
    return ""


def read_header(buf: bytes, limits: Limits = DEFAULT_LIMITS, *, verify: bool = True) -> Layout:
    """Validate the prefix, header and section table of a whole ``.inrv`` file in ``buf``.

    Nothing is decompressed except the header. With ``verify`` (default) the CRC-32 of every stored
    section is checked too (a pass over the bytes, no allocation). Raises a ``FormatError`` subclass.
    """
    buf = _as_bytes_view(buf)
    n = len(buf)
    if n > limits.max_file_bytes:
        raise LimitError(f"file of {n} bytes exceeds the limit of {limits.max_file_bytes}")
    head = bytes(buf[: len(MAGIC)])
    if head != MAGIC:
        if n < len(MAGIC) and head and MAGIC.startswith(head):
            raise FormatError(f"truncated .inrv file: {n} bytes, shorter than the magic")
        what = describe_foreign(bytes(buf[:512]))
        raise FormatError("not an .inrv file" + (f" (looks like {what})" if what else " (wrong magic bytes)"))
    if n < PREFIX_SIZE:
        raise FormatError(f"truncated .inrv file: {n} bytes, the fixed prefix alone is {PREFIX_SIZE}")
    _, major, minor, flags, hdr_len, hdr_crc = PREFIX.unpack(bytes(buf[:PREFIX_SIZE]))
    if major > FORMAT_MAJOR:
        raise UnsupportedVersionError(
            f".inrv format {major}.{minor} is newer than this reader ({FORMAT_MAJOR}.x); upgrade inrv")
    if major < 1:
        raise FormatError(f"unknown .inrv format major version {major}")
    if hdr_len == 0:
        raise FormatError("empty .inrv header")
    if hdr_len > limits.max_header_bytes:
        raise LimitError(f"header length {hdr_len} exceeds the limit of {limits.max_header_bytes} bytes")
    end = PREFIX_SIZE + hdr_len
    if end > n:
        raise FormatError(f"truncated .inrv file: header needs {end} bytes, file has {n}")
    stored_header = bytes(buf[PREFIX_SIZE:end])
    if zlib.crc32(stored_header, zlib.crc32(bytes(buf[9:16]))) != hdr_crc:
        raise ChecksumError("header checksum mismatch: the file is corrupt")
    if flags & ~KNOWN_FLAGS:
        raise UnsupportedVersionError(f"unknown .inrv flags 0x{flags:02x}: written by a newer inrv; upgrade")
    if flags & FLAG_HEADER_DICT and not flags & FLAG_HEADER_ZSTD:
        raise FormatError("invalid .inrv flags: dictionary bit without the zstd bit")
    if flags & FLAG_HEADER_ZSTD:
        raw_header = _zstd_decompress(stored_header, None, limits.max_header_bytes, limits, "header",
                                      _header_dict() if flags & FLAG_HEADER_DICT else None)
    else:
        raw_header = stored_header
    full = _unpack_msgpack(raw_header)
    if not isinstance(full, dict):
        raise FormatError("invalid .inrv header: not a map")
    _check_tree(full, limits.max_depth)
    table = full.pop(SECTION_TABLE_KEY, None)
    if table is None:
        raise FormatError("invalid .inrv header: no section table")
    # keys starting with "_" are reserved for the container: ignore ones this version does not know
    header = {k: v for k, v in full.items() if not k.startswith("_")}
    sections = _parse_table(table, end, limits)
    total = end + sum(s.stored_bytes for s in sections)
    if total > n:
        raise FormatError(f"truncated .inrv file: sections need {total} bytes, file has {n}")
    if total < n:
        raise FormatError(f"{n - total} trailing bytes after the last section of the .inrv file")
    if verify:
        for s in sections:
            if zlib.crc32(buf[s.offset:s.offset + s.stored_bytes]) != s.crc32:
                raise ChecksumError(f"section {s.name!r} checksum mismatch: the file is corrupt")
    return Layout((major, minor), flags, header, tuple(sections), end, bool(flags & FLAG_HEADER_ZSTD), n)


def decode_sections(buf: bytes, layout: Layout, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """Decompress the sections of a file already validated by :func:`read_header`."""
    buf = _as_bytes_view(buf)
    out: dict[str, bytes] = {}
    for s in layout.sections:
        stored = bytes(buf[s.offset:s.offset + s.stored_bytes])
        if s.codec == "zstd":
            out[s.name] = _zstd_decompress(stored, s.raw_bytes, limits.max_section_bytes, limits, f"section {s.name!r}")
        else:
            out[s.name] = stored
    return out


def unpack(buf: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Parse and fully verify a whole ``.inrv`` file: returns ``(header, sections)``."""
    layout = read_header(buf, limits)
    return layout.header, decode_sections(buf, layout, limits)


# --------------------------------------------------------------------------- helpers

def _as_bytes_view(buf: Any) -> memoryview:
    try:
        mv = memoryview(buf)
    except TypeError:
        raise InputError(f"expected bytes, got {type(buf).__name__}") from None
    return mv if (mv.format == "B" and mv.ndim == 1) else mv.cast("B")


def _unpack_msgpack(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True,
                               object_pairs_hook=_pairs_to_dict)
    except _DuplicateKey as e:
        raise FormatError(f"invalid .inrv header: duplicate key {e.args[0]!r}") from None
    except msgpack.exceptions.StackError:
        raise FormatError("invalid .inrv header: nesting too deep") from None
    except msgpack.exceptions.ExtraData:
        raise FormatError("invalid .inrv header: extra bytes after the msgpack map") from None
    except Exception as e:  # OutOfData, FormatError, UnicodeDecodeError, ValueError, ...
        raise FormatError(f"invalid .inrv header: not valid msgpack ({type(e).__name__})") from None


class _DuplicateKey(Exception):
    pass


def _pairs_to_dict(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if not isinstance(k, str):
            raise ValueError("non-str key")
        if k in d:
            raise _DuplicateKey(k)
        d[k] = v
    return d


def _check_tree(obj: Any, max_depth: int, depth: int = 0) -> None:
    """Only nil/bool/int/float/str/bin/array/map (str keys), nested at most ``max_depth`` deep."""
    if depth > max_depth:
        raise LimitError(f"header nesting deeper than the limit of {max_depth}")
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return
    if isinstance(obj, list):
        for v in obj:
            _check_tree(v, max_depth, depth + 1)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise FormatError("invalid .inrv header: non-str map key")
            _check_tree(v, max_depth, depth + 1)
        return
    raise FormatError(f"invalid .inrv header: unsupported msgpack type {type(obj).__name__}")


def _is_uint(v: Any, bits: int = 63) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < (1 << bits)


def _parse_table(table: Any, start: int, limits: Limits) -> list[SectionEntry]:
    if not isinstance(table, list):
        raise FormatError("invalid .inrv header: section table is not a list")
    if len(table) > limits.max_sections:
        raise LimitError(f"{len(table)} sections exceed the limit of {limits.max_sections}")
    out: list[SectionEntry] = []
    names: set[str] = set()
    offset = start
    total_raw = 0
    for i, row in enumerate(table):
        if not isinstance(row, list) or len(row) not in (4, 5):
            raise FormatError(f"invalid .inrv header: section table row {i} is not a list of 4 or 5 items")
        name, codec = row[0], row[1]
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise FormatError(f"invalid .inrv header: bad section name in row {i}")
        if name in names:
            raise FormatError(f"invalid .inrv header: duplicate section {name!r}")
        names.add(name)
        if not _is_uint(codec, 8):
            raise FormatError(f"invalid .inrv header: bad codec in section {name!r}")
        if codec not in CODEC_NAMES:
            raise UnsupportedVersionError(f"section {name!r} uses codec {codec}, unknown to this inrv; upgrade")
        stored, crc = row[2], row[3]
        if not _is_uint(stored):
            raise FormatError(f"invalid .inrv header: bad stored length in section {name!r}")
        if not _is_uint(crc, 32):
            raise FormatError(f"invalid .inrv header: bad crc32 in section {name!r}")
        if codec == CODEC_RAW:
            if len(row) != 4:
                raise FormatError(f"invalid .inrv header: raw section {name!r} must have 4 items")
            raw = stored
        else:
            if len(row) != 5 or not _is_uint(row[4]):
                raise FormatError(f"invalid .inrv header: zstd section {name!r} needs a raw length")
            raw = row[4]
            if stored > limits.max_section_bytes:
                raise LimitError(f"section {name!r} stores {stored} bytes, over the limit of {limits.max_section_bytes}")
        if raw > limits.max_section_bytes:
            raise LimitError(f"section {name!r} declares {raw} bytes, over the limit of {limits.max_section_bytes}")
        total_raw += raw
        if total_raw > limits.max_total_section_bytes:
            raise LimitError(f"sections declare more than the limit of {limits.max_total_section_bytes} bytes")
        out.append(SectionEntry(name, CODEC_NAMES[codec], offset, stored, raw, crc))
        offset += stored
    return out


_HEADER_DICT: zstandard.ZstdCompressionDict | None = None


def _header_dict() -> zstandard.ZstdCompressionDict:
    """The built-in header dictionary hd1 (formats/_header_dict.py), as a raw-content zstd dict."""
    global _HEADER_DICT
    if _HEADER_DICT is None:
        from ._header_dict import HEADER_DICT_V1

        _HEADER_DICT = zstandard.ZstdCompressionDict(HEADER_DICT_V1, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return _HEADER_DICT


def _zstd_decompress(stored: bytes, expected: int | None, cap: int, limits: Limits, what: str,
                     dict_data: zstandard.ZstdCompressionDict | None = None) -> bytes:
    """Decompress exactly one zstd frame whose declared content size is known, <= cap and (when
    ``expected`` is given) equal to it: checked *before* zstandard allocates the output."""
    if stored[:4] != _ZSTD_FRAME_MAGIC:
        raise FormatError(f"{what}: not a zstd frame")
    try:
        params = zstandard.get_frame_parameters(stored)
    except zstandard.ZstdError as e:
        raise FormatError(f"{what}: bad zstd frame header ({e})") from None
    size = params.content_size
    if size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR) or size < 0:
        raise FormatError(f"{what}: zstd frame does not declare its content size")
    if size > cap:
        raise LimitError(f"{what}: zstd frame declares {size} bytes, over the limit of {cap}")
    if expected is not None and size != expected:
        raise FormatError(f"{what}: zstd frame declares {size} bytes but the header says {expected}")
    if params.dict_id:
        raise FormatError(f"{what}: zstd frame needs a dictionary")
    if params.window_size > max(limits.max_zstd_window, size):
        raise LimitError(f"{what}: zstd window of {params.window_size} bytes exceeds the limit")
    window_log = max(10, math.ceil(math.log2(max(limits.max_zstd_window, size, 1))))
    try:
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << min(window_log, 31), dict_data=dict_data)
        out = dctx.decompress(stored, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise FormatError(f"{what}: corrupt zstd data ({e})") from None
    if len(out) != size:
        raise FormatError(f"{what}: zstd frame decoded to {len(out)} bytes, declared {size}")
    return out
