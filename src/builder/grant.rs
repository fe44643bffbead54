//! Uploading with a grant ([`crate::grant`]): one HTTP PUT of the presigned URL with exactly the grant's headers,
//! the body streamed from a file the caller already opened. No AWS credential and no SDK configuration are
//! involved: the job has neither.
//!
//! One PUT takes up to 5 GB (Amazon S3 User Guide, "Uploading objects": "upload a single object of up to 5 GB"),
//! far above any layer zip (Lambda's 250 MB unzipped limit), so there is no multipart path. A 5xx, a throttling
//! answer or a broken connection is retried a few times from the start of the file; a 4xx is final. A 403 says
//! the grant's time or its signer's credentials ran out (see the module docs of [`crate::grant`]).

use std::{
    io::{Seek, SeekFrom},
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};
use tracing::{info, warn};

use super::upload::{UploadError, Uploaded};
use crate::grant::{ARTIFACT_GRANT_ENV, Grant, GrantError, Grants, REPORT_GRANT_ENV};

/// Attempts of one upload (the first and two retries).
const ATTEMPTS: u32 = 3;
/// Bytes read from the file per body frame.
const CHUNK: usize = 256 * 1024;
/// No single attempt runs longer (a layer zip is at most a few hundred MB).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// PUTs `size` bytes of `file` (from its start) as `grant` says, into `s3://bucket/key` (which the caller checked
/// against the grant with [`Grant::check_target`]).
pub async fn put_with_grant(
    grant: &Grant,
    file: std::fs::File,
    size: u64,
    bucket: &str,
    key: &str,
) -> Result<Uploaded, UploadError> {
    let version_id = put(grant, size, || {
        let mut body_file = file.try_clone().map_err(read_error)?;
        body_file.seek(SeekFrom::Start(0)).map_err(read_error)?;
        Ok(FileBody::new(tokio::fs::File::from_std(body_file), size))
    })
    .await?;
    info!(bucket, key, size, "uploaded with the upload grant");
    Ok(Uploaded {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        version_id,
        multipart: false,
    })
}

/// PUTs `bytes` (a failure report) as `grant` says.
pub async fn put_bytes_with_grant(grant: &Grant, bytes: Bytes) -> Result<(), UploadError> {
    let size = bytes.len() as u64;
    put(grant, size, || Ok(http_body_util::Full::new(bytes.clone()))).await?;
    Ok(())
}

/// Grants from the job's environment: both or neither ([`ARTIFACT_GRANT_ENV`], [`REPORT_GRANT_ENV`]).
pub fn grants_from_env() -> Result<Option<Grants>, GrantError> {
    let artifact = Grant::from_env(ARTIFACT_GRANT_ENV)?;
    let report = Grant::from_env(REPORT_GRANT_ENV)?;
    match (artifact, report) {
        (Some(artifact), Some(report)) => Ok(Some(Grants { artifact, report })),
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(GrantError::Malformed {
            var: if std::env::var_os(ARTIFACT_GRANT_ENV).is_some() {
                REPORT_GRANT_ENV
            } else {
                ARTIFACT_GRANT_ENV
            },
            reason: "missing: the artifact and the report grant come together".to_owned(),
        }),
    }
}

/// Sends the grant's request with bodies from `body` until it succeeds, fails for good, or [`ATTEMPTS`] ran out.
async fn put<B>(
    grant: &Grant,
    size: u64,
    mut body: impl FnMut() -> Result<B, UploadError>,
) -> Result<Option<String>, UploadError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| UploadError::Transport(format!("no TLS root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match body() {
            Ok(body) => tokio::time::timeout(ATTEMPT_TIMEOUT, put_once(&client, grant, body, size))
                .await
                .unwrap_or_else(|_| {
                    Err(UploadError::Transport(format!(
                        "no answer within {} s",
                        ATTEMPT_TIMEOUT.as_secs()
                    )))
                }),
            Err(e) => return Err(e),
        };
        match result {
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                warn!(attempt, error = %e, "upload attempt failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
            }
            other => return other,
        }
    }
}

/// One PUT; the object's version id (`x-amz-version-id`) when the bucket keeps versions.
async fn put_once<B>(
    client: &hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        B,
    >,
    grant: &Grant,
    body: B,
    size: u64,
) -> Result<Option<String>, UploadError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut request = hyper::Request::builder()
        .method(grant.method.as_str())
        .uri(grant.url.as_str());
    for (name, value) in &grant.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .header(hyper::header::CONTENT_LENGTH, size)
        .body(body)
        .map_err(|e| UploadError::Transport(format!("building the request: {e}")))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| UploadError::Transport(crate::aws::error_chain(&e)))?;
    let status = response.status();
    let version_id = response
        .headers()
        .get("x-amz-version-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status.is_success() {
        return Ok(version_id);
    }
    let text = String::from_utf8_lossy(&body);
    Err(UploadError::Refused {
        status: status.as_u16(),
        code: xml_field(&text, "Code").unwrap_or_default(),
        message: xml_field(&text, "Message").unwrap_or_else(|| format!("{text:.300}")),
    })
}

fn read_error(source: std::io::Error) -> UploadError {
    UploadError::Read {
        path: "the zip".to_owned(),
        source,
    }
}

/// 5xx, throttling and broken connections; never a 4xx (a refused grant stays refused).
fn retryable(err: &UploadError) -> bool {
    match err {
        UploadError::Refused { status, code, .. } => {
            *status >= 500 || *status == 429 || code == "SlowDown" || code == "RequestTimeout"
        }
        UploadError::Transport(_) => true,
        _ => false,
    }
}

/// The text of `<name>…</name>` in an S3 error document.
fn xml_field(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].to_owned())
}

/// A request body of exactly `remaining` bytes read from a file; a file that ends early fails the request
/// (S3 would otherwise wait for the promised bytes).
pub struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buffer: Box<[u8]>,
}

impl FileBody {
    pub fn new(file: tokio::fs::File, size: u64) -> Self {
        Self {
            file,
            remaining: size,
            buffer: vec![0; CHUNK].into_boxed_slice(),
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = this
            .buffer
            .len()
            .min(usize::try_from(this.remaining).unwrap_or(usize::MAX));
        let mut read = ReadBuf::new(&mut this.buffer[..want]);
        ready!(Pin::new(&mut this.file).poll_read(cx, &mut read))?;
        let filled = read.filled();
        if filled.is_empty() {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the zip ended {} bytes early", this.remaining),
            ))));
        }
        this.remaining -= filled.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(filled)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_documents_are_read() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>";
        assert_eq!(xml_field(xml, "Code").as_deref(), Some("ExpiredToken"));
        assert_eq!(
            xml_field(xml, "Message").as_deref(),
            Some("The provided token has expired.")
        );
        assert_eq!(xml_field("not xml", "Code"), None);
    }

    #[test]
    fn only_server_faults_are_retried() {
        let refused = |status: u16, code: &str| UploadError::Refused {
            status,
            code: code.to_owned(),
            message: String::new(),
        };
        assert!(retryable(&refused(503, "SlowDown")));
        assert!(retryable(&refused(500, "InternalError")));
        assert!(retryable(&UploadError::Transport("reset".into())));
        assert!(!retryable(&refused(403, "ExpiredToken")));
        assert!(!retryable(&refused(403, "SignatureDoesNotMatch")));
    }

    #[tokio::test]
    async fn the_body_is_exactly_the_promised_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z");
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let open = || tokio::fs::File::from_std(std::fs::File::open(&path).unwrap());

        let body = FileBody::new(open(), data.len() as u64);
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.as_ref(), data.as_slice());

        let short = FileBody::new(open(), 10)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(short.as_ref(), &data[..10], "no more than promised");

        let err = FileBody::new(open(), data.len() as u64 + 1)
            .collect()
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof,
            "a file that ends early fails"
        );
    }
}
