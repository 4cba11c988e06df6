/* report.html, "Trailer cut" section: draws data.cut (made from the trailer's cut.json by
   client/export/report.py) into #cut-section. report.js calls ReportCut.build with its helpers
   and its player, so a pick plays through the same <video> as a shot. Text from cut.json is set
   with textContent only. */
const ReportCut = (function () {
  "use strict";
  const W = 1000, LEFT = 38, RIGHT = 10, TOP = 30, PLOT = 150, H = TOP + PLOT + 24;
  const ACT_FILL = { opening: "#e3ecfa", build: "#fdf0d6", peak: "#fbe0dc" };

  function build(cut, ui) {
    const { el, svgEl, fmtValue, fmtSeconds, fmtClock } = ui;
    const section = document.getElementById("cut-section");
    const notes = document.getElementById("cut-notes");
    if (!cut.picks) { // cut.json is here but could not be read: say so, draw nothing
      notes.append(el("p", { class: "note", id: "cut-note" }, cut.note));
      for (const id of ["cut-help", "cut-arc", "cut-picks", "cut-facts"]) {
        document.getElementById(id).remove();
      }
      return;
    }
    const facts = ["Profile " + cut.profile, "asked " + fmtSeconds(cut.asked),
      "achieved " + fmtSeconds(cut.achieved), cut.clips + " clips"];
    if (cut.timeline) facts.push("timeline " + cut.timeline);
    document.getElementById("cut-facts").textContent = facts.join(" \u00b7 ");
    if (cut.description) section.querySelector("h2").title = cut.description;
    if (cut.otherFilm) {
      notes.append(el("p", { class: "note" }, "This cut was made from " + cut.otherFilm +
        ", not from the film of these results; its clips play this folder's film."));
    }
    for (const w of cut.warnings) notes.append(el("p", { class: "note cut-warning" }, w));

    const rows = new Map();
    function play(pick) {
      const label = "Pick " + pick.position + " (" + pick.act + ") \u00b7 shot " + pick.shot +
        " \u00b7 " + pick.tc + " \u2013 " + pick.tcEnd;
      ui.playRange({ start: pick.start, end: pick.end }, label, pick.shot, rows.get(pick.position));
    }

    /* the arc: x is cut time, y the level (0 calm .. 1 the peak) */
    const total = Math.max(cut.achieved, cut.picks[cut.picks.length - 1].recOut, 1e-6);
    const xOf = (t) => LEFT + (t / total) * (W - LEFT - RIGHT);
    const yOf = (v) => TOP + (1 - v) * PLOT;
    const chart = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img", id: "cut-chart",
      "aria-label": "The trailer cut's arc: target curve and pick levels over cut time" });
    for (const act of ["opening", "build", "peak"]) {
      const inAct = cut.picks.filter((p) => p.act === act);
      if (!inAct.length) continue;
      const x0 = xOf(Math.min(...inAct.map((p) => p.recIn)));
      const x1 = xOf(Math.max(...inAct.map((p) => p.recOut)));
      chart.append(svgEl("rect", { class: "act-band", "data-act": act, x: x0, y: TOP,
        width: Math.max(x1 - x0, 0.6), height: PLOT, fill: ACT_FILL[act] || "#eee" }));
      chart.append(svgEl("text", { class: "act-label", x: (x0 + x1) / 2, y: TOP - 11,
        "text-anchor": "middle" }, act));
    }
    for (const v of [0, 0.5, 1]) {
      chart.append(svgEl("line", { class: "grid", x1: LEFT, x2: W - RIGHT, y1: yOf(v), y2: yOf(v) }));
      chart.append(svgEl("text", { class: "axis-label", x: LEFT - 6, y: yOf(v) + 4,
        "text-anchor": "end" }, v.toFixed(1)));
    }
    for (const t of [0, total / 2, total]) {
      chart.append(svgEl("text", { class: "axis-label", x: xOf(t), y: TOP + PLOT + 16,
        "text-anchor": t ? (t === total ? "end" : "middle") : "start" },
      total < 60 ? t.toFixed(1) + " s" : fmtClock(t)));
    }
    const line = (pts) => pts.map(([t, v], i) => (i ? "L" : "M") + xOf(t).toFixed(1) + "," +
      yOf(v).toFixed(1)).join("");
    chart.append(svgEl("path", { class: "target", d: line(cut.curve) }));
    const mids = cut.picks.map((p) => [(p.recIn + p.recOut) / 2, p.level]);
    chart.append(svgEl("path", { class: "levels", d: line(mids) }));
    cut.picks.forEach((p, i) => {
      const dot = svgEl("circle", { class: "pick-point", r: 6, cx: xOf(mids[i][0]),
        cy: yOf(p.level), "data-position": p.position, "data-shot-id": p.shot });
      dot.append(svgEl("title", {}, "Pick " + p.position + " (" + p.act + "), shot " + p.shot +
        ": level " + fmtValue(p.level) + ", target " + fmtValue(p.target) + ", score " +
        p.score.toFixed(3)));
      dot.addEventListener("click", () => play(p));
      chart.append(dot);
    });
    document.getElementById("cut-arc").append(chart);

    /* the picks, in cut order */
    const table = document.getElementById("cut-picks");
    const head = el("tr");
    for (const name of ["#", "act", "shot", "source in \u2013 out", "length", "score", "level",
      "why chosen"]) head.append(el("th", {}, name));
    table.append(el("thead"));
    table.tHead.append(head);
    const body = el("tbody");
    for (const p of cut.picks) {
      const row = el("tr", { class: "pick", tabindex: 0, role: "button",
        "data-position": p.position, "data-shot-id": p.shot,
        "aria-label": "Play pick " + p.position + ", shot " + p.shot });
      row.append(el("td", { class: "num" }, p.position), el("td", { class: "act" }, p.act),
        el("td", { class: "num" }, p.shot),
        el("td", { class: "tc" }, p.tc + " \u2013 " + p.tcEnd),
        el("td", { class: "num" }, fmtSeconds(p.end - p.start)),
        el("td", { class: "num" }, p.score.toFixed(3)),
        el("td", { class: "num" }, fmtValue(p.level)),
        el("td", { class: "why", title: p.caption || "" }, p.why));
      row.addEventListener("click", () => play(p));
      row.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); play(p); }
      });
      rows.set(p.position, row);
      body.append(row);
    }
    table.append(body);
  }

  return { build: build };
})();
