//! Hand-written SVG charts for the report: bars with a line, a Lorenz curve, horizontal
//! share bars. Every chart is a fixed-size, self-contained `<svg>` with a `viewBox`, so it
//! scales with the page; every text put in it is escaped.

use std::fmt::Write as _;

/// The palette: one hue per meaning, the same on every chart.
pub(crate) const BLUE: &str = "#1a73e8";
pub(crate) const ORANGE: &str = "#e8710a";
pub(crate) const RED: &str = "#d93025";
const GRID: &str = "#e3e6ea";
const AXIS: &str = "#5f6368";

/// Escapes `s` for HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Up to about `count` round tick values from 0 to at least `max` (steps of 1, 2 or 5 ×
/// 10^k).
pub(crate) fn ticks(max: f64, count: usize) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let n = (max / step).ceil() as usize;
    (0..=n.max(1)).map(|i| i as f64 * step).collect()
}

/// `1234567` → `1.23M`: short axis labels.
pub(crate) fn compact(v: f64) -> String {
    let a = v.abs();
    let (x, unit) = if a >= 1e12 {
        (v / 1e12, "T")
    } else if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if x.fract().abs() < 1e-9 {
        format!("{x:.0}")
    } else if x.abs() < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s}{unit}")
}

/// A time series: `bars` against the left axis, `line` against the right one, one
/// x label per few buckets.
pub(crate) struct BarLine<'a> {
    pub(crate) title: &'a str,
    pub(crate) labels: &'a [String],
    pub(crate) bars: &'a [Option<f64>],
    /// The part of each bar drawn in red (flagged), with its legend name.
    pub(crate) flagged: Option<(&'a [f64], &'a str)>,
    pub(crate) bar_name: &'a str,
    /// A fixed top for the bar axis (e.g. 100 for percentages).
    pub(crate) bar_max: Option<f64>,
    pub(crate) bar_suffix: &'a str,
    pub(crate) line: &'a [f64],
    pub(crate) line_name: &'a str,
}

const W: f64 = 560.0;
const H: f64 = 250.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 52.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

impl BarLine<'_> {
    /// The chart as an `<svg>` element.
    pub(crate) fn render(&self) -> String {
        let n = self.labels.len().max(1);
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let bar_peak = self.bars.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
        let bar_ticks = ticks(self.bar_max.unwrap_or(bar_peak), 4);
        let bar_top = bar_ticks.last().copied().unwrap_or(1.0);
        let line_peak = self.line.iter().fold(0.0f64, |a, b| a.max(*b));
        let line_ticks = ticks(line_peak, 4);
        let line_top = line_ticks.last().copied().unwrap_or(1.0);
        let band = pw / n as f64;
        let x_mid = |i: usize| LEFT + band * (i as f64 + 0.5);
        let y_bar = |v: f64| TOP + ph - ph * (v / bar_top).clamp(0.0, 1.0);
        let y_line = |v: f64| TOP + ph - ph * (v / line_top).clamp(0.0, 1.0);

        let mut s = svg_open(W, H, self.title);
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="16" class="ct">{}</text>"#,
            esc(self.title)
        );
        // Grid and left axis.
        for t in &bar_ticks {
            let y = y_bar(*t);
            let _ = write!(
                s,
                r#"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{GRID}"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="ax" fill="{BLUE}">{}{}</text>"#,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                compact(*t),
                esc(self.bar_suffix)
            );
        }
        // Right axis.
        for t in &line_ticks {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" class="ax" fill="{ORANGE}">{}</text>"#,
                LEFT + pw + 6.0,
                y_line(*t) + 4.0,
                compact(*t)
            );
        }
        // Bars.
        let bw = (band * 0.78).max(0.6);
        for (i, v) in self.bars.iter().enumerate() {
            if let Some(v) = v {
                let y = y_bar(*v);
                let _ = write!(
                    s,
                    r#"<rect class="bar" x="{:.2}" y="{y:.2}" width="{bw:.2}" height="{:.2}" fill="{BLUE}" fill-opacity="0.75"><title>{}: {}{}</title></rect>"#,
                    x_mid(i) - bw / 2.0,
                    (TOP + ph - y).max(0.0),
                    esc(self.labels.get(i).map_or("", String::as_str)),
                    compact(*v),
                    esc(self.bar_suffix)
                );
                let part = self.flagged.and_then(|(f, _)| f.get(i).copied());
                if let Some(part) = part.filter(|p| *p > 0.0) {
                    let top = y_bar(part.min(*v));
                    let _ = write!(
                        s,
                        r#"<rect class="flagged" x="{:.2}" y="{top:.2}" width="{bw:.2}" height="{:.2}" fill="{RED}"><title>{}: {} flagged</title></rect>"#,
                        x_mid(i) - bw / 2.0,
                        (TOP + ph - top).max(0.0),
                        esc(self.labels.get(i).map_or("", String::as_str)),
                        compact(part)
                    );
                }
            }
        }
        // Line.
        if !self.line.is_empty() {
            let mut d = String::new();
            for (i, v) in self.line.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.2} {:.2} ",
                    if i == 0 { "M" } else { "L" },
                    x_mid(i),
                    y_line(*v)
                );
            }
            let _ = write!(
                s,
                r#"<path d="{0}" fill="none" stroke="white" stroke-width="5" stroke-opacity="0.85" stroke-linejoin="round"/><path class="line" d="{0}" fill="none" stroke="{ORANGE}" stroke-width="2" stroke-linejoin="round"/>"#,
                d.trim_end()
            );
            if self.line.len() <= 40 {
                for (i, v) in self.line.iter().enumerate() {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.2}" cy="{:.2}" r="2.5" fill="{ORANGE}" stroke="white" stroke-width="1"/>"#,
                        x_mid(i),
                        y_line(*v)
                    );
                }
            }
        }
        // X axis and labels (at most about 7).
        let _ = write!(
            s,
            r#"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{AXIS}"/>"#,
            LEFT + pw,
            TOP + ph,
            TOP + ph
        );
        let every = n.div_ceil(7).max(1);
        for (i, label) in self.labels.iter().enumerate().step_by(every) {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="ax">{}</text>"#,
                x_mid(i),
                TOP + ph + 16.0,
                esc(label)
            );
        }
        // Legend.
        let _ = write!(
            s,
            r#"<rect x="{LEFT}" y="{:.1}" width="10" height="10" fill="{BLUE}" fill-opacity="0.75"/><text x="{:.1}" y="{:.1}" class="ax">{}</text><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{ORANGE}" stroke-width="2"/><text x="{:.1}" y="{:.1}" class="ax">{}</text>"#,
            H - 13.0,
            LEFT + 14.0,
            H - 4.0,
            esc(self.bar_name),
            LEFT + 200.0,
            LEFT + 216.0,
            H - 8.0,
            H - 8.0,
            LEFT + 220.0,
            H - 4.0,
            esc(self.line_name)
        );
        if let Some((_, name)) = self.flagged {
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{RED}"/><text x="{:.1}" y="{:.1}" class="ax">{}</text>"#,
                LEFT + 340.0,
                H - 13.0,
                LEFT + 354.0,
                H - 4.0,
                esc(name)
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// A Lorenz curve over the diagonal of perfect equality, the gap between them shaded.
pub(crate) fn lorenz(points: &[[f64; 2]], gini: f64, nakamoto: u64) -> String {
    let (w, h) = (300.0, 300.0);
    let (left, top, size) = (48.0, 30.0, 220.0);
    let x = |v: f64| left + size * v.clamp(0.0, 1.0);
    let y = |v: f64| top + size - size * v.clamp(0.0, 1.0);
    let title = "Lorenz curve of spend by payer";
    let mut s = svg_open(w, h, title);
    let _ = write!(s, r#"<text x="{left}" y="16" class="ct">{title}</text>"#);
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            s,
            r#"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{GRID}"/><line x1="{:.1}" x2="{:.1}" y1="{top}" y2="{:.1}" stroke="{GRID}"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="ax">{:.0}%</text><text x="{:.1}" y="{:.1}" text-anchor="middle" class="ax">{:.0}%</text>"#,
            left + size,
            y(t),
            y(t),
            x(t),
            x(t),
            top + size,
            left - 5.0,
            y(t) + 4.0,
            t * 100.0,
            x(t),
            top + size + 14.0,
            t * 100.0
        );
    }
    let mut curve = String::new();
    for (i, [px, py]) in points.iter().enumerate() {
        let _ = write!(
            curve,
            "{}{:.2} {:.2} ",
            if i == 0 { "M" } else { "L" },
            x(*px),
            y(*py)
        );
    }
    let curve = curve.trim_end();
    let _ = write!(
        s,
        r#"<path class="gap" d="{curve} L{:.2} {:.2} Z" fill="{RED}" fill-opacity="0.12" stroke="none"/>"#,
        x(0.0),
        y(0.0)
    );
    let _ = write!(
        s,
        r#"<path class="diagonal" d="M{:.2} {:.2} L{:.2} {:.2}" stroke="{AXIS}" stroke-dasharray="4 3" fill="none"/>"#,
        x(0.0),
        y(0.0),
        x(1.0),
        y(1.0)
    );
    let _ = write!(
        s,
        r#"<path class="lorenz" d="{curve}" stroke="{BLUE}" stroke-width="2.5" fill="none" stroke-linejoin="round"/>"#
    );
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" class="ax">equality</text><text x="{:.1}" y="{:.1}" class="ax" fill="{BLUE}">Gini {gini:.2} · Nakamoto {nakamoto}</text><text x="{:.1}" y="{:.1}" text-anchor="middle" class="ax">payers, poorest first →</text>"#,
        x(0.52),
        y(0.62),
        left + 6.0,
        top + 14.0,
        left + size / 2.0,
        top + size + 32.0
    );
    s.push_str("</svg>");
    s
}

/// Horizontal bars of shares on a fixed 0–100% scale, flagged rows in red.
pub(crate) fn share_bars(title: &str, rows: &[(String, f64, bool)]) -> String {
    let (label_w, bar_w, row_h, top) = (96.0, 330.0, 20.0, 30.0);
    let w = label_w + bar_w + 70.0;
    let h = top + row_h * rows.len().max(1) as f64 + 22.0;
    let mut s = svg_open(w, h, title);
    let _ = write!(s, r#"<text x="4" y="16" class="ct">{}</text>"#, esc(title));
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let gx = label_w + bar_w * t;
        let _ = write!(
            s,
            r#"<line x1="{gx:.1}" x2="{gx:.1}" y1="{top}" y2="{:.1}" stroke="{GRID}"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" class="ax">{:.0}%</text>"#,
            h - 20.0,
            h - 6.0,
            t * 100.0
        );
    }
    for (i, (label, share, flagged)) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let len = (bar_w * share.clamp(0.0, 1.0)).max(1.0);
        let fill = if *flagged { RED } else { BLUE };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="mono">{}</text><rect class="share" x="{label_w}" y="{:.1}" width="{len:.2}" height="{:.1}" fill="{fill}"><title>{}: {:.1}%</title></rect><text x="{:.1}" y="{:.1}" class="ax">{:.1}%</text>"#,
            label_w - 6.0,
            y + 14.0,
            esc(label),
            y + 3.0,
            row_h - 6.0,
            esc(label),
            share * 100.0,
            label_w + len + 4.0,
            y + 14.0,
            share * 100.0
        );
    }
    s.push_str("</svg>");
    s
}

fn svg_open(w: f64, h: f64, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#,
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>"a"&'b'</script>"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn ticks_are_round_and_cover_the_max() {
        assert_eq!(ticks(100.0, 4), vec![0.0, 50.0, 100.0]);
        assert_eq!(ticks(7.0, 4), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(0.0, 4), vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn compact_numbers() {
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(1_500.0), "1.5k");
        assert_eq!(compact(2_000_000.0), "2M");
        assert_eq!(compact(12.5), "12.5");
    }
}
