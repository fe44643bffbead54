//! Uploading the zip: one PutObject up to [`MULTIPART_THRESHOLD`], a multipart upload (parts of
//! [`PART_SIZE`], a few in flight) above it. The metadata goes on the object either way; a failed multipart
//! upload is aborted so no parts linger.

use std::{collections::HashMap, fs::File, sync::Arc};

use aws_sdk_s3::{
    Client,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    task::JoinSet,
};
use tracing::{info, warn};

use crate::aws::AwsFault;

/// Zips above this size go up in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Size of each part but the last.
pub const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts uploaded concurrently.
const PARTS_IN_FLIGHT: usize = 4;

/// The upload failed; nothing usable is left in the bucket.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Aws(#[from] AwsFault),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("a part upload task failed: {0}")]
    Task(String),
    /// S3 answered the upload grant's PUT with an error ([`super::grant`]).
    #[error("S3 refused the upload grant: HTTP {status} {code}: {message}{}", refused_hint(*status, code))]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The grant's PUT did not complete (connection, TLS, timeout).
    #[error("the upload did not complete: {0}")]
    Transport(String),
}

/// What a refused grant means for the user.
fn refused_hint(status: u16, code: &str) -> &'static str {
    match (status, code) {
        (403, "ExpiredToken") => {
            "; the credentials that signed the grant expired before the job uploaded (the job started too late): \
             run the build again with --force"
        }
        (403, _) => {
            "; the grant expired (the job started too late) or was altered: run the build again with --force"
        }
        (412, _) => {
            "; the artifact already exists and this grant may only create it (If-None-Match): an earlier attempt \
             of this job, or someone else holding its grant, uploaded first; nothing was overwritten, and \
             publish-layer checks what is there"
        }
        _ => "",
    }
}

/// Where the object landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub multipart: bool,
}

/// Uploads the first `size` bytes of `file` (an open file: the builder uploads exactly the zip it wrote, never
/// a path that could since lead elsewhere) to `s3://bucket/key` with `metadata` (S3 user metadata) and content
/// type `application/zip`.
pub async fn upload(
    s3: &Client,
    file: &File,
    size: u64,
    bucket: &str,
    key: &str,
    metadata: HashMap<String, String>,
) -> Result<Uploaded, UploadError> {
    let read_error = |source| UploadError::Read {
        path: format!("the zip of s3://{bucket}/{key}"),
        source,
    };
    if size <= MULTIPART_THRESHOLD {
        // Up to the threshold the zip is read into memory (at most 16 MiB): a body the SDK can send again when
        // it retries, read from the open file at offset 0 whatever its position.
        let mut body = vec![0; size as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut body, 0).map_err(read_error)?;
        let body = ByteStream::from(body);
        let out = s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/zip")
            .set_metadata(Some(metadata))
            .body(body)
            .send()
            .await
            .map_err(|e| AwsFault::from_sdk("PutObject", &e))?;
        return Ok(Uploaded {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: out.version_id().map(str::to_owned),
            multipart: false,
        });
    }

    let created = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/zip")
        .set_metadata(Some(metadata))
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("CreateMultipartUpload", &e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| UploadError::Task("CreateMultipartUpload returned no upload id".to_owned()))?
        .to_owned();
    info!(bucket, key, upload_id, size, "multipart upload started");

    match upload_parts(s3, file, bucket, key, &upload_id).await {
        Ok(parts) => {
            let out = s3
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsFault::from_sdk("CompleteMultipartUpload", &e));
            match out {
                Ok(out) => Ok(Uploaded {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    version_id: out.version_id().map(str::to_owned),
                    multipart: true,
                }),
                Err(e) => {
                    abort(s3, bucket, key, &upload_id).await;
                    Err(e.into())
                }
            }
        }
        Err(e) => {
            abort(s3, bucket, key, &upload_id).await;
            Err(e)
        }
    }
}

/// Reads the file part by part and uploads up to [`PARTS_IN_FLIGHT`] parts at once.
async fn upload_parts(
    s3: &Client,
    file: &File,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Vec<CompletedPart>, UploadError> {
    let read_error = |source| UploadError::Read {
        path: format!("the zip of s3://{bucket}/{key}"),
        source,
    };
    let mut reader = tokio::fs::File::from_std(file.try_clone().map_err(read_error)?);
    reader
        .seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(read_error)?;
    let target = Arc::new((bucket.to_owned(), key.to_owned(), upload_id.to_owned()));
    let mut tasks: JoinSet<Result<CompletedPart, UploadError>> = JoinSet::new();
    let mut parts = Vec::new();
    let mut number = 0i32;
    loop {
        let mut chunk = Vec::with_capacity(PART_SIZE);
        (&mut reader)
            .take(PART_SIZE as u64)
            .read_to_end(&mut chunk)
            .await
            .map_err(read_error)?;
        if chunk.is_empty() {
            break;
        }
        number += 1;
        if tasks.len() >= PARTS_IN_FLIGHT {
            parts.push(join_next(&mut tasks).await?);
        }
        let (s3, target) = (s3.clone(), Arc::clone(&target));
        tasks.spawn(async move {
            let (bucket, key, upload_id) = &*target;
            let out = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| AwsFault::from_sdk("UploadPart", &e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build())
        });
    }
    while !tasks.is_empty() {
        parts.push(join_next(&mut tasks).await?);
    }
    parts.sort_by_key(|p| p.part_number());
    Ok(parts)
}

async fn join_next(
    tasks: &mut JoinSet<Result<CompletedPart, UploadError>>,
) -> Result<CompletedPart, UploadError> {
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(UploadError::Task(e.to_string())),
        None => Err(UploadError::Task("no part upload was running".to_owned())),
    }
}

async fn abort(s3: &Client, bucket: &str, key: &str, upload_id: &str) {
    if let Err(e) = s3
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        let fault = AwsFault::from_sdk("AbortMultipartUpload", &e);
        warn!(bucket, key, upload_id, error = %fault, "could not abort the multipart upload");
    }
}
