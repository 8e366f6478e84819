//! A stand-in host that signs receipts the way the proxy does, for tests and benchmarks
//! of client code without a running proxy (the SDKs' benches, and their tests of tampered
//! receipts). Nothing here is needed to pay for calls; a real host is `tally proxy`.

use tally_protocol::merkle::CompactRange;
use tally_protocol::{
    Digest, FinishStatus, MeterInput, PriceSchedule, Receipt, SignedAuthorization, SignedReceipt,
    SigningKey, UsageFacts, sign_group,
};

use crate::{ReportedUsage, reported_in_json};

/// A host that receipts JSON answers: one host log (a group commit per receipt), one
/// running total per channel.
#[derive(Debug)]
pub struct TestHost {
    key: SigningKey,
    guest: Digest,
    host_seq: u64,
    frontier: CompactRange,
    totals: std::collections::BTreeMap<Digest, u128>,
}

/// Why the test host cannot receipt an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TestHostError {
    /// The answer reports no usage.
    #[error("the answer reports no usage")]
    NoUsage,
    /// The metering function refused the call.
    #[error("the metering function refused the call: {0}")]
    Refused(tally_protocol::Refusal),
    /// The usage counts are inconsistent.
    #[error("the usage counts are inconsistent")]
    BadUsage,
    /// The receipt could not be signed into the host's log.
    #[error("signing the receipt into the host log: {0}")]
    Group(tally_protocol::GroupError),
}

impl TestHost {
    /// A host signing with the key of `seed`, claiming `guest` as its metering guest.
    pub fn new(seed: &[u8; 32], guest: Digest) -> TestHost {
        TestHost {
            key: SigningKey::from_seed(seed),
            guest,
            host_seq: 0,
            frontier: CompactRange::new(),
            totals: Default::default(),
        }
    }

    /// The receipt of a JSON answer `response_body` to `request_body` sent with `auth`,
    /// priced with `schedule`, signed at `now_ms`; as the proxy's `x-tally-receipt`.
    pub fn receipt_json(
        &mut self,
        auth: &SignedAuthorization,
        schedule: &PriceSchedule,
        request_body: &[u8],
        response_body: &[u8],
        now_ms: u64,
    ) -> Result<SignedReceipt, TestHostError> {
        let usage: ReportedUsage = reported_in_json(response_body).ok_or(TestHostError::NoUsage)?;
        let facts = UsageFacts {
            model: auth.authorization.model,
            request_digest: Digest::sha256(request_body),
            response_digest: Digest::sha256(response_body),
            prompt_tokens: usage.prompt_tokens,
            cached_prompt_tokens: usage.cached_prompt_tokens,
            completion_tokens: usage.completion_tokens,
            reasoning_tokens: usage.reasoning_tokens,
            started_at_ms: now_ms,
            first_token_ms: 0,
            duration_ms: 0,
            finish: FinishStatus::Stop,
        };
        facts.check().map_err(|_| TestHostError::BadUsage)?;
        let metered = tally_guest::meter(&MeterInput {
            facts: facts.clone(),
            schedule: schedule.clone(),
            max_fee: auth.authorization.max_fee,
        })
        .map_err(TestHostError::Refused)?;
        let channel = auth.authorization.channel();
        let total = self.totals.get(&channel.0).copied().unwrap_or(0) + metered.fee;
        let receipt = Receipt {
            authorization: auth.clone(),
            facts,
            metered,
            guest: self.guest,
            schedule: schedule.hash(),
            host_seq: self.host_seq + 1,
            channel_total: total,
            timestamp_ms: now_ms,
        };
        let (_, mut bundles) = sign_group(&self.key, &mut self.frontier, vec![receipt])
            .map_err(TestHostError::Group)?;
        let bundle = bundles
            .pop()
            .ok_or(TestHostError::Group(tally_protocol::GroupError::Empty))?;
        self.host_seq += 1;
        self.totals.insert(channel.0, total);
        Ok(bundle)
    }
}

/// The payer and host seeds the benchmark fixture uses (the golden vectors' keys).
pub const BENCH_PAYER_SEED: [u8; 32] = [1; 32];
/// See [`BENCH_PAYER_SEED`].
pub const BENCH_HOST_SEED: [u8; 32] = [2; 32];

/// A MiniLM-shaped embeddings call for benchmarks: the request body and a JSON answer
/// with one 384-dimension vector and its usage, as `embeddings_server.py` writes them.
pub fn sample_embeddings_call() -> (Vec<u8>, Vec<u8>) {
    let request = br#"{"input":"The quick brown fox jumps over the lazy dog, twice.","model":"all-MiniLM-L6-v2","encoding_format":"float"}"#.to_vec();
    let mut vector = String::new();
    let mut x: u32 = 12345;
    for i in 0..384 {
        // A deterministic spread of floats of the usual printed length.
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let v = f64::from(x >> 8) / f64::from(1u32 << 24) * 0.2 - 0.1;
        if i > 0 {
            vector.push_str(", ");
        }
        vector.push_str(&format!("{v:.17}"));
    }
    let response = format!(
        r#"{{"object": "list", "model": "all-MiniLM-L6-v2", "data": [{{"object": "embedding", "index": 0, "embedding": [{vector}]}}], "usage": {{"prompt_tokens": 14, "total_tokens": 14}}}}"#
    );
    (request, response.into_bytes())
}

/// A price schedule for benchmarks and tests: `min_fee` 1, 20 per million prompt
/// tokens, one tier, for the model `[7; 32]`.
pub fn sample_schedule() -> PriceSchedule {
    PriceSchedule {
        model: Digest([7; 32]),
        min_fee: 1,
        tiers: vec![tally_protocol::PriceTier {
            from_prompt_tokens: 0,
            prompt_per_mtok: 20,
            cached_per_mtok: 10,
            completion_per_mtok: 40,
        }],
    }
}

/// A channel configuration for benchmarks and tests over [`sample_schedule`].
pub fn sample_config() -> crate::ChannelConfig {
    crate::ChannelConfig {
        chain_id: "tally-devnet-1".into(),
        contract: "cosmwasm14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr".into(),
        host: SigningKey::from_seed(&BENCH_HOST_SEED).public_key(),
        schedule: sample_schedule(),
        cap: u128::from(u64::MAX),
        max_fee: 1_000_000,
        ttl_ms: crate::ChannelConfig::DEFAULT_TTL_MS,
        lease: crate::ChannelConfig::DEFAULT_LEASE,
    }
}

/// Nanoseconds per operation of the two calls a payer makes per request, timed in Rust
/// over `iterations` runs each on the [`sample_embeddings_call`] with an in-memory channel:
/// `(authorize, check a JSON answer)`. `now_ns` is the clock (nanoseconds from any origin):
/// natively [`std::time::Instant`], in a browser or Node `performance.now()`. The SDKs'
/// bench scripts time the same operations through their bindings and call this (compiled
/// into the same library) for the Rust column, so both run in the same process on the
/// same build.
pub fn time_client_ops(iterations: u32, now_ns: impl Fn() -> f64) -> (f64, f64) {
    let iterations = iterations.max(1);
    let (request, response) = sample_embeddings_call();
    let channel = crate::Channel::open(
        SigningKey::from_seed(&BENCH_PAYER_SEED),
        sample_config(),
        crate::MemoryStore::default(),
    );
    let Ok(channel) = channel else {
        return (f64::NAN, f64::NAN);
    };
    let mut host = TestHost::new(&BENCH_HOST_SEED, Digest([5; 32]));
    let start = now_ns();
    let mut last = None;
    for _ in 0..iterations {
        last = channel.authorize(&request, 1_800_000_000_000).ok();
    }
    let authorize = (now_ns() - start) / f64::from(iterations);
    let Some(auth) = last else {
        return (f64::NAN, f64::NAN);
    };
    let Ok(receipt) = host.receipt_json(&auth, &sample_schedule(), &request, &response, 0) else {
        return (authorize, f64::NAN);
    };
    let header = crate::encode_hex(&receipt.encode());
    let start = now_ns();
    for _ in 0..iterations {
        let checked = channel.check_json_answer(&auth, &request, Some(&header), &response);
        std::hint::black_box(checked.is_ok());
    }
    (authorize, (now_ns() - start) / f64::from(iterations))
}

/// [`time_client_ops`] with the native monotonic clock.
#[cfg(not(target_arch = "wasm32"))]
pub fn time_client_ops_native(iterations: u32) -> (f64, f64) {
    let origin = std::time::Instant::now();
    time_client_ops(iterations, || origin.elapsed().as_nanos() as f64)
}
