//! What the layer holds besides the installed files, and what it costs (DESIGN section 13): the bytecode step
//! ([`compile`], see [`super::bytecode`]), the size report of what is zipped ([`size_report`]) and the budget
//! a build must fit ([`check_budget`]).

use std::{io::Read as _, path::Path, time::Instant};

use tracing::info;

use super::{
    bytecode, contain,
    error::BuildError,
    install::{self, InstallError},
    isolation::Sandbox,
    python::Interpreter,
    tree::Collected,
};
use crate::{
    size::{Distribution, SizeReport, SlimReport},
    vocab::Runtime,
};

/// Longest `RECORD` read (a distribution with 100,000 files has one of about 10 MB).
const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Compiles the tree's bytecode with the runtime's interpreter, as the build user (the install's sandbox), and
/// ends whatever the step left running, as after the install. Returns the seconds it took.
pub fn compile(
    interpreter: &Interpreter,
    runtime: Runtime,
    target: &Path,
    sandbox: &Sandbox,
) -> Result<f64, BuildError> {
    let started = Instant::now();
    let cmd = bytecode::command(interpreter, runtime, target, sandbox);
    info!(
        python = %interpreter.path.display(),
        version = interpreter.version,
        mode = bytecode::INVALIDATION_MODE,
        "compiling bytecode"
    );
    install::run("python compileall", cmd, || {
        contain::end_leftovers()
            .map(|_| ())
            .map_err(|e| InstallError::Survivors(e.to_string()))
    })
    .map_err(|e| match e {
        InstallError::Failed { status, tail, .. } => BuildError::Bytecode { status, tail },
        other => BuildError::Install(other),
    })?;
    let seconds = started.elapsed().as_secs_f64();
    info!(seconds, "bytecode compiled");
    Ok(seconds)
}

/// The size report of `collected` (entries named `prefix/…`), by the distributions whose `RECORD` it holds.
pub fn size_report(
    collected: &Collected,
    prefix: &str,
    budget_bytes: u64,
    slim: bool,
) -> Result<SizeReport, BuildError> {
    let prefix = format!("{}/", prefix.trim_end_matches('/'));
    let mut files = Vec::with_capacity(collected.files.len());
    let mut distributions = Vec::new();
    for file in &collected.files {
        let relative = file.name.strip_prefix(&prefix).unwrap_or(&file.name);
        let len = match file.expect {
            Some(id) => id.len,
            None => std::fs::metadata(&file.path)
                .map_err(BuildError::io(format!("reading {}", file.path.display())))?
                .len(),
        };
        files.push((relative.to_owned(), len));
        if let Some(dist_info) = relative.strip_suffix("/RECORD")
            && dist_info.ends_with(".dist-info")
            && !dist_info.contains('/')
        {
            let mut text = String::new();
            file.open()
                .and_then(|f| f.take(MAX_RECORD_BYTES).read_to_string(&mut text))
                .map_err(BuildError::io(format!("reading {}", file.name)))?;
            distributions.push(Distribution::from_record(dist_info, &text));
        }
    }
    let mut report = SizeReport::tally(&files, &distributions, budget_bytes);
    if slim {
        report.slim = Some(SlimReport {
            saved_bytes: collected.slimmed.iter().map(|i| i.bytes).sum(),
            removed: collected.slimmed.clone(),
            kept: Vec::new(),
        });
    }
    Ok(report)
}

/// Fails a build over its budget (exit 4), with the report's largest entries in the reason.
pub fn check_budget(report: &SizeReport) -> Result<(), BuildError> {
    if report.over_budget() {
        return Err(BuildError::TooLarge(Box::new(report.clone())));
    }
    Ok(())
}
