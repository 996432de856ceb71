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


# Version 2 appends the latency (u16 ms) to version 1's 30-byte payload.
V1 = "<BQIHhh4HHB"
V2 = V1 + "H"
LATENCY_UNKNOWN = 0xFFFF
LATENCY_MAX_MS = 0xFFFE


def encode(r: dict) -> bytes:
    """A version-2 frame; `latency_ms` null (or absent) is unknown."""
    latency = r.get("latency_ms")
    payload = struct.pack(
        V2, 2, r["timestamp_ms"], r["frame"], r["track"],
        quantise(r["valence"], -1, 1, 10000), quantise(r["arousal"], -1, 1, 10000),
        *(quantise(b, 0, 65535, 1) for b in r["bbox"]),
        quantise(r["score"], 0, 1, 10000), r["flags"],
        LATENCY_UNKNOWN if latency is None else min(latency, LATENCY_MAX_MS))
    assert len(payload) == 32
    return cobs_encode(payload + struct.pack("<H", crc16_ccitt_false(payload))) + b"\x00"


def decode(frame: bytes) -> dict:
    """A version-2 or version-1 frame; `latency_ms` is null when unknown (always for version 1)."""
    raw = cobs_decode(frame.rstrip(b"\x00"))
    if len(raw) not in (32, 34):
        raise ValueError(f"length {len(raw)}")
    payload, (crc,) = raw[:-2], struct.unpack("<H", raw[-2:])
    if crc != crc16_ccitt_false(payload):
        raise ValueError("crc")
    version = payload[0]
    if version not in (1, 2):
        raise ValueError(f"version {version}")
    layout = V1 if version == 1 else V2
    if len(payload) != struct.calcsize(layout):
        raise ValueError(f"version {version} with {len(payload)} payload bytes")
    _, ts, frame_no, track, val, aro, x, y, w, h, score, flags, *latency = struct.unpack(
        layout, payload)
    for name, value, lo in (("valence", val, -10000), ("arousal", aro, -10000), ("score", score, 0)):
        if not lo <= value <= 10000:
            raise ValueError(f"{name} {value} out of range")
    latency_ms = latency[0] if latency and latency[0] != LATENCY_UNKNOWN else None
    return {"timestamp_ms": ts, "frame": frame_no, "track": track, "valence": val / 10000,
            "arousal": aro / 10000, "bbox": [x, y, w, h], "score": score / 10000, "flags": flags,
            "latency_ms": latency_ms}


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
