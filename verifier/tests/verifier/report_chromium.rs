//! The demand-quality page in a real browser: headless Chromium (Debian's `chromium`)
//! loads `index.html` from disk, and the test checks that it renders, that its charts
//! carry data, and that the console stays silent. Chromium is required: without it the
//! test fails and says how to install it (CI installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::support::quality_workload as workload;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tally_verifier::quality::{self, Thresholds};

const CHROMIUM: &str = "/usr/bin/chromium";
const TIMEOUT: Duration = Duration::from_secs(120);

fn chromium() -> PathBuf {
    let path =
        std::env::var_os("TALLY_CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
    assert!(
        path.exists(),
        "headless Chromium not found at {}: install it with `apt-get install -y chromium` \
         (or set TALLY_CHROMIUM to its path)",
        path.display()
    );
    path
}

/// Runs headless Chromium on `page` with `extra` arguments; returns (stdout, console
/// messages). Fails the test on a non-zero exit or a hang.
fn browse(page: &Path, extra: &[String]) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes on threads so a full pipe cannot stall the browser.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            child.kill().unwrap();
            panic!("chromium did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "chromium failed: {status}\n{err}");
    // With --enable-logging=stderr every console message (errors, uncaught exceptions,
    // CSP violations, failed loads) is logged as `…:CONSOLE:…] "message", source: …`.
    let console = err
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (out, console)
}

/// Every start tag `<{name} …>` of `dom` whose text contains `class="{class}"`.
fn tags<'a>(dom: &'a str, name: &str, class: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    let class = format!("class=\"{class}\"");
    dom.match_indices(&open)
        .filter_map(|(i, _)| {
            let end = dom[i..].find('>')? + i;
            Some(&dom[i..end])
        })
        .filter(|t| t.contains(&class))
        .collect()
}

fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let start = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    let len = tag[start..].find('"').unwrap();
    &tag[start..start + len]
}

fn numbers(d: &str) -> Vec<f64> {
    d.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn console_detector_sees_errors() {
    // The negative control: if this fails, "no console errors" below proves nothing.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><p>x</p><script>console.error('marker-1'); missing();</script>",
    )
    .unwrap();
    let (dom, console) = browse(&page, &["--dump-dom".to_owned()]);
    assert!(dom.contains("<p>x</p>"));
    assert!(
        console.iter().any(|l| l.contains("marker-1")),
        "{console:?}"
    );
    assert!(
        console
            .iter()
            .any(|l| l.contains("Uncaught ReferenceError")),
        "{console:?}"
    );
}

#[test]
fn report_renders_with_charts_and_no_console_errors() {
    let input = workload::workload(2026, 300);
    let report = quality::analyze(&input, &Thresholds::default()).unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_chromium");
    quality::write_report(&dir, &report).unwrap();
    let page = dir.join("index.html").canonicalize().unwrap();

    let (dom, console) = browse(&page, &["--dump-dom".to_owned()]);
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(dom.contains("<h1>Demand-quality report</h1>"), "{dom}");
    assert!(!dom.contains("<script"));
    assert_eq!(dom.matches("<svg ").count(), 4 * report.models.len());
    assert_eq!(dom.matches("class=\"card model\"").count(), 4);
    assert!(dom.contains("badge red\">RED</span>"));
    assert_eq!(dom.matches("badge green\">GREEN</span>").count(), 2 * 3);
    // Concentration is its own indicator, drawn apart from the verdict badge: a pill per
    // model in the table and in its section; the wash model's headline is its flagged
    // share; every metric is explained.
    assert_eq!(
        dom.matches("class=\"conc ").count(),
        2 * report.models.len()
    );
    assert!(dom.contains("class=\"conc high\""));
    assert_eq!(
        dom.matches("of revenue flagged</span>").count(),
        report.models.len()
    );
    assert!(dom.contains("id=\"glossary\""));
    assert!(
        dom.contains("contributor echo-labs"),
        "registry names on the page"
    );

    // Lorenz curves: one per model, paths of one point per payer (at most 101) that span
    // the chart's height.
    let curves = tags(&dom, "path", "lorenz");
    assert_eq!(curves.len(), 4);
    for c in &curves {
        let xy = numbers(attr(c, "d"));
        assert!(xy.len() >= 2 * 13, "{c}");
        let ys: Vec<f64> = xy.iter().skip(1).step_by(2).copied().collect();
        let spread =
            ys.iter().fold(f64::MIN, |a, b| a.max(*b)) - ys.iter().fold(f64::MAX, |a, b| a.min(*b));
        assert!(spread > 100.0, "flat Lorenz curve: {c}");
    }
    assert_eq!(tags(&dom, "path", "diagonal").len(), 4);

    // Revenue bars: one per day per model, heights that vary.
    let bars = tags(&dom, "rect", "bar");
    assert!(bars.len() >= 4 * 21, "{}", bars.len());
    let heights: Vec<f64> = bars
        .iter()
        .map(|b| attr(b, "height").parse().unwrap())
        .collect();
    assert!(heights.iter().all(|h| h.is_finite() && *h >= 0.0));
    assert!(heights.iter().fold(0.0f64, |a, b| a.max(*b)) > 100.0);
    assert!(heights.iter().filter(|h| **h > 1.0).count() > 40);

    // The wash model's revenue is red where the wash payer paid: every day.
    assert_eq!(tags(&dom, "rect", "flagged").len(), 21);

    // Calls lines: one per model and one of active payers for retention.
    let lines = tags(&dom, "path", "line");
    assert_eq!(lines.len(), 8);
    for l in &lines {
        assert!(numbers(attr(l, "d")).len() >= 2 * 21, "{l}");
    }

    // Top payers: the wash model's first bar spans most of the 0–100% axis, in red.
    let wash_section = &dom[dom
        .find(&format!(
            "id=\"m-{}\"",
            workload::model_id(workload::WASH_MODEL)
        ))
        .unwrap()..];
    let first_share = tags(wash_section, "rect", "share")[0];
    assert!(
        attr(first_share, "width").parse::<f64>().unwrap() > 250.0,
        "{first_share}"
    );
    assert_eq!(attr(first_share, "fill"), "#d93025");

    // And a screenshot, to look at.
    let png = dir.join("screenshot.png");
    let _ = std::fs::remove_file(&png);
    let (_, console) = browse(
        &page,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,5000".to_owned(),
        ],
    );
    assert!(console.is_empty(), "console messages: {console:#?}");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 50_000,
        "suspiciously small screenshot: {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());
}
