//! The shapes of publish-layer's input: S3 event notifications (and S3's `s3:TestEvent`), their records, the
//! form-encoded keys, and which records name an artifact this function publishes (`Target`).

use aws_lambda_events::event::s3::S3EventRecord;
use serde_json::Value;

use super::outcome::{Outcome, RecordResult};
use crate::config::Config;

pub(super) fn ignored_result(reason: &str) -> RecordResult {
    RecordResult {
        bucket: None,
        key: None,
        version_id: None,
        outcome: Outcome::Ignored {
            reason: reason.to_owned(),
        },
    }
}

/// The shapes a publish-layer input can take.
pub(super) enum EventShape<'a> {
    /// S3's `{"Service":"Amazon S3","Event":"s3:TestEvent",…}`, sent when notifications are configured.
    Test,
    Records(&'a [Value]),
    Other(&'static str),
}

pub(super) fn classify_event(event: &Value) -> EventShape<'_> {
    if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return EventShape::Test;
    }
    match event.get("Records").and_then(Value::as_array) {
        Some(records) => EventShape::Records(records),
        None => EventShape::Other("no Records array"),
    }
}

/// One record into the `aws_lambda_events` type. Emitters other than S3 itself (moto, hand-made test events)
/// omit `userIdentity` and `requestParameters`, which the type requires and publish-layer never reads: they
/// default to empty objects.
pub(super) fn parse_record(raw: &Value) -> Result<S3EventRecord, serde_json::Error> {
    let mut raw = raw.clone();
    if let Some(obj) = raw.as_object_mut() {
        for field in ["userIdentity", "requestParameters"] {
            obj.entry(field)
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    serde_json::from_value(raw)
}

/// `+` is a space, then percent-decoding, then UTF-8 (S3 encodes keys in events as HTML forms do).
pub fn form_decode(raw: &str) -> Result<String, std::str::Utf8Error> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
}

/// An object version this function should publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) version_id: Option<String>,
}

/// Why a record is not for this function, with the decoded key when there is one.
pub(super) struct Ignore {
    pub(super) reason: String,
    pub(super) key: Option<String>,
}

impl Target {
    pub(super) fn from_record(config: &Config, record: &S3EventRecord) -> Result<Self, Ignore> {
        let ignore = |reason: String, key: Option<String>| Ignore { reason, key };
        let event_name = record.event_name.as_deref().unwrap_or("");
        let event_name = event_name.strip_prefix("s3:").unwrap_or(event_name);
        let raw_key = record.s3.object.key.as_deref().unwrap_or("");
        let key =
            form_decode(raw_key).map_err(|_| ignore("the key is not UTF-8".to_owned(), None))?;
        if !event_name.starts_with("ObjectCreated:") {
            return Err(ignore(
                format!("event {event_name:?} is not ObjectCreated:*"),
                Some(key),
            ));
        }
        let bucket = record.s3.bucket.name.clone().unwrap_or_default();
        if bucket != config.artifact_bucket {
            return Err(ignore(
                format!("bucket {bucket:?} is not the artifact bucket"),
                Some(key),
            ));
        }
        let prefix = format!("{}/", config.artifact_prefix);
        if !key.starts_with(&prefix) || !key.ends_with(".zip") {
            return Err(ignore(
                format!("key is not a .zip under {prefix}"),
                Some(key),
            ));
        }
        Ok(Self {
            bucket,
            key,
            version_id: record
                .s3
                .object
                .version_id
                .clone()
                .filter(|v| !v.is_empty()),
        })
    }
}
