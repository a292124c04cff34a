"""Sentence-level checks of a grounded answer against its passages, and the extractive fallback.

Each sentence of an answer is checked against the passage it cites (or, uncited, the retrieved passage
that supports it best). A sentence is kept only when, in that passage:

- every quantity it states (numbers, prices, percentages, dates, durations: ``3 years``, ``$14.99``,
  ``15 January``) occurs with the same unit, and no sentence of the passage about the same product gives
  a different value for that unit (the answer says "1-year warranty" for the Thermo T3, the passage says
  "Thermo T3 thermostat: 3 years" -> contradiction);
- every name it uses (``Thermo T3``, ``Cam C1``, ``Tokyo``) occurs;
- the question's topic words it repeats occur ("battery life" in an answer cited to a warranty page that
  never mentions a battery life is not supported, whatever number follows);
- at least ``min_support`` of its content words occur.

When no sentence survives, :func:`extractive_answer` quotes the sentences of the top passages that match
the question best, provided they cover the question's names and most of its topic words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .store import s_stem

_WORD = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*")
CITE = re.compile(r"\[(\s*\d+(?:\s*[,;]\s*\d+)*\s*)\]")  # [1], [1, 2]: citation markers
_NUM_WORDS = {w: str(i) for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"])}
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"]
_UNITS = set(
    ["second", "minute", "hour", "day", "week", "month", "year", "decade", "time", "percent", "degree", "meter", "metre", "cm", "mm", "km", "m", "kg", "g", "lb", "gb", "mb", "tb", "kb", "ghz", "mhz", "hz", "v", "w", "kw", "kwh", "mah", "dbm", "db", "lumen", "lm", "fps", "mbps", "home", "member", "device"] + _MONTHS)
_WORD_UNITS = frozenset(["second", "minute", "hour", "day", "week", "month", "year", "time"])  # "three times", not "one device"
# number (with $ or a leading minus), an optional % and an optional unit word, hyphenated ("1-year") or not
_QUANTITY = re.compile(
    r"(?<![\w.])(\$)?(\d+(?:[.,:]\d+)*|" + "|".join(_NUM_WORDS) + r")(?![\w])(%)?(?:[\s-]+(?:business\s+)?([a-z]+(?:\.m\.?)?))?",
    re.IGNORECASE)
_NAME = re.compile(r"\b(?:[A-Z][A-Za-z]+\+?|[A-Z]+\d+[A-Za-z0-9]*)(?:\s+(?:[A-Z][A-Za-z]+\+?|[A-Z]*\d+[A-Za-z0-9]*))*")
STOPWORDS = frozenset(
    ["a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "is", "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those", "you", "your", "we", "our", "they", "their", "he", "she", "i", "me", "my", "can", "will", "would", "should", "could", "may", "might", "do", "does", "did", "not", "no", "yes", "if", "then", "than", "so", "such", "there", "here", "what", "which", "who", "whom", "when", "where", "why", "how", "about", "into", "over", "under", "up", "down", "out", "per", "each", "all", "any", "some", "more", "most", "also", "only", "just", "have", "has", "had"])
# words that say how a question asks, not what about ("how long", "what does it mean")
_GENERIC = STOPWORDS | frozenset(
    ["long", "many", "much", "far", "often", "quickly", "soon", "kind", "type", "get", "got", "happen", "mean", "means", "work", "works", "need", "use", "make", "take", "tell", "know", "find", "want", "way", "thing", "things", "please", "answer", "passage", "passages", "according", "say", "says", "said"])
# sentence ends: . ! ? (not inside "a.m." / "e.g." / "$4.99") or a line break
_ABBREV = re.compile(r"(?:\b[ap]\.m|\be\.g|\bi\.e|\betc|\bvs|\bno|\bapprox|\binc|\bst|\bdr|\bmr|\bms|\bmrs)\.$", re.I)


def content_words(text: str) -> list[str]:
    """Lower-cased, plural-folded words of ``text`` without stop words (for support and attribution)."""
    return [s_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1]


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``; a citation marker after a sentence end stays with that sentence."""
    out: list[str] = []
    for line in text.split("\n"):
        start = 0
        for m in re.finditer(r"[.!?]+[\"')\]]*(?:\s*\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\])*(?=\s+|$)", line):
            if _ABBREV.search(line[start:m.start() + 1]):
                continue  # "9 a.m. to 3 p.m. Pacific Time" is one sentence
            piece = line[start:m.end()].strip()
            if piece:
                out.append(piece)
            start = m.end()
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    return out


def quantities(text: str) -> list[tuple[str, str]]:
    """``(value, unit)`` pairs: ``"a 3-year warranty"`` -> ``[("3", "year")]``, ``"$14.99"`` ->
    ``[("14.99", "$")]``, ``"15%"`` -> ``[("15", "%")]``; list markers ("1." at a line start) and
    citation markers are not quantities; number words up to twelve become digits."""
    text = re.sub(r"(?m)^\s*\d+[.)]\s", " ", CITE.sub(" ", text))
    out = []
    for m in _QUANTITY.finditer(text):
        dollar, value, pct, unit = m.groups()
        value = _NUM_WORDS.get(value.lower(), value.replace(",", ""))
        if m.group(2).lower() in _NUM_WORDS and _unit(unit or "") not in _WORD_UNITS:
            continue  # "one of the": a number word counts only with a unit of time or count
        u = "$" if dollar else "%" if pct else _unit(unit or "")
        out.append((value, u))
    return out


def _unit(word: str) -> str:
    w = s_stem(word.lower().rstrip("."))
    w = {"percent": "%", "am": "a.m", "pm": "p.m", "metre": "meter", "lm": "lumen"}.get(w, w)
    return w if w in _UNITS or w in {"a.m", "p.m", "%"} else ""


def names(text: str) -> list[str]:
    """Product and proper names: runs of capitalized words and model codes ("Thermo T3", "Glow Bulb
    A19", "Eco+", "Tokyo"). A single capitalized word that opens the sentence is skipped ("How", "It")."""
    text = CITE.sub(" ", text)
    found = []
    for m in _NAME.finditer(text):
        name = m.group(0)
        first = not text[:m.start()].strip() or re.search(r"[.!?:]\s*$", text[:m.start()])
        if first and " " not in name and not re.search(r"\d", name):
            continue
        if name.lower() in _GENERIC or name.lower() in _MONTHS:
            continue
        found.append(name)
    return found


def topic_words(question: str) -> set[str]:
    """Content words of the question that are not names or generic question words ("battery", "life" in
    "What is the battery life of the Cam C1 camera?")."""
    named = {s_stem(w) for n in names(question) for w in _WORD.findall(n.lower())}
    return {s_stem(w) for w in _WORD.findall(question.lower())
            if w not in _GENERIC and s_stem(w) not in named and not w.isdigit() and len(w) > 2}


def _mentions(vocab: set[str], name: str) -> bool:
    """Every word of ``name`` is in ``vocab`` (plurals folded: "Saturdays" is in "... Saturday ...")."""
    return all(t in vocab or s_stem(t) in vocab for t in re.findall(r"[a-z0-9+]+", name.lower()))


def _covers(topics: set[str], words: set[str]) -> bool:
    """``words`` hold at least half of the question's topic words (any, when it has none)."""
    return len(topics & words) >= (len(topics) + 1) // 2


@dataclass
class Passage:
    """A passage's text prepared for checks: its words, its sentences (with the chunk's headings, which
    say what a list line is about) and each sentence's words and quantities."""

    text: str
    headings: str = ""
    vocab: set[str] = field(init=False)
    sentences: list[tuple[str, set[str], list[tuple[str, str]]]] = field(init=False)

    def __post_init__(self):
        self.vocab = set(content_words(self.text + " " + self.headings)) | {
            w for w in re.findall(r"[a-z0-9+]+", (self.text + " " + self.headings).lower())}
        self.sentences = [(s, set(content_words(s)) | set(re.findall(r"[a-z0-9+]+", s.lower())), quantities(s))
                          for s in split_sentences(self.text)]
        self._qs = {q for _, _, qs in self.sentences for q in qs}

    def has_name(self, name: str) -> bool:
        return _mentions(self.vocab, name)

    def about(self, q: tuple[str, str]) -> set[str]:
        """Words of the passage sentences that state quantity ``q``, plus the headings."""
        value, unit = q
        out = set(content_words(self.headings))
        for _, toks, qs in self.sentences:
            if any(v == value and (u == unit or not unit or not u) for v, u in qs):
                out |= toks
        return out

    def has_quantity(self, q: tuple[str, str]) -> bool:
        value, unit = q
        return any(v == value and (u == unit or not unit or not u) for v, u in self._qs)




def contradiction(q: tuple[str, str], subject: list[str], topics: set[str], passages: list[Passage]) -> str | None:
    """The passage sentence that best matches what is asked (the subject's names count most, then the
    question's topic words, with the sentence's headings) among those of all ``passages`` stating a
    quantity with ``q``'s unit, when it gives another value; else None. "Thermo T3 thermostat: 3 years"
    answers the Thermo T3's warranty, so "1 year" contradicts it although "1 year" is in the passage
    (for the Glow Bulb); a sentence that escapes into another passage is caught the same way."""
    value, unit = q
    if not unit:
        return None
    scored = []
    for p in passages:
        head = set(content_words(p.headings))
        for s, toks, qs in p.sentences:
            if any(u == unit for _, u in qs):
                score = 2 * sum(_mentions(toks | head, n) for n in subject) + len(topics & (toks | head))
                scored.append((score, any(v == value for v, _ in qs), s))
    best = max((score for score, _, _ in scored), default=0)
    top = [(has, s) for score, has, s in scored if score == best]
    return None if best == 0 or any(has for has, _ in top) else top[0][1]


@dataclass
class SentenceCheck:
    """The verdict on one answer sentence: ``passage`` is the 1-based passage that supports it (None when
    withdrawn); ``reason`` says why it was withdrawn."""

    text: str
    passage: int | None
    reason: str | None = None
    cited: bool = False


def check_sentence(sentence: str, question: str, passages: list[Passage], *, min_support: float = 0.5
                   ) -> SentenceCheck:
    """Check one answer sentence; its citation markers pick the passage, else the best passage wins."""
    cited = [int(x) for m in CITE.finditer(sentence) for x in re.split(r"[,;]", m.group(1))]
    cited = [n for n in dict.fromkeys(cited) if 1 <= n <= len(passages)]
    body = CITE.sub(" ", sentence).strip()
    if not content_words(body):
        return SentenceCheck(sentence, None, None)  # no content ("Sure!"): nothing to check, nothing to cite
    subject, topics = names(body) or names(question), topic_words(question)
    for q in quantities(body):
        if (bad := contradiction(q, subject, topics, passages)) is not None:
            return SentenceCheck(sentence, None, f"contradicts the passages: {' '.join(q)} vs \"{bad[:80]}\"")
    order = cited + sorted((n for n in range(1, len(passages) + 1) if n not in cited),
                           key=lambda n: -len(set(content_words(body)) & passages[n - 1].vocab))
    first_reason = None
    for n in order:
        reason = _problem(body, question, passages[n - 1], min_support)
        if reason is None:
            return SentenceCheck(sentence, n, None, cited=n in cited)
        if first_reason is None or (cited and n == cited[0]):
            first_reason = first_reason if (cited and n != cited[0]) else reason
    return SentenceCheck(sentence, None, first_reason or "unsupported")


def _problem(body: str, question: str, p: Passage, min_support: float) -> str | None:
    own = names(body)
    ws = content_words(body)
    topics = topic_words(question)
    for q in quantities(body):
        shown = f"{q[0]}{' ' + q[1] if q[1] else ''}"
        if not p.has_quantity(q):
            return f"{shown} is not in the passage"
        if not _covers(topics, p.about(q)):  # "2 years" of a warranty is no battery life
            return f"the passage gives {shown} for something else"
    for n in own:
        if not p.has_name(n):
            return f"{n} is not in the passage"
    said = set(ws) & topics
    missing_topic = [w for w in said if w not in p.vocab]
    if 2 * len(missing_topic) > len(said):  # "facial recognition" where the passage has neither word
        return f"the passage does not mention {', '.join(sorted(missing_topic))}"
    if ws and sum(w in p.vocab for w in ws) / len(ws) < min_support:
        return "too few of its words are in the passage"
    return None


_ASKS_QUANTITY = re.compile(
    r"^\s*(?:how (?:many|much|long|far|quickly|soon|often|old)|(?:until )?when|by when|within how)\b"
    r"|\b(?:price|cost|fee|discount|age|voltage|percentage|value|amount|minimum|maximum|how many|how much|how long)\b",
    re.I)
_FILLER = frozenset(["question", "answer", "passage", "passages", "following", "information", "ask", "asked",
                     "according", "provided", "mentioned"])


def asks_quantity(question: str) -> bool:
    """The question asks for a number, price, duration or date ("How long ...", "What fee ...")."""
    return bool(_ASKS_QUANTITY.search(question))


def answers(sentence: str, question: str) -> bool:
    """The sentence could be an answer: it is about what is asked (one of the question's topic words: "The
    Doorbell D1 is rated for outdoor use" does not answer whether it has facial recognition), it says
    something the question did not (not "It is a question about how many days ..."), and it states a
    quantity when the question asks for one."""
    said = content_words(CITE.sub(" ", sentence))
    topics = topic_words(question)
    if topics and not topics & set(said):
        return False
    has_quantity = bool(set(quantities(sentence)) - set(quantities(question)))  # not the question's own "30 days"
    if asks_quantity(question) and not has_quantity:
        return False
    asked = set(content_words(question)) | _FILLER
    return has_quantity or any(w not in asked for w in said)


def extractive_answer(question: str, passages: list[Passage], *, top: int = 4, max_sentences: int = 2
                      ) -> tuple[str, int] | None:
    """The sentences of one of the ``top`` passages that best match the question, as a quote, with the
    1-based passage number. A sentence qualifies when its passage names everything the question names,
    it (with its headings) holds at least half of the question's topic words, and it :func:`answers`.

    Returns:
        ``(quoted text ending in "[n]", n)``, or None when no sentence qualifies: then the passages do not
        hold the answer.
    """
    qnames = names(question)
    topics = topic_words(question)
    best: tuple[float, int, list[str]] | None = None
    for n, p in enumerate(passages[:top], start=1):
        if not all(p.has_name(q) for q in qnames):
            continue
        head = set(content_words(p.headings))
        scored = []  # (score, position, sentence)
        for i, (s, toks, _) in enumerate(p.sentences):
            ctx = toks | head
            if not topics & ctx or not _covers(topics, ctx) or not answers(s, question):
                continue
            named = sum(_mentions(toks, q) for q in qnames)
            scored.append((len(topics & ctx) + 0.5 * named + 0.1 * len(topics & toks) - 0.001 * len(s), i, s))
        if not scored:
            continue
        scored.sort(key=lambda t: -t[0])
        top_score = scored[0][0] - 0.01 * n  # ties go to the better-ranked passage
        pick = sorted((i, s) for score, i, s in scored[:max_sentences] if score >= scored[0][0] - 0.5)
        if best is None or top_score > best[0]:
            best = (top_score, n, [s for _, s in pick])
    if best is None:
        return None
    _, n, pick = best
    pieces = [s.lstrip("-*• ").strip() for s in pick]
    return " ".join(f"\u201c{s}\u201d" for s in pieces) + f" [{n}]", n
