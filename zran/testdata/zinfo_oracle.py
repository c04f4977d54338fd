#!/usr/bin/env python3
"""Oracle for the checkpoint convention of SOCI's zinfo (gzip_zinfo.c).

Runs the system zlib through ctypes the way zinfo indexes a blob: raw
inflate(Z_BLOCK) calls in automatic gzip/zlib mode, a checkpoint when
data_type says "at a block boundary" (128) and "not after the last block"
(64 clear) and total output is 0 or more than span past the last checkpoint,
in = total input consumed, bits = data_type & 7, window = the 32 KiB of output
before it, zero-filled before offset 0. It feeds the whole blob at once (zinfo
reads 16 KiB at a time; that only matters for its stop at a member ending on a
16 KiB boundary). Written for this project from zlib's documented API.

usage: zinfo_oracle.py BLOB SPAN... > golden.json
prints {"SPAN": [[in, bits, out, sha256(window)], ...], ...}
"""
import ctypes, hashlib, json, sys

Z_BLOCK, Z_STREAM_END, Z_OK = 5, 1, 0
W = 32768


class ZStream(ctypes.Structure):
    _fields_ = [
        ("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_uint), ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p), ("avail_out", ctypes.c_uint), ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p), ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p), ("zfree", ctypes.c_void_p), ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int), ("adler", ctypes.c_ulong), ("reserved", ctypes.c_ulong),
    ]


def index(blob, span, z):
    s = ZStream()
    ver = z.zlibVersion()
    assert z.inflateInit2_(ctypes.byref(s), 47, ver, ctypes.sizeof(s)) == Z_OK
    inbuf = ctypes.create_string_buffer(blob, len(blob))
    outcap = 1 << 20
    outbuf = ctypes.create_string_buffer(outcap)
    s.next_in = ctypes.addressof(inbuf)
    s.avail_in = len(blob)
    out = bytearray()
    cps, last = [], 0
    while True:
        s.next_out = ctypes.addressof(outbuf)
        s.avail_out = outcap
        ret = z.inflate(ctypes.byref(s), Z_BLOCK)
        n = outcap - s.avail_out
        out += outbuf.raw[:n]
        if ret not in (Z_OK, Z_STREAM_END):
            raise SystemExit("zlib error %d" % ret)
        if ret == Z_STREAM_END:
            if s.avail_in == 0:
                break
            assert z.inflateReset2(ctypes.byref(s), 47) == Z_OK
            continue
        totin = len(blob) - s.avail_in
        totout = len(out)
        if s.data_type & 128 and not s.data_type & 64 and (totout == 0 or totout - last > span):
            win = (bytes(W) + bytes(out[-W:]))[-W:]
            cps.append([totin, s.data_type & 7, totout, hashlib.sha256(win).hexdigest()])
            last = totout
    z.inflateEnd(ctypes.byref(s))
    return cps


def main():
    z = ctypes.CDLL("libz.so.1")
    z.zlibVersion.restype = ctypes.c_char_p
    blob = open(sys.argv[1], "rb").read()
    res = {sp: index(blob, int(sp), z) for sp in sys.argv[2:]}
    print("{" + ",".join("\n%s: [%s]" % (json.dumps(sp), ",".join("\n" + json.dumps(c) for c in cps)) for sp, cps in res.items()) + "}")


main()
