"""UTF-8 text files that people write by hand (feedback and ratings CSVs, summarization data)."""

from __future__ import annotations

import codecs


class NotUtf8(ValueError):
    """A byte that is not UTF-8, located in the file: its line, its offset from the file's start
    (a byte-order mark included) and its value."""

    def __init__(self, line: int, offset: int, byte: int):
        super().__init__(f"line {line}: byte 0x{byte:02x} at offset {offset} is not UTF-8")
        self.line, self.offset, self.byte = line, offset, byte


def utf8_text(data: bytes) -> str:
    """The file's text, a leading byte-order mark dropped. Decoding as utf-8-sig would count a bad
    byte's offset from after the mark (3 bytes early, and so at times on the wrong line)."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start
        raise NotUtf8(data.count(b"\n", 0, at) + 1, at, data[at]) from None
