// emostream browser client: protocol v1 over ws(s)://<this host>/ws (see docs/protocol.md).
// Vanilla JS, no dependencies. All text from the server goes through textContent.
// Two modes: watching (the server's own source) and capturing (this browser's camera and
// microphone, sent as binary frames by capture.js on /ws?source=browser; one session each).
"use strict";

(function () {
  const PROTOCOL_VERSION = 1;
  const TIMELINE_WINDOW_MS = 60000;
  const MAX_UTTERANCES = 200;
  const PING_EVERY_MS = 5000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const FACE_STALE_MS = 2500; // face events come a few times a second; older than this is stale
  const DEBUG_LOG_MAX = 5000; // messages kept in window.emostream.messages
  const CAP = window.EmostreamCapture; // capture.js

  // One colour per emotion, the same everywhere (bars, badges, timeline).
  const LABEL_COLOURS = {
    anger: "#e5484d", angry: "#e5484d",
    joy: "#f5c400", happy: "#f5c400", happiness: "#f5c400", excited: "#ffb224",
    sadness: "#0090ff", sad: "#0090ff",
    fear: "#8e4ec6", fearful: "#8e4ec6",
    surprise: "#f76b15", surprised: "#f76b15",
    disgust: "#30a46c", disgusted: "#30a46c",
    neutral: "#8b8d98", calm: "#8b8d98",
    frustration: "#d6409f", frustrated: "#d6409f",
    contempt: "#a18072",
  };
  const FALLBACK = ["#12a594", "#d6409f", "#3e63dd", "#a18072", "#86ead4", "#e54666", "#99d52a", "#ad7f58", "#5b5bd6", "#00a2c7"];

  function colourOf(label) {
    const key = String(label || "").toLowerCase();
    if (LABEL_COLOURS[key]) return LABEL_COLOURS[key];
    let h = 0;
    for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) >>> 0;
    return FALLBACK[h % FALLBACK.length];
  }
  function inkOn(hex) { // readable text colour on a label colour
    const n = parseInt(hex.slice(1), 16);
    const r = (n >> 16) & 255, g = (n >> 8) & 255, b = n & 255;
    return (0.299 * r + 0.587 * g + 0.114 * b) > 150 ? "#111" : "#fff";
  }

  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const pct = (p) => (p * 100).toFixed(p >= 0.995 || p < 0.0995 ? 0 : 1) + "%";
  const fmtMs = (ms) => (ms === null || ms === undefined) ? "–" : (ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : Math.round(ms) + " ms");
  const speakerName = (s) => (typeof s === "number" ? "Speaker " + (s + 1) : String(s));

  // ---------------------------------------------------------------------------------------
  // state

  const state = {
    labels: [],
    interim: true,
    utterances: new Map(), // id -> {id, speaker, tStart, tEnd, text, label, confidence, probs, final, flags, ended}
    order: [],
    lastStreamMs: null, // latest stream time seen, and when (performance.now())
    lastWall: 0,
    latencies: [],
    pingSent: new Map(),
    pipelineDrops: 0,
    modalities: [], // per-modality rows in the Now card, in order (hello.live_modalities, then any seen)
    faceSeenAt: null, // performance.now() of the last `face` event, null if none since the last hello
    mode: "watch", // "watch": the server's source; "capture": this browser's camera and microphone
    capture: null, // CAP.Capture while the devices are open
    session: null, // hello.session of the current connection
  };

  // A small debug hook for tests and the console: what this page received and sent.
  const debug = {
    messages: [], // every server message, in order (bounded)
    hellos: [],
    get mode() { return state.mode; },
    get session() { return state.session; },
    get capture() { return state.capture ? Object.assign({}, state.capture.stats) : null; },
    finals() { return this.messages.filter((m) => m.type === "prediction" && m.final); },
  };
  window.emostream = debug;

  function utt(id, speaker) {
    let u = state.utterances.get(id);
    if (!u) {
      u = { id, speaker, tStart: null, tEnd: null, text: "", label: null, confidence: null, probs: null,
            final: false, flags: [], modalities: null, ended: false, node: null, seg: null };
      state.utterances.set(id, u);
      state.order.push(id);
      while (state.order.length > MAX_UTTERANCES) {
        const old = state.utterances.get(state.order.shift());
        state.utterances.delete(old.id);
        if (old.node) old.node.remove();
        if (old.seg) old.seg.remove();
      }
    }
    if (speaker !== undefined && speaker !== null) u.speaker = speaker;
    return u;
  }
  function seeStreamTime(ms) {
    if (typeof ms !== "number") return;
    if (state.lastStreamMs === null || ms >= state.lastStreamMs) {
      state.lastStreamMs = ms;
      state.lastWall = performance.now();
    }
  }
  function streamNow() {
    if (state.lastStreamMs === null) return null;
    return state.lastStreamMs + (performance.now() - state.lastWall);
  }

  // ---------------------------------------------------------------------------------------
  // rendering

  function renderLabels() {
    const bars = $("bars");
    bars.replaceChildren();
    const legend = $("legend");
    legend.replaceChildren();
    for (const label of state.labels) {
      const c = colourOf(label);
      const row = el("div", "bar");
      row.setAttribute("role", "listitem");
      row.dataset.label = label;
      row.style.setProperty("--c", c);
      const track = el("div", "track");
      track.appendChild(el("div", "fill"));
      row.append(el("span", "name", label), track, el("span", "pct", "–"));
      bars.appendChild(row);
      const item = el("span");
      const sw = el("span", "swatch");
      sw.style.background = c;
      item.append(sw, document.createTextNode(label));
      legend.appendChild(item);
    }
  }

  const isProbs = (d) => !!d && typeof d === "object" && !Array.isArray(d);
  function topOf(probs) { // [label, p] of the largest probability, or [null, null]
    let best = null, bestP = -1;
    for (const [k, v] of Object.entries(probs)) if (typeof v === "number" && v > bestP) { best = k; bestP = v; }
    return best === null ? [null, null] : [best, bestP];
  }
  function describe(probs) { // "joy 78%, neutral 12%, ..." largest first
    return Object.entries(probs).filter(([, v]) => typeof v === "number")
      .sort((a, b) => b[1] - a[1]).map(([k, v]) => k + " " + pct(v)).join(", ");
  }

  // A thin stacked bar: one segment per label (the hello's order), width = probability.
  function fillDist(node, probs) {
    if (!isProbs(probs)) { node.replaceChildren(); node.title = ""; return; }
    const labels = state.labels.slice();
    for (const k of Object.keys(probs)) if (!labels.includes(k)) labels.push(k);
    if (node.childElementCount !== labels.length || [...node.children].some((c, i) => c.dataset.label !== labels[i])) {
      node.replaceChildren();
      for (const label of labels) {
        const seg = el("span", "dseg");
        seg.dataset.label = label;
        seg.style.background = colourOf(label);
        node.appendChild(seg);
      }
    }
    const [top] = topOf(probs);
    for (const seg of node.children) {
      const p = probs[seg.dataset.label];
      seg.style.width = ((typeof p === "number" ? p : 0) * 100).toFixed(2) + "%";
      seg.classList.toggle("top", seg.dataset.label === top);
    }
    node.title = describe(probs);
  }

  function modRow(name) {
    const box = $("modalities");
    let row = box.querySelector('.mod-row[data-modality="' + CSS.escape(name) + '"]');
    if (!row) {
      row = el("div", "mod-row");
      row.setAttribute("role", "listitem");
      row.dataset.modality = name;
      row.dataset.state = "empty";
      const label = el("span", "mod-label");
      label.append(el("span", "swatch"), el("span", "mod-top", "–"));
      label.firstChild.setAttribute("aria-hidden", "true");
      const dist = el("span", "dist");
      dist.setAttribute("aria-hidden", "true");
      row.append(el("span", "mod-name", name), label, el("span", "mod-pct"), dist);
      row.setAttribute("aria-label", name + ": no prediction yet");
      box.appendChild(row);
      if (!state.modalities.includes(name)) state.modalities.push(name);
      $("modalities-box").hidden = false;
    }
    return row;
  }
  function setModalityRows(names) {
    $("modalities").replaceChildren();
    state.modalities = [];
    for (const name of names) modRow(name);
    $("modalities-box").hidden = state.modalities.length === 0;
  }
  const absentText = (name) => (name === "face" ? "no face" : "–");

  function renderModalities(msg) {
    const mods = msg.modalities;
    if (!isProbs(mods)) return; // an older server: no per-modality distributions
    for (const name of Object.keys(mods)) modRow(name);
    $("modalities").classList.toggle("interim", !msg.final);
    for (const row of $("modalities").children) {
      const name = row.dataset.modality;
      const d = mods[name];
      const sw = row.querySelector(".swatch");
      if (isProbs(d)) {
        const [label, p] = topOf(d);
        row.dataset.state = "ok";
        row.dataset.label = label;
        sw.style.background = colourOf(label);
        row.querySelector(".mod-top").textContent = label;
        row.querySelector(".mod-pct").textContent = pct(p);
        fillDist(row.querySelector(".dist"), d);
        row.setAttribute("aria-label", name + ": " + label + " " + pct(p) + (msg.final ? "" : " (interim)"));
      } else {
        // null: the modality saw nothing (no face); missing: not reported in this prediction
        row.dataset.state = d === null ? "absent" : "empty";
        delete row.dataset.label;
        sw.style.background = "";
        row.querySelector(".mod-top").textContent = d === null ? absentText(name) : "–";
        row.querySelector(".mod-pct").textContent = "";
        fillDist(row.querySelector(".dist"), null);
        row.setAttribute("aria-label", name + ": " + (d === null ? absentText(name) : "not reported"));
      }
    }
  }

  function renderSelfFace(msg, present, label, conf) {
    if (state.mode !== "capture") return;
    const faceBox = $("self-box");
    const text = present ? label + (conf === null ? "" : " " + pct(conf)) : "no face in view";
    $("self-face").textContent = text;
    const b = msg.box, fs = msg.frame_size;
    if (present && Array.isArray(b) && b.length === 4 && Array.isArray(fs) && fs[0] > 0 && fs[1] > 0) {
      // the self view is mirrored (like a mirror); the box is in the unmirrored frame's pixels
      faceBox.style.left = ((1 - (b[0] + b[2]) / fs[0]) * 100).toFixed(2) + "%";
      faceBox.style.top = (b[1] / fs[1] * 100).toFixed(2) + "%";
      faceBox.style.width = (b[2] / fs[0] * 100).toFixed(2) + "%";
      faceBox.style.height = (b[3] / fs[1] * 100).toFixed(2) + "%";
      faceBox.style.setProperty("--c", colourOf(label));
      faceBox.hidden = false;
    } else {
      faceBox.hidden = true;
    }
  }

  function renderFace(msg) {
    const box = $("face-now");
    box.hidden = false;
    state.faceSeenAt = performance.now();
    box.dataset.stale = "false";
    const present = msg.present !== false && isProbs(msg.probs);
    box.dataset.present = String(present);
    const n = typeof msg.n_faces === "number" ? msg.n_faces : null;
    if (present) {
      let label = typeof msg.label === "string" ? msg.label : null;
      let conf = typeof msg.confidence === "number" ? msg.confidence : null;
      if (label === null) [label, conf] = topOf(msg.probs);
      if (conf === null && typeof msg.probs[label] === "number") conf = msg.probs[label];
      box.dataset.label = label;
      $("face-now-swatch").style.background = colourOf(label);
      $("face-now-label").textContent = label;
      $("face-now-conf").textContent = conf === null ? "" : pct(conf);
      fillDist($("face-now-dist"), msg.probs);
      $("face-now-extra").textContent = n !== null && n > 1 ? n + " faces" : "";
      box.setAttribute("aria-label", "live facial expression: " + label + (conf === null ? "" : " " + pct(conf)));
      renderSelfFace(msg, true, label, conf);
    } else {
      renderSelfFace(msg, false, null, null);
      delete box.dataset.label;
      $("face-now-swatch").style.background = "";
      $("face-now-label").textContent = "no face in view";
      $("face-now-conf").textContent = "";
      fillDist($("face-now-dist"), null);
      $("face-now-extra").textContent = "";
      box.setAttribute("aria-label", "live facial expression: no face in view");
    }
  }
  function checkFaceStale() {
    if (state.faceSeenAt === null) return;
    const stale = performance.now() - state.faceSeenAt > FACE_STALE_MS;
    const box = $("face-now");
    if (box.dataset.stale !== String(stale)) box.dataset.stale = String(stale);
  }

  function renderNow(msg) {
    const c = colourOf(msg.label);
    $("now").dataset.final = String(msg.final);
    $("now-interim").hidden = !!msg.final;
    $("now-speaker").textContent = speakerName(msg.speaker);
    $("now-label").textContent = msg.label;
    $("now-swatch").style.background = c;
    $("now-confidence").textContent = pct(msg.confidence) + " confidence" + (msg.final ? "" : " (interim)");
    $("now-text").textContent = msg.text ? "“" + msg.text + "”" : "";
    renderModalities(msg);
    const bars = $("bars");
    bars.classList.toggle("interim", !msg.final);
    for (const row of bars.children) {
      const p = msg.probs[row.dataset.label];
      const v = typeof p === "number" ? p : 0;
      row.querySelector(".fill").style.width = (v * 100).toFixed(1) + "%";
      row.querySelector(".pct").textContent = typeof p === "number" ? pct(v) : "–";
      row.classList.toggle("top", row.dataset.label === msg.label);
    }
    // labels the hello did not announce: add a row so nothing is hidden
    for (const label of Object.keys(msg.probs)) {
      if (!state.labels.includes(label)) { state.labels.push(label); renderLabels(); renderNow(msg); return; }
    }
  }

  function renderUtt(u) {
    const list = $("transcript");
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 40; // follow the newest line
    if (!u.node) {
      u.node = el("li", "utt");
      const stripe = el("div", "stripe");
      const body = el("div", "body");
      const head = el("div", "head");
      head.append(el("span", "speaker"), el("span", "label"), el("span", "conf"), el("span", "chips"), el("span", "tag"),
                  el("span", "flags"));
      body.append(head, el("div", "text"));
      u.node.append(stripe, body);
      list.appendChild(u.node);
      $("transcript-empty").hidden = true;
    }
    const stateName = u.final ? "final" : (u.label ? "interim" : "speaking");
    u.node.dataset.state = stateName;
    u.node.dataset.id = String(u.id);
    const c = u.label ? colourOf(u.label) : null;
    if (c) u.node.style.setProperty("--c", c); else u.node.style.removeProperty("--c");
    const head = u.node.querySelector(".head");
    head.querySelector(".speaker").textContent = speakerName(u.speaker);
    const labelNode = head.querySelector(".label");
    labelNode.replaceChildren();
    if (u.label) {
      const sw = el("span", "swatch");
      sw.style.background = c;
      labelNode.append(sw, document.createTextNode(u.label));
    }
    head.querySelector(".conf").textContent = u.confidence !== null ? pct(u.confidence) : "";
    const tag = head.querySelector(".tag");
    tag.textContent = stateName === "final" ? "" : stateName;
    tag.hidden = stateName === "final";
    const chips = head.querySelector(".chips");
    chips.replaceChildren();
    const mods = u.final && isProbs(u.modalities) ? u.modalities : null;
    if (mods) {
      for (const name of Object.keys(mods)) {
        const d = mods[name];
        const chip = el("span", "chip");
        chip.dataset.modality = name;
        chip.append(el("span", "chip-name", name));
        if (isProbs(d)) {
          const [label, p] = topOf(d);
          chip.dataset.label = label;
          const sw = el("span", "swatch");
          sw.style.background = colourOf(label);
          sw.setAttribute("aria-hidden", "true");
          chip.append(sw, el("span", "chip-label", label));
          chip.title = name + ": " + describe(d);
          chip.setAttribute("aria-label", name + " " + label + " " + pct(p));
        } else {
          chip.classList.add("absent");
          chip.append(el("span", "chip-label", d === null ? absentText(name) : "–"));
          chip.title = name + ": " + (d === null ? absentText(name) : "not reported");
        }
        chips.appendChild(chip);
      }
    }
    // a "no face" chip already says what the no_face flag says
    const flags = mods && mods.face === null ? u.flags.filter((f) => f !== "no_face") : u.flags;
    head.querySelector(".flags").textContent = flags.length ? flags.join(" · ") : "";
    u.node.querySelector(".text").textContent = u.text;
    u.node.title = u.probs ? Object.entries(u.probs).map(([k, v]) => k + " " + pct(v)).join(", ") : "";
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function renderTimeline() {
    const tl = $("timeline");
    const now = streamNow();
    if (now === null) return;
    const from = now - TIMELINE_WINDOW_MS;
    for (const id of state.order) {
      const u = state.utterances.get(id);
      if (u.tStart === null) continue;
      const end = u.tEnd !== null ? u.tEnd : now;
      if (end < from) { if (u.seg) { u.seg.remove(); u.seg = null; } continue; }
      if (!u.seg) {
        u.seg = el("div", "seg");
        u.seg.appendChild(el("span", "who"));
        tl.appendChild(u.seg);
      }
      const left = Math.max(0, (u.tStart - from) / TIMELINE_WINDOW_MS) * 100;
      const right = Math.min(1, (end - from) / TIMELINE_WINDOW_MS) * 100;
      u.seg.style.left = left.toFixed(2) + "%";
      u.seg.style.width = Math.max(0.3, right - left).toFixed(2) + "%";
      const c = u.label ? colourOf(u.label) : null;
      if (c) { u.seg.style.setProperty("--c", c); u.seg.querySelector(".who").style.color = inkOn(c); }
      u.seg.classList.toggle("interim", !!u.label && !u.final);
      u.seg.classList.toggle("speaking", !u.label);
      u.seg.querySelector(".who").textContent = speakerName(u.speaker) + (u.label ? " · " + u.label : "");
      u.seg.title = speakerName(u.speaker) + ": " + (u.text || "…") + (u.label ? " [" + u.label + " " + pct(u.confidence) + (u.final ? "" : ", interim") + "]" : "");
    }
  }

  function setStat(id, text, alert) {
    const node = $(id);
    node.textContent = text;
    node.classList.toggle("alert", !!alert);
  }

  function banner(kind, code, text, sticky, action) {
    const box = $("banners");
    const key = kind + ":" + code;
    let node = box.querySelector('[data-key="' + CSS.escape(key) + '"]');
    if (node && action && !node.querySelector(".actions")) { node.remove(); node = null; }
    if (!node) {
      node = el("div", "banner " + kind);
      node.dataset.key = key;
      node.dataset.code = code;
      if (kind === "error" || kind === "warning") node.setAttribute("role", "alert");
      node.append(el("span", "code", code), el("span", "msg"));
      if (action) { // [label, fn]: a button that acts and dismisses the banner
        const act = el("span", "actions");
        const b = el("button", "primary", action[0]);
        b.type = "button";
        b.addEventListener("click", () => { node.remove(); action[1](); });
        act.appendChild(b);
        node.appendChild(act);
      }
      const close = el("button", null, "dismiss");
      close.type = "button";
      close.addEventListener("click", () => node.remove());
      node.appendChild(close);
      box.appendChild(node);
    }
    node.querySelector(".msg").textContent = text;
    clearTimeout(node._timer);
    if (!sticky) node._timer = setTimeout(() => node.remove(), 8000);
  }
  function unbanner(kind, code) {
    const node = $("banners").querySelector('[data-key="' + CSS.escape(kind + ":" + code) + '"]');
    if (node) node.remove();
  }

  // ---------------------------------------------------------------------------------------
  // messages

  const handlers = {
    hello(msg, sock) {
      attempt = 0; // a server that answers: the reconnect backoff starts over (not on open: one that
      captureRefusals = 0; // accepts and at once closes would otherwise be retried every 0.5 s)
      if (sock) sock.emostreamHello = true;
      if (state.session !== null && msg.session !== state.session && state.mode === "capture") clearDialogue();
      state.session = typeof msg.session === "string" ? msg.session : null;
      debug.hellos.push(msg);
      if (state.mode === "capture" && state.capture) {
        if (isProbs(msg.capture)) {
          if (state.capture.sock !== sock) state.capture.attach(sock, msg.capture); // (a repeated hello keeps the seqs)
          setCaptureState("sending", "sending your camera and microphone · session " + msg.session);
          unbanner("error", "busy");
        } else { // a server that does not take browser capture (it reads its own source)
          stopCapture(false);
          banner("error", "no_capture", "This server does not accept the browser's camera and microphone (it " +
            "reads its own source; start it with --source browser). Watching its stream instead.", true);
        }
      }
      state.labels = Array.isArray(msg.labels) ? msg.labels.slice() : [];
      state.interim = msg.interim !== false;
      $("interim-toggle").checked = state.interim;
      renderLabels();
      const mods = (msg.modalities || []).join(" + ") || "–";
      const rates = msg.sample_rates || {};
      $("meta").textContent = "model " + msg.model + " · modalities " + mods + " · audio " + (rates.audio_hz || "–") +
        " Hz" + (rates.video_fps ? " · video " + rates.video_fps + " fps" : "") + " · session " + msg.session +
        " · server " + msg.server_version + " · protocol v" + msg.v;
      // optional (newer servers): live per-modality distributions, experts, fusion rule
      const live = Array.isArray(msg.live_modalities) ? msg.live_modalities.map(String) : [];
      setModalityRows(live);
      const fusion = isProbs(msg.fusion) ? msg.fusion : null;
      // e.g. {rule: "log-linear", face_weight: 0.5, face_trust: 0.7}: the rule, then its parameters
      const params = fusion ? Object.entries(fusion).filter(([k, v]) => k !== "rule" &&
        ["string", "number", "boolean"].includes(typeof v)).map(([k, v]) => k.replace(/_/g, " ") + " " + v) : [];
      const rule = fusion ? [(fusion.rule ? String(fusion.rule) + " " : "") + "fusion", ...params].join(", ") : "";
      $("fusion-rule").textContent = rule;
      $("fusion-rule").title = rule;
      const experts = isProbs(msg.experts) ? Object.entries(msg.experts) : [];
      const expertsNode = $("meta-experts");
      const parts = [];
      if (experts.length) {
        parts.push("experts " + experts.map(([k, v]) => k + " " + (v === null || v === undefined ? "none" : v)).join(", "));
      }
      if (fusion) parts.push("fusion " + (fusion.rule ? String(fusion.rule) : "") + (params.length ? " (" + params.join(", ") + ")" : ""));
      expertsNode.textContent = parts.length ? " · " + parts.join(" · ") : "";
      expertsNode.hidden = !parts.length;
      // the face-now line shows only while this server sends `face` events
      $("face-now").hidden = true;
      state.faceSeenAt = null;
    },
    utterance(msg) {
      seeStreamTime(msg.t_ms);
      const u = utt(msg.utterance_id, msg.speaker);
      if (msg.event === "start") { u.tStart = msg.t_ms; $("now-speaker").textContent = speakerName(msg.speaker); }
      else { u.tEnd = msg.t_ms; u.ended = true; if (u.tStart === null) u.tStart = msg.t_ms; }
      renderUtt(u);
    },
    transcript(msg) {
      const u = utt(msg.utterance_id, msg.speaker);
      u.text = msg.text;
      renderUtt(u);
    },
    prediction(msg) {
      seeStreamTime(msg.t_end_ms);
      const u = utt(msg.utterance_id, msg.speaker);
      if (u.final && !msg.final) return; // a late interim never overrides the final
      Object.assign(u, { label: msg.label, confidence: msg.confidence, probs: msg.probs, final: msg.final,
                         flags: Array.isArray(msg.flags) ? msg.flags : [],
                         modalities: isProbs(msg.modalities) ? msg.modalities : null });
      if (msg.text) u.text = msg.text;
      if (u.tStart === null) u.tStart = msg.t_start_ms;
      if (msg.final) u.tEnd = msg.t_end_ms;
      renderUtt(u);
      renderNow(msg);
      if (msg.final && typeof msg.latency_ms === "number") { // latency of final predictions
        setStat("stat-latency", fmtMs(msg.latency_ms));
        state.latencies.push(msg.latency_ms);
        if (state.latencies.length > 50) state.latencies.shift();
        const avg = state.latencies.reduce((a, b) => a + b, 0) / state.latencies.length;
        setStat("stat-latency-avg", fmtMs(avg));
      }
    },
    metrics(msg) {
      if (typeof msg.t_ms === "number") seeStreamTime(msg.t_ms);
      const drops = msg.drops || {};
      const clientDrops = drops.client || 0;
      let pipeline = 0;
      for (const [k, v] of Object.entries(drops)) if (k !== "client") pipeline += v;
      setStat("stat-drops-client", String(clientDrops), clientDrops > 0);
      setStat("stat-drops-pipeline", String(pipeline), pipeline > 0);
      setStat("stat-rtf", typeof msg.rtf === "number" ? msg.rtf.toFixed(2) : "–", msg.rtf > 1);
      const q = Object.entries(msg.queues || {}).map(([k, v]) => k + " " + v).join(", ");
      setStat("stat-queues", q || "–");
      if (typeof msg.clients === "number") setStat("stat-clients", String(msg.clients));
    },
    status(msg) {
      let text = msg.message;
      if (Array.isArray(msg.modalities)) text += " (modalities: " + (msg.modalities.join(" + ") || "none") + ")";
      banner(msg.level || "info", msg.code, text, msg.level !== "info");
    },
    face(msg) {
      if (typeof msg.t_ms === "number") seeStreamTime(msg.t_ms);
      renderFace(msg);
    },
    error(msg) {
      if (msg.code === "busy") { serverBusy(msg.message); return; }
      banner("error", msg.code, msg.message, false); // bad_frame, too_fast, ...: shown, capture goes on
    },
    pong(msg) {
      const sent = state.pingSent.get(msg.id);
      if (sent !== undefined) {
        state.pingSent.delete(msg.id);
        setStat("stat-rtt", fmtMs(performance.now() - sent));
      }
    },
  };

  function onMessage(event) {
    if (typeof event.data !== "string") return;
    let msg;
    try { msg = JSON.parse(event.data); } catch (e) { console.warn("emostream: bad JSON", e); return; }
    if (!msg || typeof msg !== "object") return;
    debug.messages.push(msg);
    if (debug.messages.length > DEBUG_LOG_MAX) debug.messages.splice(0, debug.messages.length - DEBUG_LOG_MAX);
    if (msg.v !== PROTOCOL_VERSION) {
      banner("error", "bad_version", "the server speaks protocol v" + msg.v + "; this page speaks v" + PROTOCOL_VERSION, true);
      return;
    }
    const handler = handlers[msg.type];
    if (handler) handler(msg, event.target); // unknown types are ignored (protocol rule)
  }

  // ---------------------------------------------------------------------------------------
  // connection with automatic reconnect

  let ws = null;
  let attempt = 0;
  let retryTimer = null;
  let pingTimer = null;
  let pingId = 0;
  let captureRefusals = 0; // capturing connections closed before their hello, in a row
  const MAX_CAPTURE_REFUSALS = 6; // with the backoff: ~15 s of a server starting up, then give up

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const token = new URLSearchParams(location.search).get("token");
    const q = new URLSearchParams();
    if (token) q.set("token", token);
    if (state.mode === "capture") q.set("source", "browser");
    const query = q.toString();
    return scheme + "//" + location.host + "/ws" + (query ? "?" + query : "");
  }

  function setConn(stateName, text) {
    $("conn").dataset.state = stateName;
    $("conn-text").textContent = text;
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(Object.assign({ v: PROTOCOL_VERSION }, obj)));
      return true;
    }
    return false;
  }

  function connect() {
    clearTimeout(retryTimer);
    setConn("connecting", attempt ? "reconnecting…" : "connecting…");
    const sock = new WebSocket(wsUrl());
    ws = sock;
    sock.onopen = () => {
      setConn("open", "live");
      if (!state.interim) send({ type: "config", interim: false });
      clearInterval(pingTimer);
      pingTimer = setInterval(() => {
        const id = ++pingId;
        state.pingSent.set(id, performance.now());
        if (state.pingSent.size > 10) state.pingSent.delete(state.pingSent.keys().next().value);
        send({ type: "ping", id });
      }, PING_EVERY_MS);
    };
    sock.onmessage = onMessage;
    sock.onclose = (ev) => {
      if (state.capture && state.capture.sock === sock) state.capture.detach();
      if (ws !== sock) return;
      clearInterval(pingTimer);
      if (ev.code === 1013 && state.mode === "capture") { serverBusy(ev.reason); return; } // full: no capture loop
      if (state.mode === "capture" && !sock.emostreamHello) { // refused as a capturer (warming up, or never)
        captureRefusals += 1;
        if (captureRefusals >= MAX_CAPTURE_REFUSALS) { captureRefused(ev); return; }
      }
      if (state.mode === "capture") setCaptureState("waiting", "connection lost · capture resumes on reconnect");
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.75 + Math.random() * 0.5);
      attempt += 1;
      const until = performance.now() + delay;
      const why = ev.code === 1001 ? "server went away" : (ev.code === 1006 ? "connection lost" : "closed (" + ev.code + ")");
      const tick = () => {
        const left = Math.max(0, until - performance.now());
        setConn(attempt > 1 ? "closed" : "waiting", why + " · retry in " + (left / 1000).toFixed(1) + " s");
        if (left > 0) retryTimer = setTimeout(tick, 200); else connect();
      };
      tick();
    };
    sock.onerror = () => { /* onclose follows and schedules the retry */ };
  }

  function reconnect() { // close the current connection on purpose and open one in the current mode
    const old = ws;
    ws = null;
    clearTimeout(retryTimer);
    clearInterval(pingTimer);
    if (old) { old.onclose = null; if (state.capture) state.capture.detach(); old.close(1000, "switching mode"); }
    attempt = 0;
    connect();
  }

  // ---------------------------------------------------------------------------------------
  // capture: this browser's camera and microphone

  function setCaptureState(name, text) {
    $("self-view").dataset.state = name;
    $("capture-state").textContent = text;
  }
  function showMode() {
    const capturing = state.mode === "capture";
    $("capture-controls").dataset.mode = state.mode;
    $("capture-btn").hidden = capturing;
    $("capture-stop").hidden = !capturing;
    $("self-view").hidden = !capturing;
    if (!capturing) { $("self-box").hidden = true; $("self-face").textContent = ""; }
  }
  function clearDialogue() {
    for (const u of state.utterances.values()) { if (u.node) u.node.remove(); if (u.seg) u.seg.remove(); }
    state.utterances.clear();
    state.order = [];
    $("transcript-empty").hidden = false;
  }

  let starting = false;
  async function startCapture() {
    if (state.mode === "capture" || starting) return;
    starting = true;
    $("capture-btn").disabled = true;
    unbanner("error", "busy");
    unbanner("error", "no_capture");
    let stream = null;
    try {
      stream = await CAP.openDevices();
    } catch (err) {
      starting = false;
      $("capture-btn").disabled = false;
      banner("error", "capture_failed", CAP.explain(err), true);
      if (!ws) connect(); // (auto-start) watch instead
      return;
    }
    unbanner("error", "capture_failed");
    const cap = new CAP.Capture(stream, $("self-video"), (code, text) => banner("warning", code, text, true));
    state.capture = cap;
    state.mode = "capture";
    showMode();
    setCaptureState("waiting", "connecting as a capturing client…");
    try {
      await cap.start();
    } catch (err) {
      banner("error", "capture_failed", "Could not start audio capture: " + (err && err.message ? err.message : err), true);
    }
    starting = false;
    $("capture-btn").disabled = false;
    if (state.capture !== cap) return; // stopped meanwhile
    clearDialogue();
    reconnect();
  }

  function stopCapture(andReconnect) {
    if (state.capture) { state.capture.stop(); state.capture = null; }
    if (state.mode !== "capture") return;
    state.mode = "watch";
    showMode();
    if (andReconnect) { clearDialogue(); reconnect(); }
  }

  function captureRefused(ev) {
    captureRefusals = 0;
    stopCapture(false);
    banner("error", "no_capture", "The server keeps refusing this browser's camera and microphone (closed " +
      ev.code + (ev.reason ? ": " + ev.reason : "") + "); it may not take browser capture (start it with " +
      "--source browser). Watching its stream instead.", true, ["Retry capturing", () => startCapture()]);
    clearDialogue();
    reconnect();
  }

  function serverBusy(message) {
    if (state.mode !== "capture") return;
    stopCapture(false);
    banner("error", "busy", "server busy: too many capturing sessions" + (message ? " (" + message + ")" : "") +
      ". Watching the server instead; try again later.", true, ["Retry capturing", () => startCapture()]);
    clearDialogue();
    reconnect(); // as a watcher, with no capture loop
  }

  // ---------------------------------------------------------------------------------------
  // controls

  $("reset-btn").addEventListener("click", () => {
    if (send({ type: "reset" })) {
      clearDialogue();
      banner("info", "reset", "dialogue reset", false);
    }
  });
  $("interim-toggle").addEventListener("change", (e) => {
    state.interim = e.target.checked;
    send({ type: "config", interim: state.interim });
  });

  $("capture-btn").addEventListener("click", () => { startCapture(); });
  $("capture-stop").addEventListener("click", () => stopCapture(true));

  renderLabels();
  showMode();
  setInterval(() => { renderTimeline(); checkFaceStale(); }, 250);
  if (new URLSearchParams(location.search).get("source") === "browser") startCapture(); // kiosks, tests
  else connect();
})();
