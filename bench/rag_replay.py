"""``phikit eval rag`` with the model's replies recorded once and replayed, so that two versions of the
checking pipeline (retrieval, sentence checks, fallback, abstention) are compared on exactly the same
model output, and the comparison costs one model pass instead of one per version.

    # run the model once (greedy, 96 new tokens, as phikit eval rag) and score the current pipeline
    .venv/bin/python bench/rag_replay.py --kb KB --record docs/eval-rag-replies.json --out after.json
    # score another version of the pipeline (e.g. a checkout of the previous commit) on the same replies
    .venv/bin/python bench/rag_replay.py --kb KB --replay docs/eval-rag-replies.json --src OLD/src --out before.json
    .venv/bin/python bench/rag_eval_compare.py before.json after.json --kb KB

Recording keeps the model's whole reply (generation is not stopped early); a replay streams it back in
small pieces and honours the pipeline's cancel event, as the engine does. Greedy llama.cpp output is what
is recorded, so a replay equals a live run up to llama.cpp's own run-to-run noise on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QA = ROOT / "examples" / "support-bot" / "qa.jsonl"
_QUESTION = re.compile(r"\nQuestion: (.*)\nAnswer from the passages", re.S)


class Replayed:
    """A stand-in :class:`phikit.LLM`: grounded calls run phikit's pipeline; the model calls inside it are
    answered from ``replies`` (``{question: {text, finish_reason, prompt_tokens, completion_tokens}}``), or,
    with ``llm``, generated, recorded and then replayed."""

    def __init__(self, replies: dict, llm=None, model: str = "recorded"):
        self.replies, self.llm = replies, llm
        self.model = llm.model if llm else model
        self.backend = llm.backend if llm else "replay"

    def chat(self, messages, stream: bool = False, kb=None, **kw):
        from phikit.rag.grounded import grounded_chat

        if kb is not None:
            return grounded_chat(self, messages, kb, stream=stream, **kw)
        question = _QUESTION.search(messages[-1]["content"]).group(1)
        if question not in self.replies:
            if self.llm is None:
                raise SystemExit(f"no recorded reply for {question!r}: record with --record first")
            params = {k: v for k, v in kw.items() if k not in ("cancel", "cot")}
            res = self.llm.chat(messages, **params)
            self.replies[question] = {"text": res.text, "finish_reason": res.finish_reason,
                                      "prompt_tokens": res.usage.prompt_tokens,
                                      "completion_tokens": res.usage.completion_tokens}
        return self._play(self.replies[question], kw.get("cancel"))

    @staticmethod
    def _play(rec: dict, cancel):
        from phikit.engines import Done, TextDelta, Usage

        text, sent = rec["text"], ""
        for i in range(0, len(text), 4):  # about a token at a time
            if cancel is not None and cancel.is_set():
                yield Done("cancelled", Usage(rec["prompt_tokens"], len(sent) // 4), 0.0, 0.0, sent)
                return
            sent += text[i:i + 4]
            yield TextDelta(text[i:i + 4])
        yield Done(rec["finish_reason"], Usage(rec["prompt_tokens"], rec["completion_tokens"]), 0.0, 0.0, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kb", required=True)
    ap.add_argument("--qa", default=str(QA))
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", help="run the model and write its replies here (JSON)")
    group.add_argument("--replay", help="replies recorded with --record")
    ap.add_argument("--src", default=str(ROOT / "src"), help="the phikit source tree to score")
    ap.add_argument("--out", required=True, help="the eval report (as phikit eval rag --out)")
    args = ap.parse_args()
    sys.path.insert(0, args.src)
    from phikit.rag.eval import evaluate, load_qa

    if args.record:
        import phikit

        llm = Replayed({}, phikit.load())
    else:
        llm = Replayed(json.loads(Path(args.replay).read_text()))
    report = evaluate(load_qa(args.qa), args.kb, llm, k=4, max_new_tokens=96, progress=sys.stderr.isatty())
    if args.record:
        Path(args.record).write_text(json.dumps(llm.replies, indent=1, ensure_ascii=False) + "\n")
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k not in ("rows", "calibration")}))


if __name__ == "__main__":
    main()
