"""Each benchmark script owns one section of docs/benchmarks.md between two marker comments and
rewrites it after a full run; the text around the markers is the reader's and is kept."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_section(begin: str, end: str, section: str, heading: str, doc: Path = DOC) -> None:
    """Put `section` between the markers `begin` and `end` (the markers kept); where the document
    has no such markers yet, append `heading` and the marked section at its end."""
    marked = f"{begin}\n\n{section.strip(chr(10))}\n\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + marked + rest.split(end, 1)[1]
    else:
        text = f"{text.rstrip(chr(10))}\n\n{heading}\n\n{marked}\n"
    doc.write_text(text)
