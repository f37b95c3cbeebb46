// A small grouped bar chart in plain SVG (no library, nothing fetched: works offline).
// barChart(element, labels, series) with series = [{name, color, values}]; each series is
// scaled to its own maximum (users and events differ by orders of magnitude), and every
// bar carries a <title> with its exact value.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function node(name, attributes, parent) {
    const element = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attributes)) {
      element.setAttribute(key, String(value));
    }
    if (parent) parent.appendChild(element);
    return element;
  }

  function barChart(element, labels, series) {
    element.textContent = "";
    const top = 8 + 14 * series.length, bottom = 40, left = 10, height = top + 140 + bottom;
    const groupWidth = Math.max(24, 8 + series.length * 10);
    const width = Math.max(320, left * 2 + Math.max(1, labels.length) * groupWidth);
    const svg = node("svg", {width, height, viewBox: `0 0 ${width} ${height}`,
                             role: "img", "aria-label": "daily chart"}, element);
    const plot = height - top - bottom;
    node("line", {x1: left, x2: width - left, y1: top + plot, y2: top + plot,
                  stroke: "#999"}, svg);
    series.forEach((serie, index) => {
      const max = Math.max(1, ...serie.values);
      serie.values.forEach((value, day) => {
        const barHeight = Math.round((value / max) * plot);
        const x = left + day * groupWidth + 4 + index * 10;
        const bar = node("rect", {x, y: top + plot - barHeight, width: 8, height: barHeight,
                                  fill: serie.color, class: `bar ${serie.name}`,
                                  "data-value": value}, svg);
        node("title", {}, bar).textContent = `${labels[day]} ${serie.name}: ${value}`;
      });
      const legend = node("text", {x: left, y: 12 + index * 14}, svg);
      legend.textContent = `■ ${serie.name} (max ${max})`;
      legend.setAttribute("fill", serie.color);
    });
    labels.forEach((label, day) => {
      const x = left + day * groupWidth + groupWidth / 2;
      const text = node("text", {x, y: top + plot + 12, "text-anchor": "end",
                                 transform: `rotate(-45 ${x} ${top + plot + 12})`}, svg);
      text.textContent = label.slice(5);
    });
    return svg;
  }

  window.barChart = barChart;
})();
