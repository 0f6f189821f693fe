// The console's only script: the playground (streamed answers, RAG sources, ratings).
// Written for the page's CSP (script-src 'self'): no inline code, no eval.
"use strict";

(function () {
  const form = document.getElementById("playground");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  let requestId = null;

  function headersLine(response) {
    const parts = ["x-cache", "x-cache-kind", "x-gateway-overhead-ms", "x-request-id"]
      .filter((name) => response.headers.get(name) !== null)
      .map((name) => name + ": " + response.headers.get(name));
    return parts.join(" · ");
  }

  function messages() {
    const list = [];
    const system = $("pg-system").value.trim();
    if (system) list.push({ role: "system", content: system });
    list.push({ role: "user", content: $("pg-message").value });
    return list;
  }

  function showError(status, body) {
    let message = body;
    try { message = JSON.parse(body).error.message; } catch (e) { /* not JSON */ }
    $("pg-answer").textContent = "Error " + status + ": " + message;
  }

  async function readStream(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        appendEvent(event);
      }
    }
  }

  function appendEvent(event) {
    for (const line of event.split("\n")) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      const choice = (chunk.choices || [])[0];
      const text = choice && choice.delta && choice.delta.content;
      if (text) $("pg-answer").textContent += text;
    }
  }

  function showSources(sources) {
    const list = $("pg-sources");
    list.replaceChildren();
    for (const source of sources) {
      const item = document.createElement("li");
      item.textContent = source.title + " (" + source.path + ", score " +
        source.score.toFixed(2) + "): " + source.text.slice(0, 200);
      list.appendChild(item);
    }
  }

  async function ask(key) {
    const rag = $("pg-rag") && $("pg-rag").checked;
    const common = {
      messages: messages(),
      model: $("pg-model").value,
      temperature: Number($("pg-temperature").value),
      max_tokens: Number($("pg-max-tokens").value),
    };
    const body = rag ? { ...common, collection: $("pg-collection").value }
                     : { ...common, stream: true };
    return fetch(rag ? "/v1/rag/chat" : "/v1/chat/completions", {
      method: "POST",
      headers: { "authorization": "Bearer " + key, "content-type": "application/json" },
      body: JSON.stringify(body),
    }).then((response) => ({ response, rag }));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("pg-answer").textContent = "";
    $("pg-sources").replaceChildren();
    $("pg-feedback").textContent = "";
    $("pg-up").disabled = $("pg-down").disabled = true;
    const { response, rag } = await ask($("pg-key").value);
    $("pg-headers").textContent = headersLine(response);
    requestId = response.headers.get("x-request-id");
    if (!response.ok) return showError(response.status, await response.text());
    if (rag) {
      const answer = await response.json();
      $("pg-answer").textContent = answer.answer;
      showSources(answer.sources || []);
    } else {
      await readStream(response);
    }
    $("pg-up").disabled = $("pg-down").disabled = requestId === null;
  });

  async function rate(rating) {
    const response = await fetch("/v1/feedback", {
      method: "POST",
      headers: { "authorization": "Bearer " + $("pg-key").value,
                 "content-type": "application/json" },
      body: JSON.stringify({ request_id: requestId, rating: rating }),
    });
    $("pg-feedback").textContent = response.ok ? "Thanks, rated " + rating + "."
      : "Rating not recorded (" + response.status + ").";
  }

  $("pg-up").addEventListener("click", () => rate("up"));
  $("pg-down").addEventListener("click", () => rate("down"));
})();
