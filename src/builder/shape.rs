//! What the layer holds besides the installed files, and what it costs (DESIGN section 13): the bytecode step
//! ([`compile`], see [`super::bytecode`]), the size report of what is zipped ([`size_report`]) and the budget
//! a build must fit ([`check_budget`]).

use std::{collections::BTreeMap, io::Read as _, path::Path, time::Instant};

use tracing::info;

use super::{
    bytecode, contain,
    error::BuildError,
    install::{self, InstallError},
    isolation::Sandbox,
    python::Interpreter,
    slim,
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
    tree: &Path,
    target: &Path,
    sandbox: &Sandbox,
) -> Result<f64, BuildError> {
    let started = Instant::now();
    let cmd = bytecode::command(interpreter, runtime, tree, target, sandbox);
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

/// The distributions whose `*.dist-info/RECORD` `collected` holds (entries named `prefix/…`).
pub fn distributions(collected: &Collected, prefix: &str) -> Result<Vec<Distribution>, BuildError> {
    let prefix = format!("{}/", prefix.trim_end_matches('/'));
    let mut distributions = Vec::new();
    for file in &collected.files {
        let relative = file.name.strip_prefix(&prefix).unwrap_or(&file.name);
        if let Some(dist_info) = relative.strip_suffix("/RECORD")
            && dist_info.ends_with(".dist-info")
            && !dist_info.contains('/')
        {
            // Read lossily: a RECORD that isn't UTF-8 costs its own paths their owner, not the build.
            let mut bytes = Vec::new();
            file.open()
                .and_then(|f| f.take(MAX_RECORD_BYTES).read_to_end(&mut bytes))
                .map_err(BuildError::io(format!("reading {}", file.name)))?;
            distributions.push(Distribution::from_record(
                dist_info,
                &String::from_utf8_lossy(&bytes),
            ));
        }
    }
    Ok(distributions)
}

/// The size report of `collected` (entries named `prefix/…`) by `distributions`. With `slim` (the parts kept
/// and why), it says what slim removed.
pub fn size_report(
    collected: &Collected,
    prefix: &str,
    distributions: &[Distribution],
    budget_bytes: u64,
    slim: Option<Vec<String>>,
) -> Result<SizeReport, BuildError> {
    let prefix = format!("{}/", prefix.trim_end_matches('/'));
    let mut files = Vec::with_capacity(collected.files.len());
    for file in &collected.files {
        let relative = file.name.strip_prefix(&prefix).unwrap_or(&file.name);
        let len = match file.expect {
            Some(id) => id.len,
            None => std::fs::metadata(&file.path)
                .map_err(BuildError::io(format!("reading {}", file.path.display())))?
                .len(),
        };
        files.push((relative.to_owned(), len));
    }
    let mut report = SizeReport::tally(&files, distributions, budget_bytes);
    if let Some(kept) = slim {
        report.slim = Some(SlimReport {
            saved_bytes: collected.slimmed.iter().map(|i| i.bytes).sum(),
            removed: collected.slimmed.clone(),
            kept,
        });
    }
    Ok(report)
}

/// `slim`'s test folders ([`super::slim`]): left out of `collected` where `verifier` (the runtime's interpreter
/// on a host of the layer's architecture; `None` elsewhere) finds every import still working. Returns what was
/// kept, and why.
pub fn slim_tests(
    collected: &mut Collected,
    site: &Path,
    prefix: &str,
    distributions: &[Distribution],
    verifier: Option<Interpreter>,
    sandbox: &Sandbox,
) -> Result<Vec<String>, BuildError> {
    let records: BTreeMap<String, Vec<String>> = distributions
        .iter()
        .map(|d| (d.name.clone(), d.paths.clone()))
        .collect();
    let (candidates, modules) = slim::candidates(collected, prefix, &records);
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = candidates.iter().map(|c| c.distribution.as_str()).collect();
    if sandbox.wheels_only {
        return Ok(vec![format!(
            "tests folders of {}: verifying them means importing package code, which this wheels-only \
             deployment never runs",
            names.join(", ")
        )]);
    }
    let Some(verifier) = verifier else {
        return Ok(vec![format!(
            "tests folders of {}: their imports can't be verified here (it takes an interpreter of the \
             runtime's version on a host of the layer's architecture)",
            names.join(", ")
        )]);
    };
    let decision =
        slim::decide(&verifier, site, &candidates, &modules, sandbox).map_err(BuildError::Slim)?;
    if let Some(item) = slim::apply(collected, prefix, &decision.removed) {
        collected.slimmed.push(item);
    }
    Ok(decision.kept)
}

/// Fails a build over its budget (exit 4), with the report's largest entries in the reason.
pub fn check_budget(report: &SizeReport) -> Result<(), BuildError> {
    if report.over_budget() {
        return Err(BuildError::TooLarge(Box::new(report.clone())));
    }
    Ok(())
}

/// Where a universal version's files go: `python`, on sys.path for every Python runtime. Source: Lambda developer
/// guide, "Packaging your layer content": for Python, `python` and `python/lib/python3.x/site-packages` (the
/// latter listed as "site directories"), extracted under `/opt`; only the second names a version.
pub const UNIVERSAL_PREFIX: &str = "python";

/// What a universal version can't hold: an ELF file (native code, of one architecture and one Python ABI) or a
/// top-level `.pth` file (Python reads those only in site directories, and `/opt/python` is not one).
pub fn universal_check(
    collected: &Collected,
    prefix: &str,
    elf_files: usize,
) -> Result<(), BuildError> {
    if elf_files > 0 {
        return Err(BuildError::NotUniversal(format!(
            "{elf_files} ELF file(s) (native code)"
        )));
    }
    let top = format!("{prefix}/");
    if let Some(pth) = collected.files.iter().find_map(|f| {
        f.name
            .strip_prefix(&top)
            .filter(|rest| !rest.contains('/') && rest.ends_with(".pth"))
    }) {
        return Err(BuildError::NotUniversal(format!(
            "{pth} is a .pth file, which Python reads only in a site directory (python/lib/python3.x/site-packages)"
        )));
    }
    Ok(())
}
