"""The gallery page's stylesheet and script, inlined into index.html (report/gallery.py).

Kept as Python strings so that the page needs no package data at install time. The script
builds every card with textContent and setAttribute, never from markup: keys, prompts,
metadata and reasons are the users' (or an attacker's) text.
"""

from __future__ import annotations

from typing import Final

CSS: Final = """
:root{--bg:#f6f7f9;--panel:#fff;--ink:#1f2328;--muted:#656d76;--line:#d8dee4;
--frame:#eef0f3;--ok:#1a7f37;--cached:#0969da;--blocked:#9a6700;--failed:#cf222e;
--rejected:#6e7781;--open:#8250df;--accent:#f5c518;--shadow:0 1px 2px rgba(31,35,40,.06),
0 4px 12px rgba(31,35,40,.06)}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--panel:#161b22;--ink:#e6edf3;
--muted:#8d96a0;--line:#30363d;--frame:#0b0f14;--ok:#3fb950;--cached:#4493f8;
--blocked:#d29922;--failed:#f85149;--rejected:#8d96a0;--open:#ab7df8;--shadow:none}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
.muted{color:var(--muted);font-weight:400}
header.top,.totals,main,footer{max-width:1400px;margin:0 auto;padding:0 24px}
header.top{padding-top:28px}
.brand{display:flex;align-items:center;gap:8px;color:var(--muted);font-weight:600;
letter-spacing:.02em;text-transform:lowercase}
.logo{width:14px;height:14px;border-radius:50% 50% 50% 0;background:var(--accent);
transform:rotate(-45deg);box-shadow:inset -3px 0 0 rgba(0,0,0,.12)}
h1{margin:6px 0 8px;font-size:26px;line-height:1.2;display:flex;flex-wrap:wrap;
align-items:center;gap:12px;word-break:break-all}
h2{font-size:17px;margin:32px 0 12px}
.facts{margin:0;color:var(--muted);display:flex;flex-wrap:wrap;gap:6px 20px}
.alert{margin:14px 0 0;padding:10px 14px;border-radius:8px;border:1px solid var(--failed);
color:var(--failed);background:color-mix(in srgb,var(--failed) 8%,var(--panel))}
.totals{margin-top:22px}
.bar{display:flex;height:10px;border-radius:5px;overflow:hidden;background:var(--line)}
.seg{display:block;height:100%}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;
margin:14px 0 0}
.tile{background:var(--panel);border:1px solid var(--line);border-radius:10px;
padding:10px 14px;box-shadow:var(--shadow)}
.tile dt{color:var(--muted);font-size:12px;display:flex;align-items:center;gap:6px}
.tile dd{margin:2px 0 0;font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}
.tile dt small{font-size:11px;font-weight:700;color:var(--ok);
background:color-mix(in srgb,var(--ok) 12%,transparent);padding:0 6px;border-radius:999px}
.tile.strong{box-shadow:inset 3px 0 0 var(--accent),var(--shadow)}
.tile.good dd{color:var(--ok)}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:16px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:12px;
overflow:hidden;display:flex;flex-direction:column;box-shadow:var(--shadow)}
.frame{display:flex;align-items:center;justify-content:center;aspect-ratio:1/1;
background:var(--frame);overflow:hidden}
.frame img{width:100%;height:100%;object-fit:contain;display:block}
a.frame:hover img{transform:scale(1.02);transition:transform .15s}
.frame.none{flex-direction:column;gap:6px;padding:16px;text-align:center;
background:repeating-linear-gradient(135deg,var(--frame) 0 10px,var(--panel) 10px 20px)}
.frame.none b{font-size:15px;letter-spacing:.04em;text-transform:uppercase}
.frame.none small{color:var(--muted);display:-webkit-box;-webkit-line-clamp:4;
-webkit-box-orient:vertical;overflow:hidden;word-break:break-word}
.frame.s-BLOCKED b{color:var(--blocked)}.frame.s-FAILED b{color:var(--failed)}
.frame.s-REJECTED b{color:var(--rejected)}.frame.s-PENDING b,.frame.s-SUBMITTED b{color:var(--open)}
.body{padding:10px 12px 12px;display:flex;flex-direction:column;gap:6px;flex:1}
.row{display:flex;align-items:center;justify-content:space-between;gap:8px;min-width:0}
.key{font-weight:600;word-break:break-all;min-width:0}
.prompt{margin:0;color:var(--ink);display:-webkit-box;-webkit-line-clamp:3;
-webkit-box-orient:vertical;overflow:hidden;word-break:break-word;flex:1}
.meta{color:var(--muted);font-size:12px}
.model{color:var(--muted);font:11px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
word-break:break-word}
.shape{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.cost{font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:11px;
font-weight:700;letter-spacing:.03em;white-space:nowrap;color:#fff;background:var(--rejected)}
h1 .badge{font-size:13px;padding:3px 10px}
.s-SUCCEEDED{background:var(--ok)}.s-CACHED{background:var(--cached)}
.s-BLOCKED{background:var(--blocked)}.s-FAILED{background:var(--failed)}
.s-REJECTED{background:var(--rejected)}.s-PENDING,.s-SUBMITTED{background:var(--open)}
.job-SUCCEEDED{background:var(--ok)}.job-PARTIAL{background:var(--blocked)}
.job-FAILED{background:var(--failed)}.job-CANCELLED{background:var(--rejected)}
.job-HELD,.job-RUNNING,.job-RECEIVED{background:var(--open)}
table{width:100%;border-collapse:collapse;background:var(--panel);border:1px solid var(--line);
border-radius:10px;overflow:hidden;box-shadow:var(--shadow)}
th,td{padding:8px 12px;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{font-size:12px;color:var(--muted);font-weight:600;background:var(--frame)}
tr:last-child td{border-bottom:0}
td.num{font-variant-numeric:tabular-nums;color:var(--muted);width:1%}
td:nth-child(2){width:1%;white-space:nowrap}td:nth-child(3){width:1%}
.finish{color:var(--muted)}
.empty-note{color:var(--muted)}
footer{color:var(--muted);font-size:12px;padding-top:28px;padding-bottom:32px}
footer a,.tile dt a{color:inherit}
.tile dt a{text-decoration:none;display:flex;align-items:center;gap:6px}
.tile dt a:hover{text-decoration:underline}
.note{color:var(--muted);margin:14px 0 0}
.controls{display:flex;flex-wrap:wrap;gap:10px 16px;align-items:end;margin:28px 0 6px}
.controls label{display:flex;flex-direction:column;gap:4px;font-size:12px;color:var(--muted)}
.controls .search{flex:1 1 320px}
.controls input,.controls select{font:inherit;font-size:14px;color:var(--ink);
background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:7px 10px}
.status{color:var(--muted);margin:10px 0 12px;min-height:1.45em}
.pager{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:18px 0 0}
.pager a,.pager span{padding:4px 10px;border:1px solid var(--line);border-radius:8px;
background:var(--panel);color:var(--ink);text-decoration:none}
.pager span{color:var(--muted)}.pager a[aria-disabled]{opacity:.45;pointer-events:none}
.metadata{margin:0;display:grid;grid-template-columns:auto 1fr;gap:0 8px;font-size:12px}
.metadata dt{color:var(--muted)}.metadata dd{margin:0;word-break:break-word}
.frame.missing img{display:none}
.frame.missing::after{content:"image not available yet";color:var(--muted)}
.lane{color:var(--muted)}
.pick{font-size:13px;display:block;margin-top:4px}
.download{font:inherit;font-size:14px;border:1px solid var(--line);border-radius:8px;
padding:7px 10px;background:var(--panel);color:var(--ink);cursor:pointer}
"""


JS: Final = r"""
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("gallery-config").textContent);
  var F = {};
  config.fields.forEach(function (name, i) { F[name] = i; });
  var PROBLEMS = { BLOCKED: 1, FAILED: 1, REJECTED: 1 };
  var grid = document.getElementById("grid");
  var statusLine = document.getElementById("status");
  var pager = document.getElementById("pager");
  var input = document.getElementById("q");
  var select = document.getElementById("state");
  var chunks = new Array(config.chunks);
  var loaded = 0;
  var requested = {};
  var broken = [];
  var view = { q: "", state: "", page: 1 };
  var written = null;
  var found = { q: null, state: null, rows: null };
  var painted = false;

  // Every data file calls this with its index and its rows (see ROW_FIELDS).
  window[config.callback] = function (index, rows) {
    if (typeof index !== "number" || index < 0 || index >= config.chunks || chunks[index]) {
      return;
    }
    chunks[index] = rows;
    loaded += 1;
    render();
  };

  function chunkPath(index) {
    return config.chunkPrefix + String(index).padStart(5, "0") + ".js";
  }

  function load(index) {
    if (requested[index]) { return; }
    requested[index] = true;
    var script = document.createElement("script");
    script.src = chunkPath(index);
    script.onerror = function () { broken.push(chunkPath(index)); render(); };
    document.head.appendChild(script);
  }

  function busy(text) {
    grid.setAttribute("aria-busy", "true");
    statusLine.textContent = text;
  }

  function render() {
    if (broken.length) {
      grid.setAttribute("aria-busy", "false");
      statusLine.textContent = "Could not load " + broken.join(", ") +
        ": the gallery's data files belong beside index.html.";
      return;
    }
    var filtering = view.q.trim() !== "" || view.state !== "";
    var rows = null;
    var total = config.items;
    if (filtering) {
      if (loaded < config.chunks) {
        for (var i = 0; i < config.chunks; i += 1) { load(i); }
        busy("Loading every item to search them: part " + loaded + " of " + config.chunks + "…");
        return;
      }
      rows = matches();
      total = rows.length;
    }
    var pages = Math.max(1, Math.ceil(total / config.pageItems));
    var page = Math.min(Math.max(1, view.page), pages);
    var start = (page - 1) * config.pageItems;
    var end = Math.min(total, start + config.pageItems);
    var slice = [];
    if (rows) {
      slice = rows.slice(start, end);
    } else if (end > start) {
      var first = Math.floor(start / config.chunkItems);
      var last = Math.floor((end - 1) / config.chunkItems);
      var missing = false;
      for (var c = first; c <= last; c += 1) {
        if (!chunks[c]) { load(c); missing = true; }
      }
      if (missing) { busy("Loading items…"); return; }
      for (c = first; c <= last; c += 1) {
        var base = c * config.chunkItems;
        slice = slice.concat(chunks[c].slice(Math.max(0, start - base), end - base));
      }
    }
    draw(slice, start, end, total, page, pages, filtering);
  }

  function haystack(row) {
    if (row.length > config.fields.length) { return row[config.fields.length]; }
    var meta = row[F.metadata];
    var text = [
      row[F.key] === null ? "" : row[F.key], row[F.prompt], row[F.model], row[F.reason] || "",
      meta === null ? "" : (typeof meta === "string" ? meta : JSON.stringify(meta)),
      "line " + row[F.line]
    ].join("\n").toLowerCase();
    row.push(text);
    return text;
  }

  function matches() {
    var q = view.q.trim().toLowerCase();
    if (found.rows && found.q === q && found.state === view.state) { return found.rows; }
    var terms = q.split(/\s+/).filter(Boolean);
    var out = [];
    for (var c = 0; c < chunks.length; c += 1) {
      var rows = chunks[c];
      for (var r = 0; r < rows.length; r += 1) {
        var row = rows[r];
        var state = row[F.state];
        if (view.state === "problems" ? !PROBLEMS[state] : view.state && state !== view.state) {
          continue;
        }
        if (terms.length) {
          var text = haystack(row);
          var all = true;
          for (var t = 0; t < terms.length && all; t += 1) { all = text.indexOf(terms[t]) >= 0; }
          if (!all) { continue; }
        }
        out.push(row);
      }
    }
    found = { q: q, state: view.state, rows: out };
    return out;
  }

  function draw(slice, start, end, total, page, pages, filtering) {
    var fragment = document.createDocumentFragment();
    slice.forEach(function (row) { fragment.appendChild(card(row)); });
    grid.replaceChildren(fragment);
    if (!total) {
      statusLine.textContent = filtering ? "No item matches." : "This job has no items.";
    } else {
      var of = filtering ? " matching items (" + number(config.items) + " in all)" : " items";
      statusLine.textContent =
        "Showing " + number(start + 1) + "–" + number(end) + " of " + number(total) + of;
    }
    drawPager(page, pages);
    grid.setAttribute("aria-busy", "false");
    if (!painted) {
      painted = true;
      if (window.performance && performance.mark) { performance.mark("gallery-first-page"); }
    }
  }

  function drawPager(page, pages) {
    pager.replaceChildren();
    if (pages <= 1) { return; }
    var steps = [["First", 1], ["Previous", page - 1], null, ["Next", page + 1], ["Last", pages]];
    steps.forEach(function (step) {
      if (step === null) {
        pager.appendChild(element("span", "", "Page " + number(page) + " of " + number(pages)));
        return;
      }
      var link = element("a", "", step[0]);
      if (step[1] < 1 || step[1] > pages || step[1] === page) {
        link.setAttribute("aria-disabled", "true");
      } else {
        link.href = hashFor({ q: view.q, state: view.state, page: step[1] });
      }
      pager.appendChild(link);
    });
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // The key as a path segment, exactly as Python's quote(key, safe="") writes it.
  function segment(key) {
    return encodeURIComponent(key).replace(/[!'()*]/g, function (ch) {
      return "%" + ch.charCodeAt(0).toString(16).toUpperCase();
    });
  }

  function fallBack() {
    // A missing thumbnail (not made yet, or never) shows the full image; a missing image
    // too leaves a placeholder, and the handler is removed so nothing retries.
    var full = this.getAttribute("data-full");
    if (full && this.getAttribute("src") !== full) { this.src = full; return; }
    this.onerror = null;
    this.parentNode.classList.add("missing");
  }

  function card(row) {
    var state = row[F.state];
    var key = row[F.key];
    var article = element("article", "card");
    article.setAttribute("data-state", state);
    article.setAttribute("data-line", String(row[F.line]));
    var frame;
    if (row[F.ext] !== null && key !== null) {
      var name = segment(key);
      var full = "images/" + name + "." + segment(row[F.ext]);
      frame = element("a", "frame");
      frame.href = full;
      frame.title = "open the full image";
      var img = document.createElement("img");
      img.alt = row[F.prompt] || key;
      img.loading = "lazy";
      img.decoding = "async";
      img.setAttribute("data-key", key);
      img.setAttribute("data-full", full);
      img.onerror = fallBack;
      img.src = "thumbs/" + name + "." + config.thumbExtension;
      frame.appendChild(img);
    } else {
      frame = element("div", "frame none s-" + state);
      frame.appendChild(element("b", "", config.states[state] || state));
      if (row[F.reason]) {
        var why = element("small", "", row[F.reason]);
        why.title = row[F.reason];
        frame.appendChild(why);
      }
    }
    article.appendChild(frame);
    var body = element("div", "body");
    var head = element("div", "row");
    var keyText = key === null ? "no key (line " + row[F.line] + ")" : key;
    var keyNode = element("code", key === null ? "key muted" : "key", keyText);
    head.appendChild(keyNode);
    head.appendChild(element("span", "badge s-" + state, state));
    body.appendChild(head);
    var prompt = element("p", "prompt", row[F.prompt] || "no prompt");
    prompt.title = row[F.prompt] || "";
    body.appendChild(prompt);
    var meta = row[F.metadata];
    if (meta !== null && meta !== undefined) { body.appendChild(metadataList(meta)); }
    var facts = element("div", "row meta");
    facts.appendChild(element("span", "shape", row[F.shape] || "—"));
    facts.appendChild(element("span", "cost", cost(row)));
    body.appendChild(facts);
    var lane = row[F.lane] && row[F.lane] !== "batch" ? " · lane " + row[F.lane] : "";
    body.appendChild(element("div", "model", "line " + row[F.line] + " · " + row[F.model] + lane));
    if (config.select && frame.tagName === "A") { body.appendChild(picker(key)); }
    article.appendChild(body);
    return article;
  }

  // Two-tier jobs in manual selection: tick candidates, download the selection file that
  // `bananabatch select JOB --file selection.json` takes.
  var picked = {};
  function picker(key) {
    var label = element("label", "pick");
    var box = document.createElement("input");
    box.type = "checkbox";
    box.setAttribute("data-key", key);
    box.checked = !!picked[key];
    box.addEventListener("change", function () {
      if (box.checked) { picked[key] = true; } else { delete picked[key]; }
      showPicked();
    });
    label.appendChild(box);
    label.appendChild(element("span", "", " select for the final model"));
    return label;
  }
  function selectionDoc() {
    return { job_id: config.jobId, selected: Object.keys(picked).sort() };
  }
  function showPicked() {
    var button = document.getElementById("download-selection");
    if (button) { button.textContent = "Download selection (" + Object.keys(picked).length + ")"; }
  }
  if (config.select) {
    var button = element("button", "download", "");
    button.type = "button";
    button.id = "download-selection";
    button.addEventListener("click", function () {
      var text = JSON.stringify(selectionDoc(), null, 2) + "\n";
      var link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
      link.download = "selection-" + config.jobId + ".json";
      document.body.appendChild(link);
      link.click();
      link.remove();
    });
    document.getElementById("controls").appendChild(button);
    window.bananabatchSelection = selectionDoc;
    showPicked();
  }

  function metadataList(meta) {
    var list = element("dl", "metadata");
    var pairs;
    if (meta !== null && typeof meta === "object" && !Array.isArray(meta)) {
      pairs = Object.keys(meta).map(function (name) { return [name, meta[name]]; });
    } else {
      pairs = [["metadata", meta]];
    }
    pairs.forEach(function (pair) {
      var value = typeof pair[1] === "string" ? pair[1] : JSON.stringify(pair[1]);
      list.appendChild(element("dt", "", pair[0]));
      list.appendChild(element("dd", "", value));
    });
    return list;
  }

  function usd(value) {
    var amount = Math.abs(value);
    var body = amount >= 1 || amount === 0
      ? amount.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })
      : amount.toFixed(4);
    return (value < 0 ? "-$" : "$") + body;
  }

  function cost(row) {
    var paid = row[F.paid];
    if (row[F.state] === "CACHED") { return "cached, " + usd(paid || 0); }
    if (paid !== null) { return "paid " + usd(paid); }
    if (row[F.estimate]) { return "est. " + usd(row[F.estimate]); }
    return "—";
  }

  function number(n) { return n.toLocaleString("en-US"); }

  function hashFor(v) {
    var params = new URLSearchParams();
    if (v.q) { params.set("q", v.q); }
    if (v.state) { params.set("state", v.state); }
    if (v.page > 1) { params.set("page", String(v.page)); }
    return "#" + params.toString();
  }

  function readHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var page = parseInt(params.get("page") || "1", 10);
    var state = params.get("state") || "";
    var known = state === "" || state === "problems" ||
      Object.prototype.hasOwnProperty.call(config.states, state);
    view = { q: params.get("q") || "", state: known ? state : "", page: page > 0 ? page : 1 };
    input.value = view.q;
    select.value = view.state;
    if (select.value !== view.state) {
      // A state with no items has no option: add one, so the filter shows what is asked.
      var option = element("option", "", (config.states[view.state] || view.state) + " (0)");
      option.value = view.state;
      select.appendChild(option);
      select.value = view.state;
    }
  }

  function writeHash() {
    written = hashFor(view);
    if ((location.hash || "#") !== written) { location.replace(written); }
  }

  function changed() {
    view = { q: input.value, state: select.value, page: 1 };
    writeHash();
    render();
  }

  input.addEventListener("input", changed);
  select.addEventListener("change", changed);
  document.getElementById("controls").addEventListener("submit", function (event) {
    event.preventDefault();
  });
  window.addEventListener("hashchange", function () {
    if ((location.hash || "#") === written) { return; }
    var before = view.page;
    readHash();
    written = hashFor(view);
    render();
    if (view.page !== before) { document.getElementById("controls").scrollIntoView(); }
  });
  readHash();
  written = hashFor(view);
  render();
})();
"""
