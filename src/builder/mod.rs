//! `layer-builder`: the Batch job's entry point (DESIGN section 4). Requirements in, a deterministic layer zip
//! in S3 (with the metadata of section 5) out.
//!
//! The steps, each in its own module:
//! 1. [`cli`]: the arguments, validated; requirements from the text, a file or S3, checked with the same
//!    rules as submit-build ([`Requirements::parse`]) and written to `requirements.txt` one line per
//!    requirement, as written (extras, markers, commas and hashes survive; pip turns on hash checking itself
//!    when any hash is present).
//! 2. [`python`] + [`install`]: pip or uv installs into `python/lib/pythonX.Y/site-packages` of a work folder,
//!    natively (the interpreter must be the runtime's) or cross (manylinux2014 wheels of the target).
//! 3. The tree is collected (sorted, without `__pycache__`/`*.pyc`), checked against the unzipped size
//!    limit and, file by file, for ELF objects of another architecture ([`elf`]).
//! 4. [`archive`] writes the deterministic zip; [`upload`] puts it in S3.
//!
//! Every failure maps to one exit code ([`BuildError::exit_code`]); no zip is uploaded unless every check
//! passed. A failed build with a destination leaves a failure report instead ([`report`]).

pub mod archive;
pub mod bytecode;
pub mod cli;
pub mod contain;
pub mod elf;
pub mod error;
pub mod grant;
pub mod install;
pub mod isolation;
pub mod outcome;
pub mod platform;
pub mod python;
pub mod report;
pub mod shape;
pub mod slim;
pub mod target;
pub mod tree;
pub mod upload;
pub mod work;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::info;

use self::{
    cli::{Args, DEFAULT_KEY_PREFIX, usage_error},
    install::{InstallError, InstallSpec, PlatformMode},
    upload::UploadError,
};
use crate::{
    artifact::{ArtifactKey, ArtifactMetadata, Fingerprint},
    aws::{self, AwsFault},
    request::{MAX_REQUIREMENTS_OBJECT_BYTES, Requirements, S3Uri},
};

/// Lambda's limit on a function's code plus its layers, unzipped; a layer alone can't exceed it.
pub const MAX_UNZIPPED_BYTES: u64 = crate::vocab::LAMBDA_UNZIPPED_LIMIT;

pub use self::{
    error::BuildError,
    outcome::Outcome,
    target::{UV_ENV, default_installer},
    tree::{Collected, check_elf, collect},
};
use self::{
    target::{bytecode_interpreter, resolve_target, uv_program},
    work::{WorkDir, set_mode},
};
/// Human-readable logs on stderr (stdout carries only the summary); level from `RUST_LOG`, default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// Runs a build and turns the result into the process exit: the summary on stdout, or the error on stderr
/// (usage errors in clap's format, with the usage line).
pub async fn main(args: Args) -> ExitCode {
    // Where a failure report goes: next to the artifact a Batch job's command names.
    let report_to = args.bucket.clone().zip(args.key.clone());
    match run(args).await {
        Ok(outcome) => {
            print!("{}", outcome.report());
            ExitCode::SUCCESS
        }
        Err(err) => {
            let code = err.exit_code();
            tracing::error!(exit_code = code, error = %err, "build failed");
            if let Some((bucket, key)) = &report_to {
                // A Batch job reports through its grant; by hand, with the SDK's credentials.
                let grant = grant::grants_from_env().ok().flatten().map(|g| g.report);
                report::upload(&err, bucket, key, grant.as_ref()).await;
            }
            if code == 2 {
                let _ = usage_error(&err.to_string()).print();
            } else {
                eprintln!("layer-builder: error: {err}");
            }
            ExitCode::from(code)
        }
    }
}

/// The whole build: requirements, install, checks, zip, upload (with the job's upload grants, if any).
pub async fn run(args: Args) -> Result<Outcome, BuildError> {
    let grants = grant::grants_from_env()?;
    run_with(args, grants).await
}

/// [`run`] with the upload grants given (the fast builder's come in its payload, not its environment).
pub async fn run_with(
    args: Args,
    grants: Option<crate::grant::Grants>,
) -> Result<Outcome, BuildError> {
    let started = Instant::now();
    args.check().map_err(BuildError::Usage)?;
    let architecture = args.architecture();
    let layer_name = args.name.clone();

    // Upload grants: a Batch job's only way to write (DESIGN section 16). With them no SDK configuration is
    // loaded: the job has no AWS credential, and reads its requirements from the command.
    let s3_requirements = args.requirements_s3_uri.is_some()
        || args
            .requirements_file
            .as_deref()
            .is_some_and(|p| p.starts_with("s3://"));
    if grants.is_some() && s3_requirements {
        return Err(BuildError::Usage(
            "with upload grants the job has no AWS credential to read S3 with: pass --requirements"
                .into(),
        ));
    }
    let needs_s3 = (args.bucket.is_some() && grants.is_none())
        || args.requirements_s3_uri.is_some()
        || args
            .requirements_file
            .as_deref()
            .is_some_and(|p| p.starts_with("s3://"));
    let s3 = if needs_s3 {
        Some(aws::s3_client(&aws::sdk_config().await))
    } else {
        None
    };

    let requirements = load_requirements(&args, s3.as_ref()).await?;
    let sandbox = isolation::Sandbox::from_env().map_err(BuildError::Usage)?;
    let installer = args.installer.unwrap_or_else(default_installer);
    let (runtime, mode, interpreter) = resolve_target(&args, installer, architecture, &sandbox)?;
    let options = args.options();
    // Bytecode needs the runtime's own version, whatever the mode: found before the long install.
    let compiler = if options.bytecode {
        Some(bytecode_interpreter(
            runtime,
            interpreter.as_ref(),
            &sandbox,
        )?)
    } else {
        None
    };
    let fingerprint = Fingerprint::compute(
        &requirements,
        runtime,
        architecture,
        installer,
        args.options(),
    )
    .universal(args.universal.as_ref());
    info!(
        layer = %layer_name,
        %runtime,
        %architecture,
        fingerprint = fingerprint.short(),
        requirements = requirements.lines().len(),
        installer = installer.as_str(),
        mode = mode.as_str(),
        "building layer"
    );

    // Where the zip goes: the destination key is settled before the long install so a bad one fails fast.
    let destination = args.bucket.as_ref().map(|bucket| {
        let key = match &args.key {
            Some(key) => key.clone(),
            None => {
                let prefix = args
                    .key_prefix
                    .clone()
                    .or_else(|| {
                        std::env::var("ARTIFACT_PREFIX")
                            .ok()
                            .filter(|p| !p.is_empty())
                    })
                    .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
                ArtifactKey::new(&prefix, &layer_name, runtime, architecture, &fingerprint)
                    .to_string()
            }
        };
        (bucket.clone(), key)
    });
    if let Some(grants) = &grants {
        let (bucket, key) = destination.as_ref().ok_or_else(|| {
            BuildError::Usage(
                "upload grants need --bucket and --key (the artifact they write)".into(),
            )
        })?;
        check_grants(grants, bucket, key, SystemTime::now())?;
    }

    // The work folder is root's (others may only pass through it): the installer's home and the install tree
    // are the build user's, requirements.txt and the zip's folder stay root's, so nothing can be planted where
    // the zip is written (issue 19).
    let work = WorkDir::create().map_err(BuildError::io("creating the work folder"))?;
    let requirements_file = work.path().join("requirements.txt");
    std::fs::write(&requirements_file, requirements.to_text())
        .map_err(BuildError::io("writing requirements.txt"))?;

    let python_version = match (&interpreter, mode) {
        (Some(i), PlatformMode::Native) => i.version.clone(),
        _ => runtime.python_version().to_owned(),
    };
    let tree = work.path().join("tree");
    // A universal version's files go where every Python runtime imports them (DESIGN section 15).
    let (target, prefix) = match &args.universal {
        Some(_) => (
            tree.join(shape::UNIVERSAL_PREFIX),
            shape::UNIVERSAL_PREFIX.to_owned(),
        ),
        None => (
            install::site_packages(&tree, runtime),
            install::layout_prefix(runtime),
        ),
    };
    std::fs::create_dir_all(&target).map_err(BuildError::io("creating site-packages"))?;
    let home = work.path().join("home");
    std::fs::create_dir(&home).map_err(BuildError::io("creating the installer's home"))?;
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).map_err(BuildError::io("creating the zip's folder"))?;
    set_mode(&out_dir, 0o700).map_err(BuildError::io("creating the zip's folder"))?;
    let mut handed: Vec<PathBuf> = vec![home.clone()];
    handed.extend(
        target
            .ancestors()
            .take_while(|p| *p != work.path())
            .map(Path::to_path_buf),
    );
    sandbox
        .hand_over(&handed.iter().map(PathBuf::as_path).collect::<Vec<_>>())
        .map_err(BuildError::io("handing the install tree to the build user"))?;
    if installer == install::Installer::Uv {
        isolation::probe_program(&uv_program(), &sandbox).map_err(BuildError::Usage)?;
    }
    let build_uid = sandbox.user.map(|(uid, _)| uid);
    // uv writes its interpreter's path into console scripts' shebangs (and their hashes into RECORD): a uv cross
    // build resolves with the runtime's own interpreter when there is one, the one a native build uses, so that
    // the fast builder and a Batch job write the same bytes (docs/fast-path.md).
    let interpreter = match (installer, mode, interpreter) {
        (install::Installer::Uv, PlatformMode::Cross, None) => compiler.clone(),
        (_, _, interpreter) => interpreter,
    };
    let spec = InstallSpec {
        installer,
        mode,
        runtime,
        architecture,
        interpreter,
        uv: uv_program(),
        requirements_file,
        target: target.clone(),
        sandbox: sandbox.with_home(home),
    };
    let install_started = Instant::now();
    // Whatever the install leaves behind is re-parented to this process, and killed when the installer exits.
    contain::become_subreaper().map_err(BuildError::io("becoming the install's subreaper"))?;
    // The install and the zip block this task: a build is the process's only work, nothing else waits.
    install::run(installer.as_str(), install::command(&spec)?, || {
        contain::end_leftovers()
            .map(|_| ())
            .map_err(|e| InstallError::Survivors(e.to_string()))
    })?;
    let install_time = install_started.elapsed();
    info!(seconds = install_time.as_secs_f64(), "install finished");
    let bytecode_seconds = match &compiler {
        Some(compiler) => shape::compile(compiler, runtime, &tree, &target, &spec.sandbox)?,
        None => 0.0,
    };

    // Nothing of the build user runs any more; take the tree back before reading it. Its root and every parent
    // must be real folders (a linked site-packages is refused, never followed).
    contain::take_back(&tree, build_uid).map_err(BuildError::io("taking the install tree back"))?;
    contain::open_dir_no_links(&target).map_err(BuildError::io("opening the install tree"))?;
    let keep = tree::Keep {
        bytecode_tag: compiler.as_ref().map(|_| bytecode::cache_tag(runtime)),
        slim: options.slim,
    };
    let mut collected = tree::collect_with(&target, &prefix, &keep)
        .map_err(BuildError::io(format!("reading {}", target.display())))?;
    let distributions = shape::distributions(&collected, &prefix)?;
    let slim_kept = if options.slim {
        let verifier = compiler
            .clone()
            .or_else(|| spec.interpreter.clone().filter(|i| i.matches(runtime)));
        Some(shape::slim_tests(
            &mut collected,
            &target,
            &prefix,
            &distributions,
            verifier.filter(|_| cli::host_architecture() == architecture),
            &spec.sandbox,
        )?)
    } else {
        None
    };
    let size = shape::size_report(
        &collected,
        &prefix,
        &distributions,
        args.budget_bytes(),
        slim_kept,
    )?;
    info!(
        size = size.headline(),
        largest = size.top_lines(crate::size::TOP).join("; "),
        "size"
    );
    if let Some(slim) = &size.slim {
        info!(slim = slim.describe(), "slim");
    }
    shape::check_budget(&size)?;
    let check_started = Instant::now();
    let elf_files = check_elf(&collected.files, architecture, runtime)?;
    if args.universal.is_some() {
        shape::universal_check(&collected, &prefix, elf_files)?;
    }
    let check_time = check_started.elapsed();
    info!(
        files = collected.files.len(),
        elf_files,
        unzipped_bytes = collected.unzipped_bytes,
        skipped_bytecode = collected.skipped,
        "tree checked"
    );

    let zip_path = match (&args.out, &destination) {
        (Some(out), _) => out.clone(),
        (None, Some(_)) => out_dir.join("layer.zip"),
        (None, None) => PathBuf::from(format!(
            "{layer_name}-{runtime}-{architecture}-{}.zip",
            fingerprint.short()
        )),
    };
    let zip_started = Instant::now();
    // A zip that only goes to S3 is a new file in root's folder, never a name that was there before; it is
    // uploaded from this open file.
    // The zip is always a new file that nothing was planted at (O_CREAT|O_EXCL|O_NOFOLLOW): in root's folder when
    // it only goes to S3 (uploaded from this open file), else beside the asked path under a private name, renamed
    // over it once written (a rename replaces a link there instead of writing through it).
    let private_path = if args.out.is_none() && destination.is_some() {
        zip_path.clone()
    } else {
        let name = zip_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = std::fs::canonicalize(match zip_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        })
        .map_err(BuildError::io(format!("creating {}", zip_path.display())))?;
        parent.join(format!(".{name}.{}.partial", std::process::id()))
    };
    let zip_file = contain::create_private(&private_path)
        .map_err(BuildError::io(format!("creating {}", zip_path.display())))?;
    let summary = archive::write_zip_to(&collected.files, &zip_file)
        .map_err(BuildError::io(format!("writing {}", zip_path.display())))
        .and_then(|summary| {
            if private_path != zip_path {
                set_mode(&private_path, 0o644)
                    .and_then(|()| std::fs::rename(&private_path, &zip_path))
                    .map_err(BuildError::io(format!("writing {}", zip_path.display())))?;
            }
            Ok(summary)
        })
        .inspect_err(|_| {
            if private_path != zip_path {
                let _ = std::fs::remove_file(&private_path);
            }
        })?;
    let zip_time = zip_started.elapsed();
    info!(
        path = %zip_path.display(),
        entries = summary.entries,
        zipped_bytes = summary.zipped_bytes,
        unzipped_bytes = summary.unzipped_bytes,
        seconds = zip_started.elapsed().as_secs_f64(),
        "zip written"
    );

    let mut outcome = Outcome {
        layer_name: layer_name.to_string(),
        fingerprint,
        zip_path: (args.out.is_some() || destination.is_none()).then(|| zip_path.clone()),
        artifact: None,
        summary,
        python_version,
        runtime,
        mode,
        elf_files,
        install_time,
        zip_time,
        check_time,
        bytecode: compiler.as_ref().map(|c| c.version.clone()),
        bytecode_time: Duration::from_secs_f64(bytecode_seconds),
        upload_time: Duration::ZERO,
        total_time: Duration::ZERO,
        size,
    };

    if let Some((bucket, key)) = destination {
        let upload_started = Instant::now();
        // The size goes where build-status and publish-layer read it, before the zip whose upload triggers the
        // publish (a failed upload replaces it with the failure report).
        report::upload_success(
            &outcome.size,
            &bucket,
            &key,
            grants.as_ref().map(|g| &g.report),
        )
        .await;
        let uploaded = match (&grants, &s3) {
            // The metadata is in the grant, signed by submit-build.
            (Some(grants), _) => {
                let file = zip_file
                    .try_clone()
                    .map_err(BuildError::io(format!("opening {}", zip_path.display())))?;
                grant::put_with_grant(
                    &grants.artifact,
                    file,
                    outcome.summary.zipped_bytes,
                    &bucket,
                    &key,
                )
                .await
            }
            (None, Some(s3)) => {
                let (compatible_runtimes, compatible_architectures) =
                    crate::request::Targets::compatible(
                        args.universal.as_ref(),
                        runtime,
                        architecture,
                    );
                let metadata = ArtifactMetadata {
                    layer_name: layer_name.to_string(),
                    requirements: requirements
                        .lines()
                        .iter()
                        .map(|l| l.text.as_str())
                        .collect::<Vec<_>>()
                        .join("|"),
                    license: args.license.clone().filter(|l| !l.is_empty()),
                    python_version: outcome.python_version.clone(),
                    compatible_runtimes,
                    compatible_architectures,
                    create_date: create_date(SystemTime::now()),
                    fingerprint: Some(outcome.fingerprint.short().to_owned()),
                    content_sha256: Some(outcome.content_sha256()),
                    description: args.description.clone().filter(|d| !d.is_empty()),
                    builder_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                };
                upload::upload(
                    s3,
                    &zip_file,
                    outcome.summary.zipped_bytes,
                    &bucket,
                    &key,
                    metadata.to_s3_metadata(),
                )
                .await
            }
            (None, None) => Err(UploadError::Task("no S3 client and no upload grant".into())),
        }
        .map_err(|source| BuildError::Upload {
            bucket: bucket.clone(),
            key: key.clone(),
            source,
        })?;
        info!(
            bucket,
            key,
            version_id = uploaded.version_id.as_deref().unwrap_or(""),
            multipart = uploaded.multipart,
            "uploaded"
        );
        outcome.upload_time = upload_started.elapsed();
        outcome.artifact = Some(format!("s3://{bucket}/{key}"));
    }
    outcome.total_time = started.elapsed();
    Ok(outcome)
}

/// A margin before a grant's end: a build that would start its upload later than this can't finish it.
const GRANT_MARGIN: Duration = Duration::from_secs(60);

/// Before anything is installed: both grants write exactly this build's artifact and report, and have time
/// left (a job that starts too late fails here, exit 5; see [`crate::grant`]).
fn check_grants(
    grants: &crate::grant::Grants,
    bucket: &str,
    key: &str,
    now: SystemTime,
) -> Result<(), BuildError> {
    use crate::grant::{ARTIFACT_GRANT_ENV, REPORT_GRANT_ENV};
    grants
        .artifact
        .check_target(ARTIFACT_GRANT_ENV, bucket, key)?;
    grants
        .report
        .check_target(REPORT_GRANT_ENV, bucket, &crate::records::report_key(key))?;
    grants
        .artifact
        .check_fresh(ARTIFACT_GRANT_ENV, now, GRANT_MARGIN)?;
    grants
        .report
        .check_fresh(REPORT_GRANT_ENV, now, GRANT_MARGIN)?;
    let left = grants
        .artifact
        .expires_at()
        .saturating_sub(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    info!(
        bucket,
        key,
        expires_at = grants.artifact.expires_at(),
        seconds_left = left,
        "upload grants: this artifact and its report only; no AWS credentials loaded"
    );
    Ok(())
}

/// The requirements from `-r`, `-p` (path or s3:// URL) or `--requirements-s3-uri`, validated.
async fn load_requirements(
    args: &Args,
    s3: Option<&aws_sdk_s3::Client>,
) -> Result<Requirements, BuildError> {
    let text = if let Some(text) = &args.requirements {
        text.clone()
    } else {
        let uri = match (&args.requirements_s3_uri, &args.requirements_file) {
            (Some(uri), _) => uri.clone(),
            (None, Some(path)) if path.starts_with("s3://") => {
                S3Uri::parse(path).map_err(|reason| BuildError::RequirementsSource {
                    source_name: path.clone(),
                    reason,
                })?
            }
            (None, Some(path)) => {
                let bytes = std::fs::read(path).map_err(|e| BuildError::RequirementsSource {
                    source_name: path.clone(),
                    reason: e.to_string(),
                })?;
                return parse_requirements(path, bytes);
            }
            (None, None) => {
                return Err(BuildError::Usage(
                    "give --requirements, -p or --requirements-s3-uri".into(),
                ));
            }
        };
        let s3 = s3.ok_or_else(|| {
            BuildError::Usage("an S3 requirements source needs an S3 client".into())
        })?;
        let bytes = read_s3_requirements(s3, &uri).await?;
        return parse_requirements(&uri.to_string(), bytes);
    };
    Ok(Requirements::parse(&text)?)
}

fn parse_requirements(source_name: &str, bytes: Vec<u8>) -> Result<Requirements, BuildError> {
    let text = String::from_utf8(bytes).map_err(|_| BuildError::RequirementsSource {
        source_name: source_name.to_owned(),
        reason: "not UTF-8 text".to_owned(),
    })?;
    Ok(Requirements::parse(&text)?)
}

async fn read_s3_requirements(s3: &aws_sdk_s3::Client, uri: &S3Uri) -> Result<Vec<u8>, BuildError> {
    let source_error = |reason: String| BuildError::RequirementsSource {
        source_name: uri.to_string(),
        reason,
    };
    let object = s3
        .get_object()
        .bucket(&uri.bucket)
        .key(&uri.key)
        .send()
        .await
        .map_err(|e| source_error(AwsFault::from_sdk("GetObject", &e).to_string()))?;
    if object.content_length().unwrap_or(0) > MAX_REQUIREMENTS_OBJECT_BYTES {
        return Err(source_error(format!(
            "the object is {} bytes, more than {MAX_REQUIREMENTS_OBJECT_BYTES}",
            object.content_length().unwrap_or(0)
        )));
    }
    let body = object
        .body
        .collect()
        .await
        .map_err(|e| source_error(aws::error_chain(&e)))?;
    Ok(body.into_bytes().to_vec())
}

/// The zip stage alone, for the benchmark (scripts/bench.sh): `layer-builder --bench-zip-tree DIR OUT.zip` zips
/// `DIR/python` as the builder does (collect, then the parallel deterministic deflate: what the summary's
/// `zip_seconds` times), entries named `python/…` as `zip -r OUT.zip python` in `DIR` names them. Prints
/// `seconds=… bytes=… entries=… sha256=…`; exit 2 on bad arguments, 1 on an I/O error.
pub fn bench_zip_tree(args: &[OsString]) -> ExitCode {
    let [dir, out] = args else {
        eprintln!("usage: layer-builder --bench-zip-tree DIR OUT.zip");
        return ExitCode::from(2);
    };
    let (dir, out) = (Path::new(dir), Path::new(out));
    let started = Instant::now();
    match std::fs::canonicalize(dir.join("python"))
        .and_then(|tree| collect(&tree, "python"))
        .and_then(|c| archive::write_zip(&c.files, out))
    {
        Ok(summary) => {
            println!(
                "seconds={:.3} bytes={} entries={} sha256={}",
                started.elapsed().as_secs_f64(),
                summary.zipped_bytes,
                summary.entries,
                hex::encode(summary.sha256)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("layer-builder --bench-zip-tree: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// `YYYYmmddHHMMSSmmm` in UTC, the original tool's `create-date` format.
pub fn create_date(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}{:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{
        builder::archive::ZipSource,
        request::{Architecture, Runtime},
    };

    #[test]
    fn create_date_is_utc_with_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(create_date(at), "20231114221320123");
        assert_eq!(create_date(UNIX_EPOCH), "19700101000000000");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(create_date(leap), "20000229000000000");
    }

    #[test]
    fn collect_sorts_and_drops_bytecode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pkg/__pycache__")).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("pkg/__init__.py"), "x = 1\n").unwrap();
        std::fs::write(
            root.join("pkg/__pycache__/__init__.cpython-312.pyc"),
            "junk",
        )
        .unwrap();
        std::fs::write(root.join("pkg/old.pyc"), "junk").unwrap();
        std::fs::write(root.join("Zed.py"), "").unwrap();
        std::fs::write(root.join("bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("bin/tool"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("pkg"), root.join("loop")).unwrap();
        std::os::unix::fs::symlink(root.join("Zed.py"), root.join("alias.py")).unwrap();

        let collected = collect(root, "python/lib/python3.12/site-packages/").unwrap();
        let names: Vec<&str> = collected.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "python/lib/python3.12/site-packages/Zed.py",
                "python/lib/python3.12/site-packages/alias.py",
                "python/lib/python3.12/site-packages/bin/tool",
                "python/lib/python3.12/site-packages/pkg/__init__.py",
            ]
        );
        assert_eq!(collected.unzipped_bytes, 6 + 10);
        assert_eq!(collected.skipped, 2);
        assert!(collected.files[2].executable);
        assert!(!collected.files[3].executable);
    }

    #[test]
    fn wrong_architecture_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let host = cli::host_architecture();
        let other = if host == Architecture::Arm64 {
            Architecture::X86_64
        } else {
            Architecture::Arm64
        };
        std::fs::write(dir.path().join("a.py"), "pass\n").unwrap();
        let files = vec![
            ZipSource {
                name: "python/a.py".into(),
                path: dir.path().join("a.py"),
                executable: false,
                expect: None,
            },
            ZipSource {
                name: "python/_native.so".into(),
                path: exe,
                executable: false,
                expect: None,
            },
        ];
        assert_eq!(check_elf(&files, host, Runtime::Python312).ok(), Some(1));
        let err = check_elf(&files, other, Runtime::Python312).unwrap_err();
        assert_eq!(err.exit_code(), 3);
        let text = err.to_string();
        assert!(text.contains("python/_native.so"), "{text}");
        assert!(text.contains("--platform-mode cross"), "{text}");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(BuildError::Usage("x".into()).exit_code(), 2);
        let too_large = BuildError::TooLarge(Box::new(crate::size::SizeReport::tally(
            &[("big/a.so".into(), MAX_UNZIPPED_BYTES + 5)],
            &[crate::size::Distribution::from_record(
                "big-1.0.dist-info",
                "big/a.so,,\n",
            )],
            MAX_UNZIPPED_BYTES,
        )));
        assert_eq!(too_large.exit_code(), 4);
        let text = too_large.to_string();
        assert!(text.contains("(262144005 bytes)"), "{text}");
        assert!(text.contains("Lambda's limit"), "{text}");
        assert!(text.contains("big 1.0: 250.0 MiB"), "{text}");
        assert!(text.ends_with("nothing was uploaded"), "{text}");
    }
}
