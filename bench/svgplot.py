"""Hand-written SVG charts for the benchmark report (python3 standard library only).

Three shapes, enough for bench/snstack_bench.py:
  line_chart(...)    series of (x, y, lo, hi) points, optional log x axis, min-max whiskers
  stacked_bars(...)  groups of bars, each bar a stack of named segments
Every function returns the SVG document as a string; the caller writes it.
"""

import math
from xml.sax.saxutils import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
W, H = 720, 420
ML, MR, MT, MB = 78, 190, 40, 62  # margins: left, right (legend), top, bottom


def _nice_ticks(lo, hi, n=5):
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _fmt(v):
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e3:
        return f"{v / 1e3:g}k"
    if a >= 1 or a == 0:
        return f"{v:g}"
    return f"{v:.2g}"


def _doc(title, body, w=W):
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{H}" '
        f'viewBox="0 0 {w} {H}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="{w}" height="{H}" fill="white"/>\n'
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )


def _legend(names, kinds="line", w=W):
    out = []
    x = w - MR + 14
    for i, name in enumerate(names):
        y = MT + 12 + i * 18
        c = PALETTE[i % len(PALETTE)]
        if kinds == "line":
            out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{c}" stroke-width="2"/>')
        else:
            out.append(f'<rect x="{x}" y="{y - 10}" width="14" height="10" fill="{c}"/>')
        out.append(f'<text x="{x + 24}" y="{y}">{escape(name)}</text>')
    return out


def line_chart(title, xlabel, ylabel, series, logx=False, xticks=None, xticklabels=None, ymin=0.0, logy=False):
    """series: [(name, [(x, y, lo, hi), ...]), ...]; lo/hi may be None (no whisker)."""
    if logy:
        series = [(n, [p for p in s if p[1] is not None and p[1] > 0]) for n, s in series]
    pts = [p for _, s in series for p in s if p[1] is not None]
    if not pts:
        return _doc(title, [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text>'])
    fx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    xs = [fx(p[0]) for p in pts]
    ys = [p[1] for p in pts] + [p[3] for p in pts if p[3] is not None]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if logy:
        ys = [y for y in ys if y > 0]
        lo_e, hi_e = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        if hi_e == lo_e:
            hi_e += 1
        yt = [10.0 ** e for e in range(lo_e, hi_e + 1)]
    else:
        yt = _nice_ticks(min([ymin] + ys) if ymin is not None else min(ys), max(ys) * 1.05)
    fy = (lambda v: math.log10(max(v, 1e-12))) if logy else (lambda v: v)
    y0, y1 = fy(yt[0]), fy(yt[-1])
    pw, ph = W - ML - MR, H - MT - MB

    def sx(v):
        return ML + (fx(v) - x0) / (x1 - x0) * pw

    def sy(v):
        return MT + ph - (fy(v) - y0) / (y1 - y0) * ph

    body = [f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>']
    for t in yt:
        body.append(f'<line x1="{ML}" y1="{sy(t):.1f}" x2="{ML + pw}" y2="{sy(t):.1f}" stroke="#ddd"/>')
        body.append(f'<text x="{ML - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    if xticks is None:
        xticks = sorted({p[0] for p in pts})
    labels = xticklabels or [_fmt(t) for t in xticks]
    for t, lab in zip(xticks, labels):
        body.append(f'<line x1="{sx(t):.1f}" y1="{MT + ph}" x2="{sx(t):.1f}" y2="{MT + ph + 5}" stroke="#444"/>')
        body.append(f'<text x="{sx(t):.1f}" y="{MT + ph + 19}" text-anchor="middle">{escape(str(lab))}</text>')
    body.append(f'<text x="{ML + pw / 2}" y="{H - 16}" text-anchor="middle">{escape(xlabel)}</text>')
    body.append(
        f'<text x="18" y="{MT + ph / 2}" text-anchor="middle" transform="rotate(-90 18 {MT + ph / 2})">'
        f"{escape(ylabel)}</text>"
    )
    for i, (_, s) in enumerate(series):
        c = PALETTE[i % len(PALETTE)]
        s = sorted((p for p in s if p[1] is not None), key=lambda p: p[0])
        if not s:
            continue
        path = " ".join(f"{'M' if j == 0 else 'L'}{sx(p[0]):.1f},{sy(p[1]):.1f}" for j, p in enumerate(s))
        body.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for p in s:
            body.append(f'<circle cx="{sx(p[0]):.1f}" cy="{sy(p[1]):.1f}" r="3" fill="{c}"/>')
            if p[2] is not None and p[3] is not None and p[3] > p[2]:
                body.append(
                    f'<line x1="{sx(p[0]):.1f}" y1="{sy(p[2]):.1f}" x2="{sx(p[0]):.1f}" y2="{sy(p[3]):.1f}" '
                    f'stroke="{c}" stroke-width="1"/>'
                )
    body += _legend([n for n, _ in series])
    return _doc(title, body)


def stacked_bars(title, ylabel, groups, segments):
    """groups: [(group label, [(bar label, [value per segment]), ...]), ...]; segments: names."""
    bars = [(g, b, v) for g, bs in groups for b, v in bs]
    if not bars:
        return _doc(title, [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text>'])
    totals = sorted(sum(x or 0 for x in v) for _, _, v in bars)
    top = totals[-1]
    # One bar far above the rest would flatten every other: clip it and print its value.
    if len(totals) > 2 and totals[-2] > 0 and top > 3 * totals[-2]:
        top = totals[-2] * 1.3
    yt = _nice_ticks(0, top * 1.08)
    y1 = yt[-1]
    nbars = len(bars) + len(groups) - 1
    w = max(W, ML + MR + 34 * nbars)
    pw, ph = w - ML - MR, H - MT - MB - 30
    sy = lambda v: MT + ph - v / y1 * ph  # noqa: E731
    body = [f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>']
    for t in yt:
        body.append(f'<line x1="{ML}" y1="{sy(t):.1f}" x2="{ML + pw}" y2="{sy(t):.1f}" stroke="#ddd"/>')
        body.append(f'<text x="{ML - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    body.append(
        f'<text x="18" y="{MT + ph / 2}" text-anchor="middle" transform="rotate(-90 18 {MT + ph / 2})">'
        f"{escape(ylabel)}</text>"
    )
    bw = pw / max(nbars, 1)
    x = ML
    for gi, (g, bs) in enumerate(groups):
        gx0 = x
        for b, vals in bs:
            base = 0.0
            total = sum(v or 0.0 for v in vals)
            for si, v in enumerate(vals):
                v = min(v or 0.0, max(y1 - base, 0.0))
                if v > 0:
                    body.append(
                        f'<rect x="{x + bw * 0.1:.1f}" y="{sy(base + v):.1f}" width="{bw * 0.8:.1f}" '
                        f'height="{sy(base) - sy(base + v):.1f}" fill="{PALETTE[si % len(PALETTE)]}"/>'
                    )
                base += v
            if total > y1:
                body.append(f'<text x="{x + bw / 2:.1f}" y="{MT - 4}" text-anchor="middle" font-size="10">'
                            f'{_fmt(round(total))} (clipped)</text>')
            body.append(
                f'<text x="{x + bw / 2:.1f}" y="{MT + ph + 14}" text-anchor="middle" font-size="10">{escape(b)}</text>'
            )
            x += bw
        body.append(
            f'<text x="{(gx0 + x) / 2:.1f}" y="{MT + ph + 32}" text-anchor="middle" font-size="11">{escape(g)}</text>'
        )
        if gi + 1 < len(groups):
            x += bw
    body += _legend(segments, kinds="box", w=w)
    return _doc(title, body, w=w)
