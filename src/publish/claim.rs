//! The exactly-once protocol: any number of deliveries, of any object versions with the same content, publish
//! one layer version (DESIGN section 6).
//!
//! # The claim
//! S3 delivers events at least once and concurrently, and a retried Batch attempt uploads the same bytes again
//! as a new object version. So the guard identifies *content*, not an upload: one claim object per layer name
//! and CodeSha256, `.layerforge/claims/<sha256(bucket, layer name, CodeSha256)>.json`, in the artifact bucket but
//! outside the artifact prefix (and not ending in `.zip`), so writing it never triggers the function.
//!
//! 1. Create the claim with `PutObject If-None-Match: *` (`{owner, lease_until, layer_version_arn: null}`).
//!    Exactly one delivery's write succeeds; the others get 412 (or 409 while a competing conditional write is
//!    in flight). Every delivery then reads the claim back, and the one it names is the winner. This also
//!    covers the SDK retrying a conditional write whose answer was lost: the retry gets 412 although the first
//!    write landed, and the read-back shows this delivery's own owner token.
//! 2. The winner looks through the newest [`ADOPTION_WINDOW`](versions::ADOPTION_WINDOW) versions of the layer
//!    (one ListLayerVersions page, and GetLayerVersion for each, newest first): if one has the zip's CodeSha256,
//!    it is adopted instead of publishing again. This covers a PublishLayerVersion whose answer was lost and a
//!    winner that published and crashed before recording the ARN: that version is among the newest of the
//!    layer. The look costs at most `1 + ADOPTION_WINDOW` calls however long the layer's history; what the bound
//!    gives up (an old version whose claim lost its answer is not adopted) is stated in [`super::versions`].
//! 3. The winner calls PublishLayerVersion *without* the SDK's automatic retries (the call is not idempotent).
//!    After a failure a retry soon can clear ([`Verdict::Retry`]: throttling, 5xx, a lost answer) it waits
//!    ([`Guard::publish_backoff`]), repeats step 2, and only then publishes again, up to
//!    [`Guard::publish_attempts`] times within the invocation's deadline.
//! 4. The winner records the outcome in the claim with `PutObject If-Match: <its ETag>` (a 412 after an SDK
//!    retry is checked by reading the claim back). An ARN makes every later delivery a `duplicate`; a rejection
//!    by Lambda is recorded too. On a fault (quota, throttling that outlasted the attempts, access denied) the
//!    winner *releases* the claim (`lease_until: 0`) and records nothing, so the next delivery proceeds at once.
//! 5. A loser reads the claim: with an ARN it checks that the version still exists (one GetLayerVersion) and
//!    returns `duplicate` (the flow then tags its own object version); with a recorded rejection it returns
//!    `rejected`; otherwise it polls with backoff. A forced rebuild of published bytes is answered here too.
//! 6. A recorded version that was deleted (GetLayerVersion: `ResourceNotFoundException`) no longer answers for
//!    the content: the delivery replaces the claim with its own (`PutObject If-Match: <ETag read>`, as a
//!    takeover), so of concurrent deliveries one wins and goes through steps 2 to 4 (the deleted version is not
//!    listed any more, so it publishes a new one; a version that does exist after all would be adopted there),
//!    and the others wait for its outcome.
//! 7. The lease: a claim protects its owner until the owner's invocation deadline plus [`Guard::clock_margin`]
//!    (Lambda has stopped the owner by then). After that the claim belongs to a crashed winner: it is taken over
//!    with `PutObject If-Match: <ETag read>`, so of several waiters only one takes over, and the new owner
//!    repeats step 2 before publishing. Without a known deadline the lease is [`Guard::lease`], which is
//!    [`super::FUNCTION_TIMEOUT`] plus the margin, the deployed function's own timeout.
//! 8. A loser gives up before its own deadline (or after [`Guard::max_wait`]) with a transient error: the
//!    invocation fails and Lambda retries later; nothing is lost and nothing is published twice (within the
//!    bound of step 2).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{
    faults::{Verdict, classify},
    outcome::{Outcome, RecordError, Rejection},
    state::{Guard, PublishState},
    types::{LayerSpec, ObjectRef},
    versions,
};
use crate::{
    aws::{AwsFault, FaultKind},
    records::{self, Condition, WriteError},
};

/// Where claim objects live, relative to the artifact bucket's root.
pub const CLAIM_PREFIX: &str = ".layerforge/claims";

/// The claim object's key for a content and the targets it is published for ([`LayerSpec::targets`]): the same for
/// every object version with these bytes. The targets are part of it because two artifacts can hold the same bytes
/// for different targets (a pure-Python set without bytecode, built per pair for arm64 and for x86_64): each gets
/// the version that lists its own target, never the other's.
pub fn claim_key(bucket: &str, layer_name: &str, code_sha256: &str, targets: &str) -> String {
    let digest = Sha256::digest(format!("{bucket}\n{layer_name}\n{code_sha256}\n{targets}"));
    format!("{CLAIM_PREFIX}/{}.json", hex::encode(digest))
}

/// When a claim taken `now_ms` stops protecting its owner: the owner's invocation deadline plus the clock
/// margin, or `now + guard.lease` when the deadline is unknown (all Unix milliseconds).
pub fn lease_until(now_ms: u64, deadline_ms: Option<u64>, guard: &Guard) -> u64 {
    match deadline_ms {
        Some(deadline) => deadline.saturating_add(millis(guard.clock_margin)),
        None => now_ms.saturating_add(millis(guard.lease)),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The claim object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    layer_name: String,
    code_sha256: String,
    /// The object version that took the claim (for operators).
    bucket: String,
    key: String,
    #[serde(default)]
    version_id: Option<String>,
    owner: String,
    /// Unix milliseconds after which the claim may be taken over; 0 marks a released claim.
    lease_until: u64,
    #[serde(default)]
    layer_version_arn: Option<String>,
    #[serde(default)]
    rejected: Option<RecordedRejection>,
}

impl Claim {
    /// Held by its owner: no outcome, not released.
    fn is_open(&self) -> bool {
        self.layer_version_arn.is_none() && self.rejected.is_none() && self.lease_until != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedRejection {
    code: String,
    reason: String,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A token no other delivery uses.
fn new_owner() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The result of a conditional claim write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Written.
    Done,
    /// The precondition failed: another write came first (possibly this delivery's own, retried by the SDK).
    Lost,
}

/// Writes the claim under `condition` (the build records' conditional JSON write: 412 and 409 are a lost race).
async fn write_claim(
    state: &PublishState,
    bucket: &str,
    claim_key: &str,
    claim: &Claim,
    condition: Condition<'_>,
) -> Result<Write, AwsFault> {
    match records::write_json(&state.s3, bucket, claim_key, claim, Some(condition)).await {
        Ok(_) => Ok(Write::Done),
        Err(WriteError::Conflict) => Ok(Write::Lost),
        Err(WriteError::Aws(fault)) => Err(fault),
    }
}

/// The claim and its ETag, or `None` when there is none.
async fn read_claim(
    state: &PublishState,
    bucket: &str,
    claim_key: &str,
) -> Result<Option<(Claim, String)>, AwsFault> {
    let Some(stored) = records::read_json::<Claim>(&state.s3, bucket, claim_key).await? else {
        return Ok(None);
    };
    // Unreadable (e.g. an older format; read_json has logged it): a released claim, taken over (conditionally)
    // and rewritten.
    let claim = stored.value.unwrap_or_else(|| Claim {
        layer_name: String::new(),
        code_sha256: String::new(),
        bucket: bucket.to_owned(),
        key: String::new(),
        version_id: None,
        owner: String::new(),
        lease_until: 0,
        layer_version_arn: None,
        rejected: None,
    });
    Ok(Some((claim, stored.etag)))
}

/// Claims the content, then publishes (winner) or waits for the winner's outcome (loser).
pub(super) async fn publish_once(
    state: &PublishState,
    object: &ObjectRef,
    layer: &LayerSpec,
    code_sha256: &str,
    deadline_ms: Option<u64>,
) -> Result<Outcome, RecordError> {
    let key = claim_key(&object.bucket, &layer.name, code_sha256, &layer.targets());
    let owner = new_owner();
    let guard = state.guard;
    let started = now_millis();
    let give_up_at = {
        let waited = started.saturating_add(millis(guard.max_wait));
        match deadline_ms {
            Some(d) => waited.min(d.saturating_sub(millis(guard.deadline_reserve))),
            None => waited,
        }
    };
    let mut poll = guard.first_poll;
    let fresh = |now: u64| Claim {
        layer_name: layer.name.clone(),
        code_sha256: code_sha256.to_owned(),
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        version_id: object.version_id.clone(),
        owner: owner.clone(),
        lease_until: lease_until(now, deadline_ms, &guard),
        layer_version_arn: None,
        rejected: None,
    };

    let mut wrote = write_claim(
        state,
        &object.bucket,
        &key,
        &fresh(now_millis()),
        Condition::Absent,
    )
    .await?;
    loop {
        let now = now_millis();
        let Some((claim, etag)) = read_claim(state, &object.bucket, &key).await? else {
            // Gone (deleted by an operator or a lifecycle rule), or a competing create still in flight.
            if wrote == Write::Lost {
                if now >= give_up_at {
                    return Err(claim_held(&key, "(creating)", 0, now - started));
                }
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(guard.max_poll);
            }
            wrote = write_claim(
                state,
                &object.bucket,
                &key,
                &fresh(now_millis()),
                Condition::Absent,
            )
            .await?;
            continue;
        };
        if claim.owner == owner && claim.is_open() {
            if wrote == Write::Lost {
                // The write landed although its answer was lost; the SDK's retry met our own claim (412).
                info!(
                    claim = key,
                    owner, "the claim is this delivery's own (a retried conditional write)"
                );
            }
            return win(
                state,
                object,
                layer,
                code_sha256,
                &key,
                claim,
                &etag,
                deadline_ms,
            )
            .await;
        }
        if let Some(arn) = claim.layer_version_arn {
            if versions::version_exists(&state.lambda, &layer.name, &arn).await? {
                info!(
                    bucket = object.bucket,
                    key = object.key,
                    layer_version_arn = arn,
                    "already published"
                );
                return Ok(Outcome::Duplicate {
                    layer_version_arn: arn,
                });
            }
            warn!(
                claim = key,
                layer_version_arn = arn,
                "the recorded layer version was deleted; replacing the claim to publish again"
            );
            wrote = write_claim(
                state,
                &object.bucket,
                &key,
                &fresh(now_millis()),
                Condition::Matches(&etag),
            )
            .await?;
            continue;
        }
        if let Some(r) = claim.rejected {
            return Err(Rejection::Recorded {
                code: r.code,
                reason: r.reason,
            }
            .into());
        }
        if claim.lease_until <= now {
            warn!(
                claim = key,
                previous_owner = claim.owner,
                lease_until = claim.lease_until,
                "claim released or its lease ran out without an outcome; taking it over"
            );
            wrote = write_claim(
                state,
                &object.bucket,
                &key,
                &fresh(now),
                Condition::Matches(&etag),
            )
            .await?;
            continue;
        }
        if now >= give_up_at {
            return Err(claim_held(
                &key,
                &claim.owner,
                claim.lease_until,
                now - started,
            ));
        }
        let until_give_up = Duration::from_millis(give_up_at - now);
        tokio::time::sleep(poll.min(until_give_up)).await;
        poll = (poll * 2).min(guard.max_poll);
        wrote = Write::Lost;
    }
}

fn claim_held(key: &str, owner: &str, lease_until: u64, waited_ms: u64) -> RecordError {
    AwsFault {
        operation: "PublishLayerVersion",
        kind: FaultKind::Transient,
        code: "ClaimHeld".to_owned(),
        message: format!(
            "another delivery ({owner}) holds the claim {key} until {lease_until} and has not finished after \
             {waited_ms} ms"
        ),
        http_status: None,
    }
    .into()
}

/// The winner's part: adopt or publish, then record the outcome in the claim (or release it on a fault).
#[allow(clippy::too_many_arguments)]
async fn win(
    state: &PublishState,
    object: &ObjectRef,
    layer: &LayerSpec,
    code_sha256: &str,
    claim_key: &str,
    mut claim: Claim,
    etag: &str,
    deadline_ms: Option<u64>,
) -> Result<Outcome, RecordError> {
    let result = adopt_or_publish(state, object, layer, code_sha256, deadline_ms).await;
    match &result {
        Ok(outcome) => claim.layer_version_arn = outcome.layer_version_arn().map(str::to_owned),
        Err(RecordError::Rejected(r)) => {
            claim.rejected = Some(RecordedRejection {
                code: r.code(),
                reason: r.to_string(),
            })
        }
        // Release and record nothing: a retry (this event's or a concurrent delivery's) may proceed at once.
        Err(RecordError::Aws(_)) => claim.lease_until = 0,
    }
    match write_claim(
        state,
        &object.bucket,
        claim_key,
        &claim,
        Condition::Matches(etag),
    )
    .await
    {
        Ok(Write::Done) => {}
        Ok(Write::Lost) => {
            // An SDK retry of a write that landed gets 412 too: the claim then holds exactly what we wrote.
            let stored = read_claim(state, &object.bucket, claim_key).await;
            if !matches!(&stored, Ok(Some((c, _))) if *c == claim) {
                warn!(
                    claim = claim_key,
                    "the claim changed hands while this delivery held it; outcome not recorded"
                );
            }
        }
        Err(fault) => {
            // The layer version exists; a later delivery takes the claim over once the lease has run out and
            // adopts the version by CodeSha256.
            warn!(claim = claim_key, error = %fault, "recording the outcome in the claim failed");
            if result.is_ok() {
                return Err(fault.into());
            }
        }
    }
    result
}

/// Step 2 and 3: an existing version with this CodeSha256 is adopted; otherwise PublishLayerVersion, retried
/// (after looking again) only on failures a retry soon can clear.
async fn adopt_or_publish(
    state: &PublishState,
    object: &ObjectRef,
    layer: &LayerSpec,
    code_sha256: &str,
    deadline_ms: Option<u64>,
) -> Result<Outcome, RecordError> {
    let guard = state.guard;
    let mut backoff = guard.publish_backoff;
    let mut attempt = 1;
    loop {
        if let Some(arn) = versions::existing_version(state, layer, code_sha256).await? {
            info!(
                layer = layer.name,
                layer_version_arn = arn,
                "a layer version with this CodeSha256 exists; adopted"
            );
            return Ok(Outcome::Duplicate {
                layer_version_arn: arn,
            });
        }
        let fault = match versions::publish(state, object, layer, code_sha256).await {
            Err(RecordError::Aws(fault)) => fault,
            other => return other,
        };
        let time_left = deadline_ms.is_none_or(|d| {
            now_millis().saturating_add(millis(backoff + guard.deadline_reserve)) < d
        });
        if classify(&fault) != Verdict::Retry || attempt >= guard.publish_attempts || !time_left {
            return Err(fault.into());
        }
        warn!(
            layer = layer.name,
            attempt,
            error = %fault,
            "PublishLayerVersion failed; looking for its effect before publishing again"
        );
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_keys_identify_content_and_stay_outside_the_prefix() {
        let t = "python3.12/arm64";
        let a = claim_key("b", "six", "c2l4", t);
        assert_eq!(a, claim_key("b", "six", "c2l4", t));
        assert_ne!(a, claim_key("b", "six", "c2l5", t));
        assert_ne!(a, claim_key("b", "seven", "c2l4", t));
        assert_ne!(a, claim_key("b", "six", "c2l4", "python3.12/x86_64"));
        assert!(a.starts_with(".layerforge/claims/") && a.ends_with(".json"));
    }

    #[test]
    fn the_lease_follows_the_deadline() {
        let guard = Guard::default();
        let margin = millis(guard.clock_margin);
        assert_eq!(lease_until(1_000, Some(61_000), &guard), 61_000 + margin);
        assert_eq!(
            lease_until(1_000, None, &guard),
            1_000 + millis(super::super::state::FUNCTION_TIMEOUT) + margin
        );
    }
}
