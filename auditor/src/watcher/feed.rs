//! The aggregator as the watcher reads it: the latest checkpoint note, pages of leaves,
//! consistency proofs and equivocation evidence, every answer bounded.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use tally_protocol::Digest;

use super::WatchError;

/// Largest checkpoint note read (the protocol's limit, §4.1).
const MAX_NOTE: usize = 4_096;

/// A running aggregator's read API, as a watcher or a benchmark follows it.
pub struct Feed {
    base: String,
    http: reqwest::Client,
}

/// One page of `GET /v1/leaves`.
#[derive(Deserialize)]
pub(crate) struct LeavesPage {
    pub(crate) leaves: Vec<ServedLeaf>,
}

/// One served log entry.
#[derive(Deserialize)]
pub(crate) struct ServedLeaf {
    pub(crate) leaf_index: u64,
    /// base64 of the SignedReceipt encoding.
    pub(crate) encoding: String,
}

/// A consistency proof as `GET /v1/consistency` serves it.
#[derive(Deserialize)]
pub(crate) struct Consistency {
    pub(crate) hashes: Vec<Digest>,
}

#[derive(Deserialize)]
struct EvidencePage {
    evidence: Vec<EvidenceItem>,
    next: Option<u64>,
}

#[derive(Deserialize)]
struct EvidenceItem {
    seq: u64,
    encoding: String,
    other_encoding: Option<String>,
}

fn api(e: crate::AuditError) -> WatchError {
    WatchError::Aggregator(e.to_string())
}

impl Feed {
    /// A feed of the aggregator at `base` (its base URL).
    pub fn new(base: &str) -> Result<Feed, WatchError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| WatchError::Aggregator(e.to_string()))?;
        Ok(Feed {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The latest checkpoint note, or `None` before the first seal.
    pub async fn checkpoint(&self) -> Result<Option<String>, WatchError> {
        let url = format!("{}/v1/checkpoint", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| WatchError::Aggregator(format!("GET {url}: {e}")))?;
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND => return Ok(None),
            s if !s.is_success() => return Err(WatchError::Aggregator(format!("GET {url}: {s}"))),
            _ => {}
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| WatchError::Aggregator(format!("GET {url}: {e}")))?;
        if body.len() > MAX_NOTE {
            return Err(WatchError::Aggregator(format!(
                "GET {url}: a note larger than {MAX_NOTE} bytes"
            )));
        }
        Ok(Some(String::from_utf8_lossy(&body).into_owned()))
    }

    /// Leaves `from..to` (at most one page, `tally_aggregator::api::MAX_LEAVES_PER_PAGE`).
    pub async fn leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, WatchError> {
        let url = format!("{}/v1/leaves?start={from}&end={to}", self.base);
        let body = crate::online::get(&self.http, &url).await.map_err(api)?;
        let page: LeavesPage = serde_json::from_slice(&body)
            .map_err(|e| WatchError::Aggregator(format!("a page of leaves: {e}")))?;
        if page.leaves.len() as u64 != to - from
            || page
                .leaves
                .iter()
                .zip(from..)
                .any(|(l, i)| l.leaf_index != i)
        {
            return Err(WatchError::Aggregator(format!(
                "asked for leaves {from}..{to}, got another range"
            )));
        }
        page.leaves
            .into_iter()
            .map(|l| {
                BASE64
                    .decode(l.encoding.as_bytes())
                    .map_err(|_| WatchError::Aggregator("a leaf is not base64".into()))
            })
            .collect()
    }

    /// The consistency proof from `from` to `to` leaves.
    pub(crate) async fn consistency(&self, from: u64, to: u64) -> Result<Vec<Digest>, WatchError> {
        let url = format!("{}/v1/consistency?from={from}&to={to}", self.base);
        let body = crate::online::get(&self.http, &url).await.map_err(api)?;
        let c: Consistency = serde_json::from_slice(&body)
            .map_err(|e| WatchError::Aggregator(format!("a consistency proof: {e}")))?;
        Ok(c.hashes)
    }

    /// Equivocation evidence after record `after`: every bundle named (each pair's two
    /// sides), and the cursor to continue from.
    pub(crate) async fn evidence(&self, after: u64) -> Result<(Vec<Vec<u8>>, u64), WatchError> {
        let url = format!("{}/v1/evidence?after={after}&limit=1000", self.base);
        let body = crate::online::get(&self.http, &url).await.map_err(api)?;
        let page: EvidencePage = serde_json::from_slice(&body)
            .map_err(|e| WatchError::Aggregator(format!("a page of evidence: {e}")))?;
        let mut cursor = after;
        let mut bundles = Vec::new();
        for item in page.evidence {
            cursor = cursor.max(item.seq);
            for enc in std::iter::once(item.encoding).chain(item.other_encoding) {
                if let Ok(b) = BASE64.decode(enc.as_bytes()) {
                    bundles.push(b);
                }
            }
        }
        let _ = page.next;
        Ok((bundles, cursor))
    }
}
