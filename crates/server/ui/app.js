// prophetkv's page: documents, a question answered with reuse next to full
// prefill (both streamed), and what the reuse run recomputed. Plain DOM, no
// dependencies: the server embeds this file.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("prophetkv-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("prophetkv-key", keyInput.value);
  loadDocuments();
});

function headers() {
  const h = { "Content-Type": "application/json" };
  if (keyInput.value) h.Authorization = `Bearer ${keyInput.value}`;
  return h;
}

async function api(method, path, body) {
  const res = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error ? data.error.message : `${res.status}`);
  return data;
}

function showError(el, e) {
  el.textContent = e ? String(e.message || e) : "";
  el.hidden = !e;
}

// Tabs: click or arrow keys.
const tabs = [$("tab-ask"), $("tab-docs")];
function select(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  tab.focus();
}
tabs.forEach((t, i) => {
  t.addEventListener("click", () => select(t));
  t.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      select(tabs[(i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length]);
    }
  });
});

// Documents.
async function loadDocuments() {
  const tbody = $("doc-table").querySelector("tbody");
  const picks = $("doc-picks");
  try {
    const all = [];
    let after = null;
    for (;;) {
      const page = await api("GET", `/v1/documents?limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
      all.push(...page.data);
      if (!page.has_more) break;
      after = page.last_id;
    }
    tbody.replaceChildren(...all.map((d) => {
      const tr = document.createElement("tr");
      const cells = [d.id, String(d.tokens), d.status];
      for (const [i, text] of cells.entries()) {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 2) td.className = `status-${d.status}`;
        if (i === 2 && d.error) td.title = d.error;
        tr.append(td);
      }
      const td = document.createElement("td");
      const del = document.createElement("button");
      del.type = "button";
      del.textContent = "Delete";
      del.setAttribute("aria-label", `Delete ${d.id}`);
      del.addEventListener("click", async () => {
        try { await api("DELETE", `/v1/documents/${encodeURIComponent(d.id)}`); loadDocuments(); }
        catch (e) { showError($("docs-error"), e); }
      });
      td.append(del);
      tr.append(td);
      return tr;
    }));
    // New documents start picked; the user's unpicks are kept.
    const unpicked = new Set([...picks.querySelectorAll("input:not(:checked)")].map((i) => i.value));
    if (all.length === 0) {
      picks.innerHTML = '<p class="hint">No registered documents yet: add some in the Documents tab, or paste text below.</p>';
    } else {
      picks.replaceChildren(...all.map((d) => {
        const label = document.createElement("label");
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = d.id;
        box.checked = !unpicked.has(d.id);
        label.append(box, ` ${d.id}`);
        return label;
      }));
    }
    showError($("docs-error"), null);
    if (all.some((d) => d.status === "pending")) setTimeout(loadDocuments, 1000);
  } catch (e) {
    showError($("docs-error"), e);
  }
}

$("add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { text: $("doc-text").value };
  if ($("doc-id").value) body.id = $("doc-id").value;
  try {
    await api("POST", "/v1/documents", body);
    $("doc-text").value = "";
    $("doc-id").value = "";
    loadDocuments();
  } catch (err) {
    showError($("docs-error"), err);
  }
});

// Asking: one streamed chat request; calls `onText` per piece and resolves
// with the final `prophetkv` report.
async function streamChat(body, onText) {
  const res = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    throw new Error(data.error ? data.error.message : `${res.status}`);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let report = null;
  let first = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const choice = chunk.choices && chunk.choices[0];
        const delta = choice && choice.delta;
        if (delta && delta.content) onText(delta.content);
        const steps = choice && choice.logprobs && choice.logprobs.content;
        if (steps && steps.length && !first) first = steps[0];
        if (chunk.prophetkv) report = chunk.prophetkv;
      }
    }
  }
  return { report, first };
}

// The first token's most likely alternatives, as text.
function firstToken(step) {
  if (!step) return "";
  const alternatives = step.top_logprobs
    .map((t) => `${JSON.stringify(t.token)} ${Math.exp(t.logprob).toFixed(2)}`)
    .join(" · ");
  return `first token: ${alternatives}`;
}

function statsLine(r) {
  if (!r) return "";
  return `${r.recomputed_tokens} of ${r.context_tokens} tokens computed, ` +
    `${r.selected_tokens} of ${r.eligible_tokens} eligible recomputed · first token ${r.timeline.first_token_ms.toFixed(0)} ms`;
}

function drawTimeline(t) {
  const rows = [
    ["queued", 0, t.queued_ms],
    ["lookup", t.queued_ms, t.lookup_ms],
    ["probe", t.queued_ms + t.lookup_ms, t.probe_ms],
    ["recompute", t.queued_ms + t.lookup_ms + t.probe_ms, t.recompute_ms],
    ["first token", 0, t.first_token_ms],
    ["finished", 0, t.finished_ms],
  ];
  const end = Math.max(t.finished_ms, 1);
  $("timeline").replaceChildren(...rows.map(([name, start, ms]) => {
    const row = document.createElement("div");
    row.className = "tl-row";
    const label = document.createElement("span");
    label.textContent = name;
    const track = document.createElement("div");
    track.className = "tl-track";
    const bar = document.createElement("div");
    bar.className = "tl-bar";
    bar.style.left = `${(100 * start) / end}%`;
    bar.style.width = `${(100 * ms) / end}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "tl-ms";
    value.textContent = `${ms.toFixed(1)} ms`;
    row.append(label, track, value);
    return row;
  }));
  $("timeline-box").hidden = false;
}

function drawExplanation(explain) {
  // Shade by rank among the scored tokens, so that one outlier does not
  // wash out the rest.
  const sorted = explain.tokens.filter((t) => t.score !== undefined).map((t) => t.score).sort((a, b) => a - b);
  const rank = (score) => {
    let lo = 0, hi = sorted.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (sorted[mid] < score) lo = mid + 1; else hi = mid; }
    return sorted.length > 1 ? lo / (sorted.length - 1) : 1;
  };
  const context = $("context");
  const pieces = [];
  let lastDoc = null;
  for (const t of explain.tokens) {
    if (t.segment === "document" && t.document !== lastDoc) {
      const head = document.createElement("span");
      head.className = "doc-start";
      head.textContent = `document ${t.document + 1}`;
      pieces.push(head);
    }
    lastDoc = t.segment === "document" ? t.document : null;
    const span = document.createElement("span");
    span.className = `tok ${t.segment}${t.recomputed === "all_layers" && t.segment === "document" ? " recomputed" : ""}`;
    span.textContent = t.text;
    if (t.score !== undefined) {
      const w = rank(t.score) ** 3;
      span.style.background = `rgba(37, 86, 196, ${(0.5 * w).toFixed(3)})`;
      span.title = `score ${t.score.toFixed(4)}${t.recomputed !== "none" ? `, recomputed (${t.recomputed.replace("_", " ")})` : ""}`;
    }
    pieces.push(span);
  }
  context.replaceChildren(...pieces);
  $("doc-bars").replaceChildren(...explain.documents.map((d) => {
    const row = document.createElement("div");
    row.className = "bar";
    const label = document.createElement("span");
    label.textContent = `document ${d.index + 1}`;
    const track = document.createElement("div");
    track.className = "bar-track";
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.width = `${(100 * d.budget_share).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.textContent = d.eligible === 0
      ? "exact (first)"
      : `${d.recomputed} of ${d.eligible} (${(100 * d.budget_share).toFixed(0)}%)`;
    value.title = `${d.tokens} tokens, ${d.eligible} eligible, ${d.recomputed} recomputed: ` +
      `${(100 * d.budget_share).toFixed(0)}% of the budget`;
    row.append(label, track, value);
    return row;
  }));
  $("explain-box").hidden = false;
}

$("ask-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError($("ask-error"), null);
  const documents = [...$("doc-picks").querySelectorAll("input:checked")].map((i) => ({ id: i.value }));
  if ($("inline-doc").value.trim()) documents.push({ text: $("inline-doc").value });
  const strategy = $("strategy").value;
  const base = {
    messages: [{ role: "user", content: $("question").value }],
    max_tokens: Number($("max-tokens").value) || 32,
    temperature: 0,
    stream: true,
    logprobs: true,
    top_logprobs: 5,
    documents,
  };
  $("reuse-title").textContent = `${strategy} @ ${$("ratio").value}`;
  for (const id of ["answer-reuse", "answer-full", "stats-reuse", "stats-full", "first-reuse", "first-full"]) {
    $(id).textContent = "";
  }
  $("ask-button").disabled = true;
  try {
    // Full prefill first, then the reuse run (both use the same caches;
    // one at a time so that their timings do not share the machine).
    const full = await streamChat({ ...base, kv_reuse: { strategy: "full" } },
      (text) => { $("answer-full").textContent += text; });
    $("stats-full").textContent = statsLine(full.report);
    $("first-full").textContent = firstToken(full.first);
    const run = await streamChat({
      ...base,
      kv_reuse: { strategy, recompute_ratio: Number($("ratio").value) },
      prophetkv: { explain: true },
    }, (text) => { $("answer-reuse").textContent += text; });
    const reuse = run.report;
    $("stats-reuse").textContent = statsLine(reuse);
    $("first-reuse").textContent = firstToken(run.first);
    if (reuse) {
      drawTimeline(reuse.timeline);
      if (reuse.explain) drawExplanation(reuse.explain);
    }
  } catch (err) {
    showError($("ask-error"), err);
  } finally {
    $("ask-button").disabled = false;
  }
});

loadDocuments();
