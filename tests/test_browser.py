"""The web chat page in a real headless Chromium (Debian's ``chromium`` package, driven by Playwright).

Skips cleanly when /usr/bin/chromium is absent (``apt-get install -y chromium``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[1] / "docs"
CORPUS_DIR = Path(__file__).resolve().parents[1] / "examples" / "support-bot" / "corpus"
CORPUS = CORPUS_DIR / "policies" / "returns-and-refunds.md"
QUESTION = "How many days do I have to return a Brightloom device?"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory):
    from phikit.rag.store import KnowledgeBase

    if not CORPUS.exists():
        pytest.skip(f"{CORPUS} is absent")
    path = tmp_path_factory.mktemp("kb") / "returns"
    KnowledgeBase.create(path).add([CORPUS_DIR / "faq", CORPUS])
    return path


@pytest.fixture(scope="module")
def server(kb_dir):
    import phikit
    from phikit.serve import create_app
    from phikit.serve.background import background

    llm = phikit.load("smollm2-135m", backend="llamacpp")
    with background(create_app(llm, kbs={"returns": str(kb_dir)})) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.set_default_timeout(120_000)
        page.goto(server)
        yield page
        browser.close()


def test_page_streams_an_answer_with_a_citation(page, tmp_path):
    page.wait_for_function("document.getElementById('model').textContent.includes('smollm2-135m')")
    assert "llamacpp" in page.inner_text("#model")
    assert page.is_visible("#kb-label")  # the server has a knowledge base, so the page offers it
    # Count the distinct texts the answer bubble shows while it streams.
    page.evaluate("""() => {
      window.__texts = new Set();
      new MutationObserver(() => {
        const b = document.querySelector('.msg.assistant.streaming .body');
        if (b && b.textContent) window.__texts.add(b.textContent);
      }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
    }""")
    page.fill("#max-tokens", "64")
    page.fill("#temperature", "0")
    page.fill("#prompt", QUESTION)
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant:not(.streaming) .stats")
    answer = page.inner_text(".msg.assistant .body")
    assert answer.strip() and answer != "(no text)"
    cite = page.locator(".citation").first
    cite.wait_for()
    assert "returns-and-refunds.md" in cite.inner_text()
    snippet = page.inner_text(".citation .snippet")
    assert len(snippet) > 20 and snippet.rstrip(".… ")[:60] in CORPUS.read_text()  # a verbatim excerpt
    # PHIKIT_SCREENSHOT=1 refreshes the screenshot in docs/; otherwise it goes to a temporary file.
    target = DOCS / "serve-chat.png" if os.environ.get("PHIKIT_SCREENSHOT") else tmp_path / "serve-chat.png"
    page.screenshot(path=str(target), full_page=False)
    assert target.stat().st_size > 10_000


def test_page_streams_tokens_as_they_come(page):
    """Without the knowledge base (grounded answers may be held back until their citations are checked)."""
    page.click("#clear")
    page.uncheck("#kb")
    page.fill("#max-tokens", "32")
    page.evaluate("window.__texts = new Set()")
    page.fill("#prompt", "Tell me a short story about a dragon.")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant:not(.streaming) .stats")
    assert page.evaluate("window.__texts.size") > 2  # the bubble grew token by token, not in one piece
    page.check("#kb")


def test_page_shows_errors_in_plain_words(page):
    page.fill("#max-tokens", "0")
    page.fill("#prompt", "Hello")
    page.press("#prompt", "Enter")
    error = page.locator(".error").last
    error.wait_for()
    text = error.inner_text()
    assert "The request was refused" in text and "max_tokens" in text
    page.fill("#max-tokens", "256")


def test_page_folds_cot_reasoning(page):
    page.click("#clear")
    page.check("#cot")
    page.uncheck("#kb")
    page.fill("#max-tokens", "60")
    page.fill("#prompt", "What is 2 + 3?")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant:not(.streaming) .stats")
    body = page.inner_text(".msg.assistant .body")
    folded = page.locator(".msg.assistant details.reasoning")
    assert folded.count() == 1 and not folded.evaluate("d => d.open")  # reasoning present, folded
    if "Note:" not in page.inner_text(".msg.assistant"):  # an Answer: line was found: only the answer shows
        assert "Answer:" not in body and body.strip()


def test_page_renders_code_as_code_and_model_text_never_as_html(page):
    """Fences and `spans` render as code; markup in the model's text stays text (nothing runs, no tags)."""
    got = page.evaluate("""() => {
      const d = document.createElement('div');
      renderMarkdown(d, 'Run `pip install x` then:\\n```python\\nprint("<b>hi</b>")\\n```\\n'
        + '<img src=x onerror="window.__pwned = 1"> done\\n```\\nstill streaming');
      return {
        fenced: [...d.querySelectorAll('pre code')].map(c => [c.className, c.textContent]),
        inline: [...d.querySelectorAll(':scope > code')].map(c => c.textContent),
        tags: d.querySelectorAll('img, b').length,
        text: d.textContent,
      };
    }""")
    assert got["fenced"] == [["language-python", 'print("<b>hi</b>")'], ["", "still streaming"]]
    assert got["inline"] == ["pip install x"]
    assert got["tags"] == 0 and '<img src=x onerror="window.__pwned = 1"> done' in got["text"]
    assert "```" not in got["text"]
    assert page.evaluate("window.__pwned") is None


def test_page_shows_tool_results_citations_and_reasoning_in_one_turn(page):
    """The support-bot turn on the page: KB + executed tools + CoT in one request. The order lookup runs on
    the server (its result is shown), the returns part is answered from the KB with a citation, and the
    reasoning is folded apart from the answer."""
    page.click("#clear")
    for box in ("#kb", "#tools", "#cot"):
        page.check(box)
    page.fill("#max-tokens", "160")
    page.fill("#prompt", "Where is order A1001, and how many days do I have to return a Brightloom device?")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant:not(.streaming) .stats", timeout=300_000)
    msg = page.locator(".msg.assistant").last
    assert msg.locator("details.tool").count() >= 1  # the get_order_status call and its result
    assert msg.locator(".citations").count() == 1
    assert msg.locator("details.reasoning").count() == 1
    for box in ("#tools", "#cot"):
        page.uncheck(box)
