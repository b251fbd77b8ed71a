//! The HTML page of `perf-metrics serve` (`GET /`) and `perf-metrics report
//! --html`: one self-contained document (docs/metrics.md, "The page").
//!
//! Everything is in the one file the exporter returns: the styles, the
//! charts and one script ([`SCRIPT`], the same in both). No fonts, scripts
//! or styles are fetched from anywhere, and a Content-Security-Policy
//! ([`CSP`]) says so to the browser: the only script it lets run is that
//! one, by its SHA-256. The charts are inline SVG drawn here, from the
//! aggregated [`Report`], so the page's size depends on the number of
//! operations, never on the rows of the log, and the page reads (with its
//! tooltips) even with scripts disabled.
//!
//! Per operation: a row of the summary table (count, rate, total, avg, min,
//! p50, p95, p99, max), a latency distribution (a histogram over 40
//! logarithmic bins from min to max, with the p50/p95/p99 marked), the p50,
//! p95 and p99 over time and the rate over time, on a time axis shared by
//! every operation, ticked at round times.
//!
//! The page fits a phone: below 700 px the table turns into one card per
//! operation, the charts stack, and every text stays at 12 px or more (the
//! charts' viewBox is sized so that their text does too). A served page
//! also has the time range controls (presets, zoom out and in, drag across
//! a time chart to zoom) that ask the server for another range.

use std::fmt::Write as _;

use super::table::human_ms;
use super::{Exporter, QUANTILES};
use crate::metrics::aggregate::{OpStats, Report};
use crate::metrics::series::{Point, Timeline};

/// The page's settings: where its data came from and whether it is served.
#[derive(Clone, Debug, Default)]
pub struct Html {
    /// The log the report was read from, shown in the header.
    pub source: String,
    /// When the report was made (epoch seconds).
    pub generated: i64,
    /// The filters in force as a reader would say them (`since 1h`), or empty.
    pub filters: String,
    /// A served page reloads its data every this many seconds (0: only by
    /// its button); a static report (`None`) has no refresh and no range
    /// controls (there is no server to ask).
    pub refresh: Option<u32>,
    /// The query of a served page, for its range controls.
    pub query: PageQuery,
}

/// At most this many operations get charts (the busiest: most rows, then
/// by name). A card is ~55 KB of SVG, so a log of 20,000 operation names
/// (200,000 rows: a 5 MB log, under the default size cap) made a 220 MB
/// page, and four requests for it at once held 1.8 GB in the server. The
/// others are in the table; on the served page their name links to the
/// page of that one operation (`?op=NAME`).
pub const MAX_CHARTED_OPS: usize = 50;

/// At most this many operations are rows of the table (the busiest), so
/// the page stays a few megabytes whatever the log holds; every operation
/// is in `/api/performance/metrics` and `--json`.
pub const MAX_TABLE_OPS: usize = 1000;

/// The filters of a served page's request, as the range links rebuild them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// `since` as typed (`1h`).
    pub since: Option<String>,
    /// An absolute range in epoch seconds (`from`, `to`): a zoom.
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub ops: Vec<String>,
}

/// The page's one script: the operation filter, local times beside UTC,
/// and on a served page the drag-to-zoom and the refresh (re-fetches the
/// page itself with the same query and swaps in its header line and main
/// part, keeping the scroll position and the filter; a failed refresh says
/// so and keeps the last data on screen). Its SHA-256 is in [`CSP`].
pub const SCRIPT: &str = r#"
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const fmt = new Intl.DateTimeFormat(undefined, {year: 'numeric', month: '2-digit',
    day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short'});
  function localTimes() {
    for (const t of document.querySelectorAll('time[data-t]')) {
      if (t.dataset.done) continue;
      t.dataset.done = '1';
      const s = document.createElement('span');
      s.className = 'local';
      s.textContent = ' (' + fmt.format(new Date(Number(t.dataset.t) * 1000)) + ')';
      t.after(s);
    }
  }
  const filter = $('filter');
  function applyFilter() {
    const words = filter.value.toLowerCase().split(/[\s,]+/).filter(Boolean);
    let shown = 0, all = 0;
    for (const el of document.querySelectorAll('[data-op]')) {
      const ok = !words.length || words.some((w) => el.dataset.op.toLowerCase().includes(w));
      el.hidden = !ok;
      if (el.tagName === 'ARTICLE') { all++; if (ok) shown++; }
    }
    $('shown').textContent = words.length ? shown + ' of ' + all + ' shown' : '';
  }
  filter.addEventListener('input', applyFilter);
  const served = 'refresh' in document.body.dataset;
  // Drag across a time chart (mouse or finger) to zoom to that range.
  let drag = null;
  function plotX(svg, ev) {
    const r = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal;
    return (ev.clientX - r.left) * vb.width / r.width;
  }
  document.addEventListener('pointerdown', (ev) => {
    const svg = ev.target.closest && ev.target.closest('svg[data-t0]');
    if (!served || !svg || ev.button !== 0) return;
    const x = plotX(svg, ev), d = svg.dataset;
    if (x < Number(d.x0) || x > Number(d.x1)) return;
    const sel = document.createElementNS(svg.namespaceURI, 'rect');
    sel.setAttribute('class', 'sel');
    sel.setAttribute('y', d.y1);
    sel.setAttribute('height', Number(d.y0) - Number(d.y1));
    svg.appendChild(sel);
    drag = {svg, x, sel};
    svg.setPointerCapture(ev.pointerId);
    ev.preventDefault();
  });
  document.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const d = drag.svg.dataset;
    const x = Math.min(Math.max(plotX(drag.svg, ev), Number(d.x0)), Number(d.x1));
    drag.sel.setAttribute('x', Math.min(x, drag.x));
    drag.sel.setAttribute('width', Math.abs(x - drag.x));
    drag.to = x;
  });
  document.addEventListener('pointerup', () => {
    if (!drag) return;
    const {svg, x, sel, to} = drag;
    drag = null;
    sel.remove();
    if (to === undefined || Math.abs(to - x) < 4) return;
    const d = svg.dataset, t0 = Number(d.t0), t1 = Number(d.t1);
    const at = (v) => Math.round(t0 + (t1 - t0) * (v - Number(d.x0)) / (Number(d.x1) - Number(d.x0)));
    const u = new URL(location.href);
    u.searchParams.delete('since');
    u.searchParams.set('from', at(Math.min(x, to)));
    u.searchParams.set('to', Math.max(at(Math.max(x, to)), at(Math.min(x, to)) + 1));
    location.assign(u.href);
  });
  localTimes();
  applyFilter();
  if (!served) return;
  const every = Number(document.body.dataset.refresh) * 1000;
  const status = $('status');
  const auto = $('auto');
  let timer = null, busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch(location.href, {cache: 'no-store'});
      if (!r.ok) throw new Error(r.status + ' ' + r.statusText);
      const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
      for (const id of ['meta', 'main']) {
        const fresh = doc.getElementById(id), old = $(id);
        if (fresh && old) old.replaceWith(fresh);
      }
      document.title = doc.title;
      localTimes();
      applyFilter();
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
  $('refresh').addEventListener('click', refresh);
  auto.addEventListener('change', schedule);
  schedule();
})();
"#;

/// The SHA-256 of [`SCRIPT`], base64, as CSP wants it (the unit test
/// `the_csp_allows_exactly_the_script_the_page_has` checks it, and says the
/// right one when the script changes).
macro_rules! script_sha256 {
    () => {
        "sha256-kOmRW6oqx9kh9byi39UGLNQ6xXNyTbSR0bquaiJtLCU="
    };
}
pub const SCRIPT_SHA256: &str = script_sha256!();

/// What the page allows itself: its inline styles, its one script (by
/// hash: nothing injected would run), requests back to where it came from
/// (the refresh), images from `data:` (the empty favicon that spares the
/// browser a request), links and forms to itself. Nothing external loads.
pub const CSP: &str = concat!(
    "default-src 'none'; style-src 'unsafe-inline'; script-src '",
    script_sha256!(),
    "'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'"
);

/// Width and height of every chart (SVG user units; scaled by CSS). Small
/// on purpose: at [`FONT`] units the text is 12 px or more wherever the
/// layout puts a chart (at least 340 px wide; a phone's 390 px screen
/// leaves it 348).
const W: f64 = 360.0;
const H: f64 = 196.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;
/// The charts' font size in user units.
const FONT: f64 = 13.0;

/// Bins of the distribution chart.
const BINS: usize = 40;

/// Steps of the time axis' ticks, in seconds: round times.
const TICK_STEPS: [i64; 22] = [
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    2 * 60,
    5 * 60,
    10 * 60,
    15 * 60,
    30 * 60,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
    2 * 86_400,
    7 * 86_400,
    14 * 86_400,
    28 * 86_400,
];

/// The range presets of a served page.
pub(crate) const PRESETS: [&str; 8] = ["5m", "15m", "1h", "6h", "24h", "7d", "30d", ""];

const STYLE: &str = r#"
:root{color-scheme:light dark;--bg:#f7f8fa;--card:#fff;--fg:#1d2330;--muted:#5d6778;--line:#d9dde5;--grid:#eceef2;--accent:#3b6fd8;--accent2:#8fb0ee;--p50:#2f9e62;--p95:#d9822b;--p99:#c23b3b;--warn:#8a5a00;--warnbg:#fff4d6}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--card:#1c2027;--fg:#e4e7ec;--muted:#9aa3b2;--line:#343a45;--grid:#262b33;--accent:#6d9bf1;--accent2:#34528a;--p50:#4cc586;--p95:#f0a050;--p99:#ef6b6b;--warn:#f3cf7a;--warnbg:#3a3020}}
*{box-sizing:border-box}
[hidden]{display:none!important}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;overflow-wrap:anywhere}
header{padding:16px 24px 8px}
h1{font-size:20px;margin:0;font-weight:650}
h2{font-size:15px;margin:0 0 2px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
#meta{color:var(--muted);margin:4px 0 8px;font-size:13px}
#meta code{font-size:12px}
.local{color:var(--muted)}
#shown:empty,#status:empty{display:none}
.controls{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center;font-size:13px;color:var(--muted);margin:6px 0}
.controls button,.controls input[type=search],.range a{font:inherit;font-size:13px;padding:4px 10px;border:1px solid var(--line);border-radius:6px;background:var(--card);color:var(--fg)}
.controls button{cursor:pointer}
.controls button:hover,.range a:hover{border-color:var(--accent)}
.controls input[type=search]{min-width:0;width:16em;max-width:100%}
.range{display:flex;flex-wrap:wrap;gap:4px;align-items:center}
.range a{text-decoration:none;padding:3px 8px}
.range a[aria-current]{border-color:var(--accent);color:var(--accent);font-weight:600}
main{padding:0 24px 24px}
.warn{background:var(--warnbg);color:var(--warn);padding:8px 12px;border-radius:6px;margin:0 0 14px}
.empty{padding:40px 16px;text-align:center;color:var(--muted);background:var(--card);border:1px solid var(--line);border-radius:10px}
.tablewrap{background:var(--card);border:1px solid var(--line);border-radius:10px;margin-bottom:20px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;table-layout:auto}
th,td{padding:7px 12px;text-align:right;white-space:nowrap;border-bottom:1px solid var(--grid)}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600}
th:first-child,td:first-child{text-align:left}
td.name{max-width:0;width:30%;overflow:hidden;text-overflow:ellipsis}
td.name a{color:var(--accent);text-decoration:none;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
td.name a:hover{text-decoration:underline}
tr:last-child td{border-bottom:0}
.ops{display:grid;grid-template-columns:1fr;gap:16px}
.op{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px 10px;min-width:0}
.op .stats{color:var(--muted);font-size:13px;margin:0 0 4px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:4px 16px}
figure{margin:0;min-width:0}
figcaption{font-size:12px;color:var(--muted);margin:8px 0 2px;font-weight:600}
figcaption .k{font-weight:700}
.c-p50{color:var(--p50)} .c-p95{color:var(--p95)} .c-p99{color:var(--p99)}
svg.chart{width:100%;height:auto;display:block;font-size:13px;font-family:system-ui,sans-serif;touch-action:pan-y}
body[data-refresh] svg[data-t0]{cursor:crosshair}
svg .axis{stroke:var(--line);stroke-width:1}
svg .grid{stroke:var(--grid);stroke-width:1}
svg .bar{fill:var(--accent)}
svg .bar:hover{fill:var(--accent2)}
svg text{fill:var(--muted)}
svg .mark{stroke-width:1.5;stroke-dasharray:4 3}
svg .m-p50{stroke:var(--p50)} svg .m-p95{stroke:var(--p95)} svg .m-p99{stroke:var(--p99)}
svg .line{fill:none;stroke-width:1.8;stroke-linejoin:round}
svg .hover{fill:transparent}
svg .hover:hover{fill:var(--grid);fill-opacity:.6}
svg .sel{fill:var(--accent);fill-opacity:.18}
footer{color:var(--muted);font-size:12px;padding:0 24px 24px}
@media (max-width:700px){
header{padding:12px 10px 6px}
main{padding:0 10px 16px}
footer{padding:0 10px 16px}
.op{padding:10px 10px 8px}
.controls input[type=search]{width:100%}
table,tbody,tr,td{display:block;width:auto}
thead{display:none}
tr{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:2px 8px;padding:8px 10px;border-bottom:1px solid var(--grid)}
tr:last-child{border-bottom:0}
td{padding:0;border:0;text-align:left;white-space:normal}
td.name{grid-column:1/-1;max-width:none;width:auto;overflow:visible;margin-bottom:2px}
td[data-label]::before{content:attr(data-label);display:block;font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
}
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

/// Percent-encodes a query component (everything but RFC 3986's unreserved
/// characters).
fn encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// An epoch second as `2026-12-01 09:15:40 UTC`.
fn when(t: i64) -> String {
    match jiff::Timestamp::from_second(t) {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => t.to_string(),
    }
}

/// An epoch second as a `<time>` the script adds the local time to.
fn time_el(t: i64) -> String {
    let iso = jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |ts| ts.to_string());
    format!("<time datetime=\"{iso}\" data-t=\"{t}\">{}</time>", when(t))
}

/// A span of seconds as `3h 12m`, `45s`, `2d 4h`.
fn span(secs: i64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
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

/// A rate of `n` rows over `secs` seconds in the unit that reads best:
/// `12/s`, `3.5/min`, `2/h`.
fn rate(n: u64, secs: i64) -> String {
    let per_s = n as f64 / secs.max(1) as f64;
    let (v, unit) = rate_unit(per_s);
    format!("{}/{unit}", short(per_s * v))
}

/// The unit for rates up to `per_s` rows a second: its factor from per
/// second and its name.
fn rate_unit(per_s: f64) -> (f64, &'static str) {
    if per_s >= 1.0 {
        (1.0, "s")
    } else if per_s * 60.0 >= 1.0 {
        (60.0, "min")
    } else {
        (3600.0, "h")
    }
}

/// A number with up to three significant digits and no trailing zeros.
fn short(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A duration for an axis label: [`human_ms`] without trailing zeros.
fn tick_ms(ms: f64) -> String {
    let h = human_ms(ms);
    match h.split_once(' ') {
        Some((num, unit)) if num.contains('.') => {
            format!("{} {unit}", num.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => h,
    }
}

/// SVG coordinates with one decimal.
fn f(v: f64) -> String {
    format!("{v:.1}")
}

/// Linear ticks from 0 to at least `top`: 1-2-5 steps, at most five.
/// Returns the ticks and the axis' top (the last tick).
fn nice_ticks(top: f64) -> (Vec<f64>, f64) {
    if top <= 0.0 || !top.is_finite() {
        return (vec![0.0, 1.0], 1.0);
    }
    let raw = top / 4.0;
    let mag = 10f64.powi((raw.ln() / std::f64::consts::LN_10).floor() as i32);
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let n = (top / step - 1e-9).ceil().max(1.0) as usize;
    let ticks: Vec<f64> = (0..=n).map(|i| i as f64 * step).collect();
    let last = ticks.last().copied().unwrap_or(top);
    (ticks, last)
}

/// Ticks of a time axis over `[start, end]` at round times (multiples of a
/// step of [`TICK_STEPS`], UTC) no closer than a label's width, and the
/// label format of that step.
fn time_ticks(start: i64, end: i64) -> (Vec<i64>, &'static str) {
    let secs = (end - start).max(1);
    let plot = W - LEFT - RIGHT;
    let step = TICK_STEPS
        .iter()
        .copied()
        .find(|&st| {
            // A label is about 0.6 em a character, plus a gap.
            let chars = if st < 60 { 8.0 } else { 5.5 };
            plot * st as f64 / secs as f64 >= chars * FONT * 0.6 + 14.0
        })
        .unwrap_or_else(|| {
            // Beyond four weeks: whole multiples of 28 days.
            let weeks4 = 28 * 86_400;
            weeks4 * (secs / weeks4 / 3 + 1)
        });
    let first = start.div_euclid(step) * step;
    let first = if first < start { first + step } else { first };
    let ticks = (0..)
        .map(|i| first + i * step)
        .take_while(|&t| t <= end)
        .collect();
    let fmt = if step < 60 {
        "%H:%M:%S"
    } else if step < 86_400 {
        "%H:%M"
    } else {
        "%b %d"
    };
    (ticks, fmt)
}

/// A tick's label: the step's format, or the date at midnight.
fn tick_label(t: i64, fmt: &str) -> String {
    let Ok(ts) = jiff::Timestamp::from_second(t) else {
        return t.to_string();
    };
    if fmt != "%b %d" && t.rem_euclid(86_400) == 0 {
        return ts.strftime("%b %d").to_string();
    }
    ts.strftime(fmt).to_string()
}

impl Exporter for Html {
    fn render(&self, report: &Report) -> String {
        let n = report.ops.len();
        let charted = report.busiest(MAX_CHARTED_OPS);
        let tabled = report.busiest(MAX_TABLE_OPS);
        let mut o = String::with_capacity(
            10_000 + n.min(MAX_CHARTED_OPS) * 24_000 + n.min(MAX_TABLE_OPS) * 800,
        );
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
        o.push_str("<header>\n<h1>ffkit performance metrics</h1>\n");
        self.meta(&mut o, report);
        if self.refresh.is_some() {
            self.range_controls(&mut o, report);
        }
        o.push_str(
            "<div class=\"controls\"><input type=\"search\" id=\"filter\" \
             placeholder=\"Filter operations\" aria-label=\"Filter operations\" autocomplete=\"off\">\
             <span id=\"shown\" role=\"status\"></span>",
        );
        if let Some(s) = self.refresh {
            let every = if s == 0 {
                String::new()
            } else {
                format!("<label><input type=\"checkbox\" id=\"auto\" checked> every {s} s</label>")
            };
            let _ = write!(
                o,
                "<button id=\"refresh\" type=\"button\">Refresh</button>{every}\
                 <span id=\"status\" role=\"status\"></span>"
            );
            if s == 0 {
                o.push_str("<input type=\"checkbox\" id=\"auto\" hidden>");
            }
        }
        o.push_str("</div>\n</header>\n<main id=\"main\">\n");
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
            if n > MAX_CHARTED_OPS {
                let _ = writeln!(
                    o,
                    "<p class=\"warn\">{} operations: the table has the {} with the most rows, \
                     charts the {} busiest{}; every one is in <code>/api/performance/metrics</code> \
                     and <code>perf-metrics --json</code>.</p>",
                    count(n as u64),
                    count(n.min(MAX_TABLE_OPS) as u64),
                    MAX_CHARTED_OPS,
                    if self.refresh.is_some() {
                        " (a name in the table links to its own page)"
                    } else {
                        ""
                    }
                );
            }
            self.summary_table(&mut o, report, &tabled, &charted);
            o.push_str("<section class=\"ops\">\n");
            for (i, s) in report.ops.iter().enumerate() {
                if charted[i] {
                    op_card(&mut o, i, s, report.timeline.as_ref());
                }
            }
            o.push_str("</section>\n");
        }
        o.push_str("</main>\n");
        o.push_str(
            "<footer>Durations are wall times recorded by ffkit; percentiles are nearest-rank \
             (exact up to 8,192 rows per operation, within 0.5 % beyond; per time bucket within \
             2 %). Times on the axes are UTC. Hover or tap a bar or a bucket for its numbers",
        );
        if self.refresh.is_some() {
            o.push_str("; drag across a time chart to zoom in");
        }
        o.push_str(".</footer>\n");
        let _ = writeln!(o, "<script>{SCRIPT}</script>");
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
                time_el(tl.from),
                time_el(tl.to),
                span(tl.to - tl.from)
            );
        }
        if !self.filters.is_empty() {
            let _ = write!(o, " · {}", escape(&self.filters));
        }
        let _ = writeln!(o, " · generated {}</p>", time_el(self.generated));
    }

    /// The link to this page with another range (the operations kept).
    fn href(&self, since: Option<&str>, range: Option<(i64, i64)>) -> String {
        let mut parts = Vec::new();
        if let Some(s) = since.filter(|s| !s.is_empty()) {
            parts.push(format!("since={}", encode(s)));
        }
        if let Some((a, b)) = range {
            parts.push(format!("from={a}&to={b}"));
        }
        for op in &self.query.ops {
            parts.push(format!("op={}", encode(op)));
        }
        if parts.is_empty() {
            "?".to_string()
        } else {
            escape(&format!("?{}", parts.join("&")))
        }
    }

    /// Range presets (last 5 minutes … all), and, for a zoomed range,
    /// zoom out (twice as long, same centre), zoom in (half) and back.
    /// Their ends are kept within what the server takes ([`MAX_EPOCH`]):
    /// before, zooming out of a range near the epoch (a log with an old
    /// counter's small timestamps, or twenty zooms out of an hour) linked
    /// to a negative `from`, and the link was answered 400.
    fn range_controls(&self, o: &mut String, report: &Report) {
        let q = &self.query;
        o.push_str("<nav class=\"range\" aria-label=\"Time range\">");
        let zoomed = q.from.is_some() || q.to.is_some();
        for p in PRESETS {
            let current = !zoomed && q.since.as_deref().unwrap_or("") == p;
            let _ = write!(
                o,
                "<a href=\"{}\"{}>{}</a>",
                self.href(Some(p), None),
                if current {
                    " aria-current=\"page\""
                } else {
                    ""
                },
                if p.is_empty() {
                    "All".to_string()
                } else {
                    format!("Last {p}")
                }
            );
        }
        // The range on screen: the zoom, else the data's.
        let shown = match (q.from, q.to, report.timeline) {
            (Some(a), Some(b), _) => Some((a, b)),
            (a, b, Some(tl)) => Some((a.unwrap_or(tl.from), b.unwrap_or(tl.to))),
            (Some(a), None, None) => Some((a, self.generated)),
            (None, Some(b), None) => Some((b - 3600, b)),
            _ => None,
        };
        if let Some((a, b)) = shown {
            let len = (b - a).max(2);
            let mid = a + len / 2;
            let _ = write!(
                o,
                "<a href=\"{}\" title=\"Zoom out: twice the range\">Zoom out</a>\
                 <a href=\"{}\" title=\"Zoom in: half the range, same centre\">Zoom in</a>",
                self.href(None, Some(within_epochs(mid - len, mid + len))),
                self.href(None, Some(within_epochs(mid - len / 4, mid + len / 4)))
            );
        }
        o.push_str("</nav>\n");
    }
}

/// The last epoch second a `from` or `to` may name: 9999-12-31 23:59:59 UTC.
pub const MAX_EPOCH: i64 = 253_402_300_799;

/// A range clamped to the epoch seconds a query may name, 0 to
/// [`MAX_EPOCH`] (clamping keeps `a <= b`).
fn within_epochs(a: i64, b: i64) -> (i64, i64) {
    (a.clamp(0, MAX_EPOCH), b.clamp(0, MAX_EPOCH))
}

impl Html {
    /// The table of the operations marked `tabled`; a name links to its card,
    /// or (served page) to the page of that operation when it has none here.
    fn summary_table(&self, o: &mut String, report: &Report, tabled: &[bool], charted: &[bool]) {
        let secs = report
            .timeline
            .map_or(1, |tl| (tl.to - tl.from + tl.width).max(1));
        o.push_str(
            "<div class=\"tablewrap\"><table>\n<thead><tr><th>Operation</th><th>Count</th>\
         <th>Rate</th><th>Total</th><th>Avg</th><th>Min</th>",
        );
        for (_, label) in QUANTILES {
            let _ = write!(o, "<th>{label}</th>");
        }
        o.push_str("<th>Max</th></tr></thead>\n<tbody>\n");
        for (i, s) in report.ops.iter().enumerate() {
            if !tabled[i] {
                continue;
            }
            let name = escape(&s.op);
            let href = if charted[i] {
                format!(" href=\"#op-{i}\"")
            } else if self.refresh.is_some() {
                format!(" href=\"{}\"", self.op_href(&s.op))
            } else {
                String::new()
            };
            let _ = write!(
                o,
                "<tr data-op=\"{name}\"><td class=\"name\"><a{href} title=\"{name}\">{name}</a></td>\
             <td data-label=\"Count\">{}</td><td data-label=\"Rate\">{}</td>\
             <td data-label=\"Total\">{}</td><td data-label=\"Avg\">{}</td><td data-label=\"Min\">{}</td>",
                count(s.count),
                rate(s.count, secs),
                human_ms(s.total),
                human_ms(s.avg()),
                human_ms(s.min)
            );
            for (q, label) in QUANTILES {
                let _ = write!(
                    o,
                    "<td data-label=\"{label}\">{}</td>",
                    human_ms(s.quantile(q))
                );
            }
            let _ = writeln!(o, "<td data-label=\"Max\">{}</td></tr>", human_ms(s.max));
        }
        o.push_str("</tbody>\n</table></div>\n");
    }

    /// The link to the page of operation `op` alone, over the same range.
    fn op_href(&self, op: &str) -> String {
        let q = &self.query;
        let mut parts = Vec::new();
        if let Some(s) = q.since.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("since={}", encode(s)));
        }
        if let Some(a) = q.from {
            parts.push(format!("from={a}"));
        }
        if let Some(b) = q.to {
            parts.push(format!("to={b}"));
        }
        parts.push(format!("op={}", encode(op)));
        escape(&format!("?{}", parts.join("&")))
    }
}

fn op_card(o: &mut String, i: usize, s: &OpStats, timeline: Option<&Timeline>) {
    let name = escape(&s.op);
    let _ = write!(
        o,
        "<article class=\"op\" id=\"op-{i}\" data-op=\"{name}\">\n<h2>{name}</h2>\n\
         <p class=\"stats\">{} rows · avg {} · max {}</p>\n<div class=\"charts\">\n",
        count(s.count),
        human_ms(s.avg()),
        human_ms(s.max)
    );
    let mut legend = String::new();
    for (q, label) in QUANTILES {
        let _ = write!(
            legend,
            " · <span class=\"c-{label}\"><span class=\"k\">{label}</span> {}</span>",
            human_ms(s.quantile(q))
        );
    }
    let _ = writeln!(
        o,
        "<figure><figcaption>Latency distribution{legend}</figcaption>{}</figure>",
        distribution_svg(s)
    );
    match timeline {
        Some(tl) => {
            let points = s.series(tl);
            let _ = writeln!(
                o,
                "<figure><figcaption>Latency over time · <span class=\"c-p50\">p50</span> \
                 <span class=\"c-p95\">p95</span> <span class=\"c-p99\">p99</span> · {} buckets</figcaption>{}</figure>",
                span(tl.width),
                latency_svg(&s.op, tl, &points)
            );
            let _ = writeln!(
                o,
                "<figure><figcaption>Rate · rows per {}</figcaption>{}</figure>",
                rate_unit(max_rate(tl, &points)).1,
                rate_svg(&s.op, tl, &points)
            );
        }
        None => {
            let _ = writeln!(
                o,
                "<figure><figcaption>Over time</figcaption>{}</figure>",
                empty_svg("series", "no time series")
            );
        }
    }
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
/// or, within one decade, 1-2-5 steps, or at worst the two ends; thinned
/// to at most four labels.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut t = Vec::new();
    // ln / ln 10 rather than log10: one libm symbol fewer to bind at start-up.
    let log10 = |v: f64| v.ln() / std::f64::consts::LN_10;
    let (a, b) = (log10(lo).floor() as i32, log10(hi).ceil() as i32);
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
    while t.len() > 4 {
        t = t.into_iter().step_by(2).collect();
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
    let ticks = log_ticks(alo, ahi);
    let last = ticks.len().saturating_sub(1);
    for (k, t) in ticks.into_iter().enumerate() {
        let x = xpos(t);
        // The end labels stay inside the chart.
        let anchor = match k {
            0 if x - x0 < 20.0 => "start",
            k if k == last && x1 - x < 20.0 => "end",
            _ => "middle",
        };
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{x}\" y1=\"{y1}\" x2=\"{x}\" y2=\"{y0}\"/>\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            f(y0 + FONT + 3.0),
            tick_ms(t),
            x = f(x)
        );
    }
    let _ = write!(
        o,
        "<line class=\"axis\" x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\"/>\
         <line class=\"grid\" x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">rows</text>",
        f(x0 - 6.0),
        f(y1 + FONT * 0.35),
        count(peak),
        f(x0 - 6.0),
        f(y0),
        f(x0 - 6.0),
        f((y0 + y1) / 2.0 + FONT * 0.35),
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
    // Percentile markers (named in the caption, in their colours).
    for (q, label) in QUANTILES {
        let v = s.quantile(q);
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
    }
    o.push_str("</svg>");
    o
}

/// The time axis of the charts over time: the bucket-aligned range of the
/// timeline.
fn time_range(tl: &Timeline) -> (i64, i64) {
    let start = tl.from.div_euclid(tl.width) * tl.width;
    let end = (tl.to.div_euclid(tl.width) + 1) * tl.width;
    (start, end)
}

/// The opening tag of a chart over time: its time range and plot area as
/// data attributes, for the drag-to-zoom.
fn time_svg_open(class: &str, label: &str, op: &str, tl: &Timeline) -> String {
    let (start, end) = time_range(tl);
    format!(
        "<svg class=\"chart {class}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{label} of {}\" \
         data-t0=\"{start}\" data-t1=\"{end}\" data-x0=\"{LEFT}\" data-x1=\"{}\" data-y0=\"{}\" data-y1=\"{TOP}\">",
        escape(op),
        W - RIGHT,
        H - BOTTOM
    )
}

/// The x axis of a time chart: round-time ticks with grid lines.
fn time_axis(o: &mut String, tl: &Timeline) {
    let (start, end) = time_range(tl);
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let xpos = |t: i64| x0 + (x1 - x0) * (t - start) as f64 / (end - start).max(1) as f64;
    let (ticks, fmt) = time_ticks(start, end);
    for t in ticks {
        let x = xpos(t);
        let anchor = if x - x0 < 18.0 {
            "start"
        } else if x1 - x < 18.0 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{x}\" y1=\"{y1}\" x2=\"{x}\" y2=\"{y0}\"/>\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            f(y0 + FONT + 3.0),
            tick_label(t, fmt),
            x = f(x)
        );
    }
}

/// The y axis of a chart: grid lines at `ticks` (0 first), labelled.
fn y_axis(o: &mut String, ticks: &[f64], top: f64, label: impl Fn(f64) -> String) {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    for &v in ticks {
        let y = y0 - (y0 - y1) * v / top;
        let _ = write!(
            o,
            "<line class=\"{}\" x1=\"{x0}\" y1=\"{y}\" x2=\"{x1}\" y2=\"{y}\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            if v == 0.0 { "axis" } else { "grid" },
            f(x0 - 6.0),
            f(y + FONT * 0.35),
            label(v),
            y = f(y)
        );
    }
}

/// A bucket's start as its tooltip says it: to the minute unless buckets
/// are shorter.
fn bucket_when(t: i64, width: i64) -> String {
    let fmt = if width < 60 {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M"
    };
    jiff::Timestamp::from_second(t)
        .map_or_else(|_| t.to_string(), |ts| ts.strftime(fmt).to_string())
}

/// A bucket's numbers, as its tooltip says them: in the latency chart its
/// percentiles, in the rate chart its rows and rate.
fn bucket_title(p: &Point, width: i64, latency: bool) -> String {
    let when = bucket_when(p.start, width);
    if latency {
        format!(
            "{when} UTC +{}: p50 {} · p95 {} · p99 {} ({} row{})",
            span(width),
            human_ms(p.p50),
            human_ms(p.p95),
            human_ms(p.p99),
            count(p.count),
            if p.count == 1 { "" } else { "s" },
        )
    } else {
        format!(
            "{when} UTC +{}: {} row{} ({})",
            span(width),
            count(p.count),
            if p.count == 1 { "" } else { "s" },
            rate(p.count, width)
        )
    }
}

/// A transparent column per bucket over the plot, carrying its tooltip.
fn hover_columns(o: &mut String, tl: &Timeline, points: &[Point], latency: bool) {
    let (start, end) = time_range(tl);
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let bw = f(((x1 - x0) * tl.width as f64 / (end - start).max(1) as f64).max(1.0));
    let h = f(y0 - y1);
    for p in points {
        let x = x0 + (x1 - x0) * (p.start - start) as f64 / (end - start).max(1) as f64;
        let _ = write!(
            o,
            "<rect class=\"hover\" x=\"{}\" y=\"{y1}\" width=\"{bw}\" height=\"{h}\"><title>{}</title></rect>",
            f(x),
            escape(&bucket_title(p, tl.width, latency))
        );
    }
}

/// p50, p95 and p99 of one operation over the shared timeline: a line each
/// through the buckets with rows (broken where buckets are empty).
fn latency_svg(op: &str, tl: &Timeline, points: &[Point]) -> String {
    let mut o = time_svg_open("series", "latency over time", op, tl);
    let (start, end) = time_range(tl);
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let (ticks, top) = nice_ticks(points.iter().map(|p| p.p99).fold(0.0, f64::max));
    y_axis(&mut o, &ticks, top, tick_ms);
    time_axis(&mut o, tl);
    let xpos = |t: f64| x0 + (x1 - x0) * (t - start as f64) / (end - start).max(1) as f64;
    let ypos = |v: f64| y0 - (y0 - y1) * v / top;
    let get = |p: &Point, label: &str| match label {
        "p50" => p.p50,
        "p95" => p.p95,
        _ => p.p99,
    };
    // Runs of consecutive buckets: a line through their centres; a bucket
    // alone, a dash across its width.
    let mut runs: Vec<&[Point]> = Vec::new();
    let mut from = 0;
    for k in 1..=points.len() {
        if k == points.len() || points[k].start - points[k - 1].start > tl.width {
            runs.push(&points[from..k]);
            from = k;
        }
    }
    for (_, label) in QUANTILES {
        for run in &runs {
            let pts: Vec<String> = if let [p] = run {
                let y = f(ypos(get(p, label)));
                vec![
                    format!("{},{y}", f(xpos(p.start as f64))),
                    format!("{},{y}", f(xpos((p.start + tl.width) as f64))),
                ]
            } else {
                run.iter()
                    .map(|p| {
                        let x = xpos(p.start as f64 + tl.width as f64 / 2.0);
                        format!("{},{}", f(x), f(ypos(get(p, label))))
                    })
                    .collect()
            };
            let _ = write!(
                o,
                "<polyline class=\"line m-{label}\" points=\"{}\"/>",
                pts.join(" ")
            );
        }
    }
    hover_columns(&mut o, tl, points, true);
    o.push_str("</svg>");
    o
}

/// The highest rate of a series, rows a second.
fn max_rate(tl: &Timeline, points: &[Point]) -> f64 {
    points.iter().map(|p| p.count).max().unwrap_or(0) as f64 / tl.width as f64
}

/// Rows per second (or minute, or hour) of one operation over the shared
/// timeline: a bar per bucket.
fn rate_svg(op: &str, tl: &Timeline, points: &[Point]) -> String {
    let mut o = time_svg_open("rate", "rate over time", op, tl);
    let (start, end) = time_range(tl);
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let (factor, _) = rate_unit(max_rate(tl, points));
    let (ticks, top) = nice_ticks(max_rate(tl, points) * factor);
    y_axis(&mut o, &ticks, top, short);
    time_axis(&mut o, tl);
    let bw = (x1 - x0) * tl.width as f64 / (end - start).max(1) as f64;
    for p in points {
        let v = p.count as f64 / tl.width as f64 * factor;
        let h = ((y0 - y1) * v / top).max(1.0);
        let x = x0 + (x1 - x0) * (p.start - start) as f64 / (end - start).max(1) as f64;
        let _ = write!(
            o,
            "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
            f(x + bw * 0.1),
            f(y0 - h),
            f((bw * 0.8).max(1.0)),
            f(h)
        );
    }
    hover_columns(&mut o, tl, points, false);
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
            query: PageQuery::default(),
        }
        .render(r)
    }

    /// Many operation names: charts for the busiest only, the table for
    /// the busiest 1,000, and on the served page an uncharted name links
    /// to its own page; the page stays small.
    #[test]
    fn a_log_of_many_operations_charts_the_busiest_only() {
        let names: Vec<String> = (0..1_100).map(|i| format!("op{i:04}")).collect();
        let mut rows: Vec<(i64, &str, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (1_700_000_000 + i as i64, n.as_str(), 1.0))
            .collect();
        rows.extend([
            (1_700_000_000, "op1099", 2.0),
            (1_700_000_001, "op1099", 3.0),
        ]);
        let r = report(&rows, true);
        for refresh in [None, Some(10)] {
            let p = page(&r, refresh);
            assert_eq!(p.matches("<article").count(), MAX_CHARTED_OPS);
            assert_eq!(p.matches("<tr data-op=").count(), MAX_TABLE_OPS);
            assert!(p.contains("<article class=\"op\" id=\"op-1099\" data-op=\"op1099\">"));
            assert!(p.contains("1\u{2009}100 operations: the table"));
            assert!(p.len() < 4 << 20, "{} bytes", p.len());
            let linked = p.contains("<a href=\"?op=op0500\" title=\"op0500\">");
            assert!(p.contains("<a title=\"op0500\">") != linked);
            assert!(
                !p.contains("data-op=\"op0999\""),
                "the 1,001st busiest is left out"
            );
            assert_eq!(linked, refresh.is_some());
        }
    }

    /// Zoom links stay within the epoch seconds the server takes.
    #[test]
    fn zoom_links_never_leave_the_range_a_query_may_name() {
        for rows in [
            vec![(5, "a", 1.0), (3_600, "a", 2.0)],
            vec![
                (1_700_000_000, "a", 1.0),
                (999_999_999_999_999_999, "a", 2.0),
            ],
        ] {
            let p = page(&report(&rows, true), Some(10));
            let mut links = 0;
            for part in p.split("from=").skip(1) {
                let num = |s: &str| -> i64 {
                    let end = s.find(|c: char| c != '-' && !c.is_ascii_digit()).unwrap();
                    s[..end].parse().unwrap()
                };
                let from = num(part);
                let to = num(part.split("to=").nth(1).unwrap());
                assert!(0 <= from && from <= to && to <= MAX_EPOCH, "{from}..{to}");
                links += 1;
            }
            assert_eq!(links, 2, "zoom out and zoom in");
        }
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
        for q in ["p50", "p95", "p99"] {
            assert!(
                html.contains(&format!("<polyline class=\"line m-{q}\"")),
                "{q}"
            );
        }
        assert_eq!(html.matches("<svg class=\"chart rate\"").count(), 3);
        assert!(html.contains("data-refresh=\"10\"") && html.contains("<script>"));
        // A served page has the range controls.
        assert!(html.contains("<nav class=\"range\"") && html.contains(">Last 5m</a>"));
        // Nothing is loaded from elsewhere.
        for bad in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!html.contains(bad), "{bad}");
        }
    }

    #[test]
    fn a_static_report_has_no_refresh_or_range_and_names_are_escaped() {
        let r = report(&[(1, "<b>&\"x'", 1.0)], true);
        let html = page(&r, None);
        assert!(!html.contains("<body data-refresh") && !html.contains("id=\"refresh\""));
        assert!(!html.contains("<nav class=\"range\""));
        assert!(html.contains("id=\"filter\""));
        assert!(!html.contains("<b>"));
        assert!(html.contains("&lt;b&gt;&amp;&quot;x&#39;"));
        // A single value draws one bar, not a NaN.
        // (and one in the rate chart)
        assert_eq!(html.matches("class=\"bar\"").count(), 2);
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

    /// Standard base64 with padding, for the CSP hash.
    fn base64(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut o = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..4 {
                if k <= c.len() {
                    o.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
                } else {
                    o.push('=');
                }
            }
        }
        o
    }

    #[test]
    fn the_csp_allows_exactly_the_script_the_page_has() {
        use sha2::Digest;
        assert_eq!(base64(b"ab"), "YWI=");
        let want = format!(
            "sha256-{}",
            base64(&sha2::Sha256::digest(SCRIPT.as_bytes()))
        );
        assert_eq!(SCRIPT_SHA256, want, "update script_sha256!()");
        assert!(CSP.contains(&format!("script-src '{want}';")), "{CSP}");
        assert!(!CSP.contains("unsafe-inline'; connect") && !CSP.contains("script-src 'unsafe"));
        // Both pages carry exactly that one script, byte for byte, and no
        // inline handler attribute.
        let r = report(&[(1, "a", 1.0), (5, "b", 2.0)], true);
        for html in [page(&r, None), page(&r, Some(10))] {
            let scripts: Vec<&str> = html
                .split("<script>")
                .skip(1)
                .map(|s| s.split("</script>").next().unwrap_or(""))
                .collect();
            assert_eq!(scripts, [SCRIPT]);
            assert!(!html.contains(" onclick=") && !html.contains(" onload="));
            assert!(html.contains(&format!("content=\"{CSP}\"")));
        }
    }

    #[test]
    fn time_axes_tick_at_round_times_and_y_axes_at_round_values() {
        // 2023-11-14 22:13:20 UTC to 25 min later: ticks every 5 or 10
        // minutes, on the minute.
        let (t, fmt) = time_ticks(1_700_000_000, 1_700_001_500);
        assert!(t.len() >= 2 && t.len() <= 6, "{t:?}");
        let step = t[1] - t[0];
        assert!([300, 600].contains(&step), "{step}");
        assert!(t.iter().all(|x| x % step == 0));
        assert_eq!((fmt, tick_label(t[0], fmt).as_str()), ("%H:%M", "22:15"));
        // A week: daily ticks labelled by date.
        let (t, fmt) = time_ticks(1_700_000_000, 1_700_000_000 + 7 * 86_400);
        assert!(t.iter().all(|x| x % 86_400 == 0) && fmt == "%b %d", "{t:?}");
        assert_eq!(tick_label(t[0], fmt), "Nov 15");
        // Seconds.
        let (t, fmt) = time_ticks(1_700_000_000, 1_700_000_030);
        assert!(t.iter().all(|x| x % 5 == 0) && fmt == "%H:%M:%S", "{t:?}");
        // Midnight shows the date.
        assert_eq!(tick_label(1_699_920_000, "%H:%M"), "Nov 14");
        let (t, top) = nice_ticks(17.3);
        assert_eq!((t, top), (vec![0.0, 5.0, 10.0, 15.0, 20.0], 20.0));
        assert_eq!(nice_ticks(0.9).1, 1.0);
        assert_eq!(tick_ms(2.0), "2 ms");
        assert_eq!(tick_ms(2.5), "2.5 ms");
        assert_eq!(rate(120, 60), "2/s");
        assert_eq!(rate(3, 60), "3/min");
        assert_eq!(rate(1, 7200), "0.5/h");
    }

    #[test]
    fn helpers() {
        assert_eq!(count(10_000_000), "10\u{2009}000\u{2009}000");
        assert_eq!(count(999), "999");
        assert_eq!(span(45), "45s");
        assert_eq!(span(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(log_ticks(0.001, 1000.0), vec![0.001, 0.1, 10.0, 1000.0]);
        assert_eq!(log_ticks(2.0, 9.0), vec![2.0, 5.0]);
    }
}
