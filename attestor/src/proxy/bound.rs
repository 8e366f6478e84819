//! What a metered request may cost, decided **before** it is forwarded: the most completion
//! tokens the payer's budget pays for, given the worst case of a prompt whose token count
//! the upstream only reports afterwards, and the forwarded body that enforces it.
//!
//! # The prompt's upper estimate
//!
//! `prompt_upper = body bytes + overhead_tokens + media parts × media_part_tokens`.
//!
//! Every tokenizer an OpenAI-compatible server uses turns text into at most one token per
//! UTF-8 byte, plus a constant: byte-level BPE (GPT-2, tiktoken's cl100k/o200k, Llama 3,
//! Qwen 2, Mistral Tekken) starts from one symbol per byte and merges only shorten it;
//! SentencePiece BPE and Unigram (Llama 2, Mistral v1, Gemma, T5) emit at least one
//! character per piece, falling back to single bytes, plus at most one dummy-prefix `▁`;
//! WordPiece (BERT, MiniLM) emits at least one character per piece plus `[CLS]`/`[SEP]`.
//! JSON text in the body is never shorter than the text it decodes to (`\n` is 2 bytes for
//! 1, `\u00e9` 6 for 2). What the body does not contain is what the server adds: special
//! tokens and the chat template (a default system prompt, role headers, tool
//! instructions), counted by `overhead_tokens` (per-message headers are covered by the
//! message's own JSON, at least 28 bytes for at most ~5 tokens). Media parts (images,
//! audio, video, files) have no such relation to their bytes and count `media_part_tokens`
//! each, or are refused when the host configured none. Fields that make the server build
//! the prompt from state the body does not hold (a stored previous response, a
//! conversation, a prompt template, server-side tools, a request-supplied chat template)
//! are refused: their prompt cannot be bounded.
//!
//! # The completion bound
//!
//! For a budget `B` (the least of `max_fee` and the room left under the cumulative cap),
//! [`completion_bound`] returns the largest `C` such that **every** call with
//! `prompt_tokens ≤ prompt_upper` (any part of it cached) and `completion_tokens ≤ C` is
//! metered by the guest (`docs/protocol.md` §2.6) to a fee `≤ B`, without overflow. Tiers
//! need not be monotone, so each tier the prompt may fall in is bounded at its worst
//! prompt (its largest reachable prompt, all priced at the dearer of the cached and
//! uncached rates) and the least `C` over those tiers wins.
//!
//! This file depends only on `std`, `serde_json` and `tally-protocol`: the fuzz target
//! `proxy_bound` compiles it as is and checks the bound against the guest.

use serde_json::{Map, Value};
use tally_protocol::PriceSchedule;

use super::route::Metered;

/// Prices are per million tokens (§2.6).
const PER_MTOK: u128 = 1_000_000;

/// Why no completion fits the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoundError {
    /// The worst-case prompt alone (or the schedule's minimum fee) costs `fee`, more than
    /// the budget.
    PromptUnaffordable {
        /// The fee of the worst-case prompt with no completion.
        fee: u128,
    },
    /// The prompt fits, but not one completion token for each choice requested.
    NoCompletionAffordable,
}

/// The fee of the costliest prompt of at most `prompt_upper` tokens, with no completion
/// (saturating; at least `min_fee`).
pub(crate) fn worst_prompt_fee(schedule: &PriceSchedule, prompt_upper: u64) -> u128 {
    let worst = tier_ranges(schedule, prompt_upper)
        .map(|(hi, t)| u128::from(hi) * u128::from(t.prompt_per_mtok.max(t.cached_per_mtok)))
        .max()
        .unwrap_or(0);
    worst.div_ceil(PER_MTOK).max(schedule.min_fee)
}

/// The tiers a prompt of at most `prompt_upper` tokens can fall in, each with the largest
/// prompt that falls in it. `schedule` must satisfy [`PriceSchedule::check`].
fn tier_ranges(
    schedule: &PriceSchedule,
    prompt_upper: u64,
) -> impl Iterator<Item = (u64, &tally_protocol::PriceTier)> {
    let tiers = &schedule.tiers;
    tiers.iter().enumerate().filter_map(move |(i, t)| {
        if t.from_prompt_tokens > prompt_upper {
            return None;
        }
        // Thresholds strictly rise, so the next one is at least 1.
        let hi = tiers.get(i + 1).map_or(prompt_upper, |next| {
            (next.from_prompt_tokens - 1).min(prompt_upper)
        });
        Some((hi, t))
    })
}

/// The most completion tokens (over all choices) that `budget` pays for whatever the
/// prompt's true size up to `prompt_upper` (see the module docs): `u64::MAX` less the
/// prompt when completions are free. `schedule` must satisfy [`PriceSchedule::check`].
pub(crate) fn completion_bound(
    schedule: &PriceSchedule,
    budget: u128,
    prompt_upper: u64,
) -> Result<u64, BoundError> {
    let prompt_fee = worst_prompt_fee(schedule, prompt_upper);
    if prompt_fee > budget {
        return Err(BoundError::PromptUnaffordable { fee: prompt_fee });
    }
    // `fee ≤ budget` ⇔ `n ≤ budget × 10⁶` (and `min_fee ≤ budget`, checked above). If the
    // product overflows, every `n` that does not overflow itself has `⌈n / 10⁶⌉ ≤ budget`.
    let budget_n = budget.saturating_mul(PER_MTOK);
    // `units = prompt + completion` must fit in a u64 too.
    let mut bound = u128::from(u64::MAX - prompt_upper);
    for (hi, t) in tier_ranges(schedule, prompt_upper) {
        let prompt_n = u128::from(hi) * u128::from(t.prompt_per_mtok.max(t.cached_per_mtok));
        // Checked above: the worst prompt fits (prompt_n ≤ budget_n).
        let room = budget_n.saturating_sub(prompt_n);
        if t.completion_per_mtok > 0 {
            bound = bound.min(room / u128::from(t.completion_per_mtok));
        }
    }
    Ok(u64::try_from(bound).unwrap_or(u64::MAX))
}

/// How the proxy estimates a request's prompt before the upstream counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptEstimate {
    /// Tokens the server may add to the request's own text: special tokens and the chat
    /// template (default system prompt, generation prompt, tool instructions).
    pub overhead_tokens: u64,
    /// Tokens counted for each media part (image, audio, video, file); `None` refuses
    /// requests with media parts, whose token count their bytes do not bound.
    pub media_part_tokens: Option<u64>,
}

impl Default for PromptEstimate {
    /// 1024 tokens of template overhead; media parts refused.
    fn default() -> PromptEstimate {
        PromptEstimate {
            overhead_tokens: 1024,
            media_part_tokens: None,
        }
    }
}

/// Why a request cannot be forwarded with a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlanError {
    /// A field the proxy reads has the wrong type (400 `invalid_request`).
    Invalid(&'static str),
    /// The request makes the server build a prompt its body does not bound (400
    /// `unbounded_prompt`).
    Unbounded(&'static str),
    /// The budget does not pay for the prompt and a completion (402).
    Unaffordable(BoundError),
}

/// A request ready to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The client asked for a stream.
    pub(crate) stream: bool,
    /// The prompt's upper estimate, in tokens.
    pub(crate) prompt_upper: u64,
    /// The most completion tokens, over all choices, the budget pays for.
    pub(crate) completion_bound: u64,
    /// The body to forward, if it differs from the client's bytes.
    pub(crate) body: Option<Vec<u8>>,
}

/// The inputs of [`plan`] besides the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits<'a> {
    /// The schedule of the authorised model.
    pub(crate) schedule: &'a PriceSchedule,
    /// What the call may cost at most.
    pub(crate) budget: u128,
    /// How to estimate the prompt.
    pub(crate) estimate: PromptEstimate,
    /// The most tokens the upstream generates per choice when the request sets no limit
    /// (its context length): a bound at least this large is not written into a request
    /// that has no limit (servers refuse a limit beyond the context).
    pub(crate) max_output_tokens: u64,
}

/// The fields each route's generation limit may be set in; the first is the one set when
/// the request has none.
pub(crate) fn limit_fields(route: Metered) -> &'static [&'static str] {
    match route {
        Metered::Chat => &["max_tokens", "max_completion_tokens"],
        Metered::Completions => &["max_tokens"],
        Metered::Responses => &["max_output_tokens"],
        Metered::Embeddings => &[],
    }
}

/// The fields that hold the prompt, scanned for media parts.
fn prompt_fields(route: Metered) -> &'static [&'static str] {
    match route {
        Metered::Chat => &["messages"],
        Metered::Completions => &["prompt"],
        Metered::Responses => &["input", "instructions"],
        Metered::Embeddings => &["input", "messages"],
    }
}

/// Content types that are text (or structure around text) to the prompt estimate.
const TEXT_TYPES: &[&str] = &[
    "text",
    "input_text",
    "output_text",
    "refusal",
    "message",
    "function_call",
    "function_call_output",
    "custom_tool_call",
    "custom_tool_call_output",
    "reasoning",
    "reasoning_text",
    "summary_text",
];

/// Content types that are media: their tokens are not bounded by their bytes.
const MEDIA_TYPES: &[&str] = &[
    "image_url",
    "input_image",
    "image",
    "image_embeds",
    "image_pil",
    "input_audio",
    "audio",
    "audio_url",
    "audio_embeds",
    "video_url",
    "video",
    "input_video",
    "file",
    "input_file",
];

/// Keys that make an untyped content part a media part (some servers accept parts
/// without `type`).
const MEDIA_KEYS: &[&str] = &[
    "image_url",
    "image_embeds",
    "image_pil",
    "input_audio",
    "audio_url",
    "video_url",
    "file_id",
    "file_url",
    "file_data",
];

/// Parses a request body: a JSON object whose top-level keys are unique (a duplicate could
/// be read one way here and another way upstream).
pub(crate) fn parse_request(body: &[u8]) -> Result<Map<String, Value>, PlanError> {
    serde_json::from_slice::<UniqueKeys>(body)
        .map(|u| u.0)
        .map_err(|_| PlanError::Invalid("the body is not a JSON object with unique keys"))
}

/// A JSON object that refuses duplicate keys.
struct UniqueKeys(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UniqueKeys, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object with unique keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                    let value: Value = access.next_value()?;
                    map.insert(key, value);
                }
                Ok(UniqueKeys(map))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A field that must be absent, `null` or a non-negative integer.
fn count_field(
    request: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, PlanError> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(PlanError::Invalid(field)),
    }
}

/// A field that must be absent, `null` or a boolean.
fn bool_field(request: &Map<String, Value>, field: &'static str) -> Result<bool, PlanError> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(PlanError::Invalid(field)),
    }
}

/// Refuses fields that make the server build a prompt the body does not bound.
fn refuse_unbounded(route: Metered, request: &Map<String, Value>) -> Result<(), PlanError> {
    let present = |f: &str| request.get(f).is_some_and(|v| !v.is_null());
    match route {
        Metered::Chat => {
            if present("chat_template") {
                return Err(PlanError::Unbounded("chat_template"));
            }
        }
        Metered::Responses => {
            for field in ["previous_response_id", "conversation", "prompt"] {
                if present(field) {
                    return Err(PlanError::Unbounded(field));
                }
            }
            if bool_field(request, "background")? {
                return Err(PlanError::Unbounded("background"));
            }
            // Server-side tools (search, files, code, MCP) feed their results into the
            // prompt; only tools the client runs itself are bounded.
            if let Some(tools) = request.get("tools").filter(|v| !v.is_null()) {
                let tools = tools.as_array().ok_or(PlanError::Invalid("tools"))?;
                for tool in tools {
                    let kind = tool.get("type").and_then(Value::as_str);
                    if !matches!(kind, Some("function" | "custom")) {
                        return Err(PlanError::Unbounded("tools"));
                    }
                }
            }
        }
        Metered::Completions | Metered::Embeddings => {}
    }
    Ok(())
}

/// Counts the media parts in `value`; refuses content parts of an unknown type.
fn media_parts(value: &Value, count: &mut u64) -> Result<(), PlanError> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| media_parts(v, count)),
        Value::Object(map) => {
            match map.get("type") {
                Some(Value::String(kind)) if MEDIA_TYPES.contains(&kind.as_str()) => {
                    *count = count.saturating_add(1);
                    return Ok(());
                }
                Some(Value::String(kind)) if TEXT_TYPES.contains(&kind.as_str()) => {}
                Some(Value::String(_)) => return Err(PlanError::Unbounded("content type")),
                _ => {
                    if MEDIA_KEYS.iter().any(|k| map.contains_key(*k)) {
                        *count = count.saturating_add(1);
                        return Ok(());
                    }
                }
            }
            map.values().try_for_each(|v| media_parts(v, count))
        }
        _ => Ok(()),
    }
}

/// How many choices a request asks for: the completion bound is shared among them.
pub(crate) fn choices(route: Metered, request: &Map<String, Value>) -> Result<u64, PlanError> {
    let n = count_field(request, "n")?.unwrap_or(1).max(1);
    let best_of = count_field(request, "best_of")?.unwrap_or(1).max(1);
    let per_prompt = n.max(best_of);
    Ok(match route {
        Metered::Chat => per_prompt,
        // A list of prompts (strings or token lists) is a batch; a list of integers is
        // one tokenised prompt.
        Metered::Completions => {
            let prompts = match request.get("prompt") {
                Some(Value::Array(items)) if items.iter().any(|v| !v.is_number()) => {
                    u64::try_from(items.len()).unwrap_or(u64::MAX).max(1)
                }
                _ => 1,
            };
            per_prompt.saturating_mul(prompts)
        }
        Metered::Responses | Metered::Embeddings => 1,
    })
}

/// Bounds a metered request: refuses what cannot be bounded or paid for, and returns the
/// body to forward with every generation limit set or lowered (never raised) to what the
/// budget pays for. A stream on the chat and completions routes also gets
/// `stream_options.include_usage = true`, so the upstream reports its usage.
pub(crate) fn plan(
    route: Metered,
    request: &mut Map<String, Value>,
    body_len: usize,
    limits: &Limits<'_>,
) -> Result<Plan, PlanError> {
    refuse_unbounded(route, request)?;
    let stream = route != Metered::Embeddings && bool_field(request, "stream")?;
    let mut media = 0u64;
    for field in prompt_fields(route) {
        if let Some(value) = request.get(*field) {
            media_parts(value, &mut media)?;
        }
    }
    let media_tokens = match (media, limits.estimate.media_part_tokens) {
        (0, _) => 0,
        (_, None) => return Err(PlanError::Unbounded("media content")),
        (n, Some(per_part)) => n.saturating_mul(per_part),
    };
    let prompt_upper = u64::try_from(body_len)
        .unwrap_or(u64::MAX)
        .saturating_add(limits.estimate.overhead_tokens)
        .saturating_add(media_tokens);
    let bound = completion_bound(limits.schedule, limits.budget, prompt_upper)
        .map_err(PlanError::Unaffordable)?;

    let mut changed = false;
    let fields = limit_fields(route);
    if !fields.is_empty() {
        let per_choice = bound / choices(route, request)?;
        if per_choice == 0 {
            return Err(PlanError::Unaffordable(BoundError::NoCompletionAffordable));
        }
        let mut limited = false;
        for field in fields {
            if let Some(asked) = count_field(request, field)? {
                limited = true;
                if asked > per_choice {
                    request.insert((*field).to_owned(), Value::from(per_choice));
                    changed = true;
                }
            }
        }
        if !limited && per_choice < limits.max_output_tokens {
            request.insert(fields[0].to_owned(), Value::from(per_choice));
            changed = true;
        }
    }
    if stream && matches!(route, Metered::Chat | Metered::Completions) {
        let options = request
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !options.is_object() {
            *options = Value::Object(Map::new());
        }
        if let Some(options) = options.as_object_mut()
            && options.get("include_usage") != Some(&Value::Bool(true))
        {
            options.insert("include_usage".into(), Value::Bool(true));
            changed = true;
        }
    }
    let body = if changed {
        Some(serde_json::to_vec(request).map_err(|_| PlanError::Invalid("body"))?)
    } else {
        None
    };
    Ok(Plan {
        stream,
        prompt_upper,
        completion_bound: if fields.is_empty() { 0 } else { bound },
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_protocol::{Digest, PriceTier};

    fn tier(from: u64, prompt: u64, cached: u64, completion: u64) -> PriceTier {
        PriceTier {
            from_prompt_tokens: from,
            prompt_per_mtok: prompt,
            cached_per_mtok: cached,
            completion_per_mtok: completion,
        }
    }

    fn schedule(min_fee: u128, tiers: Vec<PriceTier>) -> PriceSchedule {
        PriceSchedule {
            model: Digest::ZERO,
            min_fee,
            tiers,
        }
    }

    #[test]
    fn the_bound_is_the_largest_completion_the_budget_pays_for() {
        // 2 units per prompt token, 8 per completion token.
        let s = schedule(10, vec![tier(0, 2_000_000, 500_000, 8_000_000)]);
        // Prompt ≤ 100 costs ≤ 200; 1000 - 200 = 800 → 100 completion tokens.
        assert_eq!(completion_bound(&s, 1000, 100), Ok(100));
        assert_eq!(completion_bound(&s, 1007, 100), Ok(100));
        assert_eq!(completion_bound(&s, 1008, 100), Ok(101));
        assert_eq!(
            completion_bound(&s, 199, 100),
            Err(BoundError::PromptUnaffordable { fee: 200 })
        );
        assert_eq!(
            completion_bound(&s, 9, 0),
            Err(BoundError::PromptUnaffordable { fee: 10 })
        );
        // Free completions: only the u64 units bound it.
        let free = schedule(1, vec![tier(0, 1, 1, 0)]);
        assert_eq!(completion_bound(&free, 1, 10), Ok(u64::MAX - 10));
        // A budget too large to scale to micro-units.
        assert_eq!(completion_bound(&s, u128::MAX, 0), Ok(u64::MAX));
    }

    #[test]
    fn every_reachable_tier_is_bounded_at_its_worst_prompt() {
        // A dear first tier up to 999 prompt tokens, a cheap one from 1000: a prompt of
        // at most 1500 tokens may cost 999 × 10 in the first tier.
        let s = schedule(
            1,
            vec![
                tier(0, 10_000_000, 0, 10_000_000),
                tier(1000, 1_000_000, 20_000_000, 1_000_000),
            ],
        );
        assert_eq!(worst_prompt_fee(&s, 1500), 30_000); // 1500 cached at 20 per token
        assert_eq!(worst_prompt_fee(&s, 999), 9_990);
        // Budget 40 000: tier 1 leaves (40000 - 9990) / 10 = 3001, tier 2 leaves
        // (40000 - 30000) / 1 = 10000.
        assert_eq!(completion_bound(&s, 40_000, 1500), Ok(3001));
        // Below the second tier only the first one counts.
        assert_eq!(completion_bound(&s, 40_000, 999), Ok(3001));
        assert_eq!(completion_bound(&s, 40_000, 500), Ok(3500));
    }

    fn limits(schedule: &PriceSchedule, budget: u128) -> Limits<'_> {
        Limits {
            schedule,
            budget,
            estimate: PromptEstimate {
                overhead_tokens: 0,
                media_part_tokens: None,
            },
            max_output_tokens: 1 << 20,
        }
    }

    fn check(route: Metered, body: &str, budget: u128) -> Result<(Plan, Value), PlanError> {
        let s = schedule(1, vec![tier(0, 1_000_000, 1_000_000, 1_000_000)]);
        let mut request = parse_request(body.as_bytes())?;
        let plan = plan(route, &mut request, body.len(), &limits(&s, budget))?;
        let sent = match &plan.body {
            Some(b) => serde_json::from_slice(b).unwrap(),
            None => serde_json::from_str(body).unwrap(),
        };
        Ok((plan, sent))
    }

    #[test]
    fn limits_are_set_or_lowered_never_raised() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let budget = body.len() as u128 + 50;
        let (plan, sent) = check(Metered::Chat, body, budget).unwrap();
        assert_eq!(plan.completion_bound, 50);
        assert_eq!(sent["max_tokens"], 50);
        // Lowered in every field present; a smaller one is kept and the bytes untouched.
        let body = r#"{"model":"m","max_tokens":500,"max_completion_tokens":7,"messages":[]}"#;
        let (_, sent) = check(Metered::Chat, body, body.len() as u128 + 50).unwrap();
        assert_eq!(
            (&sent["max_tokens"], &sent["max_completion_tokens"]),
            (&50.into(), &7.into())
        );
        let body = r#"{"model":"m","max_tokens":5}"#;
        let (plan, _) = check(Metered::Completions, body, body.len() as u128 + 50).unwrap();
        assert_eq!(plan.body, None);
        // n choices share the bound; a batch of prompts multiplies them.
        let body = r#"{"model":"m","n":3,"best_of":5,"prompt":["a","b"]}"#;
        let (_, sent) = check(Metered::Completions, body, body.len() as u128 + 50).unwrap();
        assert_eq!(sent["max_tokens"], 5);
        let body = r#"{"model":"m","input":"hi"}"#;
        let (_, sent) = check(Metered::Responses, body, body.len() as u128 + 9).unwrap();
        assert_eq!(sent["max_output_tokens"], 9);
        // Embeddings only need their prompt paid.
        let body = r#"{"model":"m","input":"hi"}"#;
        let (plan, _) = check(Metered::Embeddings, body, body.len() as u128).unwrap();
        assert_eq!((plan.completion_bound, plan.body), (0, None));
        // A stream asks for usage.
        let body = r#"{"model":"m","stream":true,"max_tokens":1,"stream_options":null}"#;
        let (plan, sent) = check(Metered::Chat, body, 1000).unwrap();
        assert!(plan.stream);
        assert_eq!(sent["stream_options"]["include_usage"], true);
    }

    #[test]
    fn what_cannot_be_bounded_or_paid_is_refused() {
        let refused = |route, body: &str, budget| check(route, body, budget).unwrap_err();
        let body = r#"{"model":"m","messages":[]}"#;
        assert_eq!(
            refused(Metered::Chat, body, body.len() as u128),
            PlanError::Unaffordable(BoundError::NoCompletionAffordable)
        );
        assert_eq!(
            refused(Metered::Chat, body, 3),
            PlanError::Unaffordable(BoundError::PromptUnaffordable {
                fee: body.len() as u128
            })
        );
        for (route, body, why) in [
            (
                Metered::Chat,
                r#"{"max_tokens":"9"}"#,
                PlanError::Invalid("max_tokens"),
            ),
            (
                Metered::Chat,
                r#"{"max_tokens":1e3}"#,
                PlanError::Invalid("max_tokens"),
            ),
            (
                Metered::Chat,
                r#"{"stream":"true"}"#,
                PlanError::Invalid("stream"),
            ),
            (Metered::Chat, r#"{"n":-1}"#, PlanError::Invalid("n")),
            (
                Metered::Chat,
                r#"{"chat_template":"{% for %}"}"#,
                PlanError::Unbounded("chat_template"),
            ),
            (
                Metered::Chat,
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x"}}]}]}"#,
                PlanError::Unbounded("media content"),
            ),
            (
                Metered::Responses,
                r#"{"input":[{"type":"item_reference","id":"x"}]}"#,
                PlanError::Unbounded("content type"),
            ),
            (
                Metered::Responses,
                r#"{"previous_response_id":"r"}"#,
                PlanError::Unbounded("previous_response_id"),
            ),
            (
                Metered::Responses,
                r#"{"background":true}"#,
                PlanError::Unbounded("background"),
            ),
            (
                Metered::Responses,
                r#"{"tools":[{"type":"web_search"}]}"#,
                PlanError::Unbounded("tools"),
            ),
        ] {
            assert_eq!(refused(route, body, 1 << 40), why, "{body}");
        }
        assert!(matches!(
            parse_request(br#"{"max_tokens":1,"max_tokens":100000}"#),
            Err(PlanError::Invalid(_))
        ));
        assert!(parse_request(b"[1]").is_err());
    }

    #[test]
    fn media_parts_count_at_the_configured_allowance() {
        let s = schedule(1, vec![tier(0, 1_000_000, 1_000_000, 1_000_000)]);
        let body = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"image_url":"y"}]}]}"#;
        let mut request = parse_request(body.as_bytes()).unwrap();
        let mut l = limits(&s, 1 << 40);
        l.estimate.media_part_tokens = Some(1000);
        l.estimate.overhead_tokens = 7;
        let plan = plan(Metered::Chat, &mut request, body.len(), &l).unwrap();
        assert_eq!(plan.prompt_upper, body.len() as u64 + 7 + 2000);
    }
}
