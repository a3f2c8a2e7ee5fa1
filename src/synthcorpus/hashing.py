"""sha256 of files and streams, read in chunks: the one helper behind seed fingerprints, model file
hashes and manifest checksums."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

CHUNK = 1 << 20


def sha256_stream(fh: BinaryIO, chunk: int = CHUNK) -> tuple[int, str]:
    """(bytes read, sha256 hex) of everything left in a binary file object."""
    digest, size = hashlib.sha256(), 0
    while block := fh.read(chunk):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


def sha256_file(path: str, chunk: int = CHUNK) -> str:
    """sha256 hex of a local file."""
    with open(path, "rb") as fh:
        return sha256_stream(fh, chunk)[1]
