//! The shared vocabulary of a build (DESIGN sections 1-3): the runtime, the architecture, the installer, a layer
//! name and an S3 URI, each a type that can't hold a bad value, and [`InvalidRequest`], the error that names the
//! field, the rule and the offending value. Everything above it (the request document, the configuration, the
//! builder, the CLI) speaks these types; this module depends on none of them.

use std::{fmt, str::FromStr};

use serde::Serialize;
use serde_json::Value;

/// The longest layer name accepted (Lambda allows 140; 64 leaves room in job names).
pub const MAX_LAYER_NAME: usize = 64;

/// A request that breaks a rule: names the field, the rule and the value (truncated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule} (got {value})")]
pub struct InvalidRequest {
    pub field: String,
    pub rule: String,
    /// The offending value, JSON-quoted and truncated to [`VALUE_PREVIEW`] characters.
    pub value: String,
}

pub(crate) const VALUE_PREVIEW: usize = 80;

impl InvalidRequest {
    pub fn new(field: impl Into<String>, rule: impl Into<String>, value: &str) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
            value: preview(value),
        }
    }

    pub(crate) fn json(field: &str, rule: impl Into<String>, value: &Value) -> Self {
        Self::new(field, rule, &value.to_string())
    }
}

fn preview(value: &str) -> String {
    let mut out: String = value.chars().take(VALUE_PREVIEW).collect();
    if value.chars().count() > VALUE_PREVIEW {
        out.push('…');
    }
    format!("{out:?}")
}

/// A Lambda Python runtime layerforge builds for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
pub enum Runtime {
    #[serde(rename = "python3.10")]
    Python310,
    #[serde(rename = "python3.11")]
    Python311,
    #[serde(rename = "python3.12")]
    Python312,
    #[serde(rename = "python3.13")]
    Python313,
    #[serde(rename = "python3.14")]
    Python314,
}

impl Runtime {
    pub const ALL: [Runtime; 5] = [
        Runtime::Python310,
        Runtime::Python311,
        Runtime::Python312,
        Runtime::Python313,
        Runtime::Python314,
    ];

    /// The Lambda identifier, e.g. `python3.12`.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python310 => "python3.10",
            Runtime::Python311 => "python3.11",
            Runtime::Python312 => "python3.12",
            Runtime::Python313 => "python3.13",
            Runtime::Python314 => "python3.14",
        }
    }

    /// `X.Y`, e.g. `3.12`: the site-packages folder and pip's `--python-version`.
    pub fn python_version(self) -> &'static str {
        &self.as_str()["python".len()..]
    }

    /// Without the dot, e.g. `python312` (job names allow no dots).
    pub fn compact(self) -> String {
        self.as_str().replace('.', "")
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown runtime {s:?}; expected one of python3.10 … python3.14")
            })
    }
}

/// A Lambda instruction set architecture.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
pub enum Architecture {
    #[serde(rename = "arm64")]
    Arm64,
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Architecture {
    pub const ALL: [Architecture; 2] = [Architecture::Arm64, Architecture::X86_64];

    /// The Lambda identifier: `arm64` or `x86_64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Arm64 => "arm64",
            Architecture::X86_64 => "x86_64",
        }
    }

    /// The machine name in wheel tags and `uname -m`: `aarch64` or `x86_64`.
    pub fn machine(self) -> &'static str {
        match self {
            Architecture::Arm64 => "aarch64",
            Architecture::X86_64 => "x86_64",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Architecture {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arm64" => Ok(Architecture::Arm64),
            "x86_64" => Ok(Architecture::X86_64),
            _ => Err(format!(
                "unknown architecture {s:?}; expected arm64 or x86_64"
            )),
        }
    }
}

/// Which installer the builder runs (DESIGN section 1 `installer`, section 4 `--installer`).
/// The runtimes and architectures one universal version is built for (DESIGN section 15): a pure-Python set, no
/// ELF file and the same files for every pair, published once with all of them. Both lists are sorted and
/// without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Targets {
    pub runtimes: Vec<Runtime>,
    pub architectures: Vec<Architecture>,
}

impl Targets {
    pub fn new(mut runtimes: Vec<Runtime>, mut architectures: Vec<Architecture>) -> Self {
        runtimes.sort();
        runtimes.dedup();
        architectures.sort();
        architectures.dedup();
        Self {
            runtimes,
            architectures,
        }
    }

    /// What a version lists: every target of a universal one, else its own runtime and architecture.
    pub fn compatible(
        universal: Option<&Self>,
        runtime: Runtime,
        architecture: Architecture,
    ) -> (Vec<Runtime>, Vec<Architecture>) {
        match universal {
            Some(t) => (t.runtimes.clone(), t.architectures.clone()),
            None => (vec![runtime], vec![architecture]),
        }
    }

    /// Reads the builder's `--universal=python3.11,python3.12/arm64,x86_64` back.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (runtimes, architectures) = text
            .split_once('/')
            .ok_or_else(|| format!("expected RUNTIME,…/ARCH,…, got {text:?}"))?;
        let runtimes = runtimes
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<Runtime>, _>>()?;
        let architectures = architectures
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<Architecture>, _>>()?;
        if runtimes.is_empty() || architectures.is_empty() {
            return Err(format!("expected RUNTIME,…/ARCH,…, got {text:?}"));
        }
        Ok(Self::new(runtimes, architectures))
    }
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runtimes: Vec<&str> = self.runtimes.iter().map(|r| r.as_str()).collect();
        let architectures: Vec<&str> = self.architectures.iter().map(|a| a.as_str()).collect();
        write!(f, "{}/{}", runtimes.join(","), architectures.join(","))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Installer {
    /// `uv pip install`: much faster resolution and download; `uv` must be on PATH. The request's default.
    #[default]
    Uv,
    /// `python -m pip install`: the reference installer.
    Pip,
}

impl Installer {
    pub const ALL: [Installer; 2] = [Installer::Uv, Installer::Pip];

    /// The request's and the command line's spelling: `uv` or `pip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Installer::Uv => "uv",
            Installer::Pip => "pip",
        }
    }
}

impl fmt::Display for Installer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Installer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Installer::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| format!("unknown installer {s:?}; expected uv or pip"))
    }
}

/// Which path builds a request (DESIGN section 12): `auto` (the fast builder, a Lambda function, when it can
/// build the request; else AWS Batch), or one forced. Not part of the fingerprint: both paths give the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuilderChoice {
    #[default]
    Auto,
    Function,
    Batch,
}

impl BuilderChoice {
    pub const ALL: [BuilderChoice; 3] = [
        BuilderChoice::Auto,
        BuilderChoice::Function,
        BuilderChoice::Batch,
    ];

    /// The request's and the command line's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BuilderChoice::Auto => "auto",
            BuilderChoice::Function => "function",
            BuilderChoice::Batch => "batch",
        }
    }
}

impl fmt::Display for BuilderChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuilderChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BuilderChoice::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| format!("unknown builder {s:?}; expected auto, function or batch"))
    }
}

/// Who may use the layer versions a build publishes (DESIGN section 14): AddLayerVersionPermission grants
/// `lambda:GetLayerVersion` per version, to an account, to every account of an organization (principal `*` with
/// `OrganizationId`), or to everyone. Source: Lambda API reference, AddLayerVersionPermission (`Principal`: an
/// account id, `*` or an account ARN; `OrganizationId`: `o-[a-z0-9]{10,32}`, only with principal `*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
pub struct Share {
    /// Twelve-digit account ids, sorted, without duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(default)]
    pub public: bool,
}

impl Share {
    /// Most accounts one request may name (each is a statement of the version's policy, which Lambda caps at 20 KB).
    pub const MAX_ACCOUNTS: usize = 50;

    /// Whether it grants nothing.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.organization_id.is_none() && !self.public
    }

    /// The request's `share` object, validated: `{"accounts": [...], "organization_id": "o-…", "public": bool}`.
    pub fn parse(value: &serde_json::Value) -> Result<Self, InvalidRequest> {
        let serde_json::Value::Object(map) = value else {
            return Err(InvalidRequest::json(
                "share",
                "must be an object {\"accounts\": [...], \"organization_id\": \"o-...\", \"public\": false}",
                value,
            ));
        };
        if let Some(unknown) = map
            .keys()
            .find(|k| !["accounts", "organization_id", "public"].contains(&k.as_str()))
        {
            return Err(InvalidRequest::new(
                format!("share.{unknown}"),
                "unknown field; expected accounts, organization_id or public",
                unknown,
            ));
        }
        let mut accounts = Vec::new();
        match map.get("accounts") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let id = item
                        .as_str()
                        .filter(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()));
                    match id {
                        Some(id) => accounts.push(id.to_owned()),
                        None => {
                            return Err(InvalidRequest::json(
                                &format!("share.accounts[{i}]"),
                                "must be a 12-digit AWS account id",
                                item,
                            ));
                        }
                    }
                }
            }
            Some(other) => {
                return Err(InvalidRequest::json(
                    "share.accounts",
                    "must be an array of 12-digit AWS account ids",
                    other,
                ));
            }
        }
        accounts.sort();
        accounts.dedup();
        if accounts.len() > Self::MAX_ACCOUNTS {
            return Err(InvalidRequest::new(
                "share.accounts",
                format!("at most {} accounts", Self::MAX_ACCOUNTS),
                &accounts.len().to_string(),
            ));
        }
        let organization_id = match map.get("organization_id") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let ok = v.as_str().filter(|s| {
                    s.strip_prefix("o-").is_some_and(|rest| {
                        (10..=32).contains(&rest.len())
                            && rest
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    })
                });
                match ok {
                    Some(id) => Some(id.to_owned()),
                    None => {
                        return Err(InvalidRequest::json(
                            "share.organization_id",
                            "must be an AWS Organizations id, o- and 10 to 32 lowercase letters or digits",
                            v,
                        ));
                    }
                }
            }
        };
        let public = match map.get("public") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => {
                return Err(InvalidRequest::json(
                    "share.public",
                    "must be true or false",
                    other,
                ));
            }
        };
        Ok(Self {
            accounts,
            organization_id,
            public,
        })
    }

    /// The permission statements, each `(statement id, principal, organization id)`: stable ids, so that a
    /// statement added once is recognised when a delivery comes again.
    pub fn statements(&self) -> Vec<(String, String, Option<String>)> {
        let mut out: Vec<(String, String, Option<String>)> = self
            .accounts
            .iter()
            .map(|a| (format!("layerforge-account-{a}"), a.clone(), None))
            .collect();
        if let Some(org) = &self.organization_id {
            out.push((
                format!("layerforge-org-{org}"),
                "*".to_owned(),
                Some(org.clone()),
            ));
        }
        if self.public {
            out.push(("layerforge-public".to_owned(), "*".to_owned(), None));
        }
        out
    }
}

/// Lambda's limit on a function's code and all its layers, unzipped: 250 MiB. PublishLayerVersion refuses a
/// layer above it too ("Unzipped size must be smaller than 262144000 bytes"; see `../shared/facts`, section A3,
/// and https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
pub const LAMBDA_UNZIPPED_LIMIT: u64 = 262_144_000;
/// A mebibyte: the unit of `max_unzipped_mb`, as Lambda counts its 250 MB (262,144,000 = 250 x 1,048,576).
pub const MIB: u64 = 1_048_576;
/// The largest (and default) size budget, in MiB: Lambda's limit.
pub const MAX_BUDGET_MIB: u64 = LAMBDA_UNZIPPED_LIMIT / MIB;

/// What the zip holds besides the installed files (DESIGN section 13): both change its bytes, so both are part
/// of the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LayerOptions {
    /// Hash-based bytecode (PEP 552, unchecked) compiled by an interpreter of the runtime's version. Default on.
    pub bytecode: bool,
    /// Remove what can't break an import (console scripts in `bin/`, `*.pyi` stubs), and tests only where the
    /// runtime's interpreter still imports every top-level module without them. Default off.
    pub slim: bool,
}

impl Default for LayerOptions {
    fn default() -> Self {
        Self {
            bytecode: true,
            slim: false,
        }
    }
}

/// A layer name: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct LayerName(String);

impl LayerName {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > MAX_LAYER_NAME {
            return Err(format!("must be 1 to {MAX_LAYER_NAME} characters"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "may hold only letters, digits, '-' and '_' (found {c:?})"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `s3://bucket/key` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| "must be an s3://bucket/key URI".to_owned())?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| "must name a key after the bucket (s3://bucket/key)".to_owned())?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(
                "the bucket must be a valid S3 bucket name (3-63 of a-z 0-9 . -)".to_owned(),
            );
        }
        if key.is_empty() || key.ends_with('/') {
            return Err("must name an object, not a folder".to_owned());
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}
