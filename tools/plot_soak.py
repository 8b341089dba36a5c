#!/usr/bin/env python3
"""Turns the samples of the soak test (STABLELORA_SOAK_CSV) into an SVG with one panel per series.

Usage: python3 tools/plot_soak.py samples.csv docs/images/soak.svg "title"
Only the standard library: the figure can be redrawn on any machine that ran the test.
"""
import csv
import math
import sys

SERIES = [("live_tensors", "live tensors"), ("rss_mib", "resident memory (MiB)"), ("managed_mib", "managed heap after GC (MiB)")]
WIDTH, PANEL, MARGIN_LEFT, MARGIN_RIGHT, GAP = 760, 150, 70, 20, 40


def nice_range(values):
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.1
    return low - pad, high + pad


def main(source, target, title):
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    last = max(steps)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{40 + len(SERIES) * (PANEL + GAP)}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    for index, (column, label) in enumerate(SERIES):
        points = [(s, float(r[column])) for s, r in zip(steps, rows) if r[column] not in ("", "NaN") and not math.isnan(float(r[column]))]
        top = 40 + index * (PANEL + GAP)
        low, high = nice_range([v for _, v in points])
        x = lambda s: MARGIN_LEFT + plot_width * s / last
        y = lambda v: top + PANEL - PANEL * (v - low) / (high - low)
        out.append(f'<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_width}" height="{PANEL}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{MARGIN_LEFT}" y="{top - 6}">{label}</text>')
        for value in (low, (low + high) / 2, high):
            out.append(f'<text x="{MARGIN_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.4g}</text>')
        for step in (0, last // 2, last):
            out.append(f'<text x="{x(step):.1f}" y="{top + PANEL + 14}" text-anchor="middle">{step}</text>')
        path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
        out.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1" points="{path}"/>')
    out.append(f'<text x="{WIDTH / 2}" y="{40 + len(SERIES) * (PANEL + GAP) - 8}" text-anchor="middle">training step</text>')
    out.append("</svg>")
    with open(target, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "soak test")
