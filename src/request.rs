//! The build request (DESIGN section 1): raw JSON in, a [`BuildRequest`] whose fields can't hold a bad value out.
//!
//! Parsing happens in two steps because requirements may live in S3: [`RequestDraft::parse`] checks every field
//! and leaves [`RequirementsInput::S3`] to be fetched; [`RequestDraft::into_request`] takes the validated
//! [`Requirements`] and yields the final request. Every error is an [`InvalidRequest`] naming the field, the
//! rule and the offending value.

use std::{fmt, str::FromStr};

use pep508_rs::{Requirement, VersionOrUrl, pep440_rs::Operator};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Config;

/// The most requirement text accepted inline: keeps the SubmitJob payload well under Batch's 30 KiB.
pub const MAX_REQUIREMENTS_BYTES: usize = 16 * 1024;
/// The most requirement lines accepted.
pub const MAX_REQUIREMENT_LINES: usize = 500;
pub const MAX_LAYER_NAME: usize = 64;
pub const MAX_DESCRIPTION: usize = 256;
pub const MAX_LICENSE: usize = 512;
/// Longest requirements object read from S3 before validation (the text cap applies after).
pub const MAX_REQUIREMENTS_OBJECT_BYTES: i64 = 64 * 1024;

/// Fields a build request may carry; anything else (a typo such as `licence`) is refused.
pub const FIELDS: &[&str] = &[
    "layer_name",
    "requirements",
    "requirements_s3_uri",
    "runtime",
    "architecture",
    "description",
    "license",
    "force",
    "installer",
    "vcpu",
    "memory_mib",
];

/// A request that breaks a rule: names the field, the rule and the value (truncated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule} (got {value})")]
pub struct InvalidRequest {
    pub field: String,
    pub rule: String,
    /// The offending value, JSON-quoted and truncated to [`VALUE_PREVIEW`] characters.
    pub value: String,
}

const VALUE_PREVIEW: usize = 80;

impl InvalidRequest {
    pub fn new(field: impl Into<String>, rule: impl Into<String>, value: &str) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
            value: preview(value),
        }
    }

    fn json(field: &str, rule: impl Into<String>, value: &Value) -> Self {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

/// One validated requirement line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementLine {
    /// The line as the caller wrote it (comment and surrounding blanks removed): what pip is given.
    pub text: String,
    /// A normalized form (PEP 508 rendering plus sorted hashes): what the fingerprint covers.
    pub canonical: String,
    /// Pinned with `==`/`===` to one version, or hashed.
    pub pinned: bool,
}

/// A validated requirements set: at least one line, within the size caps, nothing but PEP 508 specifiers
/// and `--hash=` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    lines: Vec<RequirementLine>,
}

const HASH_ALGORITHMS: &[(&str, usize)] = &[("sha256", 64), ("sha384", 96), ("sha512", 128)];

impl Requirements {
    /// Parses requirements.txt text; `|` separates lines too (the original tool's `-r`). Errors name
    /// `requirements`, the line number and the line.
    pub fn parse(text: &str) -> Result<Self, InvalidRequest> {
        const FIELD: &str = "requirements";
        if text.len() > MAX_REQUIREMENTS_BYTES {
            return Err(InvalidRequest::new(
                FIELD,
                format!(
                    "at most {MAX_REQUIREMENTS_BYTES} bytes of text ({} given)",
                    text.len()
                ),
                // Only the size: the text may be a file the caller can't otherwise read.
                &format!("{} bytes", text.len()),
            ));
        }
        let physical: Vec<&str> = text.split(['\n', '|']).collect();
        if physical.len() > MAX_REQUIREMENT_LINES {
            return Err(InvalidRequest::new(
                FIELD,
                format!(
                    "at most {MAX_REQUIREMENT_LINES} lines ({} given)",
                    physical.len()
                ),
                &format!("{} lines", physical.len()),
            ));
        }

        let mut lines = Vec::new();
        let mut pending = String::new();
        let mut pending_start = 0;
        for (index, raw) in physical.iter().enumerate() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if pending.is_empty() {
                pending_start = index + 1;
            }
            // A trailing backslash continues the line (pip-compile writes hashes that way).
            if let Some(head) = raw.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            pending.push_str(raw);
            let logical = std::mem::take(&mut pending);
            if let Some(line) = parse_line(&logical).map_err(|rule| {
                InvalidRequest::new(
                    FIELD,
                    format!("line {pending_start}: {rule}"),
                    logical.trim(),
                )
            })? {
                lines.push(line);
            }
        }
        if !pending.trim().is_empty() {
            return Err(InvalidRequest::new(
                FIELD,
                format!(
                    "line {pending_start}: ends with a line continuation '\\' and nothing after it"
                ),
                pending.trim(),
            ));
        }
        if lines.is_empty() {
            return Err(InvalidRequest::new(
                FIELD,
                "must list at least one requirement",
                text,
            ));
        }
        Ok(Self { lines })
    }

    pub fn lines(&self) -> &[RequirementLine] {
        &self.lines
    }

    /// The text handed to the builder: one requirement per line, as written.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            out.push_str(&line.text);
            out.push('\n');
        }
        out
    }

    /// Whether every line is pinned (so a cached artifact is known to be the same build).
    pub fn all_pinned(&self) -> bool {
        self.lines.iter().all(|l| l.pinned)
    }
}

/// Parses one logical line; `Ok(None)` for blank and comment lines.
fn parse_line(line: &str) -> Result<Option<RequirementLine>, String> {
    let content = strip_comment(line).trim();
    if content.is_empty() {
        return Ok(None);
    }
    if content.starts_with('-') {
        let option = content.split([' ', '\t', '=']).next().unwrap_or(content);
        return Err(if option == "--hash" {
            "a --hash option must follow a requirement on the same line".to_owned()
        } else {
            format!(
                "pip option {option} is not allowed (the package index and install options are the operator's \
                 setting; only --hash= may follow a requirement)"
            )
        });
    }

    // The requirement ends where the first option (a blank-preceded token starting with '-') begins.
    let (spec, options) = split_options(content);
    let mut hashes = Vec::new();
    for option in options.split_whitespace() {
        let Some(hash) = option.strip_prefix("--hash=") else {
            let name = option.split('=').next().unwrap_or(option);
            return Err(format!(
                "pip option {name} is not allowed after a requirement (only --hash=ALGORITHM:HEX)"
            ));
        };
        let (algorithm, hex) = hash
            .split_once(':')
            .ok_or_else(|| format!("--hash needs ALGORITHM:HEX, got {hash:?}"))?;
        let Some((_, len)) = HASH_ALGORITHMS.iter().find(|(a, _)| *a == algorithm) else {
            return Err(format!(
                "--hash algorithm {algorithm:?} is not one of sha256, sha384, sha512"
            ));
        };
        if hex.len() != *len || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("--hash={algorithm}: expects {len} hex digits"));
        }
        hashes.push(format!("--hash={algorithm}:{}", hex.to_ascii_lowercase()));
    }

    // pep508_rs 0.9 panics (an `expect` in its name parser) on a name ending in `-`, `_` or `.` followed by a
    // character that can't follow a name, e.g. `A-[` (found by tests/integration/robustness.rs): refuse it first.
    let name: &str = spec
        .trim_start()
        .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .next()
        .unwrap_or("");
    if name.ends_with(['-', '_', '.']) {
        return Err(format!(
            "not a PEP 508 requirement: the package name {name:?} must end with a letter or digit"
        ));
    }
    let requirement = Requirement::<pep508_rs::VerbatimUrl>::from_str(spec).map_err(|e| {
        let message = e.to_string();
        format!(
            "not a PEP 508 requirement: {}",
            message.lines().next().unwrap_or("unparseable")
        )
    })?;
    let pinned_version = match &requirement.version_or_url {
        Some(VersionOrUrl::Url(_)) => {
            return Err(
                "direct URL references are not allowed (packages come from the configured package index)"
                    .to_owned(),
            );
        }
        Some(VersionOrUrl::VersionSpecifier(specifiers)) => {
            specifiers.len() == 1
                && matches!(
                    specifiers[0].operator(),
                    Operator::Equal | Operator::ExactEqual
                )
        }
        None => false,
    };
    hashes.sort();
    hashes.dedup();
    let mut canonical = requirement.to_string();
    for hash in &hashes {
        canonical.push(' ');
        canonical.push_str(hash);
    }
    Ok(Some(RequirementLine {
        text: if options.is_empty() {
            spec.to_owned()
        } else {
            format!("{spec} {}", hashes.join(" "))
        },
        canonical,
        pinned: pinned_version || !hashes.is_empty(),
    }))
}

/// pip's comment rule: `#` at the start of a line or after whitespace starts a comment.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn split_options(content: &str) -> (&str, &str) {
    let bytes = content.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b'-' && bytes[i - 1].is_ascii_whitespace() {
            return (content[..i].trim_end(), content[i..].trim());
        }
    }
    (content, "")
}

/// Where the requirements of a draft come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequirementsInput {
    Inline(Requirements),
    /// Fetched by the handler, then validated with [`Requirements::parse`].
    S3(S3Uri),
}

/// Compute asked for the build job (both optional, bounded by the deployment's `MAX_VCPU`/`MAX_MEMORY_MIB`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    pub vcpu: Option<f64>,
    pub memory_mib: Option<u32>,
}

/// A request whose every field is valid; inline requirements are parsed, S3 ones not yet read.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestDraft {
    pub layer_name: LayerName,
    pub requirements: RequirementsInput,
    pub runtime: Runtime,
    pub architecture: Architecture,
    pub description: Option<String>,
    pub license: Option<String>,
    pub force: bool,
    pub installer: Installer,
    pub resources: Resources,
}

/// A complete, valid build request.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequest {
    pub layer_name: LayerName,
    pub requirements: Requirements,
    /// Where the requirements were read from, if not inline.
    pub requirements_source: Option<S3Uri>,
    pub runtime: Runtime,
    pub architecture: Architecture,
    pub description: Option<String>,
    pub license: Option<String>,
    pub force: bool,
    /// Part of the fingerprint: uv and pip may resolve or lay out the same requirements differently.
    pub installer: Installer,
    pub resources: Resources,
}

impl RequestDraft {
    /// Validates every field of a raw request against the rules of DESIGN section 1 and this deployment.
    pub fn parse(event: &Value, config: &Config) -> Result<Self, InvalidRequest> {
        let Value::Object(map) = event else {
            return Err(InvalidRequest::json(
                "request",
                "must be a JSON object",
                event,
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(InvalidRequest::new(
                unknown.as_str(),
                format!("unknown field; expected one of {}", FIELDS.join(", ")),
                unknown,
            ));
        }

        let layer_name = match string_field(map, "layer_name")? {
            Some(s) => LayerName::parse(s.trim())
                .map_err(|rule| InvalidRequest::new("layer_name", rule, s))?,
            None => return Err(InvalidRequest::new("layer_name", "required", "")),
        };
        if !config.layer_name_prefix.admits(layer_name.as_str()) {
            return Err(InvalidRequest::new(
                "layer_name",
                format!(
                    "must be {}: this deployment publishes only the layers of its prefix \
                     (LAYER_NAME_PREFIX, matched by whole segments)",
                    config.layer_name_prefix.describe()
                ),
                layer_name.as_str(),
            ));
        }

        let requirements = match (
            present(map, "requirements"),
            present(map, "requirements_s3_uri"),
        ) {
            (Some(_), Some(_)) => {
                return Err(InvalidRequest::new(
                    "requirements_s3_uri",
                    "give exactly one of requirements and requirements_s3_uri, not both",
                    "",
                ));
            }
            (None, None) => {
                return Err(InvalidRequest::new(
                    "requirements",
                    "required (or requirements_s3_uri)",
                    "",
                ));
            }
            (Some(value), None) => {
                RequirementsInput::Inline(Requirements::parse(&requirements_text(value)?)?)
            }
            (None, Some(_)) => {
                let raw = string_field(map, "requirements_s3_uri")?.unwrap_or_default();
                let uri = S3Uri::parse(raw.trim())
                    .map_err(|rule| InvalidRequest::new("requirements_s3_uri", rule, raw))?;
                if let Some(area) = config.reserved_area(&uri) {
                    return Err(InvalidRequest::new(
                        "requirements_s3_uri",
                        format!("may not point under {area} of the artifact bucket"),
                        raw,
                    ));
                }
                if !config.requirements_bucket_allowed(&uri.bucket) {
                    return Err(InvalidRequest::new(
                        "requirements_s3_uri",
                        format!(
                            "bucket {} is not allowed; use the artifact bucket or one listed in \
                             ALLOWED_REQUIREMENTS_BUCKETS",
                            uri.bucket
                        ),
                        raw,
                    ));
                }
                RequirementsInput::S3(uri)
            }
        };

        let runtime = match string_field(map, "runtime")? {
            Some(s) => s
                .parse()
                .map_err(|rule| InvalidRequest::new("runtime", rule, s))?,
            None => config.default_runtime,
        };
        let architecture: Architecture = match string_field(map, "architecture")? {
            Some(s) => s
                .parse()
                .map_err(|rule| InvalidRequest::new("architecture", rule, s))?,
            None => config.default_architecture,
        };
        if let Err(missing) = config.build_target(runtime, architecture) {
            let value = if missing.field == "runtime" {
                runtime.as_str()
            } else {
                architecture.as_str()
            };
            return Err(InvalidRequest::new(missing.field, missing.rule, value));
        }

        let description = text_field(map, "description", MAX_DESCRIPTION)?;
        let license = text_field(map, "license", MAX_LICENSE)?;
        let force = match present(map, "force") {
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(InvalidRequest::json(
                    "force",
                    "must be true or false",
                    other,
                ));
            }
            None => false,
        };
        let installer = match string_field(map, "installer")? {
            Some(s) => s
                .parse()
                .map_err(|rule| InvalidRequest::new("installer", rule, s))?,
            None => Installer::default(),
        };

        let vcpu = match present(map, "vcpu") {
            Some(value) => match value.as_f64() {
                Some(n) if n > 0.0 && n <= config.max_vcpu => Some(n),
                _ => {
                    return Err(InvalidRequest::json(
                        "vcpu",
                        format!(
                            "must be a number greater than 0 and at most {} (MAX_VCPU)",
                            config.max_vcpu
                        ),
                        value,
                    ));
                }
            },
            None => None,
        };
        let memory_mib = match present(map, "memory_mib") {
            Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if (512..=config.max_memory_mib).contains(&n) => Some(n),
                _ => {
                    return Err(InvalidRequest::json(
                        "memory_mib",
                        format!(
                            "must be a whole number of MiB from 512 to {} (MAX_MEMORY_MIB)",
                            config.max_memory_mib
                        ),
                        value,
                    ));
                }
            },
            None => None,
        };

        Ok(Self {
            layer_name,
            requirements,
            runtime,
            architecture,
            description,
            license,
            force,
            installer,
            resources: Resources { vcpu, memory_mib },
        })
    }

    /// Completes the draft with validated requirements (for S3 input, read from `source`).
    pub fn into_request(self, requirements: Requirements, source: Option<S3Uri>) -> BuildRequest {
        BuildRequest {
            layer_name: self.layer_name,
            requirements,
            requirements_source: source,
            runtime: self.runtime,
            architecture: self.architecture,
            description: self.description,
            license: self.license,
            force: self.force,
            installer: self.installer,
            resources: self.resources,
        }
    }
}

/// A field that is present and not `null`.
fn present<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|v| !v.is_null())
}

fn string_field<'a>(
    map: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, InvalidRequest> {
    match present(map, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(InvalidRequest::json(field, "must be a string", other)),
    }
}

fn text_field(
    map: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, InvalidRequest> {
    let Some(s) = string_field(map, field)? else {
        return Ok(None);
    };
    let s = s.trim();
    if s.chars().count() > max {
        return Err(InvalidRequest::new(
            field,
            format!("at most {max} characters"),
            s,
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidRequest::new(
            field,
            "must not contain control characters",
            s,
        ));
    }
    Ok((!s.is_empty()).then(|| s.to_owned()))
}

/// `requirements` is requirements.txt text or an array of lines.
fn requirements_text(value: &Value) -> Result<String, InvalidRequest> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => {
            let mut lines = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => lines.push(s.as_str()),
                    other => {
                        return Err(InvalidRequest::json(
                            "requirements",
                            format!("element {} must be a string", i + 1),
                            other,
                        ));
                    }
                }
            }
            Ok(lines.join("\n"))
        }
        other => Err(InvalidRequest::json(
            "requirements",
            "must be requirements.txt text or an array of lines",
            other,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Config {
        Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "ALLOWED_REQUIREMENTS_BUCKETS" => Some("team-reqs,layerforge-artifacts".into()),
            "BUILD_TARGETS" => Some(
                r#"{"arm64":{"job_queue":"q-arm","job_definition":"d-arm"},"x86_64":{"job_queue":"q-x86","job_definition":"d-x86"}}"#
                    .into(),
            ),
            _ => None,
        })
        .unwrap()
    }

    fn parse(event: Value) -> Result<RequestDraft, InvalidRequest> {
        RequestDraft::parse(&event, &config())
    }

    fn inline(draft: &RequestDraft) -> &Requirements {
        match &draft.requirements {
            RequirementsInput::Inline(r) => r,
            RequirementsInput::S3(uri) => panic!("expected inline requirements, got {uri}"),
        }
    }

    #[test]
    fn requirements_s3_uri_may_not_read_artifacts_or_bookkeeping() {
        for key in [
            "layers/other-team/python3.12-arm64/0123456789abcdef.zip",
            ".layerforge/claims/abc.json",
            ".layerforge/builds/x/python3.12-arm64/0123456789abcdef.json",
        ] {
            let err = parse(
                json!({"layer_name": "a", "requirements_s3_uri": format!("s3://artifacts/{key}")}),
            )
            .unwrap_err();
            assert_eq!(err.field, "requirements_s3_uri", "{key}");
            assert!(
                err.rule.starts_with("may not point under"),
                "{key}: {}",
                err.rule
            );
        }
        // Elsewhere in the artifact bucket, and in another allowed bucket, it may.
        for uri in [
            "s3://artifacts/requirements/team-a.txt",
            "s3://artifacts/layers-not-the-prefix.txt",
            "s3://team-reqs/layers/x.txt",
        ] {
            assert!(
                parse(json!({"layer_name": "a", "requirements_s3_uri": uri})).is_ok(),
                "{uri}"
            );
        }
    }

    #[test]
    fn size_errors_quote_no_content() {
        let secret = format!("TOP-SECRET-{}", "z".repeat(MAX_REQUIREMENTS_BYTES));
        let err = Requirements::parse(&secret).unwrap_err();
        assert!(!err.to_string().contains("TOP-SECRET"), "{err}");
        let many: String = (0..600).map(|i| format!("SECRET{i}\n")).collect();
        let err = Requirements::parse(&many).unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
        // A bad line is quoted, and only that line.
        let err = Requirements::parse("six==1.16.0\nnot a requirement !!\nattrs").unwrap_err();
        assert!(err.to_string().contains("not a requirement !!"), "{err}");
        assert!(!err.to_string().contains("six==1.16.0"), "{err}");
    }

    #[test]
    fn layer_name_prefix_is_enforced() {
        let config = Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "LAYER_NAME_PREFIX" => Some("team-a-".into()),
            "BUILD_TARGETS" => Some(r#"{"arm64":{"job_queue":"q","job_definition":"d"}}"#.into()),
            _ => None,
        })
        .unwrap();
        let err = RequestDraft::parse(
            &json!({"layer_name": "team-b-http", "requirements": "six"}),
            &config,
        )
        .unwrap_err();
        assert_eq!(err.field, "layer_name");
        assert!(err.rule.contains("\"team-a-\""), "{}", err.rule);
        assert!(
            RequestDraft::parse(
                &json!({"layer_name": "team-a-http", "requirements": "six"}),
                &config
            )
            .is_ok()
        );
        // Without a trailing separator the prefix is a whole segment: a look-alike is someone else's name.
        let config = Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "LAYER_NAME_PREFIX" => Some("team-a".into()),
            "BUILD_TARGETS" => Some(r#"{"arm64":{"job_queue":"q","job_definition":"d"}}"#.into()),
            _ => None,
        })
        .unwrap();
        let err = RequestDraft::parse(
            &json!({"layer_name": "team-admin-x", "requirements": "six"}),
            &config,
        )
        .unwrap_err();
        assert_eq!(err.field, "layer_name");
        assert!(
            err.rule.contains("\"team-a-\" or \"team-a_\""),
            "{}",
            err.rule
        );
        for name in ["team-a", "team-a-x", "team-a_x"] {
            assert!(
                RequestDraft::parse(&json!({"layer_name": name, "requirements": "six"}), &config)
                    .is_ok(),
                "{name}"
            );
        }
        // Without a prefix any name goes.
        assert!(parse(json!({"layer_name": "team-b-http", "requirements": "six"})).is_ok());
    }

    #[test]
    fn original_tool_style_request_is_accepted_with_defaults() {
        let draft = parse(json!({"layer_name": "http-clients", "requirements": "requests == 2.32.3|httpx == 0.27.2"})).unwrap();
        assert_eq!(draft.layer_name.as_str(), "http-clients");
        assert_eq!(draft.runtime, Runtime::Python312);
        assert_eq!(draft.architecture, Architecture::Arm64);
        assert!(!draft.force);
        let reqs = inline(&draft);
        assert_eq!(reqs.to_text(), "requests == 2.32.3\nhttpx == 0.27.2\n");
        assert!(reqs.all_pinned());
        assert_eq!(reqs.lines()[0].canonical, "requests==2.32.3");
    }

    #[test]
    fn specifiers_extras_markers_and_hashes_pass_through_intact() {
        let text = "pandas>=2.2,<3\nrequests[socks,security] == 2.32.3 ; python_version >= \"3.8\"\n\
                    # a comment\n\nnumpy==2.1.3 \\\n    --hash=sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA # pinned\n";
        let draft = parse(json!({"layer_name": "data", "requirements": text, "runtime": "python3.13", "architecture": "x86_64"})).unwrap();
        let reqs = inline(&draft);
        let texts: Vec<&str> = reqs.lines().iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "pandas>=2.2,<3",
                "requests[socks,security] == 2.32.3 ; python_version >= \"3.8\"",
                "numpy==2.1.3 --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ]
        );
        assert!(!reqs.lines()[0].pinned, ">= is a range, not a pin");
        assert!(reqs.lines()[1].pinned);
        assert!(reqs.lines()[2].pinned);
        assert!(!reqs.all_pinned());
        assert_eq!(draft.runtime, Runtime::Python313);
        assert_eq!(draft.architecture, Architecture::X86_64);
    }

    #[test]
    fn requirements_may_be_an_array_and_s3_uris_are_kept_for_fetching() {
        let draft =
            parse(json!({"layer_name": "a", "requirements": ["six==1.16.0", "attrs==24.2.0"]}))
                .unwrap();
        assert_eq!(inline(&draft).lines().len(), 2);
        let draft = parse(json!({"layer_name": "a", "requirements_s3_uri": "s3://team-reqs/app/requirements.txt"})).unwrap();
        assert_eq!(
            draft.requirements,
            RequirementsInput::S3(S3Uri {
                bucket: "team-reqs".into(),
                key: "app/requirements.txt".into()
            })
        );
        let draft = parse(json!({"layer_name": "a", "requirements": "six", "vcpu": 2, "memory_mib": 4096, "force": true, "description": null})).unwrap();
        assert_eq!(
            draft.resources,
            Resources {
                vcpu: Some(2.0),
                memory_mib: Some(4096)
            }
        );
        assert!(draft.force);
        assert_eq!(draft.description, None);
    }

    #[test]
    fn installer_is_uv_unless_the_request_names_pip() {
        let draft = parse(json!({"layer_name": "a", "requirements": "six"})).unwrap();
        assert_eq!(draft.installer, Installer::Uv);
        let draft =
            parse(json!({"layer_name": "a", "requirements": "six", "installer": null})).unwrap();
        assert_eq!(draft.installer, Installer::Uv);
        for installer in Installer::ALL {
            let draft = parse(
                json!({"layer_name": "a", "requirements": "six", "installer": installer.as_str()}),
            )
            .unwrap();
            assert_eq!(draft.installer, installer);
            let request = draft.into_request(Requirements::parse("six").unwrap(), None);
            assert_eq!(request.installer, installer, "carried into the request");
        }
    }

    #[test]
    fn every_bad_request_names_its_field() {
        let long = "x".repeat(300);
        let many_lines = (0..501)
            .map(|i| format!("pkg{i}==1.0"))
            .collect::<Vec<_>>()
            .join("\n");
        let huge = format!("six==1.16.0 # {}", "y".repeat(MAX_REQUIREMENTS_BYTES));
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!("not an object"), "request", "JSON object"),
            (json!({"requirements": "six"}), "layer_name", "required"),
            (
                json!({"layer_name": "", "requirements": "six"}),
                "layer_name",
                "1 to 64",
            ),
            (
                json!({"layer_name": "has space", "requirements": "six"}),
                "layer_name",
                "letters, digits",
            ),
            (
                json!({"layer_name": "a".repeat(65), "requirements": "six"}),
                "layer_name",
                "1 to 64",
            ),
            (
                json!({"layer_name": 42, "requirements": "six"}),
                "layer_name",
                "string",
            ),
            (json!({"layer_name": "a"}), "requirements", "required"),
            (
                json!({"layer_name": "a", "requirements": "six", "requirements_s3_uri": "s3://artifacts/r.txt"}),
                "requirements_s3_uri",
                "exactly one",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "installer": "conda"}),
                "installer",
                "expected uv or pip",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "installer": "UV"}),
                "installer",
                "expected uv or pip",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "installer": true}),
                "installer",
                "must be a string",
            ),
            (
                json!({"layer_name": "a", "requirements": ""}),
                "requirements",
                "at least one",
            ),
            (
                json!({"layer_name": "a", "requirements": "# only a comment\n"}),
                "requirements",
                "at least one",
            ),
            (
                json!({"layer_name": "a", "requirements": 7}),
                "requirements",
                "text or an array",
            ),
            (
                json!({"layer_name": "a", "requirements": ["six", 3]}),
                "requirements",
                "element 2",
            ),
            (
                json!({"layer_name": "a", "requirements": "six\n-i https://evil.example/simple\n"}),
                "requirements",
                "line 2: pip option -i",
            ),
            (
                json!({"layer_name": "a", "requirements": "--index-url=https://evil.example/simple"}),
                "requirements",
                "--index-url",
            ),
            (
                json!({"layer_name": "a", "requirements": "six|--extra-index-url https://x"}),
                "requirements",
                "line 2: pip option --extra-index-url",
            ),
            (
                json!({"layer_name": "a", "requirements": "-e git+https://github.com/x/y"}),
                "requirements",
                "-e",
            ),
            (
                json!({"layer_name": "a", "requirements": "-r other.txt"}),
                "requirements",
                "-r",
            ),
            (
                json!({"layer_name": "a", "requirements": "-c constraints.txt"}),
                "requirements",
                "-c",
            ),
            (
                json!({"layer_name": "a", "requirements": "--trusted-host pypi.evil"}),
                "requirements",
                "--trusted-host",
            ),
            (
                json!({"layer_name": "a", "requirements": "-f https://x/links"}),
                "requirements",
                "-f",
            ),
            (
                json!({"layer_name": "a", "requirements": "six==1.16.0 --global-option=build_ext"}),
                "requirements",
                "--global-option",
            ),
            (
                json!({"layer_name": "a", "requirements": "mypkg @ https://example.com/mypkg-1.0.whl"}),
                "requirements",
                "direct URL",
            ),
            (
                json!({"layer_name": "a", "requirements": "six==1.16.0 --hash=md5:abc"}),
                "requirements",
                "md5",
            ),
            (
                json!({"layer_name": "a", "requirements": "six==1.16.0 --hash=sha256:abc"}),
                "requirements",
                "64 hex digits",
            ),
            (
                json!({"layer_name": "a", "requirements": "--hash=sha256:aaaa"}),
                "requirements",
                "must follow a requirement",
            ),
            (
                json!({"layer_name": "a", "requirements": "six===="}),
                "requirements",
                "line 1: not a PEP 508",
            ),
            (
                json!({"layer_name": "a", "requirements": "six\nre quests==1"}),
                "requirements",
                "line 2: not a PEP 508",
            ),
            (
                json!({"layer_name": "a", "requirements": "six \\"}),
                "requirements",
                "continuation",
            ),
            (
                json!({"layer_name": "a", "requirements": many_lines}),
                "requirements",
                "at most 500 lines",
            ),
            (
                json!({"layer_name": "a", "requirements": huge}),
                "requirements",
                "bytes of text",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "https://bucket/key"}),
                "requirements_s3_uri",
                "s3://",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "s3://artifacts"}),
                "requirements_s3_uri",
                "key",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "s3://artifacts/dir/"}),
                "requirements_s3_uri",
                "not a folder",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "s3://Bad_Bucket/r.txt"}),
                "requirements_s3_uri",
                "bucket name",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "s3://someone-elses/r.txt"}),
                "requirements_s3_uri",
                "not allowed",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "runtime": "python2.7"}),
                "runtime",
                "python3.10",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "runtime": "nodejs20.x"}),
                "runtime",
                "unknown runtime",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "runtime": 3.12}),
                "runtime",
                "string",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "architecture": "aarch64"}),
                "architecture",
                "arm64 or x86_64",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "description": long}),
                "description",
                "256",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "description": "two\nlines"}),
                "description",
                "control",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "license": "L".repeat(513)}),
                "license",
                "512",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "licence": "MIT"}),
                "licence",
                "unknown field",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "force": "yes"}),
                "force",
                "true or false",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "vcpu": 64}),
                "vcpu",
                "MAX_VCPU",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "vcpu": "2"}),
                "vcpu",
                "number",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "memory_mib": 100}),
                "memory_mib",
                "512",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "memory_mib": 1.5}),
                "memory_mib",
                "whole number",
            ),
        ];
        assert!(cases.len() >= 25);
        for (event, field, rule) in &cases {
            let err = parse(event.clone()).expect_err(&format!("accepted {event}"));
            assert_eq!(err.field, *field, "{event} -> {err}");
            assert!(
                err.to_string().contains(rule),
                "{event} -> {err} (expected to mention {rule:?})"
            );
            assert!(
                err.to_string().starts_with(field),
                "message must lead with the field: {err}"
            );
        }
    }

    #[test]
    fn sample_events_parse_as_documented() {
        let valid = [
            include_str!("../events/build-request.json"),
            include_str!("../events/build-request-s3.json"),
            include_str!("../events/build-request-x86_64.json"),
            include_str!("../events/local-demo.json"),
        ];
        for text in valid {
            let event: Value = serde_json::from_str(text).unwrap();
            parse(event).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        let x86: Value =
            serde_json::from_str(include_str!("../events/build-request-x86_64.json")).unwrap();
        assert_eq!(
            parse(x86).unwrap().installer,
            Installer::Pip,
            "the x86_64 sample shows the installer field"
        );
        // A request for each runtime.
        let per_runtime = [
            (
                include_str!("../events/build-request-python310.json"),
                Runtime::Python310,
            ),
            (
                include_str!("../events/build-request-python311.json"),
                Runtime::Python311,
            ),
            (
                include_str!("../events/build-request.json"),
                Runtime::Python312,
            ),
            (
                include_str!("../events/build-request-python313.json"),
                Runtime::Python313,
            ),
            (
                include_str!("../events/build-request-python314.json"),
                Runtime::Python314,
            ),
        ];
        for (text, runtime) in per_runtime {
            let event: Value = serde_json::from_str(text).unwrap();
            let draft = parse(event).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(draft.runtime, runtime, "{text}");
        }
        let invalid = [
            (
                include_str!("../events/invalid/unknown-field-licence.json"),
                "licence",
            ),
            (
                include_str!("../events/invalid/pip-option.json"),
                "requirements",
            ),
            (
                include_str!("../events/invalid/layer-name.json"),
                "layer_name",
            ),
            (include_str!("../events/invalid/runtime.json"), "runtime"),
            (
                include_str!("../events/invalid/direct-url.json"),
                "requirements",
            ),
        ];
        for (text, field) in invalid {
            let event: Value = serde_json::from_str(text).unwrap();
            assert_eq!(parse(event).unwrap_err().field, field, "{text}");
        }
    }

    #[test]
    fn architecture_without_a_build_target_is_refused() {
        let config = Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "BUILD_TARGETS" => Some(r#"{"arm64":{"job_queue":"q","job_definition":"d"}}"#.into()),
            _ => None,
        })
        .unwrap();
        let err = RequestDraft::parse(
            &json!({"layer_name": "a", "requirements": "six", "architecture": "x86_64"}),
            &config,
        )
        .unwrap_err();
        assert_eq!(err.field, "architecture");
        assert!(err.rule.contains("builds no x86_64 layers"), "{}", err.rule);
    }

    #[test]
    fn runtime_without_a_build_target_is_refused() {
        let config = Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "BUILD_TARGETS" => Some(
                r#"{"python3.12/arm64":{"job_queue":"q","job_definition":"d"},"python3.13/arm64":null}"#
                    .into(),
            ),
            _ => None,
        })
        .unwrap();
        for runtime in ["python3.10", "python3.13"] {
            let err = RequestDraft::parse(
                &json!({"layer_name": "a", "requirements": "six", "runtime": runtime}),
                &config,
            )
            .unwrap_err();
            assert_eq!(err.field, "runtime", "{runtime}");
            assert!(err.rule.contains("it builds python3.12"), "{}", err.rule);
        }
        assert!(
            RequestDraft::parse(
                &json!({"layer_name": "a", "requirements": "six", "runtime": "python3.12"}),
                &config,
            )
            .is_ok()
        );
    }

    #[test]
    fn long_values_are_truncated_in_errors() {
        let err = parse(json!({"layer_name": "a".repeat(500), "requirements": "six"})).unwrap_err();
        assert!(
            err.value.chars().count() <= VALUE_PREVIEW + 3,
            "{}",
            err.value
        );
        assert!(err.value.contains('…'));
    }

    #[test]
    fn runtime_and_architecture_names() {
        assert_eq!(Runtime::Python312.python_version(), "3.12");
        assert_eq!(Runtime::Python310.compact(), "python310");
        assert_eq!(Architecture::Arm64.machine(), "aarch64");
        for r in Runtime::ALL {
            assert_eq!(r.as_str().parse::<Runtime>(), Ok(r));
        }
    }
}
