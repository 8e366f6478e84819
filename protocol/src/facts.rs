//! What happened in one inference call, as the host reports it.

use crate::Digest;
use crate::codec::{Codec, DecodeError, Reader, Tag, Writer, canonical_api};

pub(crate) const FACTS_TAG: Tag = Tag::new("tally:facts");

/// How a call ended. Every variant is billable: a call that failed produces no receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[repr(u8)]
pub enum FinishStatus {
    /// The model finished its answer.
    Stop = 0,
    /// The answer hit the token limit.
    Length = 1,
    /// The model asked for a tool call.
    ToolCalls = 2,
    /// The answer was cut by a content filter.
    ContentFilter = 3,
    /// The client went away mid-answer; metered from what was delivered.
    Interrupted = 4,
}

impl FinishStatus {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => FinishStatus::Stop,
            1 => FinishStatus::Length,
            2 => FinishStatus::ToolCalls,
            3 => FinishStatus::ContentFilter,
            4 => FinishStatus::Interrupted,
            _ => {
                return Err(DecodeError::Invalid {
                    field: "finish",
                    reason: "unknown finish status",
                });
            }
        })
    }
}

/// One call's usage facts: the metering guest's input besides the price schedule.
///
/// Token counts follow the OpenAI `usage` object: `cached_prompt_tokens` are part of
/// `prompt_tokens`, `reasoning_tokens` part of `completion_tokens`. The host reports
/// them; nothing on chain can re-tokenise a prompt (see the threat model), but the digests
/// let a client prove which request and answer a receipt is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields, remote = "Self"))]
pub struct UsageFacts {
    /// The model that served the call.
    pub model: Digest,
    /// SHA-256 of the exact request body.
    pub request_digest: Digest,
    /// SHA-256 of the exact response body (for streams: of the bytes delivered).
    pub response_digest: Digest,
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Prompt tokens served from a prompt cache (at most `prompt_tokens`).
    pub cached_prompt_tokens: u64,
    /// Completion tokens, reasoning ones included.
    pub completion_tokens: u64,
    /// Reasoning tokens (at most `completion_tokens`); informational, priced as completion.
    pub reasoning_tokens: u64,
    /// Unix time in milliseconds when the host received the request.
    pub started_at_ms: u64,
    /// Milliseconds from the request to the first token.
    pub first_token_ms: u32,
    /// Milliseconds from the request to the end of the answer (at least `first_token_ms`).
    pub duration_ms: u32,
    /// How the call ended.
    pub finish: FinishStatus,
}

impl UsageFacts {
    /// Checks the rules between fields that the encoding enforces.
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.cached_prompt_tokens > self.prompt_tokens {
            return Err(DecodeError::Invalid {
                field: "cached_prompt_tokens",
                reason: "more than prompt_tokens",
            });
        }
        if self.reasoning_tokens > self.completion_tokens {
            return Err(DecodeError::Invalid {
                field: "reasoning_tokens",
                reason: "more than completion_tokens",
            });
        }
        if self.first_token_ms > self.duration_ms {
            return Err(DecodeError::Invalid {
                field: "first_token_ms",
                reason: "after the end of the call",
            });
        }
        Ok(())
    }
}

impl Codec for UsageFacts {
    const TAG: &'static Tag = &FACTS_TAG;
    const MAX_LEN: usize = 17 + 32 * 3 + 8 * 5 + 4 * 2 + 1;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&FACTS_TAG, 1);
        w.digest(&self.model);
        w.digest(&self.request_digest);
        w.digest(&self.response_digest);
        w.u64(self.prompt_tokens);
        w.u64(self.cached_prompt_tokens);
        w.u64(self.completion_tokens);
        w.u64(self.reasoning_tokens);
        w.u64(self.started_at_ms);
        w.u32(self.first_token_ms);
        w.u32(self.duration_ms);
        w.u8(self.finish as u8);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&FACTS_TAG, 1)?;
        let f = UsageFacts {
            model: r.digest("model")?,
            request_digest: r.digest("request_digest")?,
            response_digest: r.digest("response_digest")?,
            prompt_tokens: r.u64("prompt_tokens")?,
            cached_prompt_tokens: r.u64("cached_prompt_tokens")?,
            completion_tokens: r.u64("completion_tokens")?,
            reasoning_tokens: r.u64("reasoning_tokens")?,
            started_at_ms: r.u64("started_at_ms")?,
            first_token_ms: r.u32("first_token_ms")?,
            duration_ms: r.u32("duration_ms")?,
            finish: FinishStatus::from_u8(r.u8("finish")?)?,
        };
        f.check()?;
        Ok(f)
    }
}
canonical_api!(UsageFacts);
#[cfg(feature = "serde")]
crate::json::checked_serde!(UsageFacts);
