//! The command line (DESIGN section 4) and the original tool's short options.

use std::path::PathBuf;

use clap::{ArgGroup, CommandFactory, Parser};

use super::install::Installer;
use crate::request::{Architecture, LayerName, MAX_DESCRIPTION, MAX_LICENSE, Runtime, S3Uri};

/// Key prefix used with `--bucket` when neither `--key` nor `-k` is given: the deployment's
/// `ARTIFACT_PREFIX` default, so the object lands where publish-layer looks.
pub const DEFAULT_KEY_PREFIX: &str = "layers";

const EXIT_CODES: &str = "\
Exit codes:
  0  the layer zip was written (and uploaded)
  1  unexpected local failure (I/O)
  2  bad arguments or environment: unknown option, invalid requirements, unreadable requirements file or
     object, no Python interpreter matching --runtime for a native build
  3  install failed (pip/uv error, shown with its last lines), an ELF file of the wrong architecture, the
     bytecode step failed, or slim's import check could not finish
  4  over a Lambda limit (262,144,000 bytes unzipped) or over --max-unzipped-mb
  5  upload to S3 failed

Output: installer output and logs go to stderr; the summary (zip, artifact, sizes, sha256) to stdout as
`key: value` lines.

Environment:
  LAYERFORGE_PYTHON   the interpreter to use (default: python3.X of --runtime, then python3, python on PATH);
                      bytecode needs one of the runtime's version, whatever the platform mode
  LAYERFORGE_UV       the uv program (default: uv on PATH)
  ARTIFACT_PREFIX     default key prefix for uploads (default: layers)
  AWS_*               SDK settings; AWS_ENDPOINT_URL points at a local S3 such as moto
  RUST_LOG            log level (default: info)

Examples:
  layer-builder --name http --requirements 'requests==2.32.3' --runtime python3.12 --architecture arm64 \\
                --bucket my-artifacts --key layers/http/python3.12-arm64/0123456789abcdef.zip
  layer-builder -n http -r 'requests==2.32.3|httpx==0.27.2' -s my-artifacts -k python -l MIT
  layer-builder -n http -p requirements.txt --platform-mode cross --architecture arm64 --out http.zip";

/// Builds a Python AWS Lambda layer: installs the requirements into python/lib/pythonX.Y/site-packages,
/// writes a deterministic zip and uploads it to S3 with layerforge's metadata (or keeps it locally).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "layer-builder",
    version,
    after_long_help = EXIT_CODES,
    after_help = "Exit codes: 0 ok, 1 I/O failure, 2 bad arguments, 3 install failed, 4 over a Lambda limit, \
                  5 upload failed (--help for details).",
    group(ArgGroup::new("source").required(true).args(["requirements", "requirements_file", "requirements_s3_uri"]))
)]
pub struct Args {
    /// Layer name: 1 to 64 of A-Z a-z 0-9 - _ (a name that begins with '-' is read as the name).
    #[arg(short = 'n', long, value_name = "NAME", value_parser = parse_name, allow_hyphen_values = true)]
    pub name: LayerName,

    /// Requirements text: lines separated by newlines or '|' (PEP 508 specifiers, comments, --hash= options).
    #[arg(short = 'r', long, value_name = "TEXT", allow_hyphen_values = true)]
    pub requirements: Option<String>,

    /// A requirements.txt file: a local path or an s3://bucket/key URL (the original tool's -p).
    #[arg(short = 'p', long = "requirements-file", value_name = "PATH|S3_URL")]
    pub requirements_file: Option<String>,

    /// A requirements.txt object in S3 (what submit-build names requirements_s3_uri).
    #[arg(long, value_name = "s3://BUCKET/KEY", value_parser = S3Uri::parse)]
    pub requirements_s3_uri: Option<S3Uri>,

    /// Lambda runtime the layer is for (python3.10 … python3.14) [default: the version of the Python found
    /// here, as the original tool built for the interpreter it found].
    #[arg(long, value_name = "RUNTIME", value_parser = parse_runtime)]
    pub runtime: Option<Runtime>,

    /// Lambda architecture the layer is for: arm64 or x86_64 [default: this machine's].
    #[arg(long, value_name = "ARCH", value_parser = parse_architecture)]
    pub architecture: Option<Architecture>,

    /// Upload the zip to this S3 bucket.
    #[arg(short = 's', long, value_name = "BUCKET", value_parser = parse_bucket)]
    pub bucket: Option<String>,

    /// The exact object key (submit-build passes PREFIX/NAME/RUNTIME-ARCH/FINGERPRINT.zip).
    #[arg(
        long,
        value_name = "KEY",
        requires = "bucket",
        conflicts_with = "key_prefix"
    )]
    pub key: Option<String>,

    /// Key prefix: the key becomes PREFIX/NAME/RUNTIME-ARCH/FINGERPRINT.zip [default: $ARTIFACT_PREFIX or
    /// layers; the original tool's was python].
    #[arg(short = 'k', long, value_name = "PREFIX", requires = "bucket")]
    pub key_prefix: Option<String>,

    /// Write the zip here. Without --bucket and --out, it is written to ./NAME-RUNTIME-ARCH-FINGERPRINT.zip.
    #[arg(long, value_name = "FILE.zip")]
    pub out: Option<PathBuf>,

    /// License of the layer (PublishLayerVersion's LicenseInfo, at most 512 characters).
    #[arg(short = 'l', long, value_name = "TEXT", allow_hyphen_values = true)]
    pub license: Option<String>,

    /// Description of the layer (at most 256 characters).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub description: Option<String>,

    /// Installer [default: uv when it runs here ($LAYERFORGE_UV or uv on PATH, as in the image), else pip].
    #[arg(long, value_enum)]
    pub installer: Option<Installer>,

    /// auto: native when a Python of the runtime's version runs here and this machine is of the target
    /// architecture, else cross. native: the interpreter's own platform (must match --runtime; builds sdists).
    /// cross: wheels only, for --architecture and --runtime, up to the runtime's manylinux level; any host.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub platform_mode: ModeArg,

    /// Leave bytecode out. By default every module is compiled to hash-based bytecode (PEP 552,
    /// unchecked-hash) by an interpreter of the runtime's version ($LAYERFORGE_PYTHON, else python3.X on PATH),
    /// so that a function doesn't compile the layer again on each cold start.
    #[arg(long)]
    pub no_bytecode: bool,

    /// Remove what can't break an import: console scripts (bin/) and type stubs (*.pyi); and the tests folders
    /// of a distribution only where the runtime's interpreter still imports each of its top-level modules
    /// without them. The summary lists what was removed and saved.
    #[arg(long)]
    pub slim: bool,

    /// The size budget: fail (exit 4, naming the largest distributions) when the layer is larger than this
    /// many MiB unzipped, bytecode included [default and most: 250, Lambda's 262,144,000-byte limit for a
    /// function and all its layers].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=crate::request::MAX_BUDGET_MIB))]
    pub max_unzipped_mb: Option<u64>,

    /// A matrix's universal version (`python3.11,python3.12/arm64,x86_64`): the files go under `python/`, which
    /// every Python runtime has on sys.path, and the build fails (exit 3) on any ELF file or a top-level `.pth`
    /// file, which Lambda reads only in a site directory. Bytecode is the build runtime's.
    #[arg(long, value_name = "RUNTIMES/ARCHS", value_parser = crate::request::Targets::parse)]
    pub universal: Option<crate::request::Targets>,
}

/// `--platform-mode`: `auto` is resolved to native or cross before the install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Auto,
    Native,
    Cross,
}

fn parse_name(s: &str) -> Result<LayerName, String> {
    LayerName::parse(s)
}

fn parse_runtime(s: &str) -> Result<Runtime, String> {
    s.parse()
}

fn parse_architecture(s: &str) -> Result<Architecture, String> {
    match s {
        // `uname -m` spelling, as the original tool wrote it.
        "aarch64" => Ok(Architecture::Arm64),
        other => other.parse(),
    }
}

fn parse_bucket(s: &str) -> Result<String, String> {
    S3Uri::parse(&format!("s3://{s}/k")).map(|u| u.bucket)
}

impl Args {
    /// Checks what clap can't: text lengths. Returns the message of a usage error.
    pub fn check(&self) -> Result<(), String> {
        for (flag, value, max) in [
            ("--license", &self.license, MAX_LICENSE),
            ("--description", &self.description, MAX_DESCRIPTION),
        ] {
            if let Some(v) = value {
                let n = v.chars().count();
                if n > max {
                    return Err(format!("{flag}: at most {max} characters ({n} given)"));
                }
            }
        }
        if let Some(key) = &self.key
            && (key.is_empty() || key.starts_with('/') || key.len() > 1024)
        {
            return Err(format!(
                "--key: must be a relative S3 key of 1 to 1024 bytes (got {key:?})"
            ));
        }
        Ok(())
    }

    /// Bytecode and slim, as the fingerprint sees them.
    pub fn options(&self) -> crate::request::LayerOptions {
        crate::request::LayerOptions {
            bytecode: !self.no_bytecode,
            slim: self.slim,
        }
    }

    /// The size budget in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.max_unzipped_mb
            .map_or(crate::request::LAMBDA_UNZIPPED_LIMIT, |m| {
                m * crate::request::MIB
            })
    }

    /// The architecture asked for, or this machine's.
    pub fn architecture(&self) -> Architecture {
        self.architecture.unwrap_or_else(host_architecture)
    }
}

/// This machine's architecture (`arm64` on aarch64, `x86_64` otherwise).
pub fn host_architecture() -> Architecture {
    if std::env::consts::ARCH == "aarch64" {
        Architecture::Arm64
    } else {
        Architecture::X86_64
    }
}

/// Parses the process arguments; on a bad argument prints clap's error followed by the usage line (clap
/// omits it for some error kinds) and exits with 2. `--help` and `--version` print and exit with 0.
pub fn parse_or_exit() -> Args {
    match Args::try_parse() {
        Ok(args) => args,
        Err(err) => match usage_message(&err) {
            Some(message) => {
                eprint!("{message}");
                std::process::exit(2)
            }
            None => err.exit(),
        },
    }
}

/// The text printed for an argument error, always with the usage line; `None` for help and version output.
pub fn usage_message(err: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        return None;
    }
    let mut text = err.render().to_string();
    if !text.contains("Usage:") {
        text.push_str(&format!("\n{}\n", Args::command().render_usage()));
    }
    Some(text)
}

/// A usage error in clap's format (`error: …`, the usage line, a pointer to --help); exits with 2.
pub fn usage_error(message: &str) -> clap::Error {
    Args::command().error(clap::error::ErrorKind::ValueValidation, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("layer-builder").chain(args.iter().copied()))
    }

    #[test]
    fn submit_build_argv_is_accepted() {
        let args = parse(&[
            "--name",
            "http",
            "--requirements",
            "requests==2.32.3\nhttpx[http2]>=0.27,<1 ; python_version >= '3.8'\n",
            "--runtime",
            "python3.12",
            "--architecture",
            "arm64",
            "--bucket",
            "artifacts",
            "--key",
            "layers/http/python3.12-arm64/0123456789abcdef.zip",
            "--license",
            "MIT",
            "--description",
            "d",
        ])
        .unwrap();
        assert_eq!(args.name.as_str(), "http");
        assert_eq!(args.runtime, Some(Runtime::Python312));
        assert_eq!(args.architecture(), Architecture::Arm64);
        assert_eq!(
            args.key.as_deref(),
            Some("layers/http/python3.12-arm64/0123456789abcdef.zip")
        );
        assert_eq!(args.installer, None, "uv when it runs here, else pip");
        assert_eq!(args.platform_mode, ModeArg::Auto);
        assert!(args.check().is_ok());
    }

    #[test]
    fn values_that_begin_with_a_dash_are_values() {
        let args = parse(&[
            "--name",
            "-dash",
            "--requirements",
            "six==1.16.0",
            "--description",
            "- beta",
            "--license",
            "-MIT-",
        ])
        .unwrap();
        assert_eq!(args.name.as_str(), "-dash");
        assert_eq!(args.description.as_deref(), Some("- beta"));
        assert_eq!(args.license.as_deref(), Some("-MIT-"));
        let args = parse(&["--name=-x", "--description=--y", "-r", "six"]).unwrap();
        assert_eq!(args.name.as_str(), "-x");
        assert_eq!(args.description.as_deref(), Some("--y"));
        assert_eq!(args.runtime, None, "the interpreter's version decides");
    }

    #[test]
    fn original_short_options_are_accepted() {
        let args = parse(&[
            "-n",
            "libs",
            "-r",
            "six|attrs",
            "-s",
            "bucket-1",
            "-k",
            "python",
            "-l",
            "MIT",
        ])
        .unwrap();
        assert_eq!(args.requirements.as_deref(), Some("six|attrs"));
        assert_eq!(args.bucket.as_deref(), Some("bucket-1"));
        assert_eq!(args.key_prefix.as_deref(), Some("python"));
        assert_eq!(args.license.as_deref(), Some("MIT"));
        let args = parse(&[
            "-n",
            "libs",
            "-p",
            "s3://bucket-1/req.txt",
            "--architecture",
            "aarch64",
        ])
        .unwrap();
        assert_eq!(
            args.requirements_file.as_deref(),
            Some("s3://bucket-1/req.txt")
        );
        assert_eq!(args.architecture(), Architecture::Arm64);
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for bad in [
            &["-r", "six"][..],
            &["-n", "x"],
            &["-n", "bad name", "-r", "six"],
            &["-n", "x", "-r", "six", "-p", "req.txt"],
            &["-n", "x", "-r", "six", "--runtime", "python2.7"],
            &["-n", "x", "-r", "six", "--architecture", "sparc"],
            &["-n", "x", "-r", "six", "--key", "k"],
            &["-n", "x", "-r", "six", "-s", "Bad_Bucket"],
            &[
                "-n", "x", "-r", "six", "-s", "bucket-1", "--key", "k", "-k", "p",
            ],
            &["-n", "x", "-r", "six", "--installer", "conda"],
            &["-n", "x", "-r", "six", "--requirements-s3-uri", "https://x"],
            &["-n", "x", "-r", "six", "--bogus"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            let message = usage_message(&err).unwrap();
            assert!(message.contains("error:"), "{bad:?}: {message}");
            assert!(
                message.contains("Usage: layer-builder"),
                "{bad:?}: {message}"
            );
        }
    }

    #[test]
    fn long_texts_are_refused() {
        let long = "x".repeat(MAX_DESCRIPTION + 1);
        let args = parse(&["-n", "x", "-r", "six", "--description", &long]).unwrap();
        assert!(
            args.check()
                .unwrap_err()
                .starts_with("--description: at most 256")
        );
        assert!(usage_message(&parse(&["--help"]).unwrap_err()).is_none());
        let err = usage_error("--description: at most 256 characters");
        assert_eq!(err.exit_code(), 2);
        assert!(err.render().to_string().contains("Usage: layer-builder"));
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
