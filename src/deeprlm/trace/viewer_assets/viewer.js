// The trace viewer: reads the tree embedded in the page and draws it on demand.
// Nothing is built before it is looked at: a node's body is made when it is first opened,
// long child lists come in pages, long texts are cut with a button to show them whole.
// Trace texts are model output, so they only ever go in through textContent.
(function () {
  "use strict";

  var PAGE = 100; // children drawn per click
  var TEXT_LIMIT = 2000; // characters shown before "show all"
  var PREVIEW = 140; // characters in a collapsed node's one-line preview
  var MAX_LIST = 200; // entries in the error and search lists

  var DATA = JSON.parse(document.getElementById("trace-data").textContent);
  var T = DATA.tree;
  var N = T.nodes;
  var views = []; // node index -> {el, body, list} once drawn

  // ---- small helpers

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function secs(s) {
    if (s === null || s === undefined || isNaN(s)) return "?";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    var m = Math.floor(s / 60);
    return m + "m" + String(Math.round(s - m * 60)).padStart(2, "0") + "s";
  }

  function tokens(n) {
    n = n || 0;
    if (n < 1000) return String(n);
    if (n < 1e6) return (n / 1e3).toFixed(1) + "k";
    return (n / 1e6).toFixed(2) + "M";
  }

  function usd(x) {
    x = x || 0;
    return "$" + (x < 1 ? x.toFixed(4) : x.toFixed(2));
  }

  function plural(n, word) {
    return n.toLocaleString("en-US") + " " + word + (n === 1 ? "" : "s");
  }

  function oneLine(text, limit) {
    var flat = String(text || "").replace(/\s+/g, " ").trim();
    return flat.length > limit ? flat.slice(0, limit - 1) + "…" : flat;
  }

  function lastLine(text) {
    var lines = String(text || "").trim().split("\n");
    return lines[lines.length - 1];
  }

  function duration(n) {
    var end = n.e === null || n.e === undefined ? T.end_t : n.e;
    return Math.max(0, end - n.s);
  }

  function isOpen(n) {
    return n.e === null || n.e === undefined;
  }

  function hasError(n) {
    if (n.k === "run") return n.status === "error" || n.status === "limit" || n.status === "cancelled";
    return !!n.error;
  }

  // A block of text: label, the first TEXT_LIMIT characters, a button for the rest.
  function textBlock(label, text, cls, fullChars) {
    text = text === undefined || text === null ? "" : String(text);
    var box = el("div", "block " + (cls || ""));
    var head = label + " · " + plural(text.length, "char");
    if (fullChars && fullChars > text.length) {
      head += " (cut when recorded from " + fullChars.toLocaleString("en-US") + ")";
    }
    box.appendChild(el("div", "label", head));
    var pre = el("pre");
    box.appendChild(pre);
    if (text.length <= TEXT_LIMIT) {
      pre.textContent = text;
      return box;
    }
    pre.textContent = text.slice(0, TEXT_LIMIT) + "…";
    var more = el("button", "more", "Show all " + plural(text.length, "character"));
    var whole = false;
    more.addEventListener("click", function () {
      whole = !whole;
      pre.textContent = whole ? text : text.slice(0, TEXT_LIMIT) + "…";
      more.textContent = whole ? "Show less" : "Show all " + plural(text.length, "character");
    });
    box.appendChild(more);
    return box;
  }

  function metaDetails(title, obj) {
    var d = el("details", "meta");
    d.appendChild(el("summary", null, title));
    var pre = el("pre");
    pre.textContent = JSON.stringify(obj, null, 2);
    var box = el("div", "block");
    box.appendChild(pre);
    d.appendChild(box);
    return d;
  }

  // ---- what a node says about itself

  function title(n) {
    switch (n.k) {
      case "run":
        return n.p === null || n.p === undefined ? (n.depth ? "Run (depth " + n.depth + ")" : "Run") : "Child run";
      case "turn":
        if (n.forced) return "Forced final answer";
        return n.n ? "Turn " + n.n : "Before the first turn";
      case "lm":
        if (n.purpose === "root") return "Model reply";
        if (n.purpose === "forced") return "Forced answer";
        if (n.purpose === "sub") return "Sub-call";
        return "Model call (" + n.purpose + ")";
      case "cell":
        return "Code cell";
      case "batch":
        if (n.kind === "map" || n.kind === "classify") return "llm_" + n.kind + " × " + plural(n.items || 0, "item");
        if (n.kind === "chain") return "follow_chain × " + plural(n.calls || n.size || 0, "link");
        return (n.kind === "rlm" ? "rlm_batch" : "llm_batch") + " × " + (n.size || 0);
      case "note":
        return "Note";
    }
    return n.k;
  }

  function preview(n) {
    switch (n.k) {
      case "run":
        return [n.model, n.status || "did not end", oneLine(n.query, PREVIEW)].filter(Boolean).join(" · ");
      case "turn":
        for (var j = 0; j < (n.c || []).length; j++) {
          var kid = N[n.c[j]];
          if (kid.k === "lm") return oneLine(kid.reply, PREVIEW);
        }
        return "";
      case "lm":
        if (n.error) return n.model + " · " + oneLine(n.error, PREVIEW);
        return [n.model, oneLine(n.purpose === "sub" ? n.prompt : n.reply, PREVIEW)].filter(Boolean).join(" · ");
      case "cell":
        if (n.error) return oneLine(lastLine(n.error), PREVIEW);
        return oneLine(n.code, PREVIEW);
      case "batch":
        if (n.kind === "map" || n.kind === "classify") return packing(n);
        if (n.kind === "chain") return oneLine(n.instruction, PREVIEW);
        return n.errors ? plural(n.errors, "error") : "";
      case "note":
        return oneLine(n.message, PREVIEW);
    }
    return "";
  }

  // How a packed map went: calls for how many distinct items, asked again, cached, errors.
  function packing(n) {
    var parts = [];
    var packs = n.packs || [];
    if (packs.length) parts.push(plural(packs.length, "pack") + " of ≤ " + Math.max.apply(null, packs));
    if (n.unique !== undefined && n.unique !== n.items) parts.push(n.unique + " distinct");
    if (n.cached) parts.push(n.cached + " cached");
    if (n.reasked) parts.push(n.reasked + " asked again");
    if (n.errors) parts.push(plural(n.errors, "error"));
    if (n.instruction) parts.push(oneLine(n.instruction, PREVIEW));
    return parts.join(" · ");
  }

  function numbers(n) {
    var parts = [];
    if (n.k !== "note") parts.push(secs(duration(n)));
    if (n.k !== "lm" && n.calls) parts.push(plural(n.calls, "call"));
    if (n.tok) parts.push(tokens(n.tok) + " tok");
    if (n.cost) parts.push(usd(n.cost));
    return parts.join(" · ");
  }

  // Opened without a click: runs at the top, the turns of the top run, and inside a turn
  // the model's reply and its cells. Sub-calls, batches and child runs wait for a click.
  function startsOpen(n) {
    if (n.k === "run") return n.p === null || n.p === undefined;
    if (n.k === "turn") {
      var run = N[n.p];
      return startsOpen(run) && (run.c || []).length <= 40;
    }
    if (n.k === "lm") return n.purpose !== "sub" && N[n.p] && N[n.p].k === "turn";
    if (n.k === "cell") return N[n.p] && N[n.p].k === "turn";
    return false;
  }

  // ---- the tree

  function drawNode(i) {
    var n = N[i];
    var cls = "node k-" + n.k + (n.purpose ? " purpose-" + n.purpose : "");
    if (hasError(n)) cls += " has-error";
    if (isOpen(n) && n.k !== "turn") cls += " open-ended";
    var box = el("div", cls);
    box.dataset.i = i;
    box.dataset.kind = n.k;
    var head = el("div", "head");
    var caret = el("span", "caret", "▸");
    head.appendChild(caret);
    head.appendChild(el("span", "what", title(n)));
    if (n.k === "run" && n.status) head.appendChild(el("span", "badge status-" + n.status, n.status));
    if (n.k === "cell" && n.final !== undefined) head.appendChild(el("span", "badge status-answered", "final"));
    head.appendChild(el("span", "preview", preview(n)));
    var nums = el("span", "nums", numbers(n));
    if (n.errs && n.k !== "lm" && n.k !== "cell") {
      nums.appendChild(document.createTextNode(" · "));
      nums.appendChild(el("span", "errs", plural(n.errs, "error")));
    }
    head.appendChild(nums);
    box.appendChild(head);
    var view = { el: box, body: null, list: null, caret: caret, open: false };
    views[i] = view;
    head.tabIndex = 0;
    head.setAttribute("role", "button");
    head.addEventListener("click", function () {
      toggle(i);
    });
    head.addEventListener("keydown", function (ev) {
      if (ev.key !== "Enter" && ev.key !== " ") return;
      ev.preventDefault();
      toggle(i);
    });
    if (startsOpen(n)) toggle(i);
    return box;
  }

  function toggle(i, want) {
    var v = views[i];
    var open = want === undefined ? !v.open : want;
    if (open === v.open) return;
    v.open = open;
    v.caret.textContent = open ? "▾" : "▸";
    v.el.firstChild.setAttribute("aria-expanded", String(open));
    if (open && !v.body) {
      v.body = el("div", "body");
      fillBody(i, v);
      v.el.appendChild(v.body);
    }
    if (v.body) v.body.hidden = !open;
  }

  function fillBody(i, v) {
    var n = N[i];
    var b = v.body;
    if (n.k === "run") {
      if (n.query) b.appendChild(textBlock("Query", n.query, ""));
      var who = [];
      if (n.model) who.push("model " + n.model);
      if (n.sub_model) who.push("sub-model " + n.sub_model);
      if (n.repl) who.push("repl " + n.repl);
      if (who.length) b.appendChild(el("div", "muted", who.join(" · ")));
      if (n.context) b.appendChild(metaDetails("Context", n.context));
      if (n.settings) b.appendChild(metaDetails("Settings", n.settings));
    } else if (n.k === "lm") {
      if (n.purpose === "sub") {
        b.appendChild(textBlock("Prompt", n.prompt, "", n.prompt_chars));
        if (!n.error || n.reply) b.appendChild(textBlock("Reply", n.reply, "sub-reply"));
      } else {
        if (n.prompt) {
          var d = el("details", "meta");
          d.appendChild(el("summary", null, "Newest message it answered"));
          d.appendChild(textBlock("Message", n.prompt, "", n.prompt_chars));
          b.appendChild(d);
        }
        b.appendChild(textBlock("Reply", n.reply, "reply"));
      }
      if (n.error) b.appendChild(textBlock("Error", n.error, "error"));
      var usage = [];
      if (n.in || n.out) usage.push(tokens(n.in) + " in, " + tokens(n.out) + " out");
      if (n.cached) usage.push(tokens(n.cached) + " cached");
      if (n.usd) usage.push(usd(n.usd));
      if (usage.length) b.appendChild(el("div", "muted", usage.join(" · ")));
    } else if (n.k === "cell") {
      b.appendChild(textBlock("Code", n.code, "code"));
      if (isOpen(n)) b.appendChild(el("div", "muted", "The cell did not end in this trace."));
      else if (n.output || !n.error) b.appendChild(textBlock("Output", n.output, "output", n.output_chars));
      if (n.error) b.appendChild(textBlock("Error", n.error, "error"));
      if (n.final !== undefined) b.appendChild(textBlock("Final answer", n.final, "reply"));
    } else if (n.k === "note") {
      b.appendChild(textBlock("Note", n.message, ""));
    } else if (n.k === "batch" && n.kind === "chain") {
      b.appendChild(textBlock("Question", n.instruction, ""));
      if (n.errors) b.appendChild(el("div", "muted", "the chain stopped with an error (see the cell's output)"));
    } else if (n.k === "batch" && (n.kind === "map" || n.kind === "classify")) {
      if (n.instruction) b.appendChild(textBlock("Instruction", n.instruction, ""));
      if (n.labels && n.labels.length) b.appendChild(el("div", "muted", "labels: " + n.labels.join(" · ")));
      b.appendChild(el("div", "muted", [
        plural(n.items || 0, "item"),
        (n.unique || 0) + " distinct",
        (n.cached || 0) + " answered before",
        "packs of " + (n.packs || []).join(", "),
        plural(n.calls || 0, "call") + " made",
        (n.reasked || 0) + " asked again",
        plural(n.errors || 0, "error")
      ].join(" · ")));
    }
    if (n.c && n.c.length) {
      var list = el("div", "children");
      b.appendChild(list);
      v.list = { box: list, shown: 0, more: null };
      showMore(i);
    }
    if (n.k === "run") b.appendChild(runEnd(n));
  }

  function showMore(i, upTo) {
    var n = N[i];
    var list = views[i].list;
    var target = Math.min(n.c.length, Math.max(list.shown + PAGE, upTo === undefined ? 0 : upTo + 1));
    if (list.more) {
      list.more.remove();
      list.more = null;
    }
    var frag = document.createDocumentFragment();
    for (; list.shown < target; list.shown++) frag.appendChild(drawNode(n.c[list.shown]));
    list.box.appendChild(frag);
    var left = n.c.length - list.shown;
    if (left > 0) {
      var more = el("button", "pager", "Show " + Math.min(PAGE, left) + " more of " + left);
      more.addEventListener("click", function () {
        showMore(i);
      });
      list.more = more;
      list.box.appendChild(more);
    }
  }

  function runEnd(n) {
    var box = el("div", "block");
    var line = el("div", "label");
    if (n.status) {
      line.appendChild(document.createTextNode("Ended: "));
      line.appendChild(el("span", "badge status-" + n.status, n.status));
      var more = [];
      if (n.iterations !== undefined) more.push(plural(n.iterations, "turn"));
      if (n.sub_calls !== undefined) more.push(plural(n.sub_calls, "sub-call"));
      if (n.wall_s !== undefined) more.push(secs(n.wall_s));
      line.appendChild(document.createTextNode(" " + more.join(" · ")));
    } else {
      line.appendChild(el("span", "badge status-open", "did not end in this trace"));
    }
    box.appendChild(line);
    if (n.answer) box.appendChild(textBlock(n.status === "answered" ? "Answer" : "Answer so far", n.answer, "reply"));
    if (n.error) box.appendChild(textBlock("Error", n.error, "error"));
    return box;
  }

  // Opens node i and every node above it, pages their lists far enough, scrolls to it.
  function reveal(i) {
    var path = [];
    for (var j = i; j !== null && j !== undefined; j = N[j].p) path.unshift(j);
    for (var k = 0; k < path.length; k++) {
      var at = path[k];
      if (!views[at]) return;
      if (k === path.length - 1) break;
      toggle(at, true);
      var list = views[at].list;
      var pos = N[at].c.indexOf(path[k + 1]);
      if (list && pos >= list.shown) showMore(at, pos);
    }
    toggle(i, true);
    var target = views[i].el;
    target.scrollIntoView({ block: "center" });
    target.classList.add("flash");
    setTimeout(function () {
      target.classList.remove("flash");
    }, 1500);
  }

  function hitEntry(i, text) {
    var row = el("div", "hit", text);
    row.addEventListener("click", function () {
      reveal(i);
    });
    return row;
  }

  // ---- the panels above the tree

  function mainRun() {
    for (var j = 0; j < T.roots.length; j++) if (N[T.roots[j]].k === "run") return N[T.roots[j]];
    return null;
  }

  function summary() {
    var run = mainRun();
    var usage = T.usage || {};
    var calls = 0, tok = 0, cost = 0, errs = 0;
    Object.keys(usage).forEach(function (m) {
      calls += usage[m].calls;
      tok += usage[m]["in"] + usage[m].out;
      cost += usage[m].usd;
    });
    T.roots.forEach(function (r) {
      errs += N[r].errs || 0;
    });
    var box = document.getElementById("summary");
    function stat(label, value) {
      var s = el("span", "stat", label + " ");
      s.appendChild(el("b", null, value));
      box.appendChild(s);
    }
    stat("status", run ? run.status || "did not end" : "no run");
    stat("time", secs(run && run.wall_s !== undefined ? run.wall_s : T.end_t));
    stat("model calls", calls.toLocaleString("en-US"));
    stat("tokens", tokens(tok));
    stat("cost", usd(cost));
    stat("errors", String(errs));
    stat("events", T.events.toLocaleString("en-US"));
    document.getElementById("source").textContent = DATA.meta.source || "";
  }

  function problems() {
    if (!T.problems.length) return;
    var box = document.getElementById("problems");
    box.hidden = false;
    box.appendChild(el("b", null, "This trace is damaged or incomplete; the page shows what could be read."));
    var ul = el("ul");
    T.problems.forEach(function (p) {
      ul.appendChild(el("li", null, p));
    });
    box.appendChild(ul);
  }

  function outcome() {
    var box = document.getElementById("outcome");
    var run = mainRun();
    box.appendChild(el("h2", null, "Outcome"));
    if (!run) {
      box.appendChild(el("div", "muted", "No run start was found in this trace."));
      return;
    }
    if (run.query) box.appendChild(textBlock("Query", run.query, ""));
    box.appendChild(runEnd(run));
  }

  function usageTable() {
    var box = document.getElementById("usage");
    box.appendChild(el("h2", null, "Usage by model"));
    var models = Object.keys(T.usage || {}).sort();
    if (!models.length) {
      box.appendChild(el("div", "muted", "No model call ended in this trace."));
      return;
    }
    var table = el("table", "usage");
    var head = el("tr");
    ["model", "calls", "input tokens", "output tokens", "cached", "USD", "errors"].forEach(function (h) {
      head.appendChild(el("th", null, h));
    });
    table.appendChild(head);
    var total = { calls: 0, in: 0, out: 0, cached: 0, usd: 0, errors: 0 };
    function row(name, u, cls) {
      var tr = el("tr", cls);
      [name, u.calls.toLocaleString("en-US"), tokens(u["in"]), tokens(u.out), tokens(u.cached), usd(u.usd), String(u.errors)]
        .forEach(function (c) {
          tr.appendChild(el("td", null, c));
        });
      table.appendChild(tr);
    }
    models.forEach(function (m) {
      var u = T.usage[m];
      row(m, u);
      Object.keys(total).forEach(function (k) {
        total[k] += u[k] || 0;
      });
    });
    if (models.length > 1) row("total", total, "total");
    box.appendChild(table);
  }

  function errorList() {
    var found = [];
    for (var i = 0; i < N.length && found.length < MAX_LIST; i++) if (hasError(N[i])) found.push(i);
    if (!found.length) return;
    var count = 0;
    for (var j = 0; j < N.length; j++) if (hasError(N[j])) count++;
    var box = document.getElementById("errors");
    box.hidden = false;
    box.appendChild(el("h2", null, "Errors (" + count + ")"));
    var list = el("div", "errlist");
    found.forEach(function (i) {
      var n = N[i];
      var what = n.k === "run" ? n.status + (n.error ? ": " + n.error : "") : lastLine(n.error);
      list.appendChild(hitEntry(i, secs(n.s) + " · " + title(n) + " · " + oneLine(what, 200)));
    });
    if (count > found.length) list.appendChild(el("div", "muted", "and " + (count - found.length) + " more"));
    box.appendChild(list);
  }

  var SEARCH_FIELDS = ["query", "prompt", "reply", "code", "output", "error", "final", "answer", "message"];

  function search(q) {
    var box = document.getElementById("search-results");
    box.textContent = "";
    box.hidden = !q;
    if (!q) return;
    var needle = q.toLowerCase();
    var hits = 0;
    for (var i = 0; i < N.length; i++) {
      var n = N[i];
      for (var f = 0; f < SEARCH_FIELDS.length; f++) {
        var text = n[SEARCH_FIELDS[f]];
        if (typeof text !== "string") continue;
        var at = text.toLowerCase().indexOf(needle);
        if (at < 0) continue;
        hits++;
        if (hits <= MAX_LIST) {
          var snippet = text.slice(Math.max(0, at - 50), at + needle.length + 80);
          box.appendChild(hitEntry(i, title(n) + " · " + SEARCH_FIELDS[f] + " · " + oneLine(snippet, 160)));
        }
        break;
      }
    }
    var count = hits === 1 ? "1 match" : hits ? hits.toLocaleString("en-US") + " matches" : "No match.";
    if (hits > MAX_LIST) count += " (the first " + MAX_LIST + " listed)";
    box.insertBefore(el("div", "muted", count), box.firstChild);
  }

  // ---- the timeline: one lane per run for its own turns, packed lanes for its sub-calls

  var COLORS = {};
  function readColors() {
    var css = getComputedStyle(document.documentElement);
    ["root", "sub", "cell", "child", "forced", "batch", "err", "muted", "line", "ink"].forEach(function (k) {
      COLORS[k] = css.getPropertyValue("--" + k).trim();
    });
  }

  var lanes = []; // {label, depth, bars: [node index], spans: [node index] (batches)}
  var laneOf = {}; // node index -> lane index, for the bars drawn

  function layout() {
    var all = [];
    T.roots.forEach(function (r) {
      if (N[r].k === "run") push(all, runLanes(r, 0));
    });
    var loose = [];
    T.roots.forEach(function (r) {
      if (N[r].k !== "run") collect(r, loose, [], [], []);
    });
    if (loose.length) push(all, pack(loose, "outside any run", 0, []));
    all.forEach(function (lane, k) {
      lane.bars.forEach(function (j) {
        laneOf[j] = k;
      });
      lanes.push(lane);
    });
  }

  function push(into, items) {
    for (var k = 0; k < items.length; k++) into.push(items[k]);
  }

  // Walks a run's subtree down to its child runs (which get lanes of their own).
  function collect(i, own, subs, batches, children) {
    var stack = [i];
    while (stack.length) {
      var j = stack.pop();
      var n = N[j];
      if (n.k === "run" && j !== i) {
        children.push(j);
        continue;
      }
      if (n.k === "lm" && n.purpose === "sub") subs.push(j);
      else if (n.k === "lm" || n.k === "cell") own.push(j);
      else if (n.k === "batch") batches.push(j);
      if (n.c) for (var c = n.c.length - 1; c >= 0; c--) stack.push(n.c[c]);
    }
  }

  function byStart(a, b) {
    return N[a].s - N[b].s || a - b;
  }

  function endOf(n) {
    return isOpen(n) ? T.end_t : n.e;
  }

  // A run's lanes: its own turns, its sub-calls packed, then its child runs. Children that
  // do not overlap in time share lanes, so a run that starts many in turn stays compact.
  function runLanes(r, depth) {
    var own = [], subs = [], batches = [], children = [];
    collect(r, own, subs, batches, children);
    own.sort(byStart);
    var run = N[r];
    var label = (depth ? "child run" : "run") + (run.model ? " · " + run.model : "");
    var out = [{ label: label, depth: depth, bars: own, spans: [] }];
    if (subs.length) push(out, pack(subs, "sub-calls", depth, batches));
    var slots = [];
    children.sort(byStart).forEach(function (c) {
      var block = runLanes(c, depth + 1);
      var slot = null;
      for (var k = 0; k < slots.length && !slot; k++) if (slots[k].end <= N[c].s) slot = slots[k];
      if (!slot) {
        slots.push({ end: endOf(N[c]), lanes: block, runs: 1 });
        return;
      }
      slot.end = endOf(N[c]);
      slot.runs++;
      block.forEach(function (lane, j) {
        var into = slot.lanes[j];
        if (!into) {
          slot.lanes.push(lane);
          return;
        }
        push(into.bars, lane.bars); // later in time, so each lane stays sorted by start
        if (lane.spans !== into.spans) push(into.spans, lane.spans);
        into.sub = into.sub || lane.sub;
      });
    });
    slots.forEach(function (slot) {
      if (slot.runs > 1) slot.lanes[0].label = "child runs × " + slot.runs;
      push(out, slot.lanes);
    });
    return out;
  }

  // Greedy interval packing: each bar goes in the first lane free at its start.
  function pack(items, label, depth, batches) {
    items.sort(byStart);
    var ends = [], packed = [];
    items.forEach(function (j) {
      var n = N[j];
      var lane = -1;
      for (var k = 0; k < ends.length; k++) {
        if (ends[k] <= n.s) {
          lane = k;
          break;
        }
      }
      if (lane < 0) {
        lane = ends.length;
        ends.push(0);
        packed.push([]);
      }
      ends[lane] = endOf(n);
      packed[lane].push(j);
    });
    // Each lane gets its own copy of the batch spans, so merging lanes later stays local.
    return packed.map(function (bars, k) {
      return { label: k === 0 ? label : "", depth: depth, bars: bars, spans: batches.slice(), sub: true };
    });
  }

  var canvas = document.getElementById("timeline-canvas");
  var tip = document.getElementById("tip");
  var view = { from: 0, to: 1 };
  var geo = { gutter: 150, rowH: 14, top: 20, width: 0 };

  function drawTimeline() {
    var total = Math.max(T.end_t, 1e-6);
    var cssW = canvas.parentElement.clientWidth;
    geo.rowH = Math.max(2, Math.min(16, Math.floor(900 / Math.max(1, lanes.length))));
    geo.gutter = geo.rowH >= 9 ? 150 : 60;
    var cssH = geo.top + lanes.length * geo.rowH + 4;
    var ratio = window.devicePixelRatio || 1;
    canvas.width = Math.floor(cssW * ratio);
    canvas.height = Math.floor(cssH * ratio);
    canvas.style.height = cssH + "px";
    geo.width = cssW;
    var g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, cssW, cssH);
    var t0 = view.from * total, t1 = view.to * total;
    var plot = cssW - geo.gutter - 8;
    function x(t) {
      return geo.gutter + ((t - t0) / (t1 - t0)) * plot;
    }
    geo.x = x;
    geo.t = function (px) {
      return t0 + ((px - geo.gutter) / plot) * (t1 - t0);
    };
    // axis
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = COLORS.muted;
    g.strokeStyle = COLORS.line;
    var step = niceStep((t1 - t0) / 8);
    for (var t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      var px = x(t);
      g.beginPath();
      g.moveTo(px, geo.top - 4);
      g.lineTo(px, cssH);
      g.stroke();
      g.fillText(secs(t), px + 2, 11);
    }
    lanes.forEach(function (lane, k) {
      var y = geo.top + k * geo.rowH;
      if (geo.rowH >= 9 && lane.label) {
        g.fillStyle = COLORS.muted;
        g.fillText(lane.label.slice(0, 24), 4 + lane.depth * 8, y + geo.rowH - 3);
      }
      if (lane.sub && lane.spans.length) {
        g.fillStyle = COLORS.batch;
        lane.spans.forEach(function (b) {
          var n = N[b];
          var a = x(n.s), z = x(isOpen(n) ? T.end_t : n.e);
          g.fillRect(Math.max(a, geo.gutter), y, Math.max(1, z - Math.max(a, geo.gutter)), geo.rowH);
        });
      }
      lane.bars.forEach(function (j) {
        var n = N[j];
        var end = isOpen(n) ? T.end_t : n.e;
        if (end < t0 || n.s > t1) return;
        var a = Math.max(x(n.s), geo.gutter), z = x(end);
        g.globalAlpha = isOpen(n) ? 0.45 : 1;
        g.fillStyle = barColor(n);
        g.fillRect(a, y + 1, Math.max(1, z - a), Math.max(1, geo.rowH - 2));
      });
      g.globalAlpha = 1;
    });
  }

  function barColor(n) {
    if (n.error) return COLORS.err;
    if (n.k === "cell") return COLORS.cell;
    if (n.purpose === "sub") return COLORS.sub;
    if (n.purpose === "forced") return COLORS.forced;
    return N[runOf(n.i)].p === undefined || N[runOf(n.i)].p === null ? COLORS.root : COLORS.child;
  }

  function runOf(i) {
    while (N[i].k !== "run" && N[i].p !== null && N[i].p !== undefined) i = N[i].p;
    return i;
  }

  function niceStep(raw) {
    var mag = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-6))));
    var r = raw / mag;
    return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * mag;
  }

  function hit(px, py) {
    var k = Math.floor((py - geo.top) / geo.rowH);
    if (k < 0 || k >= lanes.length || px < geo.gutter) return -1;
    var t = geo.t(px);
    var slack = geo.t(px + 3) - t; // a few pixels either side, to catch thin bars
    var bars = lanes[k].bars;
    var lo = 0, hi = bars.length - 1, found = -1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (N[bars[mid]].s <= t + slack) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    for (var j = found; j >= 0 && j > found - 50; j--) {
      var n = N[bars[j]];
      var end = isOpen(n) ? T.end_t : n.e;
      if (end >= t - slack) return bars[j];
    }
    return -1;
  }

  function tipText(i) {
    var n = N[i];
    var lines = [title(n) + (n.model ? " · " + n.model : "")];
    lines.push(secs(n.s) + " → " + (isOpen(n) ? "did not end" : secs(n.e)) + " (" + secs(duration(n)) + ")");
    if (n.tok) lines.push(tokens(n.tok) + " tok · " + usd(n.cost));
    var p = preview(n);
    if (p) lines.push(p);
    return lines.join("\n");
  }

  function timelineEvents() {
    var drag = null;
    function pos(ev) {
      var r = canvas.getBoundingClientRect();
      return [ev.clientX - r.left, ev.clientY - r.top];
    }
    canvas.addEventListener("mousemove", function (ev) {
      var p = pos(ev);
      var i = hit(p[0], p[1]);
      if (i < 0) {
        tip.hidden = true;
        return;
      }
      tip.textContent = tipText(i);
      tip.hidden = false;
      tip.style.left = Math.min(p[0] + 12, geo.width - 300) + "px";
      tip.style.top = p[1] + 14 + "px";
    });
    canvas.addEventListener("mouseleave", function () {
      tip.hidden = true;
    });
    canvas.addEventListener("mousedown", function (ev) {
      drag = pos(ev)[0];
    });
    canvas.addEventListener("mouseup", function (ev) {
      var p = pos(ev);
      var from = drag;
      drag = null;
      if (from !== null && Math.abs(p[0] - from) > 5) {
        var total = Math.max(T.end_t, 1e-6);
        var a = geo.t(Math.min(from, p[0])) / total, z = geo.t(Math.max(from, p[0])) / total;
        view = { from: Math.max(0, a), to: Math.min(1, Math.max(z, a + 1e-6)) };
        drawTimeline();
        return;
      }
      var i = hit(p[0], p[1]);
      if (i >= 0) reveal(i);
    });
    canvas.addEventListener("dblclick", function () {
      view = { from: 0, to: 1 };
      drawTimeline();
    });
    var pending = false;
    window.addEventListener("resize", function () {
      if (pending) return;
      pending = true;
      requestAnimationFrame(function () {
        pending = false;
        drawTimeline();
      });
    });
  }

  function legend() {
    var box = document.getElementById("legend");
    [
      ["root", "root model call"],
      ["child", "child run's model call"],
      ["cell", "code cell"],
      ["sub", "sub-call"],
      ["batch", "batch"],
      ["forced", "forced answer"],
      ["err", "error"],
    ].forEach(function (item) {
      var s = el("span");
      var swatch = el("i");
      swatch.style.background = COLORS[item[0]];
      s.appendChild(swatch);
      s.appendChild(document.createTextNode(item[1]));
      box.appendChild(s);
    });
    box.appendChild(el("span", null, "faded: did not end"));
  }

  // ---- start

  function tree() {
    var box = document.getElementById("tree");
    if (!T.roots.length) {
      box.appendChild(el("div", "muted", "Nothing to show: no event could be read."));
      return;
    }
    var frag = document.createDocumentFragment();
    T.roots.forEach(function (r) {
      frag.appendChild(drawNode(r));
    });
    box.appendChild(frag);
  }

  document.getElementById("search").addEventListener("submit", function (ev) {
    ev.preventDefault();
    search(document.getElementById("search-input").value.trim());
  });

  readColors();
  summary();
  problems();
  outcome();
  usageTable();
  errorList();
  tree();
  layout();
  legend();
  drawTimeline();
  timelineEvents();
  // Where node i's bar is on the timeline, in CSS pixels from the canvas's top left.
  function barBox(i) {
    var k = laneOf[i];
    if (k === undefined) return null;
    var n = N[i];
    var a = Math.max(geo.x(n.s), geo.gutter);
    var z = geo.x(isOpen(n) ? T.end_t : n.e);
    return { x: a, y: geo.top + k * geo.rowH, w: Math.max(1, z - a), h: geo.rowH };
  }

  window.deeprlmViewer = { reveal: reveal, nodes: N, lanes: lanes, barBox: barBox };
  document.documentElement.setAttribute("data-ready", "1");
})();
