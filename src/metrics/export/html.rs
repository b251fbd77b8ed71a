//! The HTML page of `perf-metrics serve` (`GET /`) and `perf-metrics report
//! --html`: one self-contained document (docs/metrics.md, "The page").
//!
//! Everything is in the one file the exporter returns: the styles, the
//! charts, and (for a served page) a few lines of script that refresh it.
//! No fonts, scripts or styles are fetched from anywhere, and a
//! Content-Security-Policy meta tag says so to the browser. The charts are
//! inline SVG drawn here, from the aggregated [`Report`], so the page's size
//! depends on the number of operations, never on the rows of the log: a
//! 10-million-row log makes the same few tens of kilobytes as a small one,
//! and the page reads (with its tooltips) even with scripts disabled.
//!
//! Per operation: a row of the summary table (count, total, avg, min, p50,
//! p95, p99, max), a latency distribution (a histogram over 40 logarithmic
//! bins from min to max, with the p50/p95/p99 marked) and the p95 over the
//! log's span, on a time axis shared by every operation.

use std::fmt::Write as _;

use super::table::human_ms;
use super::{Exporter, QUANTILES};
use crate::metrics::aggregate::{OpStats, Report};
use crate::metrics::series::{Point, Timeline};

/// The page's settings: where its data came from and whether it refreshes.
#[derive(Clone, Debug, Default)]
pub struct Html {
    /// The log the report was read from, shown in the header.
    pub source: String,
    /// When the report was made (epoch seconds).
    pub generated: i64,
    /// The filters in force as a reader would say them (`since 1h`), or empty.
    pub filters: String,
    /// A served page reloads its data every this many seconds; a static
    /// report (`None`) carries no script at all.
    pub refresh: Option<u32>,
}

/// What the page allows itself: inline styles and scripts, requests back to
/// where it came from (the refresh), images from `data:` (the empty favicon
/// that spares the browser a request). Nothing external can load.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                       connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'";

/// Width and height of every chart (SVG user units; scaled by CSS).
const W: f64 = 520.0;
const H: f64 = 190.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 30.0;

/// Bins of the distribution chart.
const BINS: usize = 40;

const STYLE: &str = r#"
:root{color-scheme:light dark;--bg:#f7f8fa;--card:#fff;--fg:#1d2330;--muted:#5d6778;--line:#d9dde5;--grid:#eceef2;--accent:#3b6fd8;--accent2:#8fb0ee;--p50:#2f9e62;--p95:#d9822b;--p99:#c23b3b;--warn:#8a5a00;--warnbg:#fff4d6}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--card:#1c2027;--fg:#e4e7ec;--muted:#9aa3b2;--line:#343a45;--grid:#262b33;--accent:#6d9bf1;--accent2:#34528a;--p50:#4cc586;--p95:#f0a050;--p99:#ef6b6b;--warn:#f3cf7a;--warnbg:#3a3020}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{padding:18px 28px 10px;display:flex;flex-wrap:wrap;gap:8px 24px;align-items:baseline;justify-content:space-between}
h1{font-size:20px;margin:0;font-weight:650}
h2{font-size:15px;margin:0 0 2px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
#meta{color:var(--muted);margin:4px 0 0;font-size:13px}
#meta code{font-size:12px}
.controls{display:flex;gap:12px;align-items:center;font-size:13px;color:var(--muted)}
.controls button{font:inherit;padding:4px 12px;border:1px solid var(--line);border-radius:6px;background:var(--card);color:var(--fg);cursor:pointer}
.controls button:hover{border-color:var(--accent)}
main{padding:0 28px 28px}
.warn{background:var(--warnbg);color:var(--warn);padding:8px 12px;border-radius:6px;margin:0 0 14px}
.empty{padding:40px;text-align:center;color:var(--muted);background:var(--card);border:1px solid var(--line);border-radius:10px}
.tablewrap{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:10px;margin-bottom:22px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:7px 14px;text-align:right;white-space:nowrap;border-bottom:1px solid var(--grid)}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600}
th:first-child,td:first-child{text-align:left}
tr:last-child td{border-bottom:0}
td a{color:var(--accent);text-decoration:none;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
td a:hover{text-decoration:underline}
.ops{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:18px}
.op{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px 8px}
.op .stats{color:var(--muted);font-size:12.5px;margin:0 0 6px}
.charts{display:grid;grid-template-columns:1fr;gap:2px}
figure{margin:0}
figcaption{font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:10px 0 0;font-weight:600}
svg.chart{width:100%;height:auto;display:block;font-size:10.5px;font-family:system-ui,sans-serif}
svg .axis{stroke:var(--line);stroke-width:1}
svg .grid{stroke:var(--grid);stroke-width:1}
svg .bar{fill:var(--accent)}
svg .bar:hover{fill:var(--accent2)}
svg text{fill:var(--muted)}
svg .mark{stroke-width:1.5;stroke-dasharray:4 3}
svg .m-p50{stroke:var(--p50)} tspan.m-p50{fill:var(--p50)}
svg .m-p95{stroke:var(--p95)} tspan.m-p95{fill:var(--p95)}
svg .m-p99{stroke:var(--p99)} tspan.m-p99{fill:var(--p99)}
svg .line{fill:none;stroke:var(--p95);stroke-width:1.8;stroke-linejoin:round}
svg .dot{fill:var(--p95)}
svg .dot:hover{r:4}
footer{color:var(--muted);font-size:12px;padding:0 28px 24px}
"#;

/// The refresh script of a served page: re-fetches the page itself (same
/// query) and swaps in its header line and main part, so filters, scroll
/// position and the checkbox survive; a failed refresh says so and keeps
/// the last data on screen.
const SCRIPT: &str = r#"
(() => {
  const every = Number(document.body.dataset.refresh) * 1000;
  const status = document.getElementById('status');
  const auto = document.getElementById('auto');
  let timer = null, busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch(location.href, {cache: 'no-store'});
      if (!r.ok) throw new Error(r.status + ' ' + r.statusText);
      const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
      for (const id of ['meta', 'main']) {
        const fresh = doc.getElementById(id), old = document.getElementById(id);
        if (fresh && old) old.replaceWith(fresh);
      }
      document.title = doc.title;
      status.textContent = 'updated ' + new Date().toLocaleTimeString();
    } catch (e) {
      status.textContent = 'refresh failed: ' + e.message;
    } finally {
      busy = false;
    }
  }
  function schedule() {
    clearInterval(timer);
    timer = auto.checked && every > 0 ? setInterval(refresh, every) : null;
  }
  document.getElementById('refresh').addEventListener('click', refresh);
  auto.addEventListener('change', schedule);
  schedule();
})();
"#;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// An epoch second as `2026-12-01 09:15:40 UTC`.
fn when(t: i64) -> String {
    match jiff::Timestamp::from_second(t) {
        Ok(ts) => {
            let s = ts.to_string();
            format!("{} UTC", s.trim_end_matches('Z').replacen('T', " ", 1))
        }
        Err(_) => t.to_string(),
    }
}

/// A span of seconds as `3h 12m`, `45s`, `2d 4h`.
fn span(secs: i64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// An integer with thin-space thousands separators: `10 000 000`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut o = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            o.push('\u{2009}');
        }
        o.push(c);
    }
    o
}

/// SVG coordinates with one decimal.
fn f(v: f64) -> String {
    format!("{v:.1}")
}

impl Exporter for Html {
    fn render(&self, report: &Report) -> String {
        let n = report.ops.len();
        let mut o = String::with_capacity(8192 + n * 12_000);
        let title = if n == 1 {
            "ffkit metrics — 1 operation".to_string()
        } else {
            format!("ffkit metrics — {n} operations")
        };
        let _ = write!(
            o,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
             <meta name=\"generator\" content=\"ffkit {}\">\n\
             <title>{}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{STYLE}</style>\n</head>\n",
            env!("CARGO_PKG_VERSION"),
            escape(&title)
        );
        match self.refresh {
            Some(s) => {
                let _ = writeln!(o, "<body data-refresh=\"{s}\">");
            }
            None => o.push_str("<body>\n"),
        }
        o.push_str("<header>\n<div>\n<h1>ffkit performance metrics</h1>\n");
        self.meta(&mut o, report);
        o.push_str("</div>\n");
        if let Some(s) = self.refresh {
            let _ = writeln!(
                o,
                "<div class=\"controls\"><button id=\"refresh\" type=\"button\">Refresh</button>\
                 <label><input type=\"checkbox\" id=\"auto\" checked> every {s} s</label>\
                 <span id=\"status\" role=\"status\"></span></div>"
            );
        }
        o.push_str("</header>\n<main id=\"main\">\n");
        if report.malformed > 0 {
            let _ = writeln!(
                o,
                "<p class=\"warn\">Skipped {} malformed row{} of the log.</p>",
                count(report.malformed),
                if report.malformed == 1 { "" } else { "s" }
            );
        }
        if n == 0 {
            let _ = writeln!(
                o,
                "<p class=\"empty\">No metrics{} in <code>{}</code> yet.</p>",
                if self.filters.is_empty() {
                    String::new()
                } else {
                    format!(" for {}", escape(&self.filters))
                },
                escape(&self.source)
            );
        } else {
            summary_table(&mut o, report);
            o.push_str("<section class=\"ops\">\n");
            for (i, s) in report.ops.iter().enumerate() {
                op_card(&mut o, i, s, report.timeline.as_ref());
            }
            o.push_str("</section>\n");
        }
        o.push_str("</main>\n");
        o.push_str(
            "<footer>Durations are wall times recorded by ffkit; percentiles are nearest-rank \
             (exact up to 8,192 rows per operation, within 0.5 % beyond). Hover a bar or a point \
             for its numbers.</footer>\n",
        );
        if self.refresh.is_some() {
            let _ = writeln!(o, "<script>{SCRIPT}</script>");
        }
        o.push_str("</body>\n</html>\n");
        o
    }
}

impl Html {
    fn meta(&self, o: &mut String, report: &Report) {
        let counted: u64 = report.ops.iter().map(|s| s.count).sum();
        let _ = write!(
            o,
            "<p id=\"meta\"><code>{}</code> · {} row{}",
            escape(&self.source),
            count(counted),
            if counted == 1 { "" } else { "s" }
        );
        if let Some(tl) = &report.timeline {
            let _ = write!(
                o,
                " from {} to {} ({})",
                when(tl.from),
                when(tl.to),
                span(tl.to - tl.from)
            );
        }
        if !self.filters.is_empty() {
            let _ = write!(o, " · {}", escape(&self.filters));
        }
        let _ = writeln!(o, " · generated {}</p>", when(self.generated));
    }
}

fn summary_table(o: &mut String, report: &Report) {
    o.push_str(
        "<div class=\"tablewrap\"><table>\n<thead><tr><th>Operation</th><th>Count</th>\
         <th>Total</th><th>Avg</th><th>Min</th>",
    );
    for (_, label) in QUANTILES {
        let _ = write!(o, "<th>{label}</th>");
    }
    o.push_str("<th>Max</th></tr></thead>\n<tbody>\n");
    for (i, s) in report.ops.iter().enumerate() {
        let _ = write!(
            o,
            "<tr><td><a href=\"#op-{i}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            escape(&s.op),
            count(s.count),
            human_ms(s.total),
            human_ms(s.avg()),
            human_ms(s.min)
        );
        for (q, _) in QUANTILES {
            let _ = write!(o, "<td>{}</td>", human_ms(s.quantile(q)));
        }
        let _ = writeln!(o, "<td>{}</td></tr>", human_ms(s.max));
    }
    o.push_str("</tbody>\n</table></div>\n");
}

fn op_card(o: &mut String, i: usize, s: &OpStats, timeline: Option<&Timeline>) {
    let name = escape(&s.op);
    let _ = write!(
        o,
        "<article class=\"op\" id=\"op-{i}\" data-op=\"{name}\">\n<h2>{name}</h2>\n\
         <p class=\"stats\">{} rows · avg {} · p95 {} · max {}</p>\n<div class=\"charts\">\n",
        count(s.count),
        human_ms(s.avg()),
        human_ms(s.quantile(0.95)),
        human_ms(s.max)
    );
    let _ = writeln!(
        o,
        "<figure><figcaption>Latency distribution (log scale)</figcaption>{}</figure>",
        distribution_svg(s)
    );
    let points = timeline.map(|tl| (tl, s.series(tl)));
    let _ = writeln!(
        o,
        "<figure><figcaption>p95 over the log's span</figcaption>{}</figure>",
        match &points {
            Some((tl, p)) => series_svg(&s.op, tl, p),
            None => empty_svg("series", "no time series"),
        }
    );
    o.push_str("</div>\n</article>\n");
}

fn empty_svg(class: &str, text: &str) -> String {
    format!(
        "<svg class=\"chart {class}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{text}\">\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{text}</text></svg>",
        W / 2.0,
        H / 2.0
    )
}

/// Ticks for a log axis over `[lo, hi]` (lo > 0): the powers of ten inside,
/// or, within one decade, 1-2-5 steps, or at worst the two ends.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut t = Vec::new();
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    for e in a..=b {
        let p = 10f64.powi(e);
        if p >= lo * 0.999 && p <= hi * 1.001 {
            t.push(p);
        }
    }
    if t.len() < 2 {
        t.clear();
        for e in a..=b {
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powi(e);
                if v >= lo * 0.999 && v <= hi * 1.001 {
                    t.push(v);
                }
            }
        }
    }
    if t.len() < 2 {
        t = vec![lo, hi];
    }
    t
}

/// The histogram of one operation: 40 log-spaced bins from the smallest
/// positive value to the max (zeros join the first bin), linear counts,
/// dashed markers at p50, p95 and p99.
fn distribution_svg(s: &OpStats) -> String {
    let buckets = s.distribution();
    let lo = buckets
        .iter()
        .map(|b| b.0)
        .find(|&v| v > 0.0)
        .unwrap_or(0.0);
    let hi = s.max;
    let mut o = format!(
        "<svg class=\"chart dist\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"latency distribution of {}\">",
        escape(&s.op)
    );
    if buckets.is_empty() {
        o.push_str("</svg>");
        return o;
    }
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    // A single value (or only zeros): one bar in the middle of a one-decade axis.
    let degenerate = lo <= 0.0 || hi <= lo * (1.0 + 1e-9);
    let (alo, ahi) = if degenerate {
        let c = if hi > 0.0 { hi } else { 1.0 };
        (c / 10f64.sqrt(), c * 10f64.sqrt())
    } else {
        (lo, hi)
    };
    let ln_span = (ahi / alo).ln();
    let xpos = |v: f64| -> f64 {
        if v <= alo {
            x0
        } else {
            x0 + (x1 - x0) * ((v / alo).ln() / ln_span).min(1.0)
        }
    };
    let mut bins = [0u64; BINS];
    let bin_of = |v: f64| -> usize {
        if degenerate {
            BINS / 2
        } else if v <= lo {
            0
        } else {
            ((BINS as f64 * (v / lo).ln() / ln_span) as usize).min(BINS - 1)
        }
    };
    for &(v, c) in &buckets {
        bins[bin_of(v)] += c;
    }
    let peak = bins.iter().copied().max().unwrap_or(1).max(1);
    // Grid and axes.
    for t in log_ticks(alo, ahi) {
        let x = xpos(t);
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{x}\" y1=\"{y1}\" x2=\"{x}\" y2=\"{y0}\"/>\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            f(y0 + 16.0),
            human_ms(t),
            x = f(x)
        );
    }
    let _ = write!(
        o,
        "<line class=\"axis\" x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">rows</text>",
        f(x0 - 6.0),
        f(y1 + 4.0),
        count(peak),
        f(x0 - 6.0),
        f(y0),
        f(x0 - 6.0),
        f(y1 - 10.0),
    );
    let _ = write!(
        o,
        "<line class=\"grid\" x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\"/>"
    );
    let bw = (x1 - x0) / BINS as f64;
    for (k, &c) in bins.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let h = (y0 - y1) * c as f64 / peak as f64;
        let (from, to) = if degenerate {
            (hi, hi)
        } else {
            (
                lo * (ln_span * k as f64 / BINS as f64).exp(),
                lo * (ln_span * (k + 1) as f64 / BINS as f64).exp(),
            )
        };
        let range = if degenerate {
            human_ms(from)
        } else {
            format!("{} – {}", human_ms(from), human_ms(to))
        };
        let _ = write!(
            o,
            "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\">\
             <title>{range}: {} row{}</title></rect>",
            f(x0 + bw * k as f64 + 0.5),
            f(y0 - h.max(1.0)),
            f((bw - 1.0).max(1.0)),
            f(h.max(1.0)),
            count(c),
            if c == 1 { "" } else { "s" }
        );
    }
    // Percentile markers, named in a legend along the top.
    let mut legend = String::new();
    for (k, (q, label)) in QUANTILES.iter().enumerate() {
        let v = s.quantile(*q);
        let x = if degenerate {
            x0 + bw * (BINS / 2) as f64 + bw / 2.0
        } else {
            xpos(v)
        };
        let _ = write!(
            o,
            "<line class=\"mark m-{label}\" x1=\"{x}\" y1=\"{y1}\" x2=\"{x}\" y2=\"{y0}\">\
             <title>{label} {}</title></line>",
            human_ms(v),
            x = f(x)
        );
        let _ = write!(
            legend,
            "<tspan class=\"m-{label}\" dx=\"{}\">\u{25AE} {label} {}</tspan>",
            if k == 0 { 0 } else { 12 },
            human_ms(v)
        );
    }
    let _ = write!(
        o,
        "<text x=\"{x1}\" y=\"{}\" text-anchor=\"end\">{legend}</text>",
        f(y1 - 12.0)
    );
    o.push_str("</svg>");
    o
}

/// The p95 series of one operation over the shared timeline: a line through
/// the buckets with rows (broken where buckets are empty), a dot per bucket.
fn series_svg(op: &str, tl: &Timeline, points: &[Point]) -> String {
    let mut o = format!(
        "<svg class=\"chart series\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"p95 over time of {}\">",
        escape(op)
    );
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP - 8.0);
    let start = tl.from.div_euclid(tl.width) * tl.width;
    let end = (tl.to.div_euclid(tl.width) + 1) * tl.width;
    let xpos = |t: f64| x0 + (x1 - x0) * (t - start as f64) / (end - start).max(1) as f64;
    let top = points.iter().map(|p| p.p95).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let ypos = |v: f64| y0 - (y0 - y1) * v / top;
    for frac in [0.0, 0.5, 1.0] {
        let v = top * frac;
        let y = ypos(v);
        let _ = write!(
            o,
            "<line class=\"{}\" x1=\"{x0}\" y1=\"{y}\" x2=\"{x1}\" y2=\"{y}\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            if frac == 0.0 { "axis" } else { "grid" },
            f(x0 - 6.0),
            f(y + 3.5),
            human_ms(v),
            y = f(y)
        );
    }
    let _ = write!(
        o,
        "<text x=\"{x0}\" y=\"{}\">{}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{} · buckets of {}</text>\
         <text x=\"{x1}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        f(y0 + 16.0),
        escape(&when(start)),
        f((x0 + x1) / 2.0),
        f(y0 + 16.0),
        span(end - start),
        span(tl.width),
        f(y0 + 16.0),
        escape(&when(end)),
    );
    // Segments of consecutive buckets.
    let mut segment: Vec<String> = Vec::new();
    let mut prev: Option<i64> = None;
    let flush = |seg: &mut Vec<String>, o: &mut String| {
        if seg.len() > 1 {
            let _ = write!(o, "<polyline class=\"line\" points=\"{}\"/>", seg.join(" "));
        }
        seg.clear();
    };
    for p in points {
        if prev.is_some_and(|t| p.start - t > tl.width) {
            flush(&mut segment, &mut o);
        }
        let x = xpos(p.start as f64 + tl.width as f64 / 2.0);
        segment.push(format!("{},{}", f(x), f(ypos(p.p95))));
        prev = Some(p.start);
    }
    flush(&mut segment, &mut o);
    for p in points {
        let x = xpos(p.start as f64 + tl.width as f64 / 2.0);
        let _ = write!(
            o,
            "<circle class=\"dot\" cx=\"{}\" cy=\"{}\" r=\"1.8\"><title>{}: p95 {} over {} row{}</title></circle>",
            f(x),
            f(ypos(p.p95)),
            escape(&when(p.start)),
            human_ms(p.p95),
            count(p.count),
            if p.count == 1 { "" } else { "s" }
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::aggregate::{Aggregator, Filter};
    use crate::metrics::read::ScanCounts;

    fn report(rows: &[(i64, &str, f64)], series: bool) -> Report {
        let mut a = Aggregator::new(Filter::default());
        if series {
            a = a.with_series();
        }
        for &(t, op, ms) in rows {
            a.add(t, op, ms);
        }
        a.finish(ScanCounts {
            rows: rows.len() as u64,
            malformed: 0,
        })
    }

    fn page(r: &Report, refresh: Option<u32>) -> String {
        Html {
            source: "/tmp/log.csv".into(),
            generated: 1_700_000_000,
            filters: String::new(),
            refresh,
        }
        .render(r)
    }

    #[test]
    fn one_distribution_and_one_series_chart_per_operation() {
        let mut rows = Vec::new();
        for i in 0..500 {
            rows.push((
                1_700_000_000 + i,
                "write_cache",
                0.1 + (i % 50) as f64 * 0.05,
            ));
            rows.push((1_700_000_000 + i, "get_cache_size", 0.02));
        }
        rows.push((1_700_000_100, "lock_acquire", 15.0));
        let html = page(&report(&rows, true), Some(10));
        assert_eq!(html.matches("<svg class=\"chart dist\"").count(), 3);
        assert_eq!(html.matches("<svg class=\"chart series\"").count(), 3);
        assert_eq!(html.matches("<article class=\"op\"").count(), 3);
        // Bars carry their counts; every operation's rows are in its bars.
        assert!(html.contains("class=\"bar\""));
        assert!(html.contains("<polyline class=\"line\""));
        assert!(html.contains("data-refresh=\"10\"") && html.contains("<script>"));
        // Nothing is loaded from elsewhere.
        for bad in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!html.contains(bad), "{bad}");
        }
    }

    #[test]
    fn a_static_report_has_no_script_and_names_are_escaped() {
        let r = report(&[(1, "<b>&\"x'", 1.0)], true);
        let html = page(&r, None);
        assert!(!html.contains("<script"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("&lt;b&gt;&amp;&quot;x&#39;"));
        // A single value draws one bar, not a NaN.
        assert_eq!(html.matches("class=\"bar\"").count(), 1);
        assert!(!html.contains("NaN") && !html.contains("inf"));
    }

    #[test]
    fn an_empty_report_says_so() {
        let html = page(&Report::default(), None);
        assert!(html.contains("No metrics"));
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn zeros_and_huge_spreads_stay_finite() {
        let r = report(
            &[
                (0, "a", 0.0),
                (5_000_000_000, "a", 0.0),
                (7, "b", 0.0),
                (9, "b", 1e7),
            ],
            true,
        );
        let html = page(&r, Some(5));
        assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
        assert_eq!(html.matches("<svg class=\"chart dist\"").count(), 2);
        // Without series the time chart says it has none.
        let html = page(&report(&[(1, "a", 1.0)], false), None);
        assert!(html.contains("no time series"));
    }

    #[test]
    fn helpers() {
        assert_eq!(count(10_000_000), "10\u{2009}000\u{2009}000");
        assert_eq!(count(999), "999");
        assert_eq!(span(45), "45s");
        assert_eq!(span(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(log_ticks(0.001, 1000.0).len(), 7);
        assert_eq!(log_ticks(2.0, 9.0), vec![2.0, 5.0]);
    }
}
