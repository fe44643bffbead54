//! The types the flow, the claim and the S3 helpers share: the object version being handled and the layer
//! version it becomes.

use crate::artifact::{ArtifactKey, ArtifactMetadata};

/// Lambda's limits on PublishLayerVersion text fields (characters).
const MAX_DESCRIPTION_CHARS: usize = 256;
const MAX_LICENSE_CHARS: usize = 512;

/// The object version being handled.
#[derive(Debug, Clone)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
}

/// The PublishLayerVersion input, from metadata (and the key, for what old metadata lacks).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub name: String,
    pub runtimes: Vec<aws_sdk_lambda::types::Runtime>,
    pub architectures: Vec<aws_sdk_lambda::types::Architecture>,
    pub license: Option<String>,
    pub description: String,
}

/// The canonical targets of a version: sorted runtimes, `/`, sorted architectures (`python3.11,python3.12/arm64`).
pub fn targets_id(runtimes: &[&str], architectures: &[&str]) -> String {
    let (mut r, mut a) = (runtimes.to_vec(), architectures.to_vec());
    r.sort_unstable();
    a.sort_unstable();
    format!("{}/{}", r.join(","), a.join(","))
}

impl LayerSpec {
    /// The targets this version is published for, canonical ([`targets_id`]): with the CodeSha256, what makes a
    /// version this artifact's.
    pub fn targets(&self) -> String {
        let runtimes: Vec<&str> = self.runtimes.iter().map(|r| r.as_str()).collect();
        let architectures: Vec<&str> = self.architectures.iter().map(|a| a.as_str()).collect();
        targets_id(&runtimes, &architectures)
    }

    pub fn new(metadata: &ArtifactMetadata, key: Option<&ArtifactKey>, object: &ObjectRef) -> Self {
        let mut architectures: Vec<_> = metadata
            .compatible_architectures
            .iter()
            .map(|a| aws_sdk_lambda::types::Architecture::from(a.as_str()))
            .collect();
        if architectures.is_empty()
            && let Some(k) = key
        {
            architectures.push(aws_sdk_lambda::types::Architecture::from(
                k.architecture.as_str(),
            ));
        }
        let fingerprint = metadata
            .fingerprint
            .clone()
            .or_else(|| key.map(|k| k.fingerprint.clone()));
        let description = match (&metadata.description, &fingerprint) {
            (Some(d), _) => d.clone(),
            (None, Some(fp)) => format!("layerforge {fp}: {}", metadata.requirements),
            (None, None) => format!(
                "from s3://{}/{}: {}",
                object.bucket, object.key, metadata.requirements
            ),
        };
        Self {
            name: metadata.layer_name.clone(),
            runtimes: metadata
                .compatible_runtimes
                .iter()
                .map(|r| aws_sdk_lambda::types::Runtime::from(r.as_str()))
                .collect(),
            architectures,
            license: metadata
                .license
                .as_deref()
                .map(|l| truncate_chars(l, MAX_LICENSE_CHARS))
                .filter(|l| !l.is_empty()),
            description: truncate_chars(
                description.trim_end_matches([':', ' ']),
                MAX_DESCRIPTION_CHARS,
            ),
        }
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
