//! What a successful build produced ([`Outcome`]) and the summary layer-builder prints on stdout.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use base64::Engine as _;

use super::{archive::ZipSummary, install::PlatformMode};
use crate::{
    artifact::Fingerprint,
    size::{SizeReport, TOP},
    vocab::Runtime,
};

/// What a successful build produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub layer_name: String,
    pub fingerprint: Fingerprint,
    /// The zip kept on disk (`--out`, or the default local file without `--bucket`).
    pub zip_path: Option<PathBuf>,
    /// `s3://bucket/key` when uploaded.
    pub artifact: Option<String>,
    pub summary: ZipSummary,
    pub python_version: String,
    /// The runtime built for (given, or the interpreter's) and how.
    pub runtime: Runtime,
    pub mode: PlatformMode,
    /// ELF files checked against the architecture and the runtime's ceiling.
    pub elf_files: usize,
    pub install_time: Duration,
    pub zip_time: Duration,
    pub check_time: Duration,
    /// The version of the interpreter that compiled the bytecode; `None` without bytecode.
    pub bytecode: Option<String>,
    pub bytecode_time: Duration,
    pub upload_time: Duration,
    pub total_time: Duration,
    /// Bytes by distribution, bytecode's share, the budget, what slim removed.
    pub size: SizeReport,
}

impl Outcome {
    /// base64 of the raw sha256: Lambda's CodeSha256 form.
    pub fn content_sha256(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.summary.sha256)
    }

    /// The summary printed on stdout, `key: value` per line.
    pub fn report(&self) -> String {
        let mut out = String::new();
        if let Some(artifact) = &self.artifact {
            let _ = writeln!(out, "artifact: {artifact}");
        }
        if let Some(path) = &self.zip_path {
            let _ = writeln!(out, "zip: {}", path.display());
        }
        let _ = writeln!(out, "layer: {}", self.layer_name);
        let _ = writeln!(out, "fingerprint: {}", self.fingerprint.short());
        let _ = writeln!(out, "runtime: {}", self.runtime);
        let _ = writeln!(out, "platform_mode: {}", self.mode.as_str());
        let _ = writeln!(out, "python_version: {}", self.python_version);
        let _ = writeln!(out, "elf_files: {}", self.elf_files);
        let _ = writeln!(out, "entries: {}", self.summary.entries);
        let _ = writeln!(out, "unzipped_bytes: {}", self.summary.unzipped_bytes);
        let _ = writeln!(out, "zipped_bytes: {}", self.summary.zipped_bytes);
        let _ = writeln!(out, "content_sha256: {}", self.content_sha256());
        let _ = writeln!(out, "sha256_hex: {}", hex::encode(self.summary.sha256));
        let _ = match &self.bytecode {
            Some(version) => writeln!(
                out,
                "bytecode: {} (Python {version})",
                super::bytecode::INVALIDATION_MODE
            ),
            None => writeln!(out, "bytecode: off"),
        };
        let _ = writeln!(out, "bytecode_bytes: {}", self.size.bytecode_bytes);
        let _ = writeln!(out, "budget_bytes: {}", self.size.budget_bytes);
        let _ = writeln!(out, "size: {}", self.size.headline());
        let _ = writeln!(out, "largest: {}", self.size.top_lines(TOP).join("; "));
        if let Some(slim) = &self.size.slim {
            let _ = writeln!(out, "slim: {}", slim.describe());
        }
        for (name, time) in [
            ("install", self.install_time),
            ("bytecode", self.bytecode_time),
            ("zip", self.zip_time),
            ("check", self.check_time),
            ("upload", self.upload_time),
        ] {
            let _ = writeln!(out, "{name}_seconds: {:.2}", time.as_secs_f64());
        }
        let _ = writeln!(out, "total_seconds: {:.2}", self.total_time.as_secs_f64());
        out
    }
}
