#!/usr/bin/env python3
"""Independent encoder/decoder of the affect serial frame, written from docs/wire-format.md.

Shares no code with the Rust implementation (own CRC, own COBS), so the Rust tests can check
both directions against it.

    wire_oracle.py encode   < reports.jsonl  > frames.hex   (one hex frame per line, incl. 00)
    wire_oracle.py decode   < frames.hex     > reports.jsonl
    wire_oracle.py decode-lenient < frames.hex > reports.jsonl   (a bad frame: {"error": "…"})
"""
import json
import struct
import sys


def crc16_ccitt_false(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def cobs_encode(data: bytes) -> bytes:
    out, block = bytearray(), bytearray()
    for byte in data:
        if byte == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(byte)
            if len(block) == 254:
                out += b"\xff" + block
                block = bytearray()
    out += bytes([len(block) + 1]) + block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(data):
        code = data[i]
        if code == 0 or i + code > len(data):
            raise ValueError("bad COBS")
        out += data[i + 1:i + code]
        i += code
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def quantise(v: float, lo: float, hi: float, scale: float) -> int:
    x = min(max(f32(v), lo), hi) * scale
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def encode(r: dict) -> bytes:
    payload = struct.pack(
        "<BQIHhh4HHB", 1, r["timestamp_ms"], r["frame"], r["track"],
        quantise(r["valence"], -1, 1, 10000), quantise(r["arousal"], -1, 1, 10000),
        *(quantise(b, 0, 65535, 1) for b in r["bbox"]),
        quantise(r["score"], 0, 1, 10000), r["flags"])
    assert len(payload) == 30
    return cobs_encode(payload + struct.pack("<H", crc16_ccitt_false(payload))) + b"\x00"


def decode(frame: bytes) -> dict:
    raw = cobs_decode(frame.rstrip(b"\x00"))
    if len(raw) != 32:
        raise ValueError(f"length {len(raw)}")
    payload, (crc,) = raw[:30], struct.unpack("<H", raw[30:])
    if crc != crc16_ccitt_false(payload):
        raise ValueError("crc")
    v, ts, frame_no, track, val, aro, x, y, w, h, score, flags = struct.unpack("<BQIHhh4HHB", payload)
    if v != 1:
        raise ValueError(f"version {v}")
    for name, value, lo in (("valence", val, -10000), ("arousal", aro, -10000), ("score", score, 0)):
        if not lo <= value <= 10000:
            raise ValueError(f"{name} {value} out of range")
    return {"timestamp_ms": ts, "frame": frame_no, "track": track, "valence": val / 10000,
            "arousal": aro / 10000, "bbox": [x, y, w, h], "score": score / 10000, "flags": flags}


def main() -> None:
    mode = sys.argv[1]
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if mode == "encode":
            print(encode(json.loads(line)).hex())
        elif mode == "decode":
            print(json.dumps(decode(bytes.fromhex(line))))
        elif mode == "decode-lenient":
            try:
                print(json.dumps(decode(bytes.fromhex(line))))
            except ValueError as e:
                print(json.dumps({"error": str(e)}))
        else:
            sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
