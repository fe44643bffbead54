//! One classification of every AWS error publish-layer can meet (DESIGN section 6).
//!
//! Only a fault of the artifact itself is a rejection: Lambda refusing the zip as an invalid parameter. Everything
//! else (throttling, 5xx, timeouts, conflicts, a full code storage quota, access denied, a missing resource) is a
//! fault: the record fails, its claim is released, nothing is recorded, and the invocation fails after the other
//! records so that Lambda's retries and the on-failure destination keep the event.
//!
//! Sources for the codes:
//! - PublishLayerVersion's errors (API reference, "Errors"): `CodeStorageExceededException` (400),
//!   `InvalidParameterValueException` (400), `ResourceNotFoundException` (404), `ServiceException` (500),
//!   `TooManyRequestsException` (429); <https://docs.aws.amazon.com/lambda/latest/api/API_PublishLayerVersion.html>
//!   (also listed in rusoto_lambda's `PublishLayerVersionError`).
//! - Lambda reports a failed read of the S3 content as `InvalidParameterValueException` whose message carries the
//!   S3 error: "Error occurred while GetObject. S3 Error Code: PermanentRedirect. … Error Code:
//!   InvalidParameterValueException" (github.com/aws-samples/amazon-textract-enhancer/issues/8): that is a fault
//!   of the deployment (bucket, region, permission), not of the artifact.
//! - S3 throttles with `SlowDown` (503) and fails with `InternalError` (500) / `ServiceUnavailable` (503); a
//!   conditional write answers 412 `PreconditionFailed`, or 409 `ConditionalRequestConflict` while a competing
//!   conditional write is in flight ("retry on 409";
//!   <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>). The claim protocol
//!   handles 412/409 itself ([`super::claim`]); anywhere else they are conflicts.

use crate::aws::AwsFault;

/// What a failed AWS call means for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The artifact itself is unfit: tag it `rejected`, record the rejection, the invocation succeeds.
    Reject,
    /// Retrying soon can succeed (throttling, 5xx, timeouts, no response, conflicts): the invocation fails as
    /// `Transient`; PublishLayerVersion is retried within the invocation, after looking for its effect.
    Retry,
    /// Needs time or an operator (a full code storage quota, access denied, a missing resource): the invocation
    /// fails as `AwsError`; a later delivery publishes once the cause is gone.
    Fault,
}

/// Lambda's error codes that a retry soon can clear.
const LAMBDA_RETRY_CODES: &[&str] = &[
    "TooManyRequestsException",
    "ServiceException",
    "ResourceConflictException",
    "EC2ThrottledException",
];

/// S3's error codes that a retry soon can clear (beyond 5xx and the SDK's throttling codes).
const S3_RETRY_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "OperationAborted",
    "ConditionalRequestConflict",
];

/// The one classification: every failed call publish-layer makes goes through here.
pub fn classify(fault: &AwsFault) -> Verdict {
    if fault.operation == "PublishLayerVersion"
        && fault.code == "InvalidParameterValueException"
        && !fault.message.contains("S3 Error Code")
    {
        return Verdict::Reject;
    }
    let conflict = fault.http_status == Some(409);
    if fault.is_transient()
        || conflict
        || LAMBDA_RETRY_CODES.contains(&fault.code.as_str())
        || S3_RETRY_CODES.contains(&fault.code.as_str())
    {
        Verdict::Retry
    } else {
        Verdict::Fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::FaultKind;

    fn fault(operation: &'static str, code: &str, status: Option<u16>, message: &str) -> AwsFault {
        // The kind `AwsFault::from_sdk` gives: transient for no response, 5xx, 429 and throttling codes.
        let transient = status.is_none_or(|s| s >= 500 || s == 429)
            || ["Throttling", "ThrottlingException", "SlowDown"].contains(&code);
        AwsFault {
            operation,
            kind: if transient {
                FaultKind::Transient
            } else {
                FaultKind::Permanent
            },
            code: code.to_owned(),
            message: message.to_owned(),
            http_status: status,
        }
    }

    #[test]
    fn every_error_code_maps_to_one_outcome() {
        use Verdict::{Fault, Reject, Retry};
        let pub_ = "PublishLayerVersion";
        let table: &[(&'static str, &str, Option<u16>, &str, Verdict)] = &[
            // PublishLayerVersion: only Lambda's refusal of the artifact is a rejection.
            (
                pub_,
                "InvalidParameterValueException",
                Some(400),
                "Unzipped size must be smaller than 262144000 bytes",
                Reject,
            ),
            (
                pub_,
                "InvalidParameterValueException",
                Some(400),
                "Error occurred while GetObject. S3 Error Code: AccessDenied. S3 Error Message: Access Denied",
                Fault,
            ),
            (
                pub_,
                "CodeStorageExceededException",
                Some(400),
                "Code storage limit exceeded.",
                Fault,
            ),
            (
                pub_,
                "TooManyRequestsException",
                Some(429),
                "Rate exceeded",
                Retry,
            ),
            (pub_, "ServiceException", Some(500), "internal error", Retry),
            (
                pub_,
                "ResourceConflictException",
                Some(409),
                "in progress",
                Retry,
            ),
            (
                pub_,
                "ResourceNotFoundException",
                Some(404),
                "no such layer",
                Fault,
            ),
            (
                pub_,
                "AccessDeniedException",
                Some(403),
                "not authorized",
                Fault,
            ),
            (pub_, "NoResponse", None, "timeout", Retry),
            // The versions looked through before publishing again.
            (
                "ListLayerVersions",
                "TooManyRequestsException",
                Some(429),
                "",
                Retry,
            ),
            (
                "ListLayerVersions",
                "AccessDeniedException",
                Some(403),
                "",
                Fault,
            ),
            ("GetLayerVersion", "ServiceException", Some(500), "", Retry),
            // S3: the artifact reads, the tags, the claim.
            ("HeadObject", "AccessDenied", Some(403), "", Fault),
            ("HeadObject", "InternalError", Some(500), "", Retry),
            ("GetObject", "SlowDown", Some(503), "", Retry),
            ("GetObject", "AccessDenied", Some(403), "", Fault),
            ("GetObject", "NoResponse", None, "dispatch failure", Retry),
            ("PutObject", "ServiceUnavailable", Some(503), "", Retry),
            (
                "PutObject",
                "ConditionalRequestConflict",
                Some(409),
                "",
                Retry,
            ),
            ("PutObject", "AccessDenied", Some(403), "", Fault),
            ("GetObjectTagging", "AccessDenied", Some(403), "", Fault),
            ("PutObjectTagging", "InternalError", Some(500), "", Retry),
            ("PutObjectTagging", "InvalidTag", Some(400), "", Fault),
        ];
        for (operation, code, status, message, expected) in table {
            assert_eq!(
                classify(&fault(operation, code, *status, message)),
                *expected,
                "{operation} {code} {status:?} {message:?}"
            );
        }
        // Only PublishLayerVersion's refusal is a rejection: the same code from another call is a fault.
        assert_eq!(
            classify(&fault(
                "ListLayerVersions",
                "InvalidParameterValueException",
                Some(400),
                "bad marker"
            )),
            Fault
        );
    }
}
