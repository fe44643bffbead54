//! The S3 calls on the artifact itself: HeadObject, ranged GETs for the zip check (the streamed GET is
//! [`crate::zipstream::verify_s3_object`]), and tag merging (PutObjectTagging replaces the whole set).

use std::collections::HashMap;

use aws_sdk_s3::types::{ChecksumMode, Tag, Tagging};

use super::{event::Target, state::PublishState, types::ObjectRef};
use crate::{
    aws::{AwsFault, FaultKind, error_chain},
    zipcheck::RangeReader,
};

/// The object as HeadObject saw it.
pub(super) struct Head {
    pub(super) version_id: Option<String>,
    pub(super) len: u64,
    pub(super) metadata: HashMap<String, String>,
    /// S3's full-object SHA-256 (base64), when the upload carried one.
    pub(super) checksum_sha256: Option<String>,
}

/// Ranged GETs of one object version: the [`RangeReader`] [`crate::zipcheck::inspect`] uses in production.
#[derive(Debug, Clone, Copy)]
pub struct S3Range<'a> {
    pub s3: &'a aws_sdk_s3::Client,
    pub bucket: &'a str,
    pub key: &'a str,
    pub version_id: Option<&'a str>,
    /// The object's length, from HeadObject.
    pub len: u64,
}

impl RangeReader for S3Range<'_> {
    type Error = AwsFault;

    fn len(&self) -> u64 {
        self.len
    }

    async fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, AwsFault> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={start}-{}", start + len - 1);
        let out = self
            .s3
            .get_object()
            .bucket(self.bucket)
            .key(self.key)
            .set_version_id(self.version_id.map(str::to_owned))
            .range(&range)
            .send()
            .await
            .map_err(|e| AwsFault::from_sdk("GetObject", &e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| body_fault("GetObject", &e))?
            .into_bytes();
        if bytes.len() as u64 != len {
            // The object changed, or the server ignored the range: not a property of the zip.
            return Err(AwsFault {
                operation: "GetObject",
                kind: FaultKind::Transient,
                code: "ShortRangeRead".to_owned(),
                message: format!("{range} returned {} bytes", bytes.len()),
                http_status: None,
            });
        }
        Ok(bytes.to_vec())
    }
}

pub(super) fn body_fault(operation: &'static str, e: &dyn std::error::Error) -> AwsFault {
    AwsFault {
        operation,
        kind: FaultKind::Transient,
        code: "BodyReadFailed".to_owned(),
        message: error_chain(e),
        http_status: None,
    }
}

/// HeadObject; `None` when the object (version) is gone.
pub(super) async fn head_object(
    state: &PublishState,
    target: &Target,
) -> Result<Option<Head>, AwsFault> {
    let result = state
        .s3
        .head_object()
        .bucket(&target.bucket)
        .key(&target.key)
        .set_version_id(target.version_id.clone())
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await;
    let out = match result {
        Ok(o) => o,
        Err(e) => {
            let fault = AwsFault::from_sdk("HeadObject", &e);
            if e.as_service_error().is_some_and(|s| s.is_not_found())
                || fault.http_status == Some(404)
            {
                return Ok(None);
            }
            return Err(fault);
        }
    };
    Ok(Some(Head {
        version_id: out
            .version_id()
            .filter(|v| !v.is_empty() && *v != "null")
            .map(str::to_owned),
        len: u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
        metadata: out.metadata().cloned().unwrap_or_default(),
        checksum_sha256: out.checksum_sha256().map(str::to_owned),
    }))
}

/// Sets `set` and removes `remove` on the object version's tags, keeping every other tag (PutObjectTagging
/// replaces the whole set).
pub(super) async fn merge_tags(
    state: &PublishState,
    object: &ObjectRef,
    set: &[(&str, String)],
    remove: &[&str],
) -> Result<(), AwsFault> {
    let current = state
        .s3
        .get_object_tagging()
        .bucket(&object.bucket)
        .key(&object.key)
        .set_version_id(object.version_id.clone())
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("GetObjectTagging", &e))?;
    let existing: Vec<(String, String)> = current
        .tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    let mut merged: Vec<(String, String)> = existing
        .iter()
        .filter(|(k, _)| !remove.contains(&k.as_str()) && !set.iter().any(|(s, _)| s == k))
        .cloned()
        .collect();
    merged.extend(set.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let mut sorted_existing = existing.clone();
    sorted_existing.sort();
    let mut sorted_merged = merged.clone();
    sorted_merged.sort();
    if sorted_existing == sorted_merged {
        return Ok(());
    }
    let build_fault = |e: &dyn std::error::Error| AwsFault {
        operation: "PutObjectTagging",
        kind: FaultKind::Permanent,
        code: "InvalidTag".to_owned(),
        message: error_chain(e),
        http_status: None,
    };
    let tags = merged
        .into_iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| build_fault(&e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tagging = Tagging::builder()
        .set_tag_set(Some(tags))
        .build()
        .map_err(|e| build_fault(&e))?;
    state
        .s3
        .put_object_tagging()
        .bucket(&object.bucket)
        .key(&object.key)
        .set_version_id(object.version_id.clone())
        .tagging(tagging)
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("PutObjectTagging", &e))?;
    Ok(())
}
