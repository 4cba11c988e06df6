/* report.html: builds the page from the JSON in #report-data. Every text from the results is
   set with textContent (never innerHTML), so a caption is always shown as text. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const vocab = data.vocabulary;
  const shots = data.shots;
  const film = data.film;
  const SVG = "http://www.w3.org/2000/svg";
  const DEFAULT_SHOWN = 6;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function colour(i) { return "hsl(" + ((i * 137.508) % 360).toFixed(1) + ", 68%, 42%)"; }
  function fmtValue(v) { return v === null || v === undefined ? "-" : v.toFixed(2); }
  function fmtSeconds(s) { return s.toFixed(2) + " s"; }
  function fmtClock(s) {
    const t = Math.round(s), h = Math.floor(t / 3600), m = Math.floor(t / 60) % 60, sec = t % 60;
    const mm = (h ? String(m).padStart(2, "0") : String(m)) + ":" + String(sec).padStart(2, "0");
    return h ? h + ":" + mm : mm;
  }
  function span(shot) { return shot.tc + " \u2013 " + shot.tcEnd; }

  /* ---- header and summary ---- */
  const sum = data.summary;
  document.getElementById("title").textContent = film.name;
  const sub = [sum.shotCount + " shots", fmtClock(sum.duration) + " (" + fmtSeconds(sum.duration) + ")"];
  if (film.fps) sub.push(film.fps + " fps");
  if (film.width && film.height) sub.push(film.width + "\u00d7" + film.height);
  if (vocab.length) sub.push(vocab.length + " attributes");
  if (sum.model) sub.push("model " + sum.model);
  document.getElementById("subtitle").textContent = sub.join(" \u00b7 ");

  const facts = document.getElementById("facts");
  function fact(name, value) { facts.append(el("dt", {}, name), el("dd", {}, value)); }
  fact("Film", film.name);
  fact("Length", fmtClock(sum.duration) + " (" + fmtSeconds(sum.duration) + ")");
  fact("Shots", sum.shotCount);
  fact("Mean shot length", fmtSeconds(sum.meanShot));
  if (sum.audioClasses.length) {
    fact("Audio classes", sum.audioClasses.map(([c, n]) => c + " " + n).join(", "));
  }
  if (sum.edit) {
    const kinds = Object.entries(sum.edit.transitions);
    if (kinds.length) fact("Transitions", kinds.map(([k, n]) => k.replace("_", " ") + " " + n).join(", "));
    if (sum.edit.black_segments) fact("Black segments", sum.edit.black_segments);
    if (sum.edit.dialogue_shots) fact("Shots with dialogue", sum.edit.dialogue_shots);
  }
  if (sum.model) fact("Model", sum.model);
  if (!sum.analysed) fact("Analysis", "none (shots only: timing and frames)");

  const shotById = new Map(shots.map((s) => [s.id, s]));
  if (sum.attributes.length) {
    const list = el("div", { class: "attribute-list", id: "attribute-table" });
    for (const a of sum.attributes) {
      const row = el("div", { class: "attribute-row", "data-attribute": vocab[a.index] });
      const peakShot = shotById.get(a.peakShot);
      const play = el("button", { type: "button", title: "Play the shot where it peaks" },
        "\u25b6 #" + a.peakShot + " " + a.peakTc);
      play.addEventListener("click", () => peakShot && playShot(peakShot));
      row.append(el("span", { class: "swatch", style: "background:" + colour(a.index) }),
        el("span", { class: "name", title: vocab[a.index] }, vocab[a.index]),
        el("span", { class: "num" }, "mean " + fmtValue(a.mean)),
        el("span", { class: "num" }, "peak " + fmtValue(a.peak)), play);
      list.append(row);
    }
    document.getElementById("attribute-summary").append(list);
  } else {
    document.getElementById("attributes-section").remove(); // shots only: no scores
  }

  /* ---- player ---- */
  const playerBox = document.getElementById("player-box");
  const nowPlaying = document.getElementById("now-playing");
  let video = null;
  let current = null;
  if (film.src) {
    video = el("video", { id: "player", controls: "", preload: "metadata", playsinline: "" });
    video.src = film.src;
    playerBox.append(video);
    nowPlaying.textContent = "Click a tile or a point to play its shot.";
  } else {
    playerBox.append(el("p", { class: "note", id: "no-video" }, film.note));
  }

  function stopAtEnd() {
    if (current && video && !video.paused && video.currentTime >= current.end - 0.02) {
      video.pause();
      current = null;
    }
  }
  function playShot(shot) {
    playRange(shot, "Shot " + shot.id + " \u00b7 " + span(shot) +
      (shot.caption ? " \u00b7 " + shot.caption : ""), shot.id);
  }
  /* Play film time range.start..range.end (seconds), pausing at its end; shotId's tile and
     block, and `marked` (a trailer pick's row), are shown as playing. */
  function playRange(range, label, shotId, marked) {
    markPlaying(shotId, marked);
    nowPlaying.textContent = label;
    if (!video) return;
    current = range;
    const go = () => {
      video.currentTime = range.start;
      const started = video.play();
      if (started && started.catch) started.catch(() => {}); // autoplay refused: stay paused
    };
    if (video.readyState >= 1) go(); else video.addEventListener("loadedmetadata", go, { once: true });
  }
  if (video) {
    video.addEventListener("timeupdate", () => { stopAtEnd(); movePlayhead(video.currentTime); });
    video.addEventListener("playing", () => {
      const loop = () => { stopAtEnd(); if (!video.paused) requestAnimationFrame(loop); };
      requestAnimationFrame(loop);
    });
    video.addEventListener("seeked", () => {
      if (current && (video.currentTime < current.start - 0.05 || video.currentTime > current.end)) {
        current = null; // the viewer moved elsewhere: play on
      }
    });
  }

  /* ---- tooltip ---- */
  const tip = document.getElementById("tooltip");
  function showTip(event, shot, line) {
    tip.replaceChildren(el("strong", {}, "Shot " + shot.id + " \u00b7 " + span(shot)));
    if (line) tip.append(el("div", { class: "tip-value" }, line));
    if (shot.caption) tip.append(el("div", { class: "tip-caption" }, shot.caption));
    tip.hidden = false;
    moveTip(event);
  }
  function moveTip(event) {
    const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    const y = Math.min(event.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
    tip.style.left = Math.max(0, x) + "px";
    tip.style.top = Math.max(0, y) + "px";
  }
  function hideTip() { tip.hidden = true; }

  /* ---- the arc ---- */
  const W = 1000, LEFT = 38, RIGHT = 10, TOP = 10, PLOT = 240, STRIP = 26;
  const GAP = 30, H = TOP + PLOT + GAP + STRIP + 4;
  const duration = Math.max(film.duration, shots[shots.length - 1].end, 1e-6);
  const xOf = (t) => LEFT + (t / duration) * (W - LEFT - RIGHT);
  const yOf = (v) => TOP + (1 - v) * PLOT;
  let playhead = null;
  const curves = new Map();

  function movePlayhead(t) {
    if (!playhead) return;
    playhead.setAttribute("x1", xOf(t));
    playhead.setAttribute("x2", xOf(t));
    playhead.setAttribute("visibility", "visible");
  }

  function buildArc() {
    const box = document.getElementById("arc");
    const chart = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Attributes over film time" });
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      chart.append(svgEl("line", { class: "grid", x1: LEFT, x2: W - RIGHT, y1: yOf(v), y2: yOf(v) }));
      chart.append(svgEl("text", { class: "axis-label", x: LEFT - 6, y: yOf(v) + 4,
        "text-anchor": "end" }, v.toFixed(2)));
    }
    const step = niceStep(duration / 8);
    for (let t = 0; t <= duration + 1e-9; t += step) {
      chart.append(svgEl("text", { class: "axis-label", x: xOf(t), y: TOP + PLOT + 16,
        "text-anchor": "middle" }, fmtClock(t)));
    }
    const curveLayer = svgEl("g", { class: "curves" });
    vocab.forEach((name, i) => {
      const g = svgEl("g", { class: "curve", "data-attribute": name });
      g.append(svgEl("path", { d: pathFor(i), stroke: colour(i) }));
      curveLayer.append(g);
      curves.set(name, { g: g, index: i, points: false });
    });
    chart.append(curveLayer);
    const strip = svgEl("g", { class: "strip" });
    const y = TOP + PLOT + GAP;
    shots.forEach((s, k) => {
      const x = xOf(s.start), w = Math.max(xOf(s.end) - x, 0.6);
      const r = svgEl("rect", { class: "strip-shot", x: x, y: y, width: w, height: STRIP,
        fill: k % 2 ? "#8d96a8" : "#5d6678", "data-shot-id": s.id });
      strip.append(r);
    });
    chart.append(strip);
    chart.append(svgEl("text", { class: "axis-label", x: LEFT - 6, y: y + STRIP / 2 + 4,
      "text-anchor": "end" }, "shots"));
    playhead = svgEl("line", { class: "playhead", y1: TOP, y2: y + STRIP, visibility: "hidden" });
    chart.append(playhead);
    chart.addEventListener("mouseover", (e) => {
      const t = e.target;
      const shot = shotById.get(Number(t.getAttribute && t.getAttribute("data-shot-id")));
      if (!shot) return;
      const name = t.getAttribute("data-attribute");
      showTip(e, shot, name ? name + ": " + fmtValue(shot.v[vocab.indexOf(name)]) : "");
    });
    chart.addEventListener("mousemove", (e) => { if (!tip.hidden) moveTip(e); });
    chart.addEventListener("mouseout", hideTip);
    chart.addEventListener("click", (e) => {
      const shot = shotById.get(Number(e.target.getAttribute("data-shot-id")));
      if (shot) playShot(shot);
    });
    box.append(chart);
  }
  function niceStep(raw) {
    for (const s of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) if (s >= raw) return s;
    return 3600 * Math.ceil(raw / 3600);
  }
  function pathFor(i) {
    let d = "", open = false;
    for (const s of shots) {
      const v = s.v[i];
      if (v === null) { open = false; continue; }
      d += (open ? "L" : "M") + xOf((s.start + s.end) / 2).toFixed(1) + "," + yOf(v).toFixed(1);
      open = true;
    }
    return d;
  }
  function addPoints(curve) {
    const name = vocab[curve.index];
    for (const s of shots) {
      const v = s.v[curve.index];
      if (v === null) continue;
      curve.g.append(svgEl("circle", { class: "point", r: 4, cx: xOf((s.start + s.end) / 2),
        cy: yOf(v), fill: colour(curve.index), "data-shot-id": s.id, "data-attribute": name }));
    }
    curve.points = true;
  }
  function setShown(name, shown) {
    const curve = curves.get(name);
    if (shown && !curve.points) addPoints(curve); // points are made when first shown
    curve.g.style.display = shown ? "" : "none";
  }
  function buildToggles() {
    const box = document.getElementById("attribute-toggles");
    const boxes = [];
    const buttons = el("div", { class: "toggle-buttons" });
    const all = el("button", { type: "button", id: "show-all" }, "Show all");
    const none = el("button", { type: "button", id: "hide-all" }, "Hide all");
    buttons.append(all, none);
    box.append(buttons);
    vocab.forEach((name, i) => {
      const label = el("label");
      const input = el("input", { type: "checkbox", "data-attribute": name });
      input.checked = vocab.length <= 8 || i < DEFAULT_SHOWN;
      input.addEventListener("change", () => setShown(name, input.checked));
      label.append(input, el("span", { class: "swatch", style: "background:" + colour(i) }),
        el("span", {}, name));
      box.append(label);
      boxes.push(input);
      setShown(name, input.checked);
    });
    const setAll = (on) => boxes.forEach((b) => { b.checked = on; setShown(b.dataset.attribute, on); });
    all.addEventListener("click", () => setAll(true));
    none.addEventListener("click", () => setAll(false));
  }

  /* ---- contact sheet ---- */
  const sheet = document.getElementById("sheet");
  const tiles = new Map();
  function buildTile(s) {
    const tile = el("article", { class: "tile", tabindex: 0, role: "button", "data-shot-id": s.id,
      "aria-label": "Play shot " + s.id });
    if (s.thumb) {
      const img = el("img", { class: "thumb", loading: "lazy", alt: "Shot " + s.id });
      img.src = s.thumb;
      tile.append(img);
    } else {
      tile.append(el("div", { class: "thumb placeholder" }, "no frame saved for shot " + s.id));
    }
    const body = el("div", { class: "tile-body" });
    const head = el("div", { class: "tile-head" });
    head.append(el("strong", {}, "Shot " + s.id),
      el("span", { class: "duration", title: s.frames + " frames" }, fmtSeconds(s.end - s.start)));
    body.append(head, el("div", { class: "tc" }, span(s)));
    if (s.caption !== null) body.append(el("p", { class: "caption" }, s.caption));
    if (s.audio !== null) body.append(el("span", { class: "badge audio" }, "sound: " + s.audio));
    if (s.sound) {
      const facts = [];
      if (s.sound.speech !== null && s.sound.speech >= 0.3) facts.push("dialogue " + Math.round(s.sound.speech * 100) + "%");
      if (s.sound.music !== null && s.sound.music >= 0.5) facts.push("music " + Math.round(s.sound.music * 100) + "%");
      if (s.sound.lufs !== null) facts.push(s.sound.lufs.toFixed(0) + " LUFS");
      if (s.sound.lra !== null) facts.push("LRA " + s.sound.lra.toFixed(0) + " LU");
      if (s.sound.tempo !== null) facts.push(s.sound.tempo.toFixed(0) + " BPM");
      if (s.sound.beats && s.sound.beats.length) facts.push(s.sound.beats.length + " beats");
      if (facts.length) body.append(el("span", { class: "badge sound" }, facts.join(" \u00b7 ")));
    }
    if (s.edit) {
      const parts = [];
      const tin = s.edit.transition_in, tout = s.edit.transition_out;
      if (tin && tin.kind !== "cut") parts.push("in: " + tin.kind.replace("_", " "));
      if (tout && tout.kind !== "cut") parts.push("out: " + tout.kind.replace("_", " "));
      if (s.edit.black) parts.push(s.edit.black + " black");
      if (parts.length) body.append(el("span", { class: "badge edit" }, parts.join(" \u00b7 ")));
    }
    if (s.top.length) {
      const list = el("ul", { class: "top" });
      for (const [i, v] of s.top) {
        const li = el("li", { "data-attribute": vocab[i] });
        const bar = el("div", { class: "bar" });
        bar.append(el("span", { style: "width:" + (v * 100).toFixed(0) + "%;background:" + colour(i) }));
        li.append(el("span", { class: "name", title: vocab[i] }, vocab[i]), bar,
          el("span", { class: "value" }, fmtValue(v)));
        list.append(li);
      }
      body.append(list);
    }
    tile.append(body);
    tile.addEventListener("click", () => playShot(s));
    tile.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); playShot(s); }
    });
    return tile;
  }
  function markPlaying(id, marked) {
    for (const node of document.querySelectorAll(".playing")) node.classList.remove("playing");
    if (marked) marked.classList.add("playing");
    const tile = tiles.get(id);
    if (tile) tile.classList.add("playing");
    const block = document.querySelector('.strip-shot[data-shot-id="' + id + '"]');
    if (block) block.classList.add("playing");
  }

  const controls = document.getElementById("controls");
  const count = el("span", { class: "count", id: "tile-count" });
  let sortBy = null, filterBy = null, minValue = 0;
  function buildControls() {
    const sort = el("select", { id: "sort-by" });
    sort.append(el("option", { value: "" }, "film order (time)"));
    const filter = el("select", { id: "filter-by" });
    filter.append(el("option", { value: "" }, "no filter"));
    vocab.forEach((name, i) => {
      sort.append(el("option", { value: i }, "highest " + name + " first"));
      filter.append(el("option", { value: i }, name));
    });
    const slider = el("input", { type: "range", id: "min-value", min: 0, max: 1, step: 0.01, value: 0 });
    slider.disabled = true;
    const shown = el("output", { id: "min-value-label", for: "min-value" }, "0.00");
    const sortLabel = el("label", {}, "Sort by");
    sortLabel.append(sort);
    const filterLabel = el("label", {}, "Show shots with");
    filterLabel.append(filter, el("span", {}, "at least"), slider, shown);
    controls.append(sortLabel, filterLabel);
    sort.addEventListener("change", () => { sortBy = sort.value === "" ? null : Number(sort.value); layout(); });
    filter.addEventListener("change", () => {
      filterBy = filter.value === "" ? null : Number(filter.value);
      slider.disabled = filterBy === null;
      layout();
    });
    slider.addEventListener("input", () => {
      minValue = Number(slider.value);
      shown.textContent = minValue.toFixed(2);
      layout();
    });
  }
  function layout() {
    const order = shots.slice();
    if (sortBy !== null) {
      const key = (s) => (s.v[sortBy] === null ? -1 : s.v[sortBy]);
      order.sort((a, b) => key(b) - key(a) || a.start - b.start);
    }
    let visible = 0;
    const frag = document.createDocumentFragment();
    for (const s of order) {
      const tile = tiles.get(s.id);
      const v = filterBy === null ? null : s.v[filterBy];
      tile.hidden = filterBy !== null && minValue > 0 && (v === null || v < minValue);
      if (!tile.hidden) visible += 1;
      frag.append(tile);
    }
    sheet.append(frag);
    count.textContent = "Showing " + visible + " of " + shots.length + " shots";
  }

  for (const s of shots) tiles.set(s.id, buildTile(s));
  if (vocab.length) {
    buildArc();
    buildToggles();
    buildControls();
  } else {
    document.getElementById("arc-section").remove(); // shots only: nothing to plot
  }
  controls.append(count);
  layout();
  if (data.cut) {
    ReportCut.build(data.cut, { el, svgEl, fmtValue, fmtSeconds, fmtClock, playRange });
  } else {
    document.getElementById("cut-section").remove(); // no trailer cut in this folder
  }
})();
