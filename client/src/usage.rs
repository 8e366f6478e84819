//! Reading the usage facts an OpenAI-compatible server reports: the `usage` object of a
//! JSON answer or of a stream's chunk, the `finish_reason`s, and (for a stream cut short)
//! how many token-bearing chunks were delivered.
//!
//! Two formats: chat/completions/embeddings (`prompt_tokens`, `completion_tokens`,
//! `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`)
//! and the Responses API (`input_tokens`, `output_tokens`,
//! `input_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens`; a
//! stream's usage is in the `response` of its `response.completed` or
//! `response.incomplete` event, and every non-empty `*.delta` event carries tokens).

use serde::Deserialize;
use serde::de::IgnoredAny;
use tally_protocol::FinishStatus;

/// Token counts as the upstream reported them, in the protocol's terms: cached tokens are
/// part of the prompt, reasoning tokens part of the completion (checked on reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportedUsage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: u64,
    /// `usage.prompt_tokens_details.cached_tokens` (0 if absent).
    pub cached_prompt_tokens: u64,
    /// `usage.completion_tokens` (0 if absent, as for embeddings).
    pub completion_tokens: u64,
    /// `usage.completion_tokens_details.reasoning_tokens` (0 if absent).
    pub reasoning_tokens: u64,
}

/// Why an answer's usage cannot be metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageError {
    /// The body (or a stream chunk) is not JSON of the expected shape.
    Malformed,
    /// There is no `usage` object, or it lacks a count the route needs.
    Missing,
    /// The counts contradict each other (more cached than prompt tokens, …).
    Inconsistent,
    /// The upstream says the response failed or was cancelled (Responses API).
    Failed,
}

#[derive(Deserialize)]
struct UsageJson {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
    // The Responses API's names.
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<PromptDetails>,
    output_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

/// The parts of an answer, or of one stream chunk, that metering reads (both formats).
#[derive(Deserialize)]
struct Answer {
    choices: Option<Vec<Choice>>,
    usage: Option<UsageJson>,
    /// A Responses API answer: `"response"`.
    object: Option<String>,
    /// A Responses API answer's status (`completed`, `incomplete`, `failed`, …).
    status: Option<String>,
    incomplete_details: Option<Incomplete>,
    output: Option<Vec<OutputItem>>,
    /// A Responses API stream event's type (`response.output_text.delta`, …).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A Responses API stream event's text or arguments delta.
    delta: Option<serde_json::Value>,
    /// The response a `response.*` lifecycle event carries.
    response: Option<Box<Answer>>,
}

#[derive(Deserialize)]
struct Incomplete {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct OutputItem {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    finish_reason: Option<String>,
    delta: Option<Delta>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    tool_calls: Option<IgnoredAny>,
}

impl UsageJson {
    /// The counts, requiring `completion_tokens` unless `completion_optional` (embeddings).
    /// The chat names win; the Responses API's are read when `prompt_tokens` is absent.
    fn read(&self, completion_optional: bool) -> Result<ReportedUsage, UsageError> {
        let (prompt, completion, prompt_details, completion_details) =
            if self.prompt_tokens.is_some() {
                (
                    self.prompt_tokens,
                    self.completion_tokens,
                    &self.prompt_tokens_details,
                    &self.completion_tokens_details,
                )
            } else {
                (
                    self.input_tokens,
                    self.output_tokens,
                    &self.input_tokens_details,
                    &self.output_tokens_details,
                )
            };
        let prompt_tokens = prompt.ok_or(UsageError::Missing)?;
        let completion_tokens = match completion {
            Some(n) => n,
            None if completion_optional => 0,
            None => return Err(UsageError::Missing),
        };
        let u = ReportedUsage {
            prompt_tokens,
            cached_prompt_tokens: prompt_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            completion_tokens,
            reasoning_tokens: completion_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        };
        if u.cached_prompt_tokens > u.prompt_tokens || u.reasoning_tokens > u.completion_tokens {
            return Err(UsageError::Inconsistent);
        }
        Ok(u)
    }
}

/// Maps an OpenAI `finish_reason` to the protocol's status (unknown ones count as `stop`:
/// the answer ended normally as far as billing goes).
fn finish_status(reason: &str) -> FinishStatus {
    match reason {
        "length" => FinishStatus::Length,
        "tool_calls" | "function_call" => FinishStatus::ToolCalls,
        "content_filter" => FinishStatus::ContentFilter,
        _ => FinishStatus::Stop,
    }
}

impl Answer {
    /// Whether this is a Responses API response object.
    fn is_response(&self) -> bool {
        self.object.as_deref() == Some("response")
    }

    /// The finish status of a Responses API response: `incomplete` for the output limit
    /// or the content filter, a function call in the output, or `stop`. `failed` and
    /// `cancelled` responses did not finish: [`UsageError::Failed`].
    fn response_finish(&self) -> Result<FinishStatus, UsageError> {
        match self.status.as_deref() {
            Some("failed" | "cancelled") => Err(UsageError::Failed),
            Some("incomplete") => Ok(
                match self
                    .incomplete_details
                    .as_ref()
                    .and_then(|d| d.reason.as_deref())
                {
                    Some("content_filter") => FinishStatus::ContentFilter,
                    _ => FinishStatus::Length,
                },
            ),
            _ => {
                let calls = self.output.iter().flatten().any(|item| {
                    matches!(
                        item.kind.as_deref(),
                        Some("function_call" | "custom_tool_call")
                    )
                });
                Ok(if calls {
                    FinishStatus::ToolCalls
                } else {
                    FinishStatus::Stop
                })
            }
        }
    }
}

/// The usage and finish status of a whole JSON answer (either format).
pub fn usage_of_json(
    body: &[u8],
    completion_optional: bool,
) -> Result<(ReportedUsage, FinishStatus), UsageError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|_| UsageError::Malformed)?;
    let finish = if answer.is_response() {
        answer.response_finish()?
    } else {
        answer
            .choices
            .iter()
            .flatten()
            .find_map(|c| c.finish_reason.as_deref())
            .map_or(FinishStatus::Stop, finish_status)
    };
    let usage = answer
        .usage
        .ok_or(UsageError::Missing)?
        .read(completion_optional)?;
    Ok((usage, finish))
}

/// What one stream chunk (an event's `data`) tells the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkInfo {
    /// The chunk's usage, if it carries one (the `include_usage` chunk).
    pub usage: Option<ReportedUsage>,
    /// A finish reason in the chunk.
    pub finish: Option<FinishStatus>,
    /// Choices in the chunk that carry generated text or a tool call.
    pub token_chunks: u64,
}

/// Reads one stream chunk's JSON: a chat or completions chunk, or a Responses API event.
pub fn usage_of_chunk(data: &str) -> Result<ChunkInfo, UsageError> {
    let chunk: Answer = serde_json::from_str(data).map_err(|_| UsageError::Malformed)?;
    if let Some(kind) = chunk.kind.clone()
        && kind.starts_with("response.")
    {
        return of_response_event(&kind, chunk);
    }
    let usage = chunk.usage.map(|u| u.read(false)).transpose()?;
    let mut info = ChunkInfo {
        usage,
        ..ChunkInfo::default()
    };
    for c in chunk.choices.iter().flatten() {
        if let Some(r) = c.finish_reason.as_deref() {
            info.finish = Some(finish_status(r));
        }
        let nonempty = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let carries = nonempty(&c.text)
            || c.delta.as_ref().is_some_and(|d| {
                nonempty(&d.content)
                    || nonempty(&d.reasoning_content)
                    || nonempty(&d.reasoning)
                    || d.tool_calls.is_some()
            });
        info.token_chunks += u64::from(carries);
    }
    Ok(info)
}

/// One Responses API stream event: a non-empty `*.delta` carries tokens; the lifecycle
/// events that end a response carry its usage and finish status.
fn of_response_event(kind: &str, event: Answer) -> Result<ChunkInfo, UsageError> {
    let mut info = ChunkInfo::default();
    if kind.ends_with(".delta") {
        let carries = match &event.delta {
            Some(serde_json::Value::String(s)) => !s.is_empty(),
            Some(serde_json::Value::Null) | None => false,
            Some(_) => true,
        };
        info.token_chunks = u64::from(carries);
        return Ok(info);
    }
    match kind {
        "response.failed" | "response.cancelled" => Err(UsageError::Failed),
        "response.completed" | "response.incomplete" => {
            let response = event.response.ok_or(UsageError::Missing)?;
            info.finish = Some(response.response_finish()?);
            info.usage = Some(
                response
                    .usage
                    .as_ref()
                    .ok_or(UsageError::Missing)?
                    .read(false)?,
            );
            Ok(info)
        }
        _ => Ok(info),
    }
}

/// Reads the usage reported in a JSON answer, for a client comparing it with its receipt
/// (`None` if the answer carries none).
pub fn reported_in_json(body: &[u8]) -> Option<ReportedUsage> {
    usage_of_json(body, true).ok().map(|(u, _)| u)
}

/// Reads the usage reported by a stream's usage chunk (`data` of one event).
pub fn reported_in_chunk(data: &str) -> Option<ReportedUsage> {
    usage_of_chunk(data).ok().and_then(|c| c.usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_details_are_read_and_checked() {
        let body = br#"{"choices":[{"finish_reason":"length"}],"usage":{"prompt_tokens":10,
            "completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4},
            "completion_tokens_details":{"reasoning_tokens":2}}}"#;
        let (u, f) = usage_of_json(body, false).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens),
            (10, 4, 5)
        );
        assert_eq!((u.reasoning_tokens, f), (2, FinishStatus::Length));
        let cached_over = br#"{"usage":{"prompt_tokens":1,"completion_tokens":0,
            "prompt_tokens_details":{"cached_tokens":4}}}"#;
        assert_eq!(
            usage_of_json(cached_over, false),
            Err(UsageError::Inconsistent)
        );
        assert_eq!(
            usage_of_json(br#"{"usage":{"prompt_tokens":3}}"#, false),
            Err(UsageError::Missing)
        );
        assert!(usage_of_json(br#"{"usage":{"prompt_tokens":3,"total_tokens":3}}"#, true).is_ok());
        assert_eq!(usage_of_json(b"{\"id\":1}", true), Err(UsageError::Missing));
        assert_eq!(
            usage_of_json(b"{\"usage\":", true),
            Err(UsageError::Malformed)
        );
    }

    #[test]
    fn chunks_count_token_bearing_choices() {
        let c = usage_of_chunk(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#);
        assert_eq!(c.unwrap().token_chunks, 0);
        let c = usage_of_chunk(r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}"#);
        assert_eq!(c.unwrap().token_chunks, 1);
        let c =
            usage_of_chunk(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#)
                .unwrap();
        assert_eq!(c.usage.map(|u| u.completion_tokens), Some(2));
        assert_eq!(usage_of_chunk("not json"), Err(UsageError::Malformed));
    }

    #[test]
    fn responses_api_usage_and_events_are_read() {
        let body = br#"{"id":"resp_1","object":"response","status":"incomplete",
            "incomplete_details":{"reason":"max_output_tokens"},"output":[],
            "usage":{"input_tokens":11,"input_tokens_details":{"cached_tokens":3},
            "output_tokens":6,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":17}}"#;
        let (u, f) = usage_of_json(body, false).unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_prompt_tokens,
                u.completion_tokens,
                u.reasoning_tokens
            ),
            (11, 3, 6, 4)
        );
        assert_eq!(f, FinishStatus::Length);
        let calls =
            br#"{"object":"response","status":"completed","output":[{"type":"function_call"}],
            "usage":{"input_tokens":1,"output_tokens":2}}"#;
        assert_eq!(
            usage_of_json(calls, false).unwrap().1,
            FinishStatus::ToolCalls
        );
        let failed = br#"{"object":"response","status":"failed","usage":{"input_tokens":1,"output_tokens":2}}"#;
        assert_eq!(usage_of_json(failed, false), Err(UsageError::Failed));

        let delta =
            usage_of_chunk(r#"{"type":"response.output_text.delta","delta":"Hi"}"#).unwrap();
        assert_eq!((delta.token_chunks, delta.usage), (1, None));
        let empty = usage_of_chunk(r#"{"type":"response.output_text.delta","delta":""}"#).unwrap();
        assert_eq!(empty.token_chunks, 0);
        let created = usage_of_chunk(r#"{"type":"response.created","response":{"usage":null}}"#);
        assert_eq!(created.unwrap(), ChunkInfo::default());
        let done = usage_of_chunk(
            r#"{"type":"response.completed","response":{"object":"response","status":"completed",
            "output":[],"usage":{"input_tokens":5,"output_tokens":2}}}"#,
        )
        .unwrap();
        assert_eq!(
            done.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((5, 2))
        );
        assert_eq!(done.finish, Some(FinishStatus::Stop));
        assert_eq!(
            usage_of_chunk(r#"{"type":"response.failed","response":{}}"#),
            Err(UsageError::Failed)
        );
    }
}
