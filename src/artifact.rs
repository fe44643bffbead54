//! The contract between the builder and the publisher: fingerprint, S3 key scheme and zip metadata
//! (DESIGN sections 2 and 5).

use std::{collections::HashMap, fmt};

use sha2::{Digest, Sha256};

use crate::request::{
    Architecture, Installer, LayerName, LayerOptions, Requirements, Runtime, Targets,
};

/// The tag publish-layer puts on a published zip (the layer version's ARN); submit-build reads it for `cached`,
/// build-status for `published`.
pub const LAYER_VERSION_ARN_TAG: &str = "layer-version-arn";
/// Tag on a rejected zip: `rejected`.
pub const STATUS_TAG: &str = "layerforge-status";
/// Tag on a rejected zip: the rejection's short code.
pub const REASON_TAG: &str = "layerforge-reason";

/// Bumped whenever the builder's output for the same input changes (layout, zip format) or the canonical form
/// below does, so that old artifacts are not taken for new ones. 2: the installer joined the canonical form and
/// the zip's deflate changed (libdeflate: the same content in other bytes).
/// 3: bytecode (on by default) and slim joined it.
pub const FORMAT_VERSION: u32 = 3;

/// S3 limits user metadata to 2 KB (keys and values, UTF-8 bytes) per object.
pub const METADATA_LIMIT_BYTES: usize = 2048;

/// sha256 over the canonical requirement lines, runtime, architecture, installer, [`LayerOptions`] and
/// [`FORMAT_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn compute(
        requirements: &Requirements,
        runtime: Runtime,
        architecture: Architecture,
        installer: Installer,
        options: LayerOptions,
    ) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(format!("layerforge-fingerprint\nformat={FORMAT_VERSION}\n"));
        hasher.update(format!("runtime={runtime}\narchitecture={architecture}\n"));
        hasher.update(format!("installer={installer}\n"));
        hasher.update(format!(
            "bytecode={}\nslim={}\n",
            options.bytecode, options.slim
        ));
        for line in requirements.lines() {
            hasher.update("requirement=");
            hasher.update(&line.canonical);
            hasher.update("\n");
        }
        Self(hex::encode(hasher.finalize()))
    }

    /// The fingerprint of a matrix's universal version (DESIGN section 15): this one (of the pair it is built
    /// on) and every runtime and architecture it is published for. A single-target build's is unchanged.
    pub fn universal(self, targets: Option<&Targets>) -> Self {
        let Some(targets) = targets else { return self };
        let mut hasher = Sha256::new();
        hasher.update(format!("layerforge-universal\n{}\n{targets}\n", self.0));
        Self(hex::encode(hasher.finalize()))
    }

    /// The full 64 hex digits.
    pub fn full(&self) -> &str {
        &self.0
    }

    /// The first 16 hex digits: the artifact key's file name and the `fingerprint` metadata.
    pub fn short(&self) -> &str {
        &self.0[..16]
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// `PREFIX/NAME/RUNTIME-ARCH/FINGERPRINT.zip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactKey {
    pub prefix: String,
    pub layer_name: String,
    pub runtime: Runtime,
    pub architecture: Architecture,
    /// The 16-hex-digit short fingerprint.
    pub fingerprint: String,
}

impl ArtifactKey {
    pub fn new(
        prefix: &str,
        layer_name: &LayerName,
        runtime: Runtime,
        architecture: Architecture,
        fingerprint: &Fingerprint,
    ) -> Self {
        Self {
            prefix: prefix.trim_matches('/').to_owned(),
            layer_name: layer_name.as_str().to_owned(),
            runtime,
            architecture,
            fingerprint: fingerprint.short().to_owned(),
        }
    }

    /// Reads a key of this scheme back; `None` for any other key.
    pub fn parse(prefix: &str, key: &str) -> Option<Self> {
        let prefix = prefix.trim_matches('/');
        let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let (name, target, file) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let layer_name = LayerName::parse(name).ok()?;
        let (runtime, architecture) = target.split_once('-')?;
        let fingerprint = file.strip_suffix(".zip")?;
        if fingerprint.len() != 16 || !fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Some(Self {
            prefix: prefix.to_owned(),
            layer_name: layer_name.as_str().to_owned(),
            runtime: runtime.parse().ok()?,
            architecture: architecture.parse().ok()?,
            fingerprint: fingerprint.to_owned(),
        })
    }

    pub fn s3_uri(&self, bucket: &str) -> String {
        format!("s3://{bucket}/{self}")
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}-{}/{}.zip",
            self.prefix, self.layer_name, self.runtime, self.architecture, self.fingerprint
        )
    }
}

/// Metadata keys (S3 user metadata, without the `x-amz-meta-` prefix).
pub mod keys {
    // The original tool's keys, kept so that its zips publish too.
    pub const LAYER_NAME: &str = "layer-name";
    pub const REQUIREMENTS: &str = "requirements";
    pub const LICENSE_INFO: &str = "license-info";
    pub const PYTHON_VERSION: &str = "python-version";
    pub const COMPATIBLE_RUNTIMES: &str = "compatible-runtimes";
    pub const COMPATIBLE_ARCHITECTURES: &str = "compatible-architectures";
    pub const CREATE_DATE: &str = "create-date";
    // layerforge's additions.
    pub const FINGERPRINT: &str = "fingerprint";
    pub const CONTENT_SHA256: &str = "content-sha256";
    pub const DESCRIPTION: &str = "description";
    pub const BUILDER_VERSION: &str = "builder-version";

    /// Every key, in the order they are written.
    pub const ALL: &[&str] = &[
        LAYER_NAME,
        REQUIREMENTS,
        LICENSE_INFO,
        PYTHON_VERSION,
        COMPATIBLE_RUNTIMES,
        COMPATIBLE_ARCHITECTURES,
        CREATE_DATE,
        FINGERPRINT,
        CONTENT_SHA256,
        DESCRIPTION,
        BUILDER_VERSION,
    ];
}

/// The metadata a layer zip carries (DESIGN section 5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArtifactMetadata {
    pub layer_name: String,
    /// Requirement lines joined with `|` (the original tool's form).
    pub requirements: String,
    pub license: Option<String>,
    /// The interpreter version the layer was built for or with, e.g. `3.12` or `3.12.7`.
    pub python_version: String,
    pub compatible_runtimes: Vec<Runtime>,
    pub compatible_architectures: Vec<Architecture>,
    /// `YYYYmmddHHMMSSmmm`, UTC, as the original tool wrote it.
    pub create_date: String,
    pub fingerprint: Option<String>,
    /// base64 of the raw sha256 of the zip (the form of Lambda's CodeSha256).
    pub content_sha256: Option<String>,
    pub description: Option<String>,
    pub builder_version: Option<String>,
}

/// Metadata that can't describe a layer: names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata {key}: {reason}")]
pub struct MetadataError {
    pub key: &'static str,
    pub reason: String,
}

impl ArtifactMetadata {
    /// Renders the S3 user metadata, truncating the free-text values (requirements first, then description
    /// and license) so that the whole stays within [`METADATA_LIMIT_BYTES`]. Values are ASCII: other
    /// characters are percent-encoded, as S3 only carries US-ASCII in headers.
    pub fn to_s3_metadata(&self) -> HashMap<String, String> {
        let join = |items: Vec<&str>| items.join(",");
        let mut fixed: Vec<(&str, String)> = vec![
            (keys::LAYER_NAME, ascii(&self.layer_name)),
            (keys::PYTHON_VERSION, ascii(&self.python_version)),
            (
                keys::COMPATIBLE_RUNTIMES,
                join(
                    self.compatible_runtimes
                        .iter()
                        .map(|r| r.as_str())
                        .collect(),
                ),
            ),
            (
                keys::COMPATIBLE_ARCHITECTURES,
                join(
                    self.compatible_architectures
                        .iter()
                        .map(|a| a.as_str())
                        .collect(),
                ),
            ),
            (keys::CREATE_DATE, ascii(&self.create_date)),
        ];
        for (key, value) in [
            (keys::FINGERPRINT, &self.fingerprint),
            (keys::CONTENT_SHA256, &self.content_sha256),
            (keys::BUILDER_VERSION, &self.builder_version),
        ] {
            if let Some(v) = value {
                fixed.push((key, ascii(v)));
            }
        }
        let mut used: usize = fixed.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut out: HashMap<String, String> =
            fixed.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();

        // Free text, smallest budget first so that the requirements get what is left.
        let mut free: Vec<(&str, String)> = Vec::new();
        if let Some(d) = &self.description {
            free.push((keys::DESCRIPTION, ascii(d)));
        }
        free.push((
            keys::LICENSE_INFO,
            ascii(self.license.as_deref().unwrap_or("")),
        ));
        free.push((keys::REQUIREMENTS, ascii(&self.requirements)));
        let remaining_keys: usize = free.iter().map(|(k, _)| k.len()).sum();
        used += remaining_keys;
        for (i, (key, value)) in free.iter().enumerate() {
            // An even share of what is left; short values leave the rest to the later, larger ones.
            let share = METADATA_LIMIT_BYTES.saturating_sub(used) / (free.len() - i);
            let value = truncate_ascii(value, share);
            used += value.len();
            out.insert((*key).to_owned(), value);
        }
        out
    }

    /// Reads metadata written by layerforge or by the original `PublishPythonLambdaLayer.sh`.
    pub fn from_s3_metadata(map: &HashMap<String, String>) -> Result<Self, MetadataError> {
        let get = |key: &'static str| {
            map.get(key)
                .map(|v| unescape(v.trim()))
                .filter(|v| !v.is_empty())
        };
        let require = |key: &'static str| {
            get(key).ok_or_else(|| MetadataError {
                key,
                reason: "missing".to_owned(),
            })
        };

        let layer_name = require(keys::LAYER_NAME)?;
        LayerName::parse(&layer_name).map_err(|reason| MetadataError {
            key: keys::LAYER_NAME,
            reason,
        })?;
        let compatible_runtimes = split_list(&require(keys::COMPATIBLE_RUNTIMES)?)
            .map(|r| r.parse::<Runtime>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| MetadataError {
                key: keys::COMPATIBLE_RUNTIMES,
                reason,
            })?;
        if compatible_runtimes.is_empty() {
            return Err(MetadataError {
                key: keys::COMPATIBLE_RUNTIMES,
                reason: "names no runtime".to_owned(),
            });
        }
        let compatible_architectures = match get(keys::COMPATIBLE_ARCHITECTURES) {
            Some(v) => split_list(&v)
                .map(|a| match a {
                    // The original tool wrote `uname -m`, which is `x86_64` or `aarch64` (mapped to arm64).
                    "aarch64" => Ok(Architecture::Arm64),
                    other => other.parse::<Architecture>(),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| MetadataError {
                    key: keys::COMPATIBLE_ARCHITECTURES,
                    reason,
                })?,
            None => Vec::new(),
        };
        Ok(Self {
            layer_name,
            requirements: get(keys::REQUIREMENTS).unwrap_or_default(),
            license: get(keys::LICENSE_INFO),
            python_version: get(keys::PYTHON_VERSION)
                .unwrap_or_else(|| compatible_runtimes[0].python_version().to_owned()),
            compatible_runtimes,
            compatible_architectures,
            create_date: get(keys::CREATE_DATE).unwrap_or_default(),
            fingerprint: get(keys::FINGERPRINT),
            content_sha256: get(keys::CONTENT_SHA256),
            description: get(keys::DESCRIPTION),
            builder_version: get(keys::BUILDER_VERSION),
        })
    }
}

fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split([',', ' ', '|'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Percent-encodes `%`, control characters and anything outside ASCII, so a value is safe in an HTTP header.
fn ascii(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '%' || c.is_control() || !c.is_ascii() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`ascii`]; values without escapes (the original tool's) pass through.
fn unescape(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

/// Cuts an [`ascii`] value to at most `max` bytes without splitting a `%XX` escape.
fn truncate_ascii(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    // Back off if the cut lands inside an escape (within two bytes after a '%').
    for back in 1..=2 {
        if end >= back && value.as_bytes()[end - back] == b'%' {
            end -= back;
            break;
        }
    }
    value[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(text: &str) -> Requirements {
        Requirements::parse(text).unwrap()
    }

    #[test]
    fn fingerprint_ignores_spelling_but_not_content() {
        let a = Fingerprint::compute(
            &reqs("requests == 2.32.3|httpx==0.27.2"),
            Runtime::Python312,
            Architecture::Arm64,
            Installer::Uv,
            LayerOptions::default(),
        );
        let b = Fingerprint::compute(
            &reqs("Requests==2.32.3\n# c\nhttpx==0.27.2\n"),
            Runtime::Python312,
            Architecture::Arm64,
            Installer::Uv,
            LayerOptions::default(),
        );
        assert_eq!(a, b);
        assert_eq!(a.full().len(), 64);
        assert_eq!(a.short().len(), 16);
        for other in [
            Fingerprint::compute(
                &reqs("requests==2.32.3|httpx==0.27.2"),
                Runtime::Python313,
                Architecture::Arm64,
                Installer::Uv,
                LayerOptions::default(),
            ),
            Fingerprint::compute(
                &reqs("requests==2.32.3|httpx==0.27.2"),
                Runtime::Python312,
                Architecture::X86_64,
                Installer::Uv,
                LayerOptions::default(),
            ),
            Fingerprint::compute(
                &reqs("httpx==0.27.2|requests==2.32.3"),
                Runtime::Python312,
                Architecture::Arm64,
                Installer::Uv,
                LayerOptions::default(),
            ),
            Fingerprint::compute(
                &reqs("requests==2.32.4|httpx==0.27.2"),
                Runtime::Python312,
                Architecture::Arm64,
                Installer::Uv,
                LayerOptions::default(),
            ),
            Fingerprint::compute(
                &reqs("requests==2.32.3|httpx==0.27.2"),
                Runtime::Python312,
                Architecture::Arm64,
                Installer::Pip,
                LayerOptions::default(),
            ),
            Fingerprint::compute(
                &reqs("requests==2.32.3|httpx==0.27.2"),
                Runtime::Python312,
                Architecture::Arm64,
                Installer::Uv,
                LayerOptions {
                    bytecode: false,
                    slim: false,
                },
            ),
            Fingerprint::compute(
                &reqs("requests==2.32.3|httpx==0.27.2"),
                Runtime::Python312,
                Architecture::Arm64,
                Installer::Uv,
                LayerOptions {
                    bytecode: true,
                    slim: true,
                },
            ),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn fingerprint_canonical_form_is_pinned() {
        // A change here changes every artifact key: bump FORMAT_VERSION with it.
        let fp = Fingerprint::compute(
            &reqs("six==1.16.0"),
            Runtime::Python312,
            Architecture::Arm64,
            Installer::Uv,
            LayerOptions::default(),
        );
        let mut expected = Sha256::new();
        expected.update(
            "layerforge-fingerprint\nformat=3\nruntime=python3.12\narchitecture=arm64\ninstaller=uv\n\
             bytecode=true\nslim=false\nrequirement=six==1.16.0\n",
        );
        assert_eq!(fp.full(), hex::encode(expected.finalize()));
    }

    #[test]
    fn key_round_trips_and_rejects_other_shapes() {
        let name = LayerName::parse("http-clients").unwrap();
        let fp = Fingerprint::compute(
            &reqs("six==1.16.0"),
            Runtime::Python312,
            Architecture::Arm64,
            Installer::Uv,
            LayerOptions::default(),
        );
        let key = ArtifactKey::new(
            "layers/",
            &name,
            Runtime::Python312,
            Architecture::Arm64,
            &fp,
        );
        let text = key.to_string();
        assert_eq!(
            text,
            format!("layers/http-clients/python3.12-arm64/{}.zip", fp.short())
        );
        assert_eq!(ArtifactKey::parse("layers", &text), Some(key));
        for bad in [
            "layers/http-clients/python3.12-arm64/0123.zip",
            "other/http-clients/python3.12-arm64/0123456789abcdef.zip",
            "layers/http-clients/python2.7-arm64/0123456789abcdef.zip",
            "layers/http-clients/python3.12-sparc/0123456789abcdef.zip",
            "layers/http-clients/python3.12-arm64/0123456789abcdef.tar",
            "layers/a/b/python3.12-arm64/0123456789abcdef.zip",
            "layersx/http-clients/python3.12-arm64/0123456789abcdef.zip",
        ] {
            assert_eq!(ArtifactKey::parse("layers", bad), None, "{bad}");
        }
    }

    fn sample() -> ArtifactMetadata {
        ArtifactMetadata {
            layer_name: "http-clients".into(),
            requirements: "requests==2.32.3|pandas>=2.2,<3".into(),
            license: Some("MIT".into()),
            python_version: "3.12".into(),
            compatible_runtimes: vec![Runtime::Python312],
            compatible_architectures: vec![Architecture::Arm64],
            create_date: "20261121120000000".into(),
            fingerprint: Some("0123456789abcdef".into()),
            content_sha256: Some("n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=".into()),
            description: Some("HTTP clients — fast".into()),
            builder_version: Some("0.1.0".into()),
        }
    }

    #[test]
    fn metadata_round_trips_with_every_key() {
        let meta = sample();
        let map = meta.to_s3_metadata();
        for key in keys::ALL {
            assert!(map.contains_key(*key), "{key}");
        }
        assert!(map.values().all(|v| v.is_ascii()));
        assert_eq!(ArtifactMetadata::from_s3_metadata(&map).unwrap(), meta);
    }

    #[test]
    fn metadata_stays_within_two_kilobytes() {
        let mut meta = sample();
        meta.requirements = "verylongpackagename-é==1.0.0|".repeat(400);
        meta.license = Some("L".repeat(512));
        meta.description = Some("D".repeat(256));
        let map = meta.to_s3_metadata();
        let total: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(total <= METADATA_LIMIT_BYTES, "{total}");
        assert!(
            map[keys::REQUIREMENTS].len() > 500,
            "requirements keep most of the budget"
        );
        assert_eq!(map[keys::DESCRIPTION].len(), 256);
    }

    #[test]
    fn original_tool_metadata_is_read() {
        let map: HashMap<String, String> = [
            ("layer-name", "http_request_lib"),
            ("requirements", "requests|httpx"),
            ("license-info", ""),
            ("python-version", "3.12.3"),
            ("compatible-runtimes", "python3.12"),
            ("compatible-architectures", "aarch64"),
            ("create-date", "20240101120000123"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let meta = ArtifactMetadata::from_s3_metadata(&map).unwrap();
        assert_eq!(meta.layer_name, "http_request_lib");
        assert_eq!(meta.compatible_architectures, vec![Architecture::Arm64]);
        assert_eq!(meta.license, None);
        assert_eq!(meta.fingerprint, None);
    }

    #[test]
    fn missing_or_bad_metadata_names_the_key() {
        let mut map = sample().to_s3_metadata();
        map.remove(keys::COMPATIBLE_RUNTIMES);
        assert_eq!(
            ArtifactMetadata::from_s3_metadata(&map).unwrap_err().key,
            keys::COMPATIBLE_RUNTIMES
        );
        let mut map = sample().to_s3_metadata();
        map.insert(keys::LAYER_NAME.into(), "bad name!".into());
        assert_eq!(
            ArtifactMetadata::from_s3_metadata(&map).unwrap_err().key,
            keys::LAYER_NAME
        );
    }
}
