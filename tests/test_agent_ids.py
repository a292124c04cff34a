"""Tool arguments come from the conversation: an identifier the user never wrote is not looked up; identical
calls are not repeated; the loop always ends with an answer. A scripted model for the guard itself, the
embedded model for "Where is order Z9999?"."""

from __future__ import annotations

import json

import pytest

import phikit
import phikit.tools.audit
from phikit.agent import AgentDone, ToolResult, agent_chat, run_agent
from phikit.engines import TextDelta
from phikit.tools.builtins import DEMO_ORDERS, create_demo_db, get_order_status
from phikit.tools.provenance import appears_in, identifier_args, is_identifier, missing_identifiers
from test_agent import scripted


def order_call(order_id: str) -> str:
    return "functools" + json.dumps([{"name": "lookup", "arguments": {"order_id": order_id}}])


class Ran:
    """The order ids a tool really ran with, written to a file: tools run in a child process."""

    def __init__(self, path):
        self.path = path
        path.write_text("")

    def __eq__(self, other):
        return self.path.read_text().split() == list(other)

    def __getitem__(self, i):
        return self.path.read_text().split()[i]

    def __repr__(self):
        return repr(self.path.read_text().split())


def make_lookup(ran: Ran):
    @phikit.tool
    def lookup(order_id: str) -> dict:
        """Look an order up.

        Args:
            order_id: the order id the customer gave.
        """
        with open(ran.path, "a") as f:
            f.write(order_id + "\n")
        return {"order_id": order_id, "status": "shipped"}

    return lookup


def test_which_arguments_are_identifiers():
    assert identifier_args(get_order_status.parameters) == ["order_id"]
    assert identifier_args(phikit.tools.as_tool("calculate").parameters) == []
    assert identifier_args(phikit.tools.as_tool("get_weather").parameters) == []
    for name in ("id", "order_id", "customer_ids", "email", "account_number", "iban", "tracking_no", "invoice_ref"):
        assert is_identifier(name, {"type": "string"}), name
    for name in ("city", "expression", "query", "unit", "valid", "amount", "number"):
        assert not is_identifier(name, {"type": "string"}), name
    assert is_identifier("recipient", {"type": "string", "format": "email"})
    assert is_identifier("code", {"type": "string", "x-phikit-identifier": True})
    assert not is_identifier("order_id", {"type": "string", "x-phikit-identifier": False})
    assert not is_identifier("order_id", {"type": "boolean"})


def test_identifier_marks_stay_out_of_what_the_model_sees():
    @phikit.tool(identifiers=["ref"])
    def find(ref: str, user_id: str) -> str:
        """Find a record.

        Args:
            ref: the record reference.
            user_id: whose record.
        """
        return ref

    assert find.identifiers == ["ref"]  # explicit marks replace the name rule (user_id is not marked)
    assert "x-phikit" not in json.dumps(find.plain()) and "x-phikit" not in json.dumps(find.to_openai())
    with pytest.raises(phikit.tools.ToolDefinitionError, match="unknown argument"):
        phikit.tool(identifiers=["nope"])(find.fn)


def test_values_match_whole_words_ignoring_case_and_separators():
    said = ["Where is order a-1001? My e-mail is Bob.Chen@example.com, phone 555 010 2000."]
    for value in ("A1001", "a-1001", "bob.chen@example.com", "5550102000", "555-010-2000"):
        assert appears_in(value, said), value
    for value in ("A100", "1001", "A10011", "Z9999", "bob@example.com", "55501", "5550"):
        assert not appears_in(value, said), value
    params = get_order_status.parameters
    assert missing_identifiers(params, {"order_id": "A1001"}, ["Where is order Z9999?"]) == [("order_id", "A1001")]
    assert missing_identifiers(params, {"order_id": "z9999"}, ["Where is order Z9999?"]) == []


def test_an_id_the_user_never_gave_is_not_looked_up_and_the_user_is_asked(tmp_path):
    ran = Ran(tmp_path / "ran.txt")
    lookup = make_lookup(ran)
    log = tmp_path / "audit.jsonl"
    llm = scripted(order_call("A1001"), "Your order A1001 has shipped.")
    events = list(run_agent(llm, "Where is order Z9999?", [lookup],
                            audit_log=phikit.tools.audit.AuditLog(log, key="k")))
    done = events[-1]
    assert ran == []  # the guessed id was never executed
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.status == "blocked" and "A1001" in result.content and "order id" in result.content
    assert isinstance(done, AgentDone) and done.finish_reason == "stop"
    assert "order id" in done.text
    assert "shipped" not in done.text  # the model's second reply (a made-up answer) is never asked for
    assert llm.engine.replies == ["Your order A1001 has shipped."]
    assert done.messages[-1] == {"role": "assistant", "content": done.text}
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == done.text


def test_an_id_the_user_gave_runs_and_earlier_user_turns_count(tmp_path):
    ran = Ran(tmp_path / "ran.txt")
    lookup = make_lookup(ran)
    r = agent_chat(scripted(order_call("z9999"), "It has shipped."), "Where is order Z9999?", [lookup])
    assert ran == ["z9999"] and r.text == "It has shipped."
    history = [{"role": "user", "content": "My order is A1002."}, {"role": "assistant", "content": "Noted."},
               {"role": "user", "content": "Where is it?"}]
    r = agent_chat(scripted(order_call("A1002"), "Processing."), history, [lookup])
    assert ran[-1] == "A1002"
    # an id that only a tool result, a repair turn or the system prompt mentions is not the user's
    system = [{"role": "system", "content": "Example: order A1003."}, {"role": "user", "content": "Where is my order?"}]
    r = agent_chat(scripted(order_call("A1003"), "x"), system, [lookup])
    assert ran[-1] == "A1002" and r.extra["tool_results"][0]["status"] == "blocked"
    # the check can be switched off (an API caller that vouches for its own arguments)
    r = agent_chat(scripted(order_call("A1003"), "ok"), system, [lookup], check_identifiers=False)
    assert ran[-1] == "A1003"


def test_an_identical_call_is_not_repeated_and_the_run_ends_with_an_answer(tmp_path):
    ran = Ran(tmp_path / "ran.txt")
    lookup = make_lookup(ran)
    call = order_call("A1002")
    llm = scripted(call, call, "It is shipped.")
    events = list(run_agent(llm, "Where is A1002?", [lookup]))
    done = events[-1]
    assert ran == ["A1002"]
    statuses = [r["status"] for r in done.tool_results]
    assert statuses == ["ok", "repeated"]  # the repeat is answered with the first result, then text is forced
    assert "already made" in done.tool_results[1]["content"] and "shipped" in done.tool_results[1]["content"]
    assert done.text == "It is shipped." and done.steps == 3
    # a model that still writes the call where text is required: the answer is the earlier result
    done = list(run_agent(scripted(call, call, call, call), "Where is A1002?", [lookup]))[-1]
    assert ran == ["A1002", "A1002"] and done.steps == 3 and "shipped" in done.text and "functools" not in done.text


@pytest.mark.parametrize("replies", [
    [order_call("A1002"), ""],  # an empty answer
    [order_call("A1002"), "   \n"],
    [order_call("A1002"), order_call("A1003")[:-1]],  # a broken call where text was required
])
def test_an_empty_final_answer_is_replaced(replies, tmp_path):
    ran = Ran(tmp_path / "ran.txt")
    done = list(run_agent(scripted(*replies), "Where is A1002?", [make_lookup(ran)], max_steps=2))[-1]
    assert ran == ["A1002"] and done.text.strip() and "shipped" in done.text and "functools" not in done.text


def test_a_run_that_only_calls_tools_still_answers(tmp_path):
    ran = Ran(tmp_path / "ran.txt")
    calls = [order_call(f"A100{i}") for i in range(1, 4)]
    user = "Check A1001, A1002 and A1003."
    done = list(run_agent(scripted(*calls), user, [make_lookup(ran)], max_steps=3))[-1]
    # turn 3 is answer-only; its text is a call, so the answer falls back to the last result
    assert ran == ["A1001", "A1002"] and done.text.strip() and "A1002" in done.text


# --- the embedded model: "Where is order Z9999?" ------------------------------------------------------------

PHRASINGS = [
    "Where is order Z9999?",
    "Where is my order Z9999?",
    "Can you check the status of order Z9999 for me?",
    "Hi, what's the status of my order number Z9999?",
    "Has order Z9999 shipped yet?",
]


def test_where_is_order_z9999_never_runs_another_order(llama_llm, tmp_path, monkeypatch):
    db = create_demo_db(tmp_path / "orders.db")
    monkeypatch.setenv("PHIKIT_ORDERS_DB", str(db))
    known = {row[0] for row in DEMO_ORDERS}
    executed = []
    for question in PHRASINGS:
        events = list(run_agent(llama_llm, question, ["get_order_status"], tool_choice="required",
                                temperature=0, max_new_tokens=48))
        done = events[-1]
        assert isinstance(done, AgentDone) and done.text.strip()
        for call, result in zip(done.tool_calls, done.tool_results):
            oid = json.loads(call["function"]["arguments"])["order_id"]
            if result["status"] not in ("blocked", "repeated"):
                executed.append(oid)
                assert oid.strip().upper() == "Z9999", (question, oid)
            else:
                assert "order id" in done.text or result["status"] == "repeated"
        if any(r["status"] == "ok" for r in done.tool_results):  # Z9999 was looked up: it does not exist
            assert not any(k in done.text for k in known), done.text
    print(f"executed: {executed}")
