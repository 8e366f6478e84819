//! Price schedules, the metering guest's input and output.

use alloc::vec::Vec;

use crate::codec::{Codec, DecodeError, Reader, Tag, Writer, canonical_api};
use crate::{Digest, UsageFacts};

pub(crate) const SCHEDULE_TAG: Tag = Tag::new("tally:schedule");
pub(crate) const METERED_TAG: Tag = Tag::new("tally:metered");
pub(crate) const METER_INPUT_TAG: Tag = Tag::new("tally:meter-in");
pub(crate) const METER_OUTCOME_TAG: Tag = Tag::new("tally:meter-out");

/// Most price tiers a schedule may have (bounds the guest's work and the encoding).
pub const MAX_TIERS: usize = 8;

/// One price tier: per-million-token prices that apply to a whole call whose prompt has at
/// least `from_prompt_tokens` tokens (long-context pricing, as real LLM price lists do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct PriceTier {
    /// The tier applies to calls with at least this many prompt tokens.
    pub from_prompt_tokens: u64,
    /// Price of one million uncached prompt tokens, in the escrow's smallest unit.
    pub prompt_per_mtok: u64,
    /// Price of one million cached prompt tokens.
    pub cached_per_mtok: u64,
    /// Price of one million completion tokens (reasoning tokens included).
    pub completion_per_mtok: u64,
}

/// A model's price list. Its hash is registered on chain and carried by every receipt, so
/// a fee can be re-computed by anyone from the receipt's facts and this schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields, remote = "Self"))]
pub struct PriceSchedule {
    /// The model this schedule prices; the guest refuses facts for any other model.
    pub model: Digest,
    /// The least any call costs.
    #[cfg_attr(feature = "serde", serde(with = "crate::json::amount"))]
    pub min_fee: u128,
    /// 1..=[`MAX_TIERS`] tiers, the first from 0 prompt tokens, thresholds strictly rising.
    pub tiers: Vec<PriceTier>,
}

impl PriceSchedule {
    /// The schedule's identity: SHA-256 of its canonical encoding.
    pub fn hash(&self) -> Digest {
        Digest::sha256(&self.encode())
    }

    /// Checks the tier rules the encoding enforces.
    pub fn check(&self) -> Result<(), DecodeError> {
        let invalid = |reason| DecodeError::Invalid {
            field: "tiers",
            reason,
        };
        if self.tiers.is_empty() || self.tiers.len() > MAX_TIERS {
            return Err(invalid("between 1 and 8 tiers"));
        }
        if self.tiers[0].from_prompt_tokens != 0 {
            return Err(invalid("the first tier starts at 0 prompt tokens"));
        }
        if self
            .tiers
            .windows(2)
            .any(|w| w[0].from_prompt_tokens >= w[1].from_prompt_tokens)
        {
            return Err(invalid("thresholds must strictly rise"));
        }
        Ok(())
    }

    /// The tier that prices a call with `prompt_tokens` prompt tokens: the last one whose
    /// threshold it reaches.
    pub fn tier_for(&self, prompt_tokens: u64) -> Option<&PriceTier> {
        self.tiers
            .iter()
            .rev()
            .find(|t| t.from_prompt_tokens <= prompt_tokens)
    }
}

impl Codec for PriceSchedule {
    const TAG: &'static Tag = &SCHEDULE_TAG;
    const MAX_LEN: usize = 17 + 32 + 16 + 1 + MAX_TIERS * 32;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&SCHEDULE_TAG, 1);
        w.digest(&self.model);
        w.u128(self.min_fee);
        w.u8(u8::try_from(self.tiers.len()).unwrap_or(u8::MAX));
        for t in &self.tiers {
            w.u64(t.from_prompt_tokens);
            w.u64(t.prompt_per_mtok);
            w.u64(t.cached_per_mtok);
            w.u64(t.completion_per_mtok);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&SCHEDULE_TAG, 1)?;
        let model = r.digest("model")?;
        let min_fee = r.u128("min_fee")?;
        let n = usize::from(r.u8("tier count")?);
        if n == 0 || n > MAX_TIERS {
            return Err(DecodeError::Invalid {
                field: "tiers",
                reason: "between 1 and 8 tiers",
            });
        }
        let mut tiers = Vec::with_capacity(n);
        for _ in 0..n {
            tiers.push(PriceTier {
                from_prompt_tokens: r.u64("from_prompt_tokens")?,
                prompt_per_mtok: r.u64("prompt_per_mtok")?,
                cached_per_mtok: r.u64("cached_per_mtok")?,
                completion_per_mtok: r.u64("completion_per_mtok")?,
            });
        }
        let s = PriceSchedule {
            model,
            min_fee,
            tiers,
        };
        s.check()?;
        Ok(s)
    }
}
canonical_api!(PriceSchedule);

/// The metering guest's result for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Metered {
    /// Billable tokens: prompt plus completion.
    pub units: u64,
    /// What the call costs, in the escrow's smallest unit.
    #[cfg_attr(feature = "serde", serde(with = "crate::json::amount"))]
    pub fee: u128,
}

impl Codec for Metered {
    const TAG: &'static Tag = &METERED_TAG;
    const MAX_LEN: usize = 17 + 8 + 16;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&METERED_TAG, 1);
        w.u64(self.units);
        w.u128(self.fee);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&METERED_TAG, 1)?;
        Ok(Metered {
            units: r.u64("units")?,
            fee: r.u128("fee")?,
        })
    }
}
canonical_api!(Metered);

/// Everything the metering guest reads for one call. The guest sees no keys, no clock and
/// no state: its output is a function of these bytes alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterInput {
    /// The call's usage facts.
    pub facts: UsageFacts,
    /// The model's price schedule.
    pub schedule: PriceSchedule,
    /// The payer's per-call limit: a higher fee is refused as unbillable.
    pub max_fee: u128,
}

impl Codec for MeterInput {
    const TAG: &'static Tag = &METER_INPUT_TAG;
    const MAX_LEN: usize = 17 + UsageFacts::MAX_ENCODED_LEN + PriceSchedule::MAX_ENCODED_LEN + 16;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&METER_INPUT_TAG, 1);
        self.facts.write(w);
        self.schedule.write(w);
        w.u128(self.max_fee);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&METER_INPUT_TAG, 1)?;
        Ok(MeterInput {
            facts: UsageFacts::read(r)?,
            schedule: PriceSchedule::read(r)?,
            max_fee: r.u128("max_fee")?,
        })
    }
}
canonical_api!(MeterInput);

/// Why the guest would not meter a call: the call is unbillable as described.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The guest's input was not a canonical [`MeterInput`].
    #[error("metering input is not canonical")]
    MalformedInput,
    /// The schedule prices another model than the facts name.
    #[error("price schedule does not apply to this model")]
    ScheduleNotForModel,
    /// The fee is above the payer's per-call `max_fee`.
    #[error("fee {fee} exceeds the authorised max_fee")]
    FeeAboveMax {
        /// The fee the schedule gives.
        fee: u128,
    },
    /// The fee does not fit in 128 bits.
    #[error("fee overflows")]
    Overflow,
}

/// The guest's output: a metered result or a refusal, in one canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterOutcome(pub Result<Metered, Refusal>);

impl Codec for MeterOutcome {
    const TAG: &'static Tag = &METER_OUTCOME_TAG;
    const MAX_LEN: usize = 17 + 1 + Metered::MAX_ENCODED_LEN;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&METER_OUTCOME_TAG, 1);
        match &self.0 {
            Ok(m) => {
                w.u8(0);
                m.write(w);
            }
            Err(Refusal::MalformedInput) => w.u8(1),
            Err(Refusal::ScheduleNotForModel) => w.u8(2),
            Err(Refusal::FeeAboveMax { fee }) => {
                w.u8(3);
                w.u128(*fee);
            }
            Err(Refusal::Overflow) => w.u8(4),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&METER_OUTCOME_TAG, 1)?;
        Ok(MeterOutcome(match r.u8("outcome")? {
            0 => Ok(Metered::read(r)?),
            1 => Err(Refusal::MalformedInput),
            2 => Err(Refusal::ScheduleNotForModel),
            3 => Err(Refusal::FeeAboveMax {
                fee: r.u128("fee")?,
            }),
            4 => Err(Refusal::Overflow),
            _ => {
                return Err(DecodeError::Invalid {
                    field: "outcome",
                    reason: "unknown outcome code",
                });
            }
        }))
    }
}
canonical_api!(MeterOutcome);
#[cfg(feature = "serde")]
crate::json::checked_serde!(PriceSchedule);
