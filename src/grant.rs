//! Upload grants: the only write a build job can make (DESIGN section 16).
//!
//! The job holds no AWS credential. submit-build presigns two S3 PUTs with its own (Lambda role) credentials,
//! one for the artifact key (content type `application/zip`, the artifact metadata of DESIGN section 5 signed
//! in as `x-amz-meta-*` headers) and one for the failure report key (`application/json`), and hands them to the
//! job in `containerOverrides.environment` ([`ARTIFACT_GRANT_ENV`], [`REPORT_GRANT_ENV`]), never in the command:
//! the build user can read the root builder's `/proc/PID/cmdline` (world-readable) but not its
//! `/proc/PID/environ`, and the install sandbox passes no `LAYERFORGE_*` variable to the installer.
//!
//! A grant is `{url, method, headers, expires_at}`: an HTTP request that must be sent with exactly these
//! headers (each is in the signature's `X-Amz-SignedHeaders`, so S3 refuses the request if one is changed,
//! dropped or added under `x-amz-meta-`), until `expires_at` (Unix seconds). A stolen grant writes one key with
//! the metadata submit-build chose, and nothing else; the bytes are the only thing it leaves open, and
//! publish-layer takes a zip's identity from its bytes.
//!
//! # How long a grant lives
//!
//! A presigned request is valid for `X-Amz-Expires` seconds after `X-Amz-Date`, at most 7 days with SigV4
//! ([`MAX_GRANT`]), *and only while the credentials that signed it are*: "If you created a presigned URL using a
//! temporary token, then the URL expires when the token expires ... even if the URL was created with a later
//! expiration time" (<https://repost.aws/knowledge-center/presigned-url-s3-bucket-expiration>); "IAM role
//! credentials – The presigned URL expires when the role session expires, even if you specify a longer
//! expiration time" (Amazon S3 User Guide, "Expiration time for presigned URLs",
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html#PresignedUrl-Expiration>;
//! aws-sdk-s3's `PresigningConfig::expires_in` says the same: "Credential expiration time takes priority").
//! submit-build signs with its execution role's temporary credentials, which Lambda sets in the function's
//! environment (`AWS_SESSION_TOKEN`, <https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html>).
//! AWS documents no fixed lifetime for them: the same knowledge-center article warns that "services that
//! assume a role, such as the AWS Lambda execution role, don't necessarily comply with the role's session
//! duration settings", and the function is not told when they end. Reports of Lambda-signed URLs dying after
//! about 12 hours (boto/boto3#2392) are observations, not a contract. So a grant's real end is the earlier of
//! `expires_at` and the end of the signer's session, and only the first is known.
//!
//! # A job that starts too late
//!
//! - Past `expires_at` (or the URL's `X-Amz-Date` + `X-Amz-Expires`): layer-builder refuses before installing
//!   anything, exit code 5 (upload), naming the expiry ([`Grant::check_fresh`]). Its failure report can't be
//!   written either (the report grant has the same lifetime), so build-status reports the failure from Batch:
//!   the container's exit code 5 and the job log's last lines, which carry the message.
//! - Within `expires_at` but after the signer's session ended: S3 answers 403 (`ExpiredToken`) at upload time;
//!   layer-builder exits 5 with a message saying the grant's credentials expired. Nothing was written.
//! - Either way the user runs the build again with `--force` (`force: true`), which signs fresh grants.
//!
//! submit-build's grant lifetime is `UPLOAD_GRANT_SECONDS` (see [`crate::config::Config::upload_grant`]).

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// The variable holding the artifact's grant (JSON) in the job's environment.
pub const ARTIFACT_GRANT_ENV: &str = "LAYERFORGE_ARTIFACT_GRANT";
/// The variable holding the failure report's grant (JSON) in the job's environment.
pub const REPORT_GRANT_ENV: &str = "LAYERFORGE_REPORT_GRANT";
/// SigV4's limit on a presigned request's lifetime (`X-Amz-Expires` at most 604800 seconds).
/// Source: Amazon S3 API Reference, "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)",
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>.
pub const MAX_GRANT: Duration = Duration::from_secs(604_800);

/// A presigned HTTP request: send `method` to `url` with exactly `headers`, before `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub url: String,
    pub method: String,
    /// Sent verbatim; every one is signed.
    pub headers: BTreeMap<String, String>,
    /// Unix seconds; the URL's own `X-Amz-Date` + `X-Amz-Expires` is checked too.
    pub expires_at: u64,
}

/// Why a grant can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The variable is not a grant (bad JSON, not a PUT, a URL without a path).
    #[error("{var}: not an upload grant: {reason}")]
    Malformed { var: &'static str, reason: String },
    /// The grant writes somewhere else than `--bucket`/`--key` say.
    #[error("{var}: the grant writes {found}, not s3://{bucket}/{key}; refused")]
    WrongTarget {
        var: &'static str,
        found: String,
        bucket: String,
        key: String,
    },
    /// The grant's lifetime is over: the job started too late.
    #[error(
        "{var}: the upload grant expired at {expired_at} (Unix seconds; now {now}), {} s ago: the job started too \
         late to upload; nothing was installed. Run the build again with --force (force: true) for fresh grants",
        now.saturating_sub(*expired_at)
    )]
    Expired {
        var: &'static str,
        expired_at: u64,
        now: u64,
    },
}

impl Grant {
    /// Reads a grant from its variable's JSON.
    pub fn parse(var: &'static str, json: &str) -> Result<Self, GrantError> {
        let malformed = |reason: String| GrantError::Malformed { var, reason };
        let grant: Grant = serde_json::from_str(json).map_err(|e| malformed(e.to_string()))?;
        if grant.method != "PUT" {
            return Err(malformed(format!("method {:?}, not PUT", grant.method)));
        }
        let uri: hyper::Uri = grant
            .url
            .parse()
            .map_err(|e| malformed(format!("url: {e}")))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            return Err(malformed("url: not an http(s) URL with a host".to_owned()));
        }
        Ok(grant)
    }

    /// Reads the grant in `var` of the process environment; `None` when unset or empty.
    pub fn from_env(var: &'static str) -> Result<Option<Self>, GrantError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Self::parse(var, &v).map(Some),
            Ok(_) => Ok(None),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(GrantError::Malformed {
                var,
                reason: "not UTF-8".to_owned(),
            }),
        }
    }

    /// The JSON put in the job's environment.
    pub fn to_json(&self) -> String {
        // A struct of strings and a number always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// When the grant ends, as far as the job can know: the earlier of `expires_at` and the URL's
    /// `X-Amz-Date` + `X-Amz-Expires` (the signer's session may end earlier still; see the module docs).
    pub fn expires_at(&self) -> u64 {
        match self.url_expiry() {
            Some(url) => url.min(self.expires_at),
            None => self.expires_at,
        }
    }

    /// `X-Amz-Date` + `X-Amz-Expires` of a SigV4 presigned URL.
    pub fn url_expiry(&self) -> Option<u64> {
        let date = self.query("X-Amz-Date")?;
        let expires: u64 = self.query("X-Amz-Expires")?.parse().ok()?;
        Some(parse_amz_date(&date)? + expires)
    }

    /// Refuses a grant that ends before `now` + `margin` (a grant that expires during the upload fails it).
    pub fn check_fresh(
        &self,
        var: &'static str,
        now: SystemTime,
        margin: Duration,
    ) -> Result<(), GrantError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expired_at = self.expires_at();
        if now + margin.as_secs() >= expired_at {
            return Err(GrantError::Expired {
                var,
                expired_at,
                now,
            });
        }
        Ok(())
    }

    /// The `s3://bucket/key` the URL writes: path-style (`/bucket/key`, as against moto or with
    /// `force_path_style`) when `bucket` is the first path segment, virtual-hosted (`bucket.s3….amazonaws.com/key`)
    /// when the host starts with `bucket.`.
    pub fn target(&self, bucket: &str) -> Option<String> {
        let uri: hyper::Uri = self.url.parse().ok()?;
        let path = percent_encoding::percent_decode_str(uri.path())
            .decode_utf8()
            .ok()?;
        let path = path.strip_prefix('/')?;
        let host = uri.host()?;
        if host.starts_with(&format!("{bucket}.")) {
            return Some(format!("s3://{bucket}/{path}"));
        }
        let (first, key) = path.split_once('/')?;
        Some(format!("s3://{first}/{key}"))
    }

    /// Refuses a grant that doesn't write exactly `s3://bucket/key`.
    pub fn check_target(
        &self,
        var: &'static str,
        bucket: &str,
        key: &str,
    ) -> Result<(), GrantError> {
        let expected = format!("s3://{bucket}/{key}");
        match self.target(bucket) {
            Some(found) if found == expected => Ok(()),
            found => Err(GrantError::WrongTarget {
                var,
                found: found.unwrap_or_else(|| self.url.clone()),
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
        }
    }

    /// A query parameter of the URL, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.url.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }

    /// The header names in the signature (`X-Amz-SignedHeaders`), lowercase.
    pub fn signed_headers(&self) -> Vec<String> {
        self.query("X-Amz-SignedHeaders")
            .map(|h| h.split(';').map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

/// `YYYYMMDDTHHMMSSZ` (SigV4's `X-Amz-Date`) to Unix seconds.
pub fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What submit-build signs for one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub artifact: Grant,
    pub report: Grant,
}

impl Grants {
    /// The job's environment: `(name, JSON)` of both grants.
    pub fn environment(&self) -> Vec<(String, String)> {
        vec![
            (ARTIFACT_GRANT_ENV.to_owned(), self.artifact.to_json()),
            (REPORT_GRANT_ENV.to_owned(), self.report.to_json()),
        ]
    }
}

/// Presigning failed (no credentials, a lifetime over [`MAX_GRANT`]); nothing was sent anywhere.
#[derive(Debug, thiserror::Error)]
#[error("presigning the PUT of s3://{bucket}/{key} failed: {reason}")]
pub struct PresignError {
    pub bucket: String,
    pub key: String,
    pub reason: String,
}

/// The PUT a grant allows.
#[derive(Debug, Clone)]
pub struct Put<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub content_type: &'a str,
    /// S3 user metadata, signed in as `x-amz-meta-*` headers.
    pub metadata: std::collections::HashMap<String, String>,
    /// Create only (`If-None-Match: *`): a second PUT with the grant gets 412.
    pub only_new: bool,
}

/// Presigns the PUT of `s3://bucket/key` with `content_type` and user `metadata` (signed in as
/// `x-amz-meta-*`), valid for `lifetime` from `now`. No payload hash is signed (`UNSIGNED-PAYLOAD`): the bytes
/// are the job's, and publish-layer computes their digest.
pub async fn presign_put(
    s3: &aws_sdk_s3::Client,
    put: Put<'_>,
    now: SystemTime,
    lifetime: Duration,
) -> Result<Grant, PresignError> {
    let Put {
        bucket,
        key,
        content_type,
        metadata,
        only_new,
    } = put;
    let fail = |reason: String| PresignError {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let config = aws_sdk_s3::presigning::PresigningConfig::builder()
        .start_time(now)
        .expires_in(lifetime)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut request = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type);
    if !metadata.is_empty() {
        request = request.set_metadata(Some(metadata));
    }
    if only_new {
        // S3's conditional write: with `If-None-Match: *` signed in, the grant creates the object once and gets
        // 412 for any later PUT, so a grant seen by someone else can't be replayed over what the job uploaded.
        request = request.if_none_match("*");
    }
    let presigned = request
        .presigned(config)
        .await
        .map_err(|e| fail(crate::aws::error_chain(&e)))?;
    let started = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(Grant {
        url: presigned.uri().to_owned(),
        method: presigned.method().to_owned(),
        headers: presigned
            .headers()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect(),
        expires_at: (started + lifetime).as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(url: &str) -> Grant {
        Grant {
            url: url.to_owned(),
            method: "PUT".to_owned(),
            headers: BTreeMap::new(),
            expires_at: 2_000_000_000,
        }
    }

    #[test]
    fn amz_dates_are_utc_seconds() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20231114T221320Z"), Some(1_700_000_000));
        assert_eq!(parse_amz_date("20000229T000000Z"), Some(951_782_400));
        for bad in [
            "",
            "20231114221320Z",
            "20231114T221320",
            "2023111AT221320Z",
            "20231314T000000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn expiry_is_the_earlier_of_the_url_and_expires_at() {
        let url = "https://b.s3.us-east-1.amazonaws.com/k.zip?X-Amz-Date=20231114T221320Z&X-Amz-Expires=600&x-id=PutObject";
        let mut g = grant(url);
        assert_eq!(g.url_expiry(), Some(1_700_000_600));
        assert_eq!(g.expires_at(), 1_700_000_600, "the URL ends first");
        g.expires_at = 1_700_000_100;
        assert_eq!(g.expires_at(), 1_700_000_100, "expires_at ends first");

        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(
            g.check_fresh("V", at(1_700_000_000), Duration::from_secs(60)),
            Ok(())
        );
        let err = g
            .check_fresh("V", at(1_700_000_050), Duration::from_secs(60))
            .unwrap_err();
        assert_eq!(
            err,
            GrantError::Expired {
                var: "V",
                expired_at: 1_700_000_100,
                now: 1_700_000_050
            },
            "a grant that would expire within the margin is refused"
        );
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(
            g.check_fresh("V", at(1_800_000_000), Duration::ZERO)
                .is_err()
        );
    }

    #[test]
    fn the_target_is_read_from_both_url_styles() {
        let path_style = grant(
            "http://127.0.0.1:5000/artifacts/layers/a/python3.12-arm64/0123456789abcdef.zip?x-id=PutObject",
        );
        assert_eq!(
            path_style.check_target(
                "V",
                "artifacts",
                "layers/a/python3.12-arm64/0123456789abcdef.zip"
            ),
            Ok(())
        );
        let hosted = grant(
            "https://artifacts.s3.us-east-1.amazonaws.com/.layerforge/reports/layers/a.zip.json?X-Amz-Expires=1",
        );
        assert_eq!(
            hosted.check_target("V", "artifacts", ".layerforge/reports/layers/a.zip.json"),
            Ok(())
        );
        let encoded = grant("http://h/artifacts/layers/a%20b.zip");
        assert_eq!(
            encoded.target("artifacts").as_deref(),
            Some("s3://artifacts/layers/a b.zip")
        );

        let err = path_style
            .check_target(
                "V",
                "artifacts",
                "layers/other/python3.12-arm64/0123456789abcdef.zip",
            )
            .unwrap_err();
        assert!(matches!(err, GrantError::WrongTarget { .. }), "{err:?}");
        assert!(
            path_style
                .check_target(
                    "V",
                    "other-bucket",
                    "layers/a/python3.12-arm64/0123456789abcdef.zip"
                )
                .is_err(),
            "another bucket"
        );
        assert!(
            hosted
                .check_target("V", "artifacts", ".layerforge/reports/layers/a.zip")
                .is_err(),
            "a prefix of the key is not the key"
        );
    }

    #[test]
    fn only_put_grants_with_an_http_url_parse() {
        let ok = grant("https://b.s3.amazonaws.com/k").to_json();
        assert_eq!(
            Grant::parse("V", &ok).unwrap().url,
            "https://b.s3.amazonaws.com/k"
        );
        let get = ok.replace("\"PUT\"", "\"GET\"");
        assert!(matches!(
            Grant::parse("V", &get),
            Err(GrantError::Malformed { .. })
        ));
        let file = grant("file:///etc/passwd").to_json();
        assert!(Grant::parse("V", &file).is_err());
        assert!(Grant::parse("V", "{\"url\":1}").is_err());
        let extra = ok.replace("{", "{\"x\":1,");
        assert!(
            Grant::parse("V", &extra).is_err(),
            "unknown fields are refused"
        );
    }

    /// A client with fixed credentials: presigning needs no network.
    fn s3(path_style: bool) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                Some("session-token".to_owned()),
                None,
                "test",
            ))
            .force_path_style(path_style)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    #[tokio::test]
    async fn a_presigned_put_signs_the_key_the_type_and_every_metadata_header() {
        let key = "layers/http-clients/python3.12-arm64/0123456789abcdef.zip";
        let metadata = std::collections::HashMap::from([
            ("layer-name".to_owned(), "http-clients".to_owned()),
            ("fingerprint".to_owned(), "0123456789abcdef".to_owned()),
            ("requirements".to_owned(), "requests==2.32.3|six".to_owned()),
        ]);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for path_style in [true, false] {
            let g = presign_put(
                &s3(path_style),
                Put {
                    bucket: "artifacts",
                    key,
                    content_type: "application/zip",
                    metadata: metadata.clone(),
                    only_new: true,
                },
                now,
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
            assert_eq!(g.method, "PUT");
            let uri: hyper::Uri = g.url.parse().unwrap();
            if path_style {
                assert_eq!(uri.path(), format!("/artifacts/{key}"), "exactly the key");
            } else {
                assert_eq!(uri.host(), Some("artifacts.s3.us-east-1.amazonaws.com"));
                assert_eq!(uri.path(), format!("/{key}"), "exactly the key");
            }
            assert_eq!(g.check_target("V", "artifacts", key), Ok(()));
            assert_eq!(g.expires_at, 1_700_003_600);
            assert_eq!(g.url_expiry(), Some(1_700_003_600));
            assert_eq!(
                g.query("X-Amz-Security-Token").as_deref(),
                Some("session-token")
            );

            let signed = g.signed_headers();
            for name in [
                "content-type",
                "x-amz-meta-layer-name",
                "x-amz-meta-fingerprint",
                "x-amz-meta-requirements",
                "if-none-match",
                "host",
            ] {
                assert!(
                    signed.iter().any(|s| s == name),
                    "{name} is signed: {signed:?}"
                );
            }
            // Every header the job must send is in the signature, and every metadata header is sent.
            for name in g.headers.keys() {
                assert!(
                    signed.contains(name),
                    "{name} is sent but not signed: {signed:?}"
                );
            }
            assert_eq!(
                g.headers.get("content-type").map(String::as_str),
                Some("application/zip")
            );
            assert_eq!(
                g.headers.get("x-amz-meta-requirements").map(String::as_str),
                Some("requests==2.32.3|six")
            );
            assert_eq!(
                g.headers
                    .keys()
                    .filter(|k| k.starts_with("x-amz-meta-"))
                    .count(),
                metadata.len()
            );
            assert_eq!(
                Grant::parse("V", &g.to_json()).unwrap(),
                g,
                "the JSON round-trips"
            );
        }
    }

    #[tokio::test]
    async fn a_lifetime_over_seven_days_is_refused() {
        let err = presign_put(
            &s3(true),
            Put {
                bucket: "artifacts",
                key: "k",
                content_type: "application/json",
                metadata: Default::default(),
                only_new: false,
            },
            SystemTime::now(),
            MAX_GRANT + Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(err.key, "k");
    }
}
