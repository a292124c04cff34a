// phikit's chat page: plain JavaScript, no build step. It talks to the server's own OpenAI API
// (/v1/chat/completions with stream=true) and renders tokens, tool calls and results, citations,
// folded chain-of-thought reasoning and errors in plain words.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log");
const history = [];
let controller = null;
let serverKbs = [];

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Markdown as models write it, rendered safely: ``` fences become <pre><code>, `spans` become <code>, the
// rest stays text. Built from DOM nodes and textContent only, so nothing the model writes is parsed as HTML.
// A fence still open (the answer is streaming) shows as code up to the end.
function renderMarkdown(node, text) {
  const out = [];
  let prose = [];
  let code = null;
  let lang = "";
  const flushProse = () => {
    if (!prose.length) return;
    const parts = prose.join("\n").split(/`([^`\n]+)`/);  // odd indices: inline code
    parts.forEach((part, i) => {
      if (i % 2) out.push(el("code", null, part));
      else if (part) out.push(document.createTextNode(part));
    });
    prose = [];
  };
  const flushCode = () => {
    const pre = el("pre", "code");
    pre.append(el("code", lang ? "language-" + lang : null, code.join("\n")));
    out.push(pre);
    code = null;
  };
  for (const line of text.split("\n")) {
    const fence = /^\s*```\s*([\w+#.-]*)\s*$/.exec(line);
    if (code === null && fence) {
      flushProse();
      code = [];
      lang = fence[1];
    } else if (code !== null && fence && !fence[1]) {
      flushCode();
    } else if (code !== null) {
      code.push(line);
    } else {
      prose.push(line);
    }
  }
  if (code !== null) flushCode();
  flushProse();
  node.replaceChildren(...out);
}

function apiKey() {
  return $("api-key").value || localStorage.getItem("phikit-api-key") || "";
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = apiKey();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

// Errors in plain words: what happened and what to do.
function plainError(status, message, retryAfter) {
  if (status === 401) {
    $("key-label").hidden = false;
    return "This server needs an API key. Enter it in the API key box and send again.";
  }
  if (status === 429) return `The server is busy with other requests. Try again in ${retryAfter || "a few"} seconds.`;
  if (status === 504) return "The answer took too long and was stopped. Try a shorter question or fewer max tokens.";
  if (status === 404) return "The server does not have that model: " + (message || "");
  if (status >= 500) return "The server hit an internal error: " + (message || "see its log") + ".";
  return message ? "The request was refused: " + message : `The request failed (HTTP ${status}).`;
}

function showError(text) {
  const box = el("div", "error", text);
  box.setAttribute("role", "alert");
  log.append(box);
  box.scrollIntoView({ block: "end" });
}

async function loadInfo() {
  try {
    const info = await (await fetch("/health")).json();
    $("model").textContent = `${info.model} · ${info.backend}`;
    $("queue").textContent = info.batching ? "" : "requests are queued one at a time";
    serverKbs = info.knowledge_bases || [];
    if ((info.tools || []).length) {
      $("tools-label").hidden = false;
      $("tools-names").textContent = `(${info.tools.join(", ")})`;
    }
    if (serverKbs.length) {
      $("kb-label").hidden = false;
      $("kb-name").textContent = `(${serverKbs[0]})`;
    }
  } catch (e) {
    $("model").textContent = "server unreachable";
    showError("Cannot reach the phikit server. Is it still running?");
  }
}

function addMessage(role, text) {
  const msg = el("article", "msg " + role);
  msg.append(el("div", "who", role === "user" ? "You" : "Assistant"));
  const body = el("div", "body", text || "");
  msg.append(body);
  log.append(msg);
  msg.scrollIntoView({ block: "end" });
  return msg;
}

function renderToolCall(msg, call, result) {
  const box = el("details", "tool");
  box.open = true;
  const fn = call.function || call;
  let args = fn.arguments;
  try { args = JSON.stringify(JSON.parse(args), null, 1); } catch (e) { /* keep as sent */ }
  box.append(el("summary", null, `Tool call: ${fn.name}`));
  box.append(el("pre", "args", args));
  if (result !== undefined) box.append(el("pre", "result", "Result: " + result));
  msg.querySelector(".body").before(box);
  return box;
}

function renderEvent(msg, ev) {
  const type = ev.type || "";
  if (type === "Checking") {  // a grounded answer: only sentences checked against the sources will follow
    if (!msg.querySelector(".checking")) msg.append(el("div", "note checking", "checking sources…"));
    return;
  }
  if (type === "Citations") return renderCitations(msg, ev);
  if (/call/i.test(type) && ev.call) return renderToolCall(msg, ev.call);
  if (/result/i.test(type)) {
    const text = typeof ev.result === "string" ? ev.result : JSON.stringify(ev.result ?? ev.content ?? ev.output ?? ev);
    const boxes = msg.querySelectorAll("details.tool");
    const last = boxes[boxes.length - 1];
    if (last && !last.querySelector(".result")) last.append(el("pre", "result", "Result: " + text));
    else renderToolCall(msg, { name: ev.name || "tool", arguments: "" }, text);
  }
}

function renderCitations(msg, info) {
  msg.querySelector(".checking")?.remove();
  const old = msg.querySelector(".citations");
  if (old) old.remove();
  const cites = info.citations || [];
  if (!cites.length) {
    if (info.abstained) msg.append(el("div", "note", "No answer in the knowledge base."));
    return;
  }
  const box = el("section", "citations");
  box.append(el("h3", null, "Sources"));
  const list = el("ol");
  for (const c of cites) {
    const item = el("li", "citation");
    const where = [c.source ? c.source.split("/").pop() : "", c.heading].filter(Boolean).join(" › ");
    item.append(el("span", "cite-n", `[${c.n}]`), el("span", "cite-src", " " + where + (c.page ? `, p. ${c.page}` : "")));
    item.append(el("blockquote", "snippet", c.snippet || ""));
    list.append(item);
  }
  box.append(list);
  msg.append(box);
}

// Reasoning steps (delta.reasoning_content, then the final phikit.reasoning) in one folded box above the answer.
function showReasoning(msg, text) {
  let fold = msg.querySelector("details.reasoning");
  if (!fold) {
    fold = el("details", "reasoning");
    fold.append(el("summary", null, "Reasoning"), el("pre", null, ""));
    msg.querySelector(".body").before(fold);
  }
  fold.querySelector("pre").textContent = text;
}

function finishMessage(msg, extras, usage) {
  msg.querySelector(".checking")?.remove();
  const body = msg.querySelector(".body");
  if (extras.reasoning && $("cot").checked) {
    showReasoning(msg, extras.reasoning);
    if (extras.answer) renderMarkdown(body, extras.answer);
    else if (extras.note) msg.append(el("div", "note", "Note: " + extras.note));
  }
  if (extras.citations) renderCitations(msg, extras);
  const stats = [];
  if (usage) stats.push(`${usage.prompt_tokens}+${usage.completion_tokens} tokens`);
  if (extras.ttft_ms !== undefined) stats.push(`first token ${Math.round(extras.ttft_ms)} ms`);
  if (extras.tokens_per_s) stats.push(`${extras.tokens_per_s} tok/s`);
  if (stats.length) msg.append(el("div", "stats", stats.join(" · ")));
}

async function send(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const msg = addMessage("assistant", "");
  msg.classList.add("streaming");
  const body = msg.querySelector(".body");
  const request = {
    messages: history,
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    phikit: { cot: $("cot").checked },
  };
  if (serverKbs.length) request.phikit.kb = $("kb").checked;
  if ($("tools").checked) request.phikit.execute_tools = true;
  controller = new AbortController();
  $("send").hidden = true;
  $("stop").hidden = false;
  let answer = "";
  let reasoning = "";
  let extras = {};
  let usage = null;
  const calls = [];
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(request), signal: controller.signal,
    });
    if (!resp.ok) {
      let message = "";
      try { message = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
      throw Object.assign(new Error(message), { status: resp.status, retryAfter: resp.headers.get("Retry-After") });
    }
    if (apiKey()) localStorage.setItem("phikit-api-key", apiKey());
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw Object.assign(new Error(chunk.error.message), { status: 500, inStream: true });
          if (chunk.usage) usage = chunk.usage;
          if (chunk.phikit && chunk.phikit.event) renderEvent(msg, chunk.phikit.event);
          const choice = (chunk.choices || [])[0];
          if (!choice) continue;
          if (choice.delta.reasoning_content) {
            reasoning += choice.delta.reasoning_content;
            showReasoning(msg, reasoning);
          }
          if (choice.delta.content) {
            answer += choice.delta.content;
            renderMarkdown(body, answer);
            msg.scrollIntoView({ block: "end" });
          }
          for (const call of choice.delta.tool_calls || []) {
            calls.push(call);
            renderToolCall(msg, call);
          }
          if (choice.finish_reason) extras = chunk.phikit || {};
        }
      }
    }
    if (!answer && !calls.length) body.textContent = "(no text)";
    finishMessage(msg, extras, usage);
    const turn = { role: "assistant", content: extras.answer && $("cot").checked ? extras.answer : answer };
    if (calls.length) turn.tool_calls = calls.map(({ index, ...c }) => c);
    history.push(turn);
  } catch (err) {
    history.pop();
    if (err.name === "AbortError") {
      msg.append(el("div", "note", "Stopped."));
    } else if (err.status) {
      if (!answer) msg.remove();
      showError(err.inStream ? "The answer was cut off: " + err.message : plainError(err.status, err.message, err.retryAfter));
    } else {
      if (!answer) msg.remove();
      showError("Cannot reach the phikit server. Is it still running?");
    }
  } finally {
    msg.classList.remove("streaming");
    controller = null;
    $("send").hidden = false;
    $("stop").hidden = true;
  }
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => {
  history.length = 0;
  log.replaceChildren();
});
loadInfo();
