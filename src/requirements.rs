//! Requirement lines (DESIGN section 1): requirements.txt text in, a validated [`Requirements`] set out. PEP 508
//! specifiers, comments, blank lines and `--hash=` options only: every other pip option and direct URL references
//! are refused, naming the line. The same rules serve submit-build, the builder and the fingerprint.

use std::str::FromStr;

use pep508_rs::{Requirement, VersionOrUrl, pep440_rs::Operator};

use crate::vocab::InvalidRequest;

/// The most requirement text accepted inline: keeps the SubmitJob payload well under Batch's 30 KiB.
pub const MAX_REQUIREMENTS_BYTES: usize = 16 * 1024;
/// The most requirement lines accepted.
pub const MAX_REQUIREMENT_LINES: usize = 500;
/// Longest requirements object read from S3 before validation (the text cap applies after).
pub const MAX_REQUIREMENTS_OBJECT_BYTES: i64 = 64 * 1024;

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
