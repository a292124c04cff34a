"""Token-aware chunking that prefers heading and paragraph boundaries.

A chunk is a contiguous span ``document.text[start:end]`` of at most ``max_tokens`` word pieces of the
embedding model. Whole paragraphs are packed until the next one would not fit; a heading always starts a
new chunk (so a chunk's heading trail describes all of it); a paragraph longer than the budget is cut into
token windows. Consecutive chunks of the same section overlap by up to ``overlap`` tokens (the tail of the
previous chunk is repeated), the usual recipe in LangChain's and LlamaIndex's token splitters.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from .loaders import Document


@dataclass(frozen=True)
class ChunkSettings:
    """Chunker configuration, recorded in the KB manifest.

    Attributes:
        max_tokens: most word pieces per chunk (all-MiniLM-L6-v2 reads at most 256).
        overlap: tokens repeated from the end of the previous chunk of the same section.
    """

    max_tokens: int = 256
    overlap: int = 32

    def __post_init__(self):
        from ..errors import BadRequestError

        if self.max_tokens < 16:
            raise BadRequestError("chunk size must be >= 16 tokens")
        if not 0 <= self.overlap < self.max_tokens // 2:
            raise BadRequestError("chunk overlap must be >= 0 and less than half the chunk size")


@dataclass
class Chunk:
    """One retrievable passage.

    Attributes:
        id: ``"<first 12 hex of the document sha256>:<index>"``, stable while the document is unchanged.
        text: ``document.text[start:end]``.
        source: the document's path.
        headings: heading trail, outermost first (e.g. ``["Returns", "Refund window"]``).
        page: first page (PDFs), else None.
        start, end: character span in the extracted document text.
        tokens: word pieces in ``text``.
    """

    id: str
    text: str
    source: str
    start: int
    end: int
    tokens: int
    headings: list[str] = field(default_factory=list)
    page: int | None = None
    doc_sha256: str = ""

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "text", "source", "headings", "page", "start", "end", "tokens", "doc_sha256")}

    @classmethod
    def from_dict(cls, d: dict) -> Chunk:
        return cls(**d)

    def heading(self) -> str:
        return " > ".join(self.headings)


def chunk_document(doc: Document, tokenizer, settings: ChunkSettings = ChunkSettings(), *, doc_sha256: str = "") -> list[Chunk]:
    """Split ``doc`` into chunks.

    Args:
        doc: from :func:`phikit.rag.loaders.load_document`.
        tokenizer: has ``offsets(text) -> [(start, end), ...]`` (the embedding model's word pieces).
        settings: size and overlap in tokens.
        doc_sha256: the document's hash; chunk ids start with its first 12 hex digits.

    Returns:
        Chunks in document order; spans never cross a heading; each has ``tokens <= settings.max_tokens``.
    """
    text = doc.text
    offsets = tokenizer.offsets(text)
    starts = [s for s, _ in offsets]
    ends = [e for _, e in offsets]
    limit, overlap = settings.max_tokens, settings.overlap

    def ntok(a: int, b: int) -> int:  # tokens starting inside [a, b)
        return bisect_left(starts, b) - bisect_left(starts, a)

    def back_off(end: int, floor: int) -> int:
        """Start of the last <= ``overlap`` tokens that end by ``end`` (not before ``floor``)."""
        if overlap == 0:
            return end
        last = bisect_right(ends, end) - 1  # last token ending by `end`
        first = word_start(max(last - overlap + 1, bisect_left(starts, floor)), last + 1)
        return starts[first] if 0 <= first <= last else end

    def word_start(i: int, stop: int) -> int:
        """First token at or after ``i`` that begins a word (never a ``##`` continuation piece)."""
        while i < stop and starts[i] > 0 and text[starts[i] - 1].isalnum() and text[starts[i]].isalnum():
            i += 1
        return i

    def sentence_end(i: int, j: int) -> int:
        """Pull a window end ``j`` back to just after a sentence end, if one lies in its last quarter."""
        for t in range(j - 1, i + (3 * (j - i)) // 4, -1):
            if text[starts[t]:ends[t]] in (".", "!", "?", ";"):
                return t + 1
        return j

    spans: list[tuple[int, int, list[str], int | None]] = []
    trail: list[tuple[int, str]] = []
    cur_start = cur_end = None
    cur_trail: list[str] = []
    section_start = 0

    def flush():
        nonlocal cur_start, cur_end
        if cur_start is not None and cur_end is not None and cur_end > cur_start:
            spans.append((cur_start, cur_end, cur_trail, None))
        cur_start = cur_end = None

    for block in doc.blocks:
        if block.level:
            flush()
            trail = [(lvl, t) for lvl, t in trail if lvl < block.level] + [(block.level, text[block.start:block.end])]
            cur_trail = [t for _, t in trail]
            cur_start, cur_end, section_start = block.start, block.end, block.start
            continue
        if cur_start is None:
            cur_start, cur_end, cur_trail = block.start, block.end, [t for _, t in trail]
        elif ntok(cur_start, block.end) <= limit:
            cur_end = block.end
            continue
        elif ntok(block.start, block.end) > limit:  # too long on its own: window from the current start
            cur_end = block.end
        else:
            prev_end = cur_end
            flush()
            ov = back_off(prev_end, section_start)
            cur_start = ov if ntok(ov, block.end) <= limit else block.start
            cur_end = block.end
            cur_trail = [t for _, t in trail]
        if ntok(cur_start, cur_end) > limit:  # one paragraph longer than the budget: token windows
            i, j_end = bisect_left(starts, cur_start), bisect_left(starts, cur_end)
            while True:
                j = min(i + limit, j_end)
                if j >= j_end:
                    cur_start = starts[i]
                    break
                j = sentence_end(i, j)
                spans.append((starts[i], ends[j - 1], cur_trail, None))
                i = word_start(j - overlap, j) if overlap else j
            cur_end = block.end
    flush()

    page_of = {b.start: b.page for b in doc.blocks}
    block_starts = [b.start for b in doc.blocks]
    prefix = doc_sha256[:12]
    chunks = []
    for n, (a, b, hs, _) in enumerate(spans):
        k = max(0, bisect_right(block_starts, a) - 1)
        page = page_of.get(block_starts[k]) if block_starts else None
        chunks.append(Chunk(id=f"{prefix}:{n}", text=text[a:b], source=doc.path, start=a, end=b,
                            tokens=ntok(a, b), headings=list(hs), page=page, doc_sha256=doc_sha256))
    return chunks
