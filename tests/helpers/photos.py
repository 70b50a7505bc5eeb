"""Photo folders and dataset cards for the data tests (the drawing itself lives in
raysweep.data.demo)."""

from __future__ import annotations

from pathlib import Path

from raysweep.data.demo import FOREIGN


def write_card(root: Path, manifest: str = "labels.csv", extra: str = "") -> Path:
    cols = "\n".join(f"  {k}: {v}" for k, v in (kv.split("=") for kv in FOREIGN.split(",")))
    card = root / "dataset.yaml"
    card.write_text(f"name: test\nmanifest: {manifest}\ncolumns:\n{cols}\n{extra}")
    return card


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: what a decompression bomb shows
    Pillow before a single pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
