"""The low-level ``.inrv`` container: round trips, limits, corruption, hostile input.

Several tests build files by hand from docs/format.md (struct + zlib + msgpack), independently of
``pack``: they double as a check that the spec is enough to write an encoder.
"""

from __future__ import annotations

import math
import random
import re
import struct
import tracemalloc
import zlib

import msgpack
import pytest
import zstandard
from pathlib import Path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inrv.errors import ChecksumError, FormatError, InputError, InrvError, LimitError, UnsupportedVersionError
from inrv.formats.container import (DEFAULT_LIMITS, MAGIC, Limits, decode_sections, describe_foreign, is_inrv,
                                    pack, read_header, unpack)

RNG = __import__("random").Random(1234)
RANDOM_BYTES = bytes(RNG.getrandbits(8) for _ in range(300))

HEADER = {
    "f64": 1.0000000000000002,
    "tiny": 5e-324,
    "neg0": -0.0,
    "inf": math.inf,
    "big": 2 ** 63 - 1,
    "neg": -(2 ** 63),
    "text": "µ-voxel ✓",
    "blob": b"\x00\x01\xff",
    "nested": {"a": [1, 2.5, None, True, {"b": b""}], "c": {}},
}
SECTIONS = {"weights": bytes(2000), "latents": RANDOM_BYTES, "empty": b""}


def build(header_map: dict, payloads: list[bytes], *, major: int = 1, minor: int = 0, flags: int = 0,
          raw_header: bytes | None = None, crc: int | None = None) -> bytes:
    """Write a container by hand, following docs/format.md (not using ``pack``)."""
    hb = raw_header if raw_header is not None else msgpack.packb(header_map, use_bin_type=True)
    fixed = struct.pack("<BBBI", major, minor, flags, len(hb))
    if crc is None:
        crc = zlib.crc32(fixed + hb)
    return MAGIC + fixed + struct.pack("<I", crc) + hb + b"".join(payloads)


def raw_row(name: str, data: bytes) -> list:
    return [name, 0, len(data), zlib.crc32(data)]


def zstd_row(name: str, frame: bytes, raw_len: int) -> list:
    return [name, 1, len(frame), zlib.crc32(frame), raw_len]


def rle_frame(size: int, declared: int | None = None) -> bytes:
    """A zstd frame of ``size`` zero bytes built from RLE blocks (4 bytes per 128 KiB), declaring
    ``declared`` (default ``size``) as its content size. Tiny on disk, huge when decoded."""
    declared = size if declared is None else declared
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out.append(0xE0)  # FCS field 8 bytes, single segment, no checksum, no dictionary
    out += struct.pack("<Q", declared)
    left = size
    while True:
        n = min(left, 128 * 1024)
        left -= n
        last = 1 if left == 0 else 0
        out += struct.pack("<I", last | (1 << 1) | (n << 3))[:3] + b"\x00"
        if last:
            return bytes(out)


# --------------------------------------------------------------------------- round trips

def test_round_trip_exact():
    buf = pack(HEADER, SECTIONS)
    header, sections = unpack(buf)
    assert sections == SECTIONS
    assert list(sections) == list(SECTIONS)                       # order kept
    assert header == HEADER
    assert struct.pack("<d", header["f64"]) == struct.pack("<d", HEADER["f64"])   # float64 bit-exact
    assert math.copysign(1.0, header["neg0"]) == -1.0
    assert header["tiny"] == 5e-324 and header["inf"] == math.inf
    assert isinstance(header["blob"], bytes) and isinstance(header["text"], str)


def test_accepts_bytearray_and_memoryview():
    buf = pack(HEADER, SECTIONS)
    assert unpack(bytearray(buf)) == unpack(memoryview(buf)) == (HEADER, SECTIONS)


def test_zstd_only_when_smaller():
    layout = read_header(pack({}, SECTIONS))
    rows = {s.name: s for s in layout.sections}
    assert rows["weights"].codec == "zstd" and rows["weights"].stored_bytes < 100
    assert rows["weights"].raw_bytes == 2000
    assert rows["latents"].codec == "raw" and rows["latents"].stored_bytes == len(RANDOM_BYTES)
    assert rows["empty"].codec == "raw" and rows["empty"].stored_bytes == 0
    # no holes: offsets are consecutive and the last section ends at EOF
    end = layout.header_bytes
    for s in layout.sections:
        assert s.offset == end
        end += s.stored_bytes
    assert end == layout.file_bytes


def test_header_compressed_only_when_smaller():
    small = read_header(pack({"a": 1}, {}))
    assert not small.header_compressed and small.header_codec == "raw"
    big = read_header(pack({"text": "voxel " * 500}, {}))
    assert big.header_compressed and big.header_bytes < 500
    assert big.header == {"text": "voxel " * 500}


def test_fixed_overhead_is_small():
    # magic + versions + flags + length + crc = 20 bytes, empty map + empty table ~ 5 bytes
    assert len(pack({}, {})) <= 26
    # one raw section costs its name plus a handful of bytes in the table
    assert len(pack({}, {"latents": RANDOM_BYTES})) - len(RANDOM_BYTES) <= 26 + 20


def test_deterministic():
    assert pack(HEADER, SECTIONS) == pack(dict(HEADER), dict(SECTIONS))


def test_numpy_scalars_are_stored_as_python_numbers():
    np = pytest.importorskip("numpy")
    header, _ = unpack(pack({"a": np.float32(0.5), "b": np.int64(7), "c": np.bool_(True)}, {}))
    assert header == {"a": 0.5, "b": 7, "c": True}


@pytest.mark.parametrize("header, sections", [
    ({"_s": 1}, {}),                       # reserved key
    ({"_x": 1}, {}),
    ({1: 2}, {}),                          # non-str key
    ({"a": object()}, {}),                 # not msgpack-able
    ({"a": {1, 2}}, {}),
    ({"a": {"b": {3: 4}}}, {}),             # nested non-str key
    ({"a": "\ud800"}, {}),                  # lone surrogate: not UTF-8
    ({"a": 2 ** 64}, {}),                   # beyond msgpack ints
    ({}, {"bad name": b""}),
    ({}, {"": b""}),
    ({}, {"x" * 65: b""}),
])
def test_pack_rejects_bad_input(header, sections):
    with pytest.raises(InputError):
        pack(header, sections)


def test_pack_enforces_limits():
    lim = Limits(max_sections=2, max_section_bytes=100, max_total_section_bytes=150, max_header_bytes=50,
                 max_depth=3)
    with pytest.raises(LimitError):
        pack({}, {"a": b"", "b": b"", "c": b""}, limits=lim)
    with pytest.raises(LimitError):
        pack({}, {"a": bytes(101)}, limits=lim)
    with pytest.raises(LimitError):
        pack({}, {"a": bytes(100), "b": bytes(100)}, limits=lim)
    with pytest.raises(LimitError):
        pack({"t": "x" * 60}, {}, limits=lim)
    with pytest.raises(LimitError):
        pack({"a": [[[[1]]]]}, {}, limits=lim)


# --------------------------------------------------------------------------- what a reader refuses

def test_hand_built_file_reads():
    data = b"hello voxels"
    buf = build({"k": "v", "_s": [raw_row("x", data)]}, [data])
    assert unpack(buf) == ({"k": "v"}, {"x": data})


@pytest.mark.parametrize("blob, hint", [
    (b"", "empty"),
    (b"hello world, not a container at all", "wrong magic"),
    (struct.pack("<i", 348) + bytes(344) + b"n+1\x00", "NIfTI"),
    (b"\x1f\x8b\x08\x00" + bytes(30), "gzip"),
    (bytes(128) + b"DICM" + bytes(20), "DICOM"),
    (b"NRRD0004\n", "NRRD"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "wrong magic"),
])
def test_wrong_magic(blob, hint):
    with pytest.raises(FormatError, match="not an .inrv file") as e:
        unpack(blob)
    assert hint in str(e.value)
    assert not is_inrv(blob)


def test_describe_foreign_unknown():
    assert describe_foreign(b"\x00\x01\x02\x03" * 4) == ""


def test_newer_major_refused():
    buf = build({"_s": []}, [], major=2)
    with pytest.raises(UnsupportedVersionError, match="newer"):
        unpack(buf)


def test_major_zero_refused():
    with pytest.raises(FormatError, match="major"):
        unpack(build({"_s": []}, [], major=0))


def test_newer_minor_with_unknown_keys_is_read():
    # a 1.7 writer added a key and a container-reserved key: a 1.0 reader ignores both
    buf = build({"new_key": [1, 2], "_future": {"x": 1}, "_s": [raw_row("a", b"xyz")]}, [b"xyz"], minor=7)
    layout = read_header(buf)
    assert layout.version == (1, 7)
    assert layout.header == {"new_key": [1, 2]}
    assert decode_sections(buf, layout) == {"a": b"xyz"}


@pytest.mark.parametrize("flags", [0x04, 0x80, 0xFC])
def test_unknown_flag_refused(flags):
    with pytest.raises(UnsupportedVersionError, match="flags"):
        unpack(build({"_s": []}, [], flags=flags))


def test_dictionary_flag_needs_zstd_flag():
    with pytest.raises(FormatError, match="dictionary bit"):
        unpack(build({"_s": []}, [], flags=0x02))


def test_header_dictionary_hd1():
    """A header compressed with the built-in dictionary, built by hand from the spec's recipe."""
    import hashlib

    from inrv.formats._header_dict import HEADER_DICT_V1, HEADER_DICT_V1_SHA256

    assert hashlib.sha256(HEADER_DICT_V1).hexdigest() == HEADER_DICT_V1_SHA256 == (
        "eea8571a1e80328badda9984b5d756ef86a74fd8b1e2a45c33e665935f062284")   # frozen forever
    header = {"e": "0.1.0", "m": "latent", "st": {"psnr": 31.5, "ssim": 0.9, "max_abs_err": 12.0}, "_s": []}
    d = zstandard.ZstdCompressionDict(HEADER_DICT_V1, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    frame = zstandard.ZstdCompressor(level=19, dict_data=d).compress(msgpack.packb(header))
    buf = build({}, [], flags=0x03, raw_header=frame)
    assert unpack(buf)[0] == {k: v for k, v in header.items() if k != "_s"}
    assert read_header(buf).header_codec == "zstd+hd1"
    # pack picks it when it is the smallest, and the dictionary really helps on such headers
    packed = pack({k: v for k, v in header.items() if k != "_s"}, {})
    assert read_header(packed).header_codec == "zstd+hd1"
    plain = zstandard.ZstdCompressor(level=19).compress(msgpack.packb(header))
    assert len(frame) < len(plain) - 20
    # without the dictionary the frame does not decode: flags bit 1 matters
    with pytest.raises(FormatError):
        unpack(build({}, [], flags=0x01, raw_header=frame))


def test_unknown_section_codec_refused():
    with pytest.raises(UnsupportedVersionError, match="codec 7"):
        unpack(build({"_s": [["a", 7, 3, zlib.crc32(b"xyz")]]}, [b"xyz"]))


def test_trailing_bytes_refused():
    buf = pack(HEADER, SECTIONS)
    with pytest.raises(FormatError, match="trailing"):
        unpack(buf + b"\x00")
    with pytest.raises(FormatError, match="trailing"):
        unpack(buf + pack({}, {}))          # a second container appended (polyglot / concatenation)


def test_header_checksum():
    buf = bytearray(build({"a": 1, "_s": []}, []))
    buf[-2] ^= 0x01                          # inside the header map
    with pytest.raises(ChecksumError, match="header"):
        unpack(bytes(buf))
    with pytest.raises(ChecksumError):       # the crc also covers the version/flags/length bytes
        unpack(build({"_s": []}, [], crc=zlib.crc32(msgpack.packb({"_s": []}))))


def test_section_checksum_checked_without_decompressing():
    frame = b"\x28\xb5\x2f\xfd" + b"garbage!"  # not decodable, but its crc is right
    buf = build({"_s": [zstd_row("w", frame, 100)]}, [frame])
    layout = read_header(buf)                 # header + crc only: fine
    assert layout.sections[0].codec == "zstd"
    with pytest.raises(FormatError):
        decode_sections(buf, layout)
    bad = bytearray(buf)
    bad[-1] ^= 0x40
    with pytest.raises(ChecksumError, match="section 'w'"):
        read_header(bytes(bad))
    assert read_header(bytes(bad), verify=False).sections[0].name == "w"


@pytest.mark.parametrize("table, payload, exc, msg", [
    (None, b"", FormatError, "no section table"),
    ("nope", b"", FormatError, "not a list"),
    ([["a", 0, 3]], b"abc", FormatError, "4 or 5"),
    ([["a", 0, 3, zlib.crc32(b"abc"), 3]], b"abc", FormatError, "4 items"),
    ([["a", 1, 3, zlib.crc32(b"abc")]], b"abc", FormatError, "raw length"),
    ([["a b", 0, 3, zlib.crc32(b"abc")]], b"abc", FormatError, "name"),
    ([[7, 0, 3, zlib.crc32(b"abc")]], b"abc", FormatError, "name"),
    ([["a", 0, 3, zlib.crc32(b"abc")], ["a", 0, 0, 0]], b"abc", FormatError, "duplicate"),
    ([["a", 0, -3, 0]], b"abc", FormatError, "stored length"),
    ([["a", 0, 3, 2 ** 32]], b"abc", FormatError, "crc"),
    ([["a", True, 3, zlib.crc32(b"abc")]], b"abc", FormatError, "codec"),
    ([["a", 0, 4, zlib.crc32(b"abc")]], b"abc", FormatError, "truncated"),
    ([["a", 0, 2, zlib.crc32(b"ab")]], b"abc", FormatError, "trailing"),
    ([["a", 0, 2 ** 40, 0]], b"abc", LimitError, "limit"),
])
def test_bad_section_tables(table, payload, exc, msg):
    h = {} if table is None else {"_s": table}
    with pytest.raises(exc, match=msg):
        unpack(build(h, [payload]))


@pytest.mark.parametrize("raw_header, msg", [
    (msgpack.packb([1, 2]), "not a map"),
    (b"\x82\xa1a\x01\xa1a\x02", "duplicate key"),
    (b"\x81\x01\x02", "not valid msgpack"),                    # int key
    (b"\x81\xa1a\xd4\x05\x00", "unsupported msgpack type"),    # ext type
    (b"\x81\xa1a\xd6\xff\x00\x00\x00\x01", "unsupported"),     # timestamp
    (b"\x81\xa2\xff\xfe\x01", "not valid msgpack"),            # invalid utf-8
    (b"\x81\xa1a", "not valid msgpack"),                       # incomplete
    (b"\x80\x80", "extra bytes"),
    (b"\xdb\xff\xff\xff\xff", "not valid msgpack"),            # str claims 4 GiB
    (b"\xc1", "not valid msgpack"),                            # reserved byte
    (b"\x91" * 3000 + b"\x01", "nesting too deep"),
])
def test_bad_header_bytes(raw_header, msg):
    with pytest.raises(FormatError, match=msg):
        unpack(build({}, [], raw_header=raw_header))


def test_depth_limit():
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(LimitError, match="nesting"):
        unpack(build({"d": deep, "_s": []}, []))
    assert unpack(build({"d": deep, "_s": []}, []), Limits(max_depth=64))[0]["d"] == deep


def test_empty_and_oversized_header_length():
    with pytest.raises(FormatError, match="empty"):
        unpack(build({}, [], raw_header=b""))
    huge = MAGIC + struct.pack("<BBBII", 1, 0, 0, 0xFFFFFFFF, 0)
    with pytest.raises(LimitError, match="header length"):
        unpack(huge)
    with pytest.raises(LimitError, match="header length"):         # stored size over the limit
        unpack(pack({"a": RANDOM_BYTES[:100]}, {}), Limits(max_header_bytes=50))
    with pytest.raises(LimitError, match="zstd frame declares"):   # decompressed size over it
        unpack(pack({"a": "x" * 100}, {}), Limits(max_header_bytes=50))


def test_reader_limits():
    buf = pack({}, {"a": bytes(1000), "b": RANDOM_BYTES, "c": b""})
    with pytest.raises(LimitError, match="sections exceed"):
        unpack(buf, Limits(max_sections=2))
    with pytest.raises(LimitError, match="'a' declares 1000"):
        unpack(buf, Limits(max_section_bytes=999))
    with pytest.raises(LimitError, match="declare more"):
        unpack(buf, Limits(max_total_section_bytes=1200))
    with pytest.raises(LimitError, match="file of"):
        unpack(buf, Limits(max_file_bytes=len(buf) - 1))
    assert unpack(buf, Limits(max_section_bytes=1000, max_total_section_bytes=1300))[1]["a"] == bytes(1000)


# --------------------------------------------------------------------------- zstd bombs

def test_rle_frame_is_a_real_zstd_frame():
    frame = rle_frame(300_000)
    assert len(frame) < 40
    assert zstandard.ZstdDecompressor().decompress(frame) == bytes(300_000)
    buf = build({"_s": [zstd_row("z", frame, 300_000)]}, [frame])
    assert unpack(buf)[1]["z"] == bytes(300_000)


def _peak_during(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


GIB = 1 << 30


def test_zstd_bomb_over_limit_rejected_before_allocation():
    frame = rle_frame(GIB)                              # 32 KiB that decode to 1 GiB
    assert len(frame) < 40_000
    buf = build({"_s": [zstd_row("z", frame, GIB)]}, [frame])
    errors = []
    peak = _peak_during(lambda: errors.append(pytest.raises(LimitError, unpack, buf)))
    assert "1073741824" in str(errors[0].value)
    assert peak < 16 << 20


def test_zstd_bomb_lying_header_rejected_before_allocation():
    # the table says 100 bytes (within every limit), the frame declares 1 GiB: zstandard would
    # allocate 1 GiB whatever max_output_size says, so this must be refused from the frame header
    frame = rle_frame(GIB)
    buf = build({"_s": [zstd_row("z", frame, 100)]}, [frame])
    errors = []
    peak = _peak_during(lambda: errors.append(pytest.raises(LimitError, unpack, buf)))
    assert peak < 16 << 20
    # even when the limits would allow 1 GiB, the frame must agree with the header's raw length
    big_limits = Limits(max_section_bytes=2 * GIB, max_total_section_bytes=2 * GIB)
    peak = _peak_during(lambda: errors.append(pytest.raises(FormatError, unpack, buf, big_limits)))
    assert "declares 1073741824 bytes but the header says 100" in str(errors[1].value)
    assert peak < 16 << 20
    frame = rle_frame(1000, declared=GIB)      # a frame that lies about its own size
    with pytest.raises(FormatError, match="declares 1073741824 bytes but the header says 1000"):
        unpack(build({"_s": [zstd_row("z", frame, 1000)]}, [frame]), big_limits)


def test_zstd_frame_without_content_size_refused():
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    frame = cctx.compress(bytes(5000))
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    with pytest.raises(FormatError, match="content size"):
        unpack(build({"_s": [zstd_row("z", frame, 5000)]}, [frame]))


def test_zstd_section_extra_frames_refused():
    frame = zstandard.ZstdCompressor().compress(bytes(5000))
    two = frame + frame
    with pytest.raises(FormatError, match="corrupt zstd"):
        unpack(build({"_s": [zstd_row("z", two, 5000)]}, [two]))
    skippable = b"\x50\x2a\x4d\x18" + struct.pack("<I", 4) + b"abcd"
    with pytest.raises(FormatError, match="not a zstd frame"):
        unpack(build({"_s": [zstd_row("z", skippable, 4)]}, [skippable]))


def test_zstd_header_bomb_rejected():
    frame = rle_frame(GIB)
    buf = build({}, [], flags=1, raw_header=frame)
    with pytest.raises(LimitError, match="header"):
        unpack(buf)


def test_zstd_dictionary_frames_refused():
    # single segment, 1-byte dictionary id (7), 1-byte content size (5), one raw block "hello"
    frame = b"\x28\xb5\x2f\xfd\x21\x07\x05" + struct.pack("<I", 1 | (5 << 3))[:3] + b"hello"
    params = zstandard.get_frame_parameters(frame)
    assert params.dict_id == 7 and params.content_size == 5
    with pytest.raises(FormatError, match="dictionary"):
        unpack(build({"_s": [zstd_row("z", frame, 5)]}, [frame]))
    plain = b"\x28\xb5\x2f\xfd\x20\x05" + struct.pack("<I", 1 | (5 << 3))[:3] + b"hello"
    assert unpack(build({"_s": [zstd_row("z", plain, 5)]}, [plain]))[1] == {"z": b"hello"}


# --------------------------------------------------------------------------- corruption, exhaustively

SMALL = pack({"m": "paper", "r": [0.0, 1.5]}, {"w": bytes(300), "l": RANDOM_BYTES[:40]})
# one file per way of storing the header: zstd+hd1, zstd+hd1, zstd, raw
SEEDS = [SMALL, pack(HEADER, SECTIONS), pack({"t": "voxel " * 100}, {"z": bytes(5000), "e": b""}),
         pack({"a": 1}, {"y": b"abc"})]


def test_seeds_cover_every_header_form():
    assert [read_header(s).header_codec for s in SEEDS] == ["zstd+hd1", "zstd+hd1", "zstd", "raw"]


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_truncation_is_a_format_error(seed):
    buf = SEEDS[seed]
    for n in range(len(buf)):
        with pytest.raises(FormatError):
            unpack(buf[:n])


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_bit_flip_is_detected(seed):
    # CRC-32 catches every single-bit error; the magic and version bytes are checked first
    buf = SEEDS[seed]
    for i in range(len(buf)):
        for bit in range(8):
            bad = bytearray(buf)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                unpack(bytes(bad))


# --------------------------------------------------------------------------- property tests


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10 ** 6), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10 ** 6), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 10 ** 6), st.just(0)),
    st.tuples(st.just("set"), st.integers(0, 10 ** 6), st.integers(0, 255)),
)


def mutate(buf: bytes, ops) -> bytes:
    b = bytearray(buf)
    for op, pos, arg in ops:
        pos = pos % (len(b) + 1)
        if op == "flip" and pos < len(b):
            b[pos] ^= 1 << arg
        elif op == "insert":
            b[pos:pos] = arg
        elif op == "delete":
            del b[pos:pos + arg]
        elif op == "truncate":
            del b[pos:]
        elif op == "set" and pos < len(b):
            b[pos] = arg
    return bytes(b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(SEEDS))), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_containers_fail_cleanly(seed, ops):
    buf = mutate(SEEDS[seed], ops)
    try:
        decoded = unpack(buf)
    except InrvError:
        return
    # only a no-op mutation (e.g. setting a byte to its own value) may decode, and then as before
    assert buf == SEEDS[seed]
    assert decoded == unpack(SEEDS[seed])


@settings(max_examples=200, deadline=None)
@given(tail=st.binary(max_size=200), major=st.integers(0, 3), flags=st.integers(0, 255))
def test_random_bytes_after_magic_fail_cleanly(tail, major, flags):
    buf = MAGIC + bytes([major, 0, flags]) + tail
    with pytest.raises(InrvError):
        unpack(buf)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
names = st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(header=st.dictionaries(st.text(max_size=10).filter(lambda k: not k.startswith("_")), msgpack_values,
                              max_size=6),
       sections=st.dictionaries(names, st.binary(max_size=300) | st.builds(bytes, st.integers(0, 3000)),
                                max_size=5))
def test_round_trip_property(header, sections):
    h, s = unpack(pack(header, sections))
    assert h == header and s == sections


DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"


def test_default_limits_are_documented_values():
    # docs/format.md states these numbers; keep them in step
    text = DOC.read_text(encoding="utf-8")
    for name in ("max_file_bytes", "max_header_bytes", "max_sections", "max_section_bytes",
                 "max_total_section_bytes", "max_zstd_window", "max_depth", "max_voxels"):
        value = getattr(DEFAULT_LIMITS, name)
        power = f"2^{value.bit_length() - 1}" if value & (value - 1) == 0 and value > 1024 else str(value)
        assert re.search(rf"\| `{name}` \| [^|]*{re.escape(power)}", text), name
    assert DEFAULT_LIMITS.max_header_bytes == 16 << 20
    assert DEFAULT_LIMITS.max_section_bytes == 256 << 20
    assert DEFAULT_LIMITS.max_total_section_bytes == 512 << 20
    assert DEFAULT_LIMITS.max_file_bytes == 1 << 30
    assert DEFAULT_LIMITS.max_sections == 256
    assert DEFAULT_LIMITS.max_voxels == 1 << 31
    assert DEFAULT_LIMITS.max_depth == 32
    assert DEFAULT_LIMITS.max_zstd_window == 1 << 27


def _doc_block(after: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("```python", text.index(after)) + len("```python")
    return text[start:text.index("```", start)]


def test_minimal_reader_in_the_spec_works():
    """docs/format.md section 11 must stay a working reader of what ``pack`` writes."""
    ns: dict = {}
    exec(compile(_doc_block("## 11."), "docs/format.md", "exec"), ns)
    from inrv.formats._header_dict import HEADER_DICT_V1

    read = ns["read_inrv_container"]
    files = SEEDS + [pack({"e": "0.1.0", "st": {"psnr": 30.0}}, {"x": b"hello"}), pack({"a": 1}, {"y": b""})]
    assert {read_header(f).header_codec for f in files} == {"raw", "zstd", "zstd+hd1"}
    for buf in files:
        assert read(buf, HEADER_DICT_V1) == unpack(buf)
    with pytest.raises(ValueError):
        read(SEEDS[0] + b"x", HEADER_DICT_V1)


def test_dictionary_in_the_spec_appendix():
    import base64

    from inrv.formats._header_dict import HEADER_DICT_V1

    text = DOC.read_text(encoding="utf-8")
    block = text[text.index("```", text.index("## Appendix A")) + 3:]
    assert base64.b64decode("".join(block[:block.index("```")].split())) == HEADER_DICT_V1


def test_hex_example_in_the_spec():
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index("```", text.index("## 10.")) + 3:]
    block = block[:block.index("```")]
    hexes = re.findall(r"^\s*((?:[0-9a-f]{2} )*[0-9a-f]{2})\s", block, re.M)
    assert bytes.fromhex("".join(hexes)) == pack({"k": "v"}, {"x": b"hello"})


# --------------------------------------------------------------------------- limits not covered above

def test_zstd_window_over_the_limit_is_refused_from_the_frame_header():
    """A frame that declares 1000 bytes of content but asks for a 1 GiB window (not single-segment):
    zstd would allocate the window, so the header is refused before decoding."""
    frame = bytearray(b"\x28\xb5\x2f\xfd")
    frame.append(0x40)                       # FCS field 2 bytes, not single segment, no checksum/dictionary
    frame.append(20 << 3)                    # window descriptor: windowLog = 10 + 20 = 30 (1 GiB)
    frame += struct.pack("<H", 1000 - 256)   # 2-byte content size field stores size - 256
    frame += bytes(8)
    buf = build({"_s": [zstd_row("z", bytes(frame), 1000)]}, [bytes(frame)])
    with pytest.raises(LimitError, match=r"'z'.*zstd window of 1073741824 bytes exceeds the limit"):
        unpack(buf)
    # the limit is the Limits field: a smaller one refuses a window a default reader accepts
    ok = zstandard.ZstdCompressor(level=1).compress(bytes(range(256)) * 64)       # 16 KiB, window <= 16 KiB
    buf = build({"_s": [zstd_row("z", ok, 16384)]}, [ok])
    assert unpack(buf)[1]["z"] == bytes(range(256)) * 64
    frame = bytearray(ok)
    assert frame[4] & 0x20                   # single segment: window = content size, always allowed
    assert unpack(buf, Limits(max_zstd_window=1024))[1]["z"] == bytes(range(256)) * 64


def test_pack_refuses_a_file_over_the_size_limit():
    lim = Limits(max_file_bytes=500)
    assert len(pack({}, {"a": bytes(300)}, limits=lim)) <= 500
    with pytest.raises(LimitError, match=r"file of \d+ bytes exceeds the limit of 500"):
        pack({}, {"a": RANDOM_BYTES, "b": RANDOM_BYTES[::-1]}, limits=lim)      # incompressible: stored raw


def test_reading_a_path_over_the_size_limit_is_refused_before_reading_it(tmp_path):
    from inrv.formats.inrvfile import inrv_info, read_inrv

    buf = pack({}, {"a": random.Random(0).randbytes(2000)})      # incompressible
    path = tmp_path / "big.inrv"
    path.write_bytes(buf)
    with pytest.raises(LimitError, match=rf"big.inrv: {len(buf)} bytes exceed the limit of 1000"):
        read_inrv(path, limits=Limits(max_file_bytes=1000))
    with pytest.raises(LimitError, match="exceed the limit of 1000"):
        inrv_info(path, limits=Limits(max_file_bytes=1000))
    with pytest.raises(LimitError, match="file of"):                       # the same bytes, not a path
        unpack(buf, Limits(max_file_bytes=1000))
