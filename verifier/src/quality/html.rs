//! The report as one self-contained HTML page: inline CSS, inline SVG, no script, no
//! external resource of any kind, every string escaped.
//!
//! The wash verdict (a traffic-light badge, set by the share of revenue flagged) and
//! concentration (an outlined violet pill) are drawn differently on purpose: one says
//! whether the revenue is real, the other how many customers it depends on.

use std::fmt::Write as _;

use super::analyze::{pct, short_address, short_hex};
use super::svg::{self, BarLine, esc};
use super::{ConcentrationLevel, ModelReport, Period, Report, Severity, Verdict};

/// Flags shown on the page (all are in `report.json`).
const FLAGS_SHOWN: usize = 200;
/// Payer rows in each model's share chart.
const SHARE_ROWS: usize = 10;
/// Clusters listed per model on the page.
const CLUSTER_ROWS: usize = 10;

const STYLE: &str = r#"
:root{color-scheme:light}
*{box-sizing:border-box}
body{margin:0;background:#f6f7f9;color:#202124;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1220px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px}
.sub{color:#5f6368;margin:0 0 18px}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:16px 18px;margin:0 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceff1;vertical-align:top}
th{font-size:12px;color:#5f6368;font-weight:600;text-transform:uppercase;letter-spacing:.03em}
td.name{white-space:nowrap;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;min-width:64px;text-align:center;padding:2px 10px;border-radius:12px;font-weight:700;font-size:12px;color:#fff;letter-spacing:.04em}
.red{background:#d93025}.amber{background:#e37400}.green{background:#188038}
.conc{display:inline-block;padding:1px 9px;border-radius:4px;font-size:12px;font-weight:600;border:1.5px dashed #6a4fb3;color:#5b3fa8;background:#f6f3fd;white-space:nowrap}
.conc.high{border-style:solid;background:#ece6fb}
.conc.low{border-color:#b9b0d6;color:#7a7191;background:#fff}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:4px 0 14px}
.kpi{background:#f6f7f9;border-radius:8px;padding:6px 12px;min-width:110px;max-width:190px}
.kpi b{display:block;font-size:18px}
.kpi span{color:#5f6368;font-size:12px}
.headline{display:flex;flex-wrap:wrap;align-items:center;gap:14px;margin:6px 0 8px}
.headline .big{font-size:22px;font-weight:700}
.split{display:flex;height:14px;width:100%;max-width:520px;border-radius:7px;overflow:hidden;background:#e8eaed}
.split .f{background:#d93025}.split .u{background:#9aa0a6}.split .c{background:#188038}
.legend{color:#5f6368;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:12px;align-items:start}
figure{margin:0}
svg{max-width:100%;height:auto;font-family:inherit}
svg .ct{font-size:13px;font-weight:600;fill:#202124}
svg .ax{font-size:11px;fill:#5f6368}
svg .mono{font-size:11px;fill:#202124}
.reasons{margin:6px 0 0;padding-left:18px;color:#3c4043}
.sig{display:inline-block;background:#fce8e6;color:#a50e0e;border-radius:4px;padding:0 6px;margin:0 4px 2px 0;font-size:12px}
dl.glossary{display:grid;grid-template-columns:minmax(150px,220px) 1fr;gap:4px 14px;margin:0}
dl.glossary dt{font-weight:600}
dl.glossary dd{margin:0;color:#3c4043}
details summary{cursor:pointer;color:#1a73e8;margin:8px 0}
footer{color:#5f6368;font-size:12px}
.scroll{overflow-x:auto}
td.why{min-width:260px}
.sig{white-space:nowrap}
"#;

/// Every metric on the page, with the sentence that says what it means.
const GLOSSARY: &[(&str, &str)] = &[
    (
        "Verdict",
        "Green, amber or red by the share of the model's revenue that is flagged: amber from \
         {amber}, red from {red}. It says whether the revenue is real demand, not how big it is.",
    ),
    (
        "Flagged revenue",
        "Spend of payers that are self-funded or bot-like; this is what the verdict counts.",
    ),
    (
        "Clean revenue",
        "Revenue minus flagged revenue: nothing found against it, which is not proof that it \
         is organic.",
    ),
    (
        "Self-funded",
        "A payer at least {insider} of whose escrow traces back, over up to {hops} transfers \
         before its deposit, weighted by amount, to the model's insiders: contributors, operators of \
         its hosts, the protocol sink, and anyone who received its payouts.",
    ),
    (
        "Funding untraced",
        "Share of revenue from unflagged payers most of whose escrow could not be traced \
         (exchanges and other hubs, missing history, hop and size limits): unknown, never \
         counted as clean funding.",
    ),
    (
        "Bot-like score",
        "repeats + 0.6 × timing + 0.3 × flatness × (1 − timing), each in [0, 1]; bot-like from \
         {bot}, and flagged when bot-like payers make at least {material} of the model's \
         spend. Regular timing and round-the-clock hours alone stay below the line (a \
         scheduled job is both).",
    ),
    (
        "Timing",
        "The strongest of three tests: inter-arrival CV (a timer with ±30% jitter on each gap \
         has CV 0.17, around a fixed grid 0.24), lag-1 autocorrelation of gaps (−0.5 for a \
         grid at any jitter), and the same for each gap's distance to a whole number of periods \
         (a grid that skips ticks).",
    ),
    (
        "Repeats",
        "Share of a payer's requests that repeat an earlier one; its component is 0 at {rep0} \
         and 1 at {rep1}.",
    ),
    (
        "Flatness",
        "How evenly calls spread over the 24 UTC hours (bias-corrected entropy from 4.40 to \
         4.55 bits, the maximum being 4.58): machines run round the clock, people sleep.",
    ),
    (
        "Funding cluster",
        "Payers whose escrow passed, for at least {cluster} each, through one shared address \
         that is not a hub: one customer (or one trader) with many keys. Scores and the \
         material-share test apply to clusters too.",
    ),
    (
        "Concentration",
        "A business risk of its own, drawn as a violet pill: high from HHI {high}, moderate \
         from {moderate}, using the larger of HHI by payer and by funding cluster.",
    ),
    (
        "HHI",
        "Sum of squared shares of spend; 1/HHI is the effective number of customers (0.02 is \
         like 50 equal customers, 0.5 like two).",
    ),
    (
        "Nakamoto coefficient",
        "The fewest payers (or clusters) whose spend makes at least half the revenue.",
    ),
    (
        "Gini and Lorenz curve",
        "How unequal spend is across payers: 0 when all pay the same; API markets are \
         normally unequal (0.5 to 0.7), so this is context, never a flag.",
    ),
    (
        "Repeated requests (model)",
        "Share of all the model's calls whose request was sent before.",
    ),
    (
        "Retention",
        "Share of one period's payers active again in the next; bots are retained perfectly, \
         so read it with the number of active payers.",
    ),
    (
        "Deposit twins",
        "Other payers that deposited the same amount in the same hour: a weak hint shown for \
         context, never a flag, because many honest payers share both.",
    ),
];

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
    glossary(&mut s, report);
    let _ = write!(
        s,
        "<footer>Definitions, thresholds, the evaluation and caveats: docs/demand-quality.md. \
         The same numbers are in report.json (amounts as decimal strings). Timestamps are \
         signed by hosts, who could shift them; funding is only as complete as the ledger \
         given ({} deposits, {} transfers, {} payouts; {} traces stopped at a limit).</footer>",
        thousands(u128::from(report.fundings)),
        thousands(u128::from(report.transfers)),
        thousands(u128::from(report.payouts)),
        thousands(u128::from(report.traces_cut)),
    );
    s.push_str("</main></body></html>\n");
    s
}

fn header(s: &mut String, r: &Report) {
    let red = r.models_with(Verdict::Red).count();
    let amber = r.models_with(Verdict::Amber).count();
    let green = r.models_with(Verdict::Green).count();
    let flagged = if r.revenue == 0 {
        0.0
    } else {
        r.flagged_revenue as f64 / r.revenue as f64
    };
    let _ = write!(
        s,
        "<h1>Demand-quality report</h1><p class=\"sub\">{} → {} UTC · {} calls · revenue {} \
         of which <b>{} flagged</b> · {} payers · series per {} · <b style=\"color:#d93025\">\
         {red} red</b>, <b style=\"color:#e37400\">{amber} amber</b>, <b style=\"color:#188038\">\
         {green} green</b> of {} models</p>",
        datetime(r.first_ms),
        datetime(r.last_ms),
        thousands(u128::from(r.calls)),
        thousands(r.revenue),
        pct(flagged),
        thousands(u128::from(r.unique_payers)),
        r.period.noun(),
        r.models.len()
    );
}

fn concentration_pill(m: &ModelReport) -> String {
    let (class, word) = match m.concentration.level {
        ConcentrationLevel::High => ("high", "high"),
        ConcentrationLevel::Moderate => ("moderate", "moderate"),
        ConcentrationLevel::Low => ("low", "low"),
    };
    format!(
        "<span class=\"conc {class}\" title=\"{}\">concentration {word}</span>",
        esc(&m.concentration.reason)
    )
}

fn verdicts(s: &mut String, r: &Report) {
    s.push_str(
        "<section class=\"card\" id=\"verdicts\"><h2>Verdicts</h2><div class=\"scroll\"><table><thead><tr>\
         <th>Model</th><th>Verdict</th><th class=\"n\">Flagged</th>\
         <th class=\"n\">Clean revenue</th><th class=\"n\">Revenue</th><th class=\"n\">Calls</th>\
         <th class=\"n\">Payers</th><th class=\"n\">Self-funded</th><th class=\"n\">Bot-like</th>\
         <th class=\"n\">Untraced</th><th>Concentration</th><th>Why</th></tr></thead><tbody>",
    );
    for m in &r.models {
        let why = if m.reasons.is_empty() {
            "nothing flagged".to_owned()
        } else {
            m.reasons
                .iter()
                .map(|r| esc(r))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = write!(
            s,
            "<tr><td class=\"name\"><a href=\"#m-{}\">{}</a></td><td>{}</td>\
             <td class=\"n\"><b>{}</b></td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"why\">{why}</td></tr>",
            m.model,
            esc(&m.name),
            badge(m.verdict),
            pct(m.flagged_share),
            thousands(m.clean_revenue),
            thousands(m.revenue),
            thousands(u128::from(m.calls)),
            thousands(u128::from(m.unique_payers)),
            pct(m.self_funded_share),
            pct(m.bot_like_share),
            pct(m.untraced_share),
            concentration_pill(m),
        );
    }
    s.push_str("</tbody></table></div></section>");
}

fn flags(s: &mut String, r: &Report) {
    let _ = write!(
        s,
        "<section class=\"card\" id=\"flags\"><h2>Flags ({})</h2><p class=\"legend\">Red: the \
         payer's spend is counted as flagged revenue. Amber: a warning, shown but not \
         counted.</p>",
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

fn glossary(s: &mut String, r: &Report) {
    let t = &r.thresholds;
    s.push_str(
        "<section class=\"card\" id=\"glossary\"><h2>What each metric means</h2><dl \
         class=\"glossary\">",
    );
    for (term, sentence) in GLOSSARY {
        let sentence = sentence
            .replace("{amber}", &pct(t.verdict_amber_share))
            .replace("{red}", &pct(t.verdict_red_share))
            .replace("{insider}", &pct(t.insider_share))
            .replace("{hops}", &t.trace_hops.to_string())
            .replace("{bot}", &format!("{:.2}", t.bot_score))
            .replace("{material}", &pct(t.behaviour_min_share))
            .replace("{rep0}", &pct(t.repeat_share / 5.0))
            .replace("{rep1}", &pct(t.repeat_share))
            .replace("{cluster}", &pct(t.cluster_min_share))
            .replace("{high}", &format!("{:.2}", t.hhi_high))
            .replace("{moderate}", &format!("{:.2}", t.hhi_moderate));
        let _ = write!(s, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(&sentence));
    }
    s.push_str("</dl></section>");
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
    // The headline: the flagged share, and what the rest is.
    let untraced = m
        .untraced_share
        .clamp(0.0, 1.0 - m.flagged_share.clamp(0.0, 1.0));
    let clean = (1.0 - m.flagged_share - untraced).max(0.0);
    let _ = write!(
        s,
        "<div class=\"headline\"><span class=\"big\">{} of revenue flagged</span><span>clean \
         revenue <b>{}</b> of {}</span>{}</div><div class=\"split\" title=\"flagged {}, \
         funding untraced {}, clean and traced {}\"><div class=\"f\" style=\"width:{:.2}%\">\
         </div><div class=\"u\" style=\"width:{:.2}%\"></div><div class=\"c\" \
         style=\"width:{:.2}%\"></div></div><p class=\"legend\">red: flagged · grey: not \
         flagged, funding untraced · green: not flagged, funding traced. {}</p>",
        pct(m.flagged_share),
        thousands(m.clean_revenue),
        thousands(m.revenue),
        concentration_pill(m),
        pct(m.flagged_share),
        pct(untraced),
        pct(clean),
        m.flagged_share * 100.0,
        untraced * 100.0,
        clean * 100.0,
        esc(&format!("Concentration: {}.", m.concentration.reason)),
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
        (thousands(m.revenue), "revenue".to_owned()),
        (thousands(u128::from(m.calls)), "calls".to_owned()),
        (
            thousands(u128::from(m.unique_payers)),
            "unique payers".to_owned(),
        ),
        (
            m.concentration.customers.to_string(),
            "customers (funding clusters)".to_owned(),
        ),
        (
            format!("{:.3}", m.concentration.hhi),
            "HHI by payer".to_owned(),
        ),
        (
            format!("{:.3}", m.concentration.cluster_hhi),
            "HHI by cluster".to_owned(),
        ),
        (
            m.concentration.nakamoto.to_string(),
            "payers make half".to_owned(),
        ),
        (format!("{:.2}", m.gini), "Gini".to_owned()),
        (pct(m.repeat_share), "repeated requests".to_owned()),
        (retention, format!("retained {0} over {0}", period.noun())),
        (pct(m.self_funded_share), "self-funded spend".to_owned()),
        (pct(m.bot_like_share), "bot-like spend".to_owned()),
        (pct(m.untraced_share), "funding untraced".to_owned()),
    ];
    s.push_str("<div class=\"kpis\">");
    for (value, label) in kpis {
        let _ = write!(
            s,
            "<div class=\"kpi\"><b>{}</b><span>{}</span></div>",
            esc(&value),
            esc(&label)
        );
    }
    s.push_str("</div>");
    hosts(s, m);
    s.push_str("<div class=\"grid\">");

    let labels: Vec<String> = m
        .series
        .iter()
        .map(|p| bucket(p.start_ms, period))
        .collect();
    let revenue: Vec<Option<f64>> = m.series.iter().map(|p| Some(p.revenue as f64)).collect();
    let calls: Vec<f64> = m.series.iter().map(|p| p.calls as f64).collect();
    let flagged: Vec<f64> = m.series.iter().map(|p| p.flagged_revenue as f64).collect();
    let any_flagged = m.series.iter().any(|p| p.flagged_revenue > 0);
    let title = format!("Revenue and calls per {}", period.noun());
    let chart = BarLine {
        title: &title,
        labels: &labels,
        bars: &revenue,
        flagged: any_flagged.then_some((flagged.as_slice(), "from flagged payers")),
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
        svg::lorenz(&m.lorenz, m.gini, m.concentration.nakamoto)
    );

    let rows: Vec<(String, f64, bool)> = m
        .payers
        .iter()
        .take(SHARE_ROWS)
        .map(|p| (short_hex(&p.payer.0), p.share, p.flagged))
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
    clusters(s, m);
    payer_table(s, m);
    s.push_str("</section>");
}

fn hosts(s: &mut String, m: &ModelReport) {
    if m.hosts.is_empty() {
        return;
    }
    s.push_str("<p class=\"legend\">Served by: ");
    let list: Vec<String> = m
        .hosts
        .iter()
        .map(|h| {
            let host = h
                .name
                .clone()
                .unwrap_or_else(|| format!("host {}", short_hex(&h.key.0)));
            let operator = match (&h.operator_name, &h.operator) {
                (Some(name), _) => format!(", operated by {name}"),
                (None, Some(address)) => format!(", operated by {}", short_address(address)),
                (None, None) => String::new(),
            };
            format!(
                "<b>{}</b>{} ({})",
                esc(&host),
                esc(&operator),
                thousands(h.revenue)
            )
        })
        .collect();
    s.push_str(&list.join(" · "));
    s.push_str("</p>");
}

fn clusters(s: &mut String, m: &ModelReport) {
    if m.clusters.is_empty() {
        return;
    }
    let _ = write!(
        s,
        "<h3>Funding clusters ({} with two or more payers)</h3><div class=\"scroll\"><table><thead><tr><th>#</th>\
         <th>Shared funder</th><th class=\"n\">Payers</th><th class=\"n\">Share</th>\
         <th class=\"n\">Flagged</th><th class=\"n\">Score</th><th class=\"n\">Insider</th>\
         </tr></thead><tbody>",
        m.clusters.len()
    );
    for c in m.clusters.iter().take(CLUSTER_ROWS) {
        let funder = match &c.ancestor_name {
            Some(name) => format!(
                "<b>{}</b> <span class=\"mono\">{}</span>",
                esc(name),
                esc(&short_address(&c.ancestor))
            ),
            None => format!("<span class=\"mono\">{}</span>", esc(&c.ancestor)),
        };
        let flagged = if c.spend == 0 {
            0.0
        } else {
            c.flagged_spend as f64 / c.spend as f64
        };
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{funder}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{}</td></tr>",
            c.id,
            thousands(u128::from(c.payers)),
            pct(c.share),
            pct(flagged),
            c.behaviour.score,
            pct(c.insider),
        );
    }
    s.push_str("</tbody></table></div>");
}

fn payer_table(s: &mut String, m: &ModelReport) {
    let _ = write!(
        s,
        "<details{}><summary>Payers ({} listed, {} more not listed)</summary><div class=\"scroll\"><table><thead><tr>\
         <th>Payer</th><th class=\"n\">Calls</th><th class=\"n\">Spend</th><th class=\"n\">Share</th>\
         <th class=\"n\" title=\"bot-like score: repeats + 0.6 timing + 0.3 flatness (1 − timing)\">Score</th>\
         <th class=\"n\" title=\"inter-arrival CV / lag-1 gap autocorrelation / grid autocorrelation\">Timing</th>\
         <th class=\"n\">Hour entropy</th><th class=\"n\">Repeated</th>\
         <th class=\"n\" title=\"share of its escrow traced to insiders / untraced\">Insider / untraced</th>\
         <th>Funded by</th><th class=\"n\">Cluster</th><th class=\"n\" title=\"weak hint\">Twins</th>\
         <th>Signals</th></tr></thead><tbody>",
        if m.verdict == Verdict::Green {
            ""
        } else {
            " open"
        },
        m.payers.len(),
        m.payers_omitted
    );
    for p in &m.payers {
        let mut funders: Vec<String> = p
            .funders
            .iter()
            .map(|f| {
                let label = match &f.name {
                    Some(name) => format!("{} ({})", esc(name), esc(&short_address(&f.address))),
                    None => esc(&f.address),
                };
                match f.insider {
                    Some(i) => format!("<b>{label}</b> ({})", i.noun()),
                    None => label,
                }
            })
            .collect();
        for i in p.funding.insiders.iter().filter(|i| i.hops > 0).take(3) {
            let label = i.name.clone().unwrap_or_else(|| short_address(&i.address));
            funders.push(format!(
                "← <b>{}</b> ({}, {} transfer(s) back, {})",
                esc(&label),
                i.role.noun(),
                i.hops,
                pct(i.share)
            ));
        }
        let signals: String = p
            .signals
            .iter()
            .map(|sig| format!("<span class=\"sig\">{}</span>", sig.words()))
            .collect();
        let opt = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
        let _ = write!(
            s,
            "<tr><td class=\"mono\" title=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{} / {} / {}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td>\
             <td class=\"mono\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{signals}</td></tr>",
            p.payer,
            esc(&short_hex(&p.payer.0)),
            thousands(u128::from(p.calls)),
            thousands(p.spend),
            pct(p.share),
            p.behaviour.score,
            opt(p.interarrival_cv),
            opt(p.gap_autocorr),
            opt(p.grid_autocorr),
            opt(p.hour_entropy),
            pct(p.repeat_share),
            pct(p.funding.insider),
            pct(p.funding.unresolved),
            funders.join("<br>"),
            p.cluster
                .map_or_else(|| "–".to_owned(), |c| format!("#{c}")),
            p.deposit_twins,
        );
    }
    s.push_str("</tbody></table></div></details>");
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
