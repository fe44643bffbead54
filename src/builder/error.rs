//! Why a build failed ([`BuildError`]), each kind with its exit code (DESIGN section 4: 0 ok, 1 local I/O, 2 bad
//! arguments or environment, 3 install or ELF check, 4 over a Lambda limit, 5 upload).

use super::{elf, install::InstallError, platform, python::InterpreterError, upload::UploadError};
use crate::{
    size::SizeReport,
    vocab::{Architecture, InvalidRequest, Runtime},
};

/// Most offending files listed in an architecture error.
const LISTED_FILES: usize = 20;

/// Why a build failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An argument clap could not check (lengths, requirement rules).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    InvalidRequirements(#[from] InvalidRequest),
    #[error("reading requirements from {source_name}: {reason}")]
    RequirementsSource { source_name: String, reason: String },
    #[error(transparent)]
    Interpreter(#[from] InterpreterError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(
        "{} ELF file(s) are not built for {architecture} ({}): {}{}; the native interpreter built or picked \
         wheels for another machine: use --platform-mode cross (wheels only) or build on an {architecture} host",
        files.len(),
        elf::machine_name(elf::expected_machine(*architecture)),
        files.iter().take(LISTED_FILES).map(|(f, m)| format!("{f} ({})", elf::machine_name(*m))).collect::<Vec<_>>().join(", "),
        if files.len() > LISTED_FILES { ", …" } else { "" }
    )]
    WrongArchitecture {
        architecture: Architecture,
        files: Vec<(String, u16)>,
    },
    #[error(
        "{} ELF file(s) need more than the {runtime} runtime offers: {}{}; pick versions with wheels for the \
         runtime's manylinux level (or build with --platform-mode cross, which only takes such wheels)",
        violations.len(),
        violations.iter().take(LISTED_FILES).map(ToString::to_string).collect::<Vec<_>>().join("; "),
        if violations.len() > LISTED_FILES { "; …" } else { "" }
    )]
    AboveCeiling {
        runtime: Runtime,
        violations: Vec<platform::Violation>,
    },
    #[error("{0}")]
    UnsupportedInterpreter(String),
    /// A matrix's universal build found what one copy for every runtime and architecture can't hold (DESIGN
    /// section 15): nothing is uploaded, so no version claims a target it wasn't built for.
    #[error(
        "not universal: {0}; build one version per runtime and architecture (\"universal\": false)"
    )]
    NotUniversal(String),
    /// Over the request's budget (by default Lambda's limit): the report names the largest distributions.
    #[error("{}; nothing was uploaded", .0.budget_reason())]
    TooLarge(Box<SizeReport>),
    /// The bytecode step itself failed (a module that doesn't compile is not a failure).
    #[error("compiling bytecode failed ({status}); its last lines:\n{}", tail.join("\n"))]
    Bytecode { status: String, tail: Vec<String> },
    /// slim's import check could not give an answer (deadline, crash, something left running).
    #[error("slim: {0}; build again without slim, or report the package")]
    Slim(String),
    /// An upload grant that is malformed, writes elsewhere, or expired (exit 5: the job started too late).
    #[error(transparent)]
    Grant(#[from] crate::grant::GrantError),
    #[error("upload to s3://{bucket}/{key} failed: {source}")]
    Upload {
        bucket: String,
        key: String,
        source: UploadError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl BuildError {
    /// The process exit code (see `--help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            BuildError::Io { .. } => 1,
            BuildError::Usage(_)
            | BuildError::InvalidRequirements(_)
            | BuildError::RequirementsSource { .. }
            | BuildError::Interpreter(_)
            | BuildError::UnsupportedInterpreter(_) => 2,
            BuildError::Install(_)
            | BuildError::Bytecode { .. }
            | BuildError::Slim(_)
            | BuildError::WrongArchitecture { .. }
            | BuildError::NotUniversal(_)
            | BuildError::AboveCeiling { .. } => 3,
            BuildError::TooLarge { .. } => 4,
            BuildError::Grant(crate::grant::GrantError::Expired { .. }) => 5,
            BuildError::Grant(_) => 2,
            BuildError::Upload { .. } => 5,
        }
    }

    /// The size report of a build over its budget.
    pub fn size_report(&self) -> Option<&SizeReport> {
        match self {
            BuildError::TooLarge(report) => Some(report),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        move |source| BuildError::Io {
            context: context.into(),
            source,
        }
    }
}
