//! The report as one self-contained HTML page: inline CSS, inline SVG, no script, no
//! external resource of any kind, every string escaped.

use std::fmt::Write as _;

use super::analyze::{pct, short_hex};
use super::svg::{self, BarLine, esc};
use super::{ModelReport, Period, Report, Severity, Signal, Verdict};

/// Flags shown on the page (all are in `report.json`).
const FLAGS_SHOWN: usize = 200;
/// Payer rows in each model's share chart.
const SHARE_ROWS: usize = 10;

const STYLE: &str = r#"
:root{color-scheme:light}
*{box-sizing:border-box}
body{margin:0;background:#f6f7f9;color:#202124;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1220px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:0 0 10px}
.sub{color:#5f6368;margin:0 0 18px}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:16px 18px;margin:0 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceff1;vertical-align:top}
th{font-size:12px;color:#5f6368;font-weight:600;text-transform:uppercase;letter-spacing:.03em}
td.name{white-space:nowrap;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;min-width:64px;text-align:center;padding:2px 10px;border-radius:12px;font-weight:700;font-size:12px;color:#fff;letter-spacing:.04em}
.red{background:#d93025}.amber{background:#e37400}.green{background:#188038}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:4px 0 14px}
.kpi{background:#f6f7f9;border-radius:8px;padding:6px 12px;min-width:110px}
.kpi b{display:block;font-size:18px}
.kpi span{color:#5f6368;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:12px;align-items:start}
figure{margin:0}
svg{max-width:100%;height:auto;font-family:inherit}
svg .ct{font-size:13px;font-weight:600;fill:#202124}
svg .ax{font-size:11px;fill:#5f6368}
svg .mono{font-size:11px;fill:#202124}
.reasons{margin:6px 0 0;padding-left:18px;color:#3c4043}
.sig{display:inline-block;background:#fce8e6;color:#a50e0e;border-radius:4px;padding:0 6px;margin:0 4px 2px 0;font-size:12px}
details summary{cursor:pointer;color:#1a73e8;margin:8px 0}
footer{color:#5f6368;font-size:12px}
"#;

/// The report as a complete HTML document.
pub fn render_html(report: &Report) -> String {
    let mut s = String::with_capacity(64 * 1024);
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    // No network at all: the page must stand alone, and a CSP makes that a checked rule.
    s.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:\">",
    );
    s.push_str("<title>Tally demand-quality report</title><style>");
    s.push_str(STYLE);
    s.push_str("</style></head><body><main>");
    header(&mut s, report);
    verdicts(&mut s, report);
    flags(&mut s, report);
    for m in &report.models {
        model(&mut s, report.period, m);
    }
    let _ = write!(
        s,
        "<footer>Definitions, thresholds and caveats: docs/demand-quality.md. The same \
         numbers are in report.json (amounts as decimal strings). Thresholds: inter-arrival \
         CV &lt; {}, repeated requests ≥ {}, behavioural flags from {} of a model's spend, \
         HHI amber from {}.</footer>",
        report.thresholds.regular_cv,
        pct(report.thresholds.repeat_share),
        pct(report.thresholds.behaviour_min_share),
        report.thresholds.hhi_amber
    );
    s.push_str("</main></body></html>\n");
    s
}

fn header(s: &mut String, r: &Report) {
    let red = r.models_with(Verdict::Red).count();
    let amber = r.models_with(Verdict::Amber).count();
    let green = r.models_with(Verdict::Green).count();
    let _ = write!(
        s,
        "<h1>Demand-quality report</h1><p class=\"sub\">{} → {} UTC · {} calls · revenue {} · \
         {} payers · {} deposits · series per {} · <b style=\"color:#d93025\">{red} red</b>, \
         <b style=\"color:#e37400\">{amber} amber</b>, <b style=\"color:#188038\">{green} \
         green</b> of {} models</p>",
        datetime(r.first_ms),
        datetime(r.last_ms),
        thousands(u128::from(r.calls)),
        thousands(r.revenue),
        thousands(u128::from(r.unique_payers)),
        thousands(u128::from(r.fundings)),
        r.period.noun(),
        r.models.len()
    );
}

fn verdicts(s: &mut String, r: &Report) {
    s.push_str(
        "<section class=\"card\" id=\"verdicts\"><h2>Verdicts</h2><table><thead><tr>\
         <th>Model</th><th>Verdict</th><th class=\"n\">Revenue</th><th class=\"n\">Calls</th>\
         <th class=\"n\">Payers</th><th class=\"n\">HHI</th><th class=\"n\">Nakamoto</th>\
         <th class=\"n\">Gini</th><th class=\"n\">Repeated</th><th class=\"n\">Self-funded</th>\
         <th>Why</th></tr></thead><tbody>",
    );
    for m in &r.models {
        let why = if m.reasons.is_empty() {
            "no flag".to_owned()
        } else {
            m.reasons
                .iter()
                .map(|r| esc(r))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = write!(
            s,
            "<tr><td class=\"name\"><a href=\"#m-{}\">{}</a></td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.3}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{why}</td></tr>",
            m.model,
            esc(&m.name),
            badge(m.verdict),
            thousands(m.revenue),
            thousands(u128::from(m.calls)),
            thousands(u128::from(m.unique_payers)),
            m.hhi,
            m.nakamoto,
            m.gini,
            pct(m.repeat_share),
            pct(m.self_funded_share),
        );
    }
    s.push_str("</tbody></table></section>");
}

fn flags(s: &mut String, r: &Report) {
    let _ = write!(
        s,
        "<section class=\"card\" id=\"flags\"><h2>Flags ({})</h2>",
        r.flags.len()
    );
    if r.flags.is_empty() {
        s.push_str("<p>No flag raised.</p></section>");
        return;
    }
    s.push_str(
        "<table><thead><tr><th>Severity</th><th>Model</th><th>Finding</th></tr></thead><tbody>",
    );
    for f in r.flags.iter().take(FLAGS_SHOWN) {
        let (class, word) = match f.severity {
            Severity::Red => ("red", "RED"),
            Severity::Amber => ("amber", "AMBER"),
        };
        let _ = write!(
            s,
            "<tr><td><span class=\"badge {class}\">{word}</span></td><td class=\"name\">{}</td><td>{}</td></tr>",
            esc(&f.model_name),
            esc(&f.reason)
        );
    }
    s.push_str("</tbody></table>");
    if r.flags.len() > FLAGS_SHOWN {
        let _ = write!(
            s,
            "<p>… and {} more in report.json.</p>",
            r.flags.len() - FLAGS_SHOWN
        );
    }
    s.push_str("</section>");
}

fn model(s: &mut String, period: Period, m: &ModelReport) {
    let _ = write!(
        s,
        "<section class=\"card model\" id=\"m-{}\"><h2>{} {}</h2><div class=\"mono\" \
         style=\"color:#5f6368\">model {}</div>",
        m.model,
        esc(&m.name),
        badge(m.verdict),
        m.model
    );
    if !m.reasons.is_empty() {
        s.push_str("<ul class=\"reasons\">");
        for r in &m.reasons {
            let _ = write!(s, "<li>{}</li>", esc(r));
        }
        s.push_str("</ul>");
    }
    let retention = m.mean_retention.map_or_else(|| "n/a".to_owned(), pct);
    let kpis = [
        (thousands(m.revenue), "revenue"),
        (thousands(u128::from(m.calls)), "calls"),
        (thousands(u128::from(m.unique_payers)), "unique payers"),
        (format!("{:.3}", m.hhi), "HHI of spend"),
        (m.nakamoto.to_string(), "payers make half"),
        (format!("{:.2}", m.gini), "Gini"),
        (pct(m.repeat_share), "repeated requests"),
        (retention, &format!("retained {0} over {0}", period.noun())),
        (pct(m.self_funded_share), "self-funded spend"),
    ];
    s.push_str("<div class=\"kpis\">");
    for (value, label) in kpis {
        let _ = write!(
            s,
            "<div class=\"kpi\"><b>{}</b><span>{}</span></div>",
            esc(&value),
            esc(label)
        );
    }
    s.push_str("</div><div class=\"grid\">");

    let labels: Vec<String> = m
        .series
        .iter()
        .map(|p| bucket(p.start_ms, period))
        .collect();
    let revenue: Vec<Option<f64>> = m.series.iter().map(|p| Some(p.revenue as f64)).collect();
    let calls: Vec<f64> = m.series.iter().map(|p| p.calls as f64).collect();
    let red: Vec<f64> = m.series.iter().map(|p| p.red_revenue as f64).collect();
    let any_red = m.series.iter().any(|p| p.red_revenue > 0);
    let title = format!("Revenue and calls per {}", period.noun());
    let chart = BarLine {
        title: &title,
        labels: &labels,
        bars: &revenue,
        flagged: any_red.then_some((red.as_slice(), "from red-flagged payers")),
        bar_name: "revenue (left)",
        bar_max: None,
        bar_suffix: "",
        line: &calls,
        line_name: "calls (right)",
    };
    let _ = write!(s, "<figure class=\"revenue\">{}</figure>", chart.render());

    let _ = write!(
        s,
        "<figure class=\"lorenz\">{}</figure>",
        svg::lorenz(&m.lorenz, m.gini, m.nakamoto)
    );

    let rows: Vec<(String, f64, bool)> = m
        .payers
        .iter()
        .take(SHARE_ROWS)
        .map(|p| (short_hex(&p.payer.0), p.share, !p.signals.is_empty()))
        .collect();
    let _ = write!(
        s,
        "<figure class=\"shares\">{}</figure>",
        svg::share_bars("Top payers' share of spend (red: flagged)", &rows)
    );

    let kept: Vec<Option<f64>> = m
        .series
        .iter()
        .map(|p| p.retention.map(|r| r * 100.0))
        .collect();
    let payers: Vec<f64> = m.series.iter().map(|p| p.unique_payers as f64).collect();
    let title = format!("Payer retention {0} over {0}", period.noun());
    let chart = BarLine {
        title: &title,
        labels: &labels,
        bars: &kept,
        flagged: None,
        bar_name: "retained (left)",
        bar_max: Some(100.0),
        bar_suffix: "%",
        line: &payers,
        line_name: "active payers (right)",
    };
    let _ = write!(s, "<figure class=\"retention\">{}</figure>", chart.render());
    s.push_str("</div>");
    payer_table(s, m);
    s.push_str("</section>");
}

fn payer_table(s: &mut String, m: &ModelReport) {
    let _ = write!(
        s,
        "<details{}><summary>Payers ({} listed, {} more not listed)</summary><table><thead><tr>\
         <th>Payer</th><th class=\"n\">Calls</th><th class=\"n\">Spend</th><th class=\"n\">Share</th>\
         <th class=\"n\">CV</th><th class=\"n\">Hour entropy</th><th class=\"n\">Repeated</th>\
         <th>Funded by</th><th>Signals</th></tr></thead><tbody>",
        if m.verdict == Verdict::Green {
            ""
        } else {
            " open"
        },
        m.payers.len(),
        m.payers_omitted
    );
    for p in &m.payers {
        let funders = p
            .funders
            .iter()
            .map(|f| match f.insider {
                Some(i) => format!("<b>{}</b> ({})", esc(&f.address), i.noun()),
                None => esc(&f.address),
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let signals: String = p
            .signals
            .iter()
            .map(|sig| {
                let word = match sig {
                    Signal::SelfFunded => "self-funded",
                    Signal::MachineRegular => "machine-regular",
                    Signal::RepeatedRequests => "repeats requests",
                };
                format!("<span class=\"sig\">{word}</span>")
            })
            .collect();
        let opt = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
        let _ = write!(
            s,
            "<tr><td class=\"mono\" title=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"mono\">{funders}</td><td>{signals}</td></tr>",
            p.payer,
            esc(&short_hex(&p.payer.0)),
            thousands(u128::from(p.calls)),
            thousands(p.spend),
            pct(p.share),
            opt(p.interarrival_cv),
            opt(p.hour_entropy),
            pct(p.repeat_share),
        );
    }
    s.push_str("</tbody></table></details>");
}

fn badge(v: Verdict) -> &'static str {
    match v {
        Verdict::Red => "<span class=\"badge red\">RED</span>",
        Verdict::Amber => "<span class=\"badge amber\">AMBER</span>",
        Verdict::Green => "<span class=\"badge green\">GREEN</span>",
    }
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(v: u128) -> String {
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2026-11-26 15:04`.
fn datetime(ms: u64) -> String {
    let secs = ms / 1_000;
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let (h, mi) = ((secs % 86_400) / 3_600, (secs % 3_600) / 60);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}")
}

/// A bucket's x-axis label, as short as its period allows.
fn bucket(ms: u64, period: Period) -> String {
    let full = datetime(ms);
    match period {
        Period::Minute => full[11..].to_owned(),
        Period::Hour => format!("{} {}h", &full[5..10], &full[11..13]),
        Period::Day => full[5..10].to_owned(),
        Period::Week => full[..10].to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(datetime(0), "1970-01-01 00:00");
        // 2026-11-26 15:04 UTC.
        assert_eq!(datetime(1_795_705_440_000), "2026-11-26 15:04");
        assert_eq!(datetime(951_782_400_000), "2000-02-29 00:00");
        assert_eq!(bucket(1_795_705_440_000, Period::Hour), "11-26 15h");
    }
}
