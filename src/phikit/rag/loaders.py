"""Read documents into plain text plus structure: heading and paragraph blocks with character spans.

Every loader returns a :class:`Document` whose ``text`` is what the chunker slices: a block's ``start``/
``end`` index into it, so every chunk's character span points at real text. Supported: ``.md``,
``.markdown``, ``.txt``, ``.html``/``.htm`` (stdlib parser), ``.pdf`` (pypdf, one page per block group),
``.docx`` (python-docx, ``Heading N`` styles become headings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from ..errors import PhikitError

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html",
            ".pdf": "pdf", ".docx": "docx"}


@dataclass(frozen=True)
class Block:
    """A heading or paragraph: ``text[start:end]`` of its document.

    Attributes:
        level: heading level 1-6, or 0 for body text.
        page: 1-based page for PDFs, else None.
    """

    start: int
    end: int
    level: int = 0
    page: int | None = None


@dataclass
class Document:
    path: str
    format: str
    text: str = ""
    blocks: list[Block] = field(default_factory=list)

    def add(self, body: str, level: int = 0, page: int | None = None) -> None:
        """Append a block of text (separated from the previous one by a blank line)."""
        body = body.strip()
        if not body:
            return
        if self.text:
            self.text += "\n\n"
        start = len(self.text)
        self.text += body
        self.blocks.append(Block(start, len(self.text), level, page))


class UnreadableError(PhikitError):
    """A file could not be read or parsed; ingest reports it by name and goes on."""


def supported(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def load_document(path: str | Path) -> Document:
    """Read one file.

    Raises:
        UnreadableError: unsupported suffix, unreadable file, or a parser failure (message names the file).
    """
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UnreadableError(f"{path}: unsupported file type {path.suffix!r} (use {', '.join(sorted(SUFFIXES))})")
    try:
        doc = _LOADERS[fmt](path)
    except UnreadableError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is reported by file name
        raise UnreadableError(f"{path}: cannot read {fmt} ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not doc.text.strip():
        raise UnreadableError(f"{path}: no text found (a scanned PDF or an empty file?)")
    return doc


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def load_markdown(path: Path) -> Document:
    """Markdown: ATX headings (``#``..``######``) are headings; blank lines separate paragraphs; fenced code
    blocks stay whole."""
    doc = Document(str(path), "markdown")
    para: list[str] = []
    in_fence = False

    def flush():
        if para:
            doc.add("\n".join(para))
            para.clear()

    for line in _read_text(path).splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            para.append(line)
            continue
        m = None if in_fence else _MD_HEADING.match(line)
        if m:
            flush()
            doc.add(m.group(2), level=len(m.group(1)))
        elif not line.strip() and not in_fence:
            flush()
        else:
            para.append(line.rstrip())
    flush()
    return doc


def load_text(path: Path) -> Document:
    """Plain text: blank lines separate paragraphs; no headings."""
    doc = Document(str(path), "text")
    for para in re.split(r"\n\s*\n", _read_text(path).replace("\r\n", "\n")):
        doc.add(para)
    return doc


class _HTMLBlocks(HTMLParser):
    BLOCK = {"p", "div", "li", "tr", "pre", "blockquote", "section", "article", "dd", "dt", "br", "table",
             "ul", "ol", "header", "footer", "main", "caption", "figcaption", "nav"}
    CELL = {"td", "th"}
    SKIP = {"script", "style", "noscript", "template", "head", "svg"}

    def __init__(self, doc: Document):
        super().__init__(convert_charrefs=True)
        self.doc, self.buf, self.level, self.skip = doc, [], 0, 0

    def flush(self) -> None:
        text = re.sub(r"[ \t\r\f\v]+", " ", "".join(self.buf))
        text = "\n".join(line.strip() for line in text.split("\n") if line.strip())
        self.doc.add(text, level=self.level)
        self.buf, self.level = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.flush()
            self.level = int(tag[1])
        elif tag in self.BLOCK:
            self.flush()
        elif tag in self.CELL and "".join(self.buf).strip():
            self.buf.append(" | ")  # a table row becomes one line: "cell | cell | cell"

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK:
            self.flush()

    def handle_data(self, data):
        if not self.skip:
            self.buf.append(data.replace("\n", " "))


def load_html(path: Path) -> Document:
    """HTML: ``h1``-``h6`` are headings; block elements (p, li, tr, div, ...) are paragraphs; script/style
    and ``<head>`` are skipped (the title is kept as a level-1 heading when the body has none)."""
    doc = Document(str(path), "html")
    raw = _read_text(path)
    parser = _HTMLBlocks(doc)
    parser.feed(raw)
    parser.close()
    parser.flush()
    if not any(b.level for b in doc.blocks):
        m = re.search(r"<title[^>]*>(.*?)</title>", raw, re.I | re.S)
        if m and m.group(1).strip():
            title = Document(doc.path, doc.format)
            title.add(re.sub(r"\s+", " ", m.group(1)).strip(), level=1)
            offset = len(title.text) + 2
            title.text += "\n\n" + doc.text
            title.blocks += [Block(b.start + offset, b.end + offset, b.level, b.page) for b in doc.blocks]
            return title
    return doc


def load_pdf(path: Path) -> Document:
    """PDF via pypdf: text per page, paragraphs split on blank lines; each block carries its page number.

    Raises:
        UnreadableError: encrypted without an empty password, or no extractable text.
    """
    import logging

    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # "EOF marker not found" etc.: we report failures ourselves
    reader = PdfReader(str(path))
    if reader.is_encrypted and not reader.decrypt(""):
        raise UnreadableError(f"{path}: the PDF is encrypted")
    doc = Document(str(path), "pdf")
    pages = []
    for page in reader.pages:
        pieces: list[tuple[str, float]] = []

        def visit(text, cm, tm, font, size, pieces=pieces):
            scale = abs(tm[3]) if tm and tm[3] else 1.0
            if text.strip():
                pieces.append((text, round(float(size or 0) * scale, 1)))

        page.extract_text(visitor_text=visit)
        pages.append(pieces)
    sizes = [sz for pieces in pages for text, sz in pieces for _ in range(len(text))]
    body = max(set(sizes), key=sizes.count) if sizes else 0.0
    heading_sizes = sorted({sz for sz in sizes if sz > body * 1.15}, reverse=True)[:6]
    for number, pieces in enumerate(pages, start=1):
        para: list[str] = []
        for text, sz in pieces:
            if sz in heading_sizes:
                doc.add(" ".join(para), page=number)
                para = []
                doc.add(text, level=heading_sizes.index(sz) + 1, page=number)
            elif not text.strip("\n "):
                continue
            else:
                para.append(text.strip())
                if re.search(r"\n\s*\n", text):
                    doc.add(" ".join(para), page=number)
                    para = []
        doc.add(" ".join(para), page=number)
    return doc


def load_docx(path: Path) -> Document:
    """Word .docx via python-docx: ``Heading N``/``Title`` paragraph styles become headings; tables become
    one block per row (cells joined by `` | ``)."""
    import docx

    d = docx.Document(str(path))
    doc = Document(str(path), "docx")
    body = d.element.body
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            para = docx.text.paragraph.Paragraph(child, d)
            style = (para.style.name if para.style is not None else "") or ""
            m = re.match(r"Heading (\d)", style)
            level = int(m.group(1)) if m else (1 if style == "Title" else 0)
            doc.add(para.text, level=level)
        elif tag == "tbl":
            table = docx.table.Table(child, d)
            for row in table.rows:
                doc.add(" | ".join(c.text.strip() for c in row.cells))
    return doc


_LOADERS = {"markdown": load_markdown, "text": load_text, "html": load_html, "pdf": load_pdf, "docx": load_docx}
