#!/usr/bin/env python3
"""Summarise `waggle bench --json` results: medians of runs, ratios, and SVG charts.

usage: report.py RESULTS.jsonl OUT_DIR
Writes OUT_DIR/summary.md and OUT_DIR/*.svg; prints the summary.
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

COLORS = {"waggle": "#d4a017", "etcd": "#4c78a8", "zookeeper": "#59a14f"}


def load(path):
    runs = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        key = (r["workload"], r["clients"], r["in_flight"], r["watchers"], r["target"])
        runs[key].append(r)
    return runs


def med(values):
    return statistics.median(values) if values else float("nan")


def spread(values):
    """Relative spread (max-min)/median, as a percentage."""
    if len(values) < 2:
        return 0.0
    m = statistics.median(values)
    return 100.0 * (max(values) - min(values)) / m if m else 0.0


def summarise(runs):
    rows = {}
    for key, rs in runs.items():
        tput = [r["throughput"] for r in rs]
        p99 = [r["latency"]["p99_ms"] for r in rs]
        p50 = [r["latency"]["p50_ms"] for r in rs]
        errors = sum(r["errors"] for r in rs)
        rows[key] = {
            "throughput": med(tput),
            "p50": med(p50),
            "p99": med(p99),
            "spread": spread(tput),
            "runs": len(rs),
            "errors": errors,
        }
    return rows


def concurrency(key):
    workload, clients, in_flight, watchers, _ = key
    if workload == "watch":
        return f"{watchers} watchers"
    if workload == "churn":
        return f"{clients}x{in_flight}, {watchers} watchers"
    return f"{clients}x{in_flight}"


def table(rows):
    lines = [
        "| workload | concurrency | waggle | etcd | zookeeper | waggle/etcd | waggle/zk | waggle p50/p99 ms | etcd p50/p99 ms | spread (waggle/etcd) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = sorted({k[:4] for k in rows}, key=lambda k: (["register", "keepalive", "discover", "watch", "churn"].index(k[0]), k[1] * k[2], k[3]))
    for g in groups:
        w = rows.get(g + ("waggle",))
        e = rows.get(g + ("etcd",))
        z = rows.get(g + ("zookeeper",))
        def fmt(r):
            if not r:
                return "—"
            if g[0] == "watch":
                return f"p99 {r['p99']:.1f} ms"
            return f"{r['throughput']:,.0f}/s"
        def ratio(a, b):
            if not a or not b:
                return "—"
            if g[0] == "watch":
                return f"{b['p99'] / a['p99']:.2f}× faster" if a["p99"] else "—"
            return f"{a['throughput'] / b['throughput']:.2f}×"
        def lat(r):
            return f"{r['p50']:.2f} / {r['p99']:.2f}" if r else "—"
        sp = "/".join(f"{r['spread']:.0f}%" for r in (w, e) if r)
        lines.append(
            f"| {g[0]} | {concurrency(g + ('',))} | {fmt(w)} | {fmt(e)} | {fmt(z)} | {ratio(w, e)} | {ratio(w, z)} | {lat(w)} | {lat(e)} | {sp} |"
        )
    return "\n".join(lines)


def svg_chart(title, series, ylabel, path, log_y=False):
    """series: {target: [(x_label, y)]}; draws lines over categorical x."""
    import math
    width, height, left, bottom, top, right = 640, 360, 70, 50, 40, 120
    xs = []
    for pts in series.values():
        for x, _ in pts:
            if x not in xs:
                xs.append(x)
    ys = [y for pts in series.values() for _, y in pts if y == y and y > 0]
    if not xs or not ys:
        return
    ymax = max(ys) * 1.15
    ymin = min(ys) / 1.5 if log_y else 0.0
    def ty(y):
        if log_y:
            return top + (height - top - bottom) * (1 - (math.log10(y) - math.log10(ymin)) / (math.log10(ymax) - math.log10(ymin)))
        return top + (height - top - bottom) * (1 - (y - ymin) / (ymax - ymin))
    def tx(i):
        return left + (width - left - right) * (i + 0.5) / len(xs)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width/2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{left}" y1="{height-bottom}" x2="{width-right}" y2="{height-bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height-bottom}" stroke="black"/>',
           f'<text x="15" y="{(height)/2}" transform="rotate(-90 15 {height/2})" text-anchor="middle">{ylabel}</text>']
    for k in range(5):
        if log_y:
            y = 10 ** (math.log10(ymin) + (math.log10(ymax) - math.log10(ymin)) * k / 4)
        else:
            y = ymin + (ymax - ymin) * k / 4
        out.append(f'<text x="{left-5}" y="{ty(y)+4:.1f}" text-anchor="end">{y:,.0f}</text>')
        out.append(f'<line x1="{left}" y1="{ty(y):.1f}" x2="{width-right}" y2="{ty(y):.1f}" stroke="#ddd"/>')
    for i, x in enumerate(xs):
        out.append(f'<text x="{tx(i):.1f}" y="{height-bottom+18}" text-anchor="middle">{x}</text>')
    for n, (target, pts) in enumerate(series.items()):
        color = COLORS.get(target, "black")
        coords = [(tx(xs.index(x)), ty(y)) for x, y in pts if y == y and y > 0]
        if coords:
            out.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(color, " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)))
            for a, b in coords:
                out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>')
        out.append(f'<rect x="{width-right+15}" y="{top+n*20}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{width-right+32}" y="{top+n*20+11}">{target}</text>')
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n")


def charts(rows, out):
    for workload in ["register", "keepalive", "discover"]:
        keys = sorted({k for k in rows if k[0] == workload}, key=lambda k: k[1] * k[2])
        if not keys:
            continue
        tput, p99 = defaultdict(list), defaultdict(list)
        for k in keys:
            x = f"{k[1] * k[2]} in flight"
            tput[k[4]].append((x, rows[k]["throughput"]))
            p99[k[4]].append((x, rows[k]["p99"]))
        svg_chart(f"{workload}: throughput vs concurrency", tput, "operations / s", out / f"{workload}-throughput.svg")
        svg_chart(f"{workload}: p99 latency vs concurrency", p99, "p99 latency (ms)", out / f"{workload}-p99.svg", log_y=True)
    keys = sorted({k for k in rows if k[0] == "watch"}, key=lambda k: k[3])
    if keys:
        p99 = defaultdict(list)
        for k in keys:
            p99[k[4]].append((f"{k[3]} watchers", rows[k]["p99"]))
        svg_chart("watch fan-out: p99 acknowledgement → receipt", p99, "p99 latency (ms)", out / "watch-p99.svg", log_y=True)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    runs = load(sys.argv[1])
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(runs)
    md = table(rows)
    (out / "summary.md").write_text(md + "\n")
    charts(rows, out)
    print(md)


if __name__ == "__main__":
    main()
