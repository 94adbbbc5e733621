// Prism web console: the runs history chart — cumulative ε the signed-in user's runs charged,
// one series per dataset, over time. Plain functions on `window.PrismHistory`, used by
// console.js; inline SVG built with createElementNS (no library, nothing fetched). Strings
// reach the DOM only through textContent.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  /** How many series colours console.css defines (`.series.s0` … `.s5`). */
  const COLOURS = 6;

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function html(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function fmt(x) {
    return Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(6)));
  }

  /** When a run's charge happened: when it finished, else when it was created. */
  function chargedAt(run) {
    const t = Date.parse(run.finished_at || run.created_at || "");
    return Number.isFinite(t) ? t : null;
  }

  /**
   * The series: for each dataset (by `datasetOf(run)`), the runs created by `userId` that
   * charged ε, oldest first, each with the cumulative ε up to and including it.
   * Returns `[{dataset, total, points: [{at, iso, epsilon, cumulative, run}]}]`, by dataset.
   */
  function series(runs, userId, datasetOf) {
    const charged = runs
      .filter((r) => r.created_by === userId && r.epsilon_consumed > 0 && chargedAt(r) !== null)
      .map((r) => ({ at: chargedAt(r), run: r }))
      .sort((a, b) => a.at - b.at);
    const by = new Map();
    for (const { at, run } of charged) {
      const dataset = datasetOf(run) || "?";
      const s = by.get(dataset) || { dataset, total: 0, points: [] };
      s.total += run.epsilon_consumed;
      s.points.push({ at, iso: run.finished_at || run.created_at, epsilon: run.epsilon_consumed, cumulative: s.total, run: run.id });
      by.set(dataset, s);
    }
    return [...by.values()].sort((a, b) => (a.dataset < b.dataset ? -1 : a.dataset > b.dataset ? 1 : 0));
  }

  /** The chart of `list` (from `series`) as a <figure>, with a legend of each dataset's total. */
  function chart(list) {
    const box = html("figure", "chart history");
    box.id = "spend-chart";
    box.dataset.series = String(list.length);
    if (list.length === 0) {
      box.append(html("figcaption", "muted", "None of your runs listed here has charged ε yet."));
      return box;
    }
    const W = 640, H = 220, L = 48, R = 16, T = 14, B = 30;
    const times = list.flatMap((s) => s.points.map((p) => p.at));
    const t0 = Math.min(...times), t1 = Math.max(...times);
    const top = Math.max(...list.map((s) => s.total));
    const x = (t) => (t1 === t0 ? (L + W - R) / 2 : L + ((t - t0) * (W - L - R)) / (t1 - t0));
    const y = (v) => H - B - (v / top) * (H - T - B);
    const root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", class: "spend",
      "aria-label": "Cumulative ε your runs charged, per dataset, over time" });
    root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
      svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    const label = (text, attrs) => {
      const t = svg("text", attrs);
      t.textContent = text;
      root.append(t);
    };
    label("ε " + fmt(top), { x: L - 6, y: y(top) + 4, "text-anchor": "end", class: "tick" });
    label("0", { x: L - 6, y: H - B + 4, "text-anchor": "end", class: "tick" });
    const day = (t) => new Date(t).toISOString().replace("T", " ").slice(0, 16) + " UTC";
    label(day(t0), { x: L, y: H - 8, "text-anchor": "start", class: "tick" });
    if (t1 !== t0) label(day(t1), { x: W - R, y: H - 8, "text-anchor": "end", class: "tick" });
    const legend = html("ul", "legend");
    list.forEach((s, i) => {
      const colour = "s" + (i % COLOURS);
      // A step line: flat between charges, a rise at each; it runs on to the latest charge.
      const xy = [[x(s.points[0].at), y(0)]];
      for (const p of s.points) xy.push([x(p.at), xy[xy.length - 1][1]], [x(p.at), y(p.cumulative)]);
      xy.push([x(t1), y(s.total)]);
      root.append(svg("polyline", { class: "series " + colour, "data-dataset": s.dataset, "data-total": s.total,
        "data-points": s.points.length, points: xy.map((q) => q.join(",")).join(" ") }));
      for (const p of s.points) {
        const dot = svg("circle", { cx: x(p.at), cy: y(p.cumulative), r: 3.5, class: "point " + colour,
          "data-dataset": s.dataset, "data-cumulative": p.cumulative, "data-run-id": p.run });
        const t = svg("title");
        t.textContent = s.dataset + " · " + p.iso + " · run " + p.run + ": ε " + fmt(p.epsilon) + ", " + fmt(p.cumulative) + " in all";
        dot.append(t);
        root.append(dot);
      }
      const item = html("li", null);
      item.dataset.dataset = s.dataset;
      item.append(html("span", "swatch " + colour), html("span", "mono", s.dataset),
        " ε " + fmt(s.total) + " over " + s.points.length + (s.points.length === 1 ? " run" : " runs"));
      legend.append(item);
    });
    box.append(root, legend, html("figcaption", "muted",
      "Cumulative ε your runs charged, per dataset, by when each finished (the filters above apply)."));
    return box;
  }

  window.PrismHistory = { series, chart };
})();
