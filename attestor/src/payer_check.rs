//! Group verification of payers' signatures: the calls in flight at one moment share one
//! ZIP-215 batch, the way group commit shares one fsync.
//!
//! A call enqueues its authorisation. If no call is leading, it leads: it yields once so
//! that the other calls ready to run can enqueue theirs, then drains the queue, checks the
//! whole batch, and hands each call its own verdict; it keeps draining until the queue is
//! empty. A batch that fails is checked one signature at a time, so every call gets exactly
//! the verdict a single check would give (ZIP-215 makes batch and single agree). A lone
//! call pays one `yield` more than a single check; under load a signature costs about a
//! third of a single check.
//!
//! A leader whose future is dropped mid-yield finishes the batch synchronously in its drop
//! guard, so no follower is ever left waiting.

use std::sync::{Mutex, PoisonError};

use tally_protocol::{PublicKey, Signature, SignatureError, SignedAuthorization, verify_batch};
use tokio::sync::oneshot;

/// Most signatures checked in one batch.
const MAX_BATCH: usize = 256;

struct Item {
    key: PublicKey,
    message: Vec<u8>,
    signature: Signature,
    reply: oneshot::Sender<Result<(), SignatureError>>,
}

#[derive(Default)]
struct Queue {
    items: Vec<Item>,
    leading: bool,
}

/// The shared queue of payer signatures waiting to be checked.
#[derive(Default)]
pub(crate) struct PayerCheck {
    queue: Mutex<Queue>,
}

impl PayerCheck {
    /// Checks the payer's signature on `auth`, batched with the other calls in flight.
    pub(crate) async fn verify(&self, auth: &SignedAuthorization) -> Result<(), SignatureError> {
        let (reply, verdict) = oneshot::channel();
        let item = Item {
            key: auth.authorization.payer,
            message: auth.authorization.encode(),
            signature: auth.signature,
            reply,
        };
        let lead = {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.items.push(item);
            !std::mem::replace(&mut q.leading, true)
        };
        if lead {
            let mut guard = Leader {
                check: self,
                done: false,
            };
            tokio::task::yield_now().await;
            guard.drain();
        }
        // The leader answers every item it takes; a lost answer cannot happen, but if it
        // did, refusing the call is the safe side.
        verdict.await.unwrap_or(Err(SignatureError::Invalid))
    }

    /// Checks queued batches until the queue is empty, then gives up the lead (under the
    /// same lock that saw the queue empty, so a later arrival becomes the next leader).
    fn drain(&self) {
        loop {
            let batch: Vec<Item> = {
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if q.items.is_empty() {
                    q.leading = false;
                    return;
                }
                let n = q.items.len().min(MAX_BATCH);
                q.items.drain(..n).collect()
            };
            check(batch);
        }
    }
}

/// Checks one batch and answers each item.
fn check(batch: Vec<Item>) {
    let all_valid = batch.len() > 1 && {
        let items: Vec<(PublicKey, &[u8], Signature)> = batch
            .iter()
            .map(|i| (i.key, i.message.as_slice(), i.signature))
            .collect();
        verify_batch(&items).is_ok()
    };
    for item in batch {
        let verdict = if all_valid {
            Ok(())
        } else {
            item.key.verify(&item.message, &item.signature)
        };
        // The caller may have gone away; its verdict is then not needed.
        let _ = item.reply.send(verdict);
    }
}

/// Makes sure a leader's batch is checked even if its future is dropped while yielding.
struct Leader<'a> {
    check: &'a PayerCheck,
    done: bool,
}

impl Leader<'_> {
    fn drain(&mut self) {
        self.check.drain();
        self.done = true;
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.check.drain();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_protocol::{Authorization, Digest, SigningKey};

    fn auth(i: u8, valid: bool) -> SignedAuthorization {
        let payer = SigningKey::from_seed(&[i; 32]);
        let mut a = Authorization {
            chain_id: "c".into(),
            contract: "k".into(),
            payer: payer.public_key(),
            host: PublicKey([2; 32]),
            model: Digest([3; 32]),
            seq: 1,
            request_digest: Digest([4; 32]),
            max_fee: 1,
            cumulative_cap: 1,
            expires_at_ms: 1,
        }
        .sign(&payer);
        if !valid {
            a.signature.0[3] ^= 1;
        }
        a
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_calls_get_their_own_verdicts() {
        let check = std::sync::Arc::new(PayerCheck::default());
        let mut tasks = Vec::new();
        for i in 1..=40u8 {
            let check = std::sync::Arc::clone(&check);
            let valid = i % 7 != 0;
            tasks.push(tokio::spawn(async move {
                (valid, check.verify(&auth(i, valid)).await)
            }));
        }
        for t in tasks {
            let (valid, verdict) = t.await.unwrap();
            assert_eq!(verdict.is_ok(), valid);
        }
        assert!(!check.queue.lock().unwrap().leading);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_leader_still_answers_its_followers() {
        let check = std::sync::Arc::new(PayerCheck::default());
        let a = auth(1, true);
        let leader = check.verify(&a);
        let mut leader = Box::pin(leader);
        // Poll the leader once (it enqueues and yields), then let a follower enqueue.
        assert!(futures_poll_once(leader.as_mut()).is_none());
        let c2 = std::sync::Arc::clone(&check);
        let follower = tokio::spawn(async move { c2.verify(&auth(2, false)).await });
        tokio::task::yield_now().await;
        drop(leader);
        assert_eq!(follower.await.unwrap(), Err(SignatureError::Invalid));
    }

    fn futures_poll_once<F: std::future::Future + ?Sized>(
        f: std::pin::Pin<&mut F>,
    ) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match f.poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
