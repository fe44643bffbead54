//! `layerforge build`: one build request to submit-build, and with `--wait` the build followed through
//! build-status until it is published, rejected or failed.

use std::{
    io::IsTerminal,
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::{ArgGroup, Args};
use serde_json::{Map, Value, json};

use super::context::{Context, Target, print_json};
use super::error::CliError;
use super::status::size_lines;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["requirements", "requirements_file", "requirements_s3_uri"])))]
pub struct BuildArgs {
    /// The layer's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Requirements text (newline or `|` separated).
    #[arg(
        short = 'r',
        long = "requirements",
        value_name = "TEXT",
        allow_hyphen_values = true
    )]
    pub requirements: Option<String>,
    /// A requirements.txt file (comments and blank lines allowed); its text is sent.
    #[arg(long, value_name = "FILE")]
    pub requirements_file: Option<PathBuf>,
    /// A requirements file in S3 (s3://BUCKET/KEY) that submit-build reads.
    #[arg(long, value_name = "URI")]
    pub requirements_s3_uri: Option<String>,
    /// Lambda Python runtime (default: the deployment's, python3.12). Repeat for a matrix: one build per runtime
    /// and architecture.
    #[arg(long)]
    pub runtime: Vec<String>,
    /// arm64 or x86_64 (default: the deployment's, arm64). Repeat for a matrix.
    #[arg(long)]
    pub architecture: Vec<String>,
    /// A matrix: one version per pair even when the set is pure Python (by default such a set publishes one
    /// version for every pair).
    #[arg(long)]
    pub no_universal: bool,
    #[arg(long, allow_hyphen_values = true)]
    pub description: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub license: Option<String>,
    #[arg(long, value_parser = ["uv", "pip"])]
    pub installer: Option<String>,
    /// Leave bytecode out of the zip (modules are then compiled on every cold start).
    #[arg(long)]
    pub no_bytecode: bool,
    /// Remove what nothing imports (console scripts, stubs, tests where imports still work).
    #[arg(long)]
    pub slim: bool,
    /// Fail the build when the layer is larger than this many MiB unzipped (1 to 250; default 250, Lambda's limit).
    #[arg(long, value_name = "MIB")]
    pub max_unzipped_mb: Option<u64>,
    /// Build even when an identical artifact exists.
    #[arg(long)]
    pub force: bool,
    /// Which path builds it: auto (the fast builder, a Lambda function, for wheel-only sets; else AWS Batch),
    /// function or batch.
    #[arg(long, value_parser = ["auto", "function", "batch"])]
    pub builder: Option<String>,
    /// Grant this AWS account use of every version the build publishes (repeat for more).
    #[arg(long = "share-account", value_name = "ACCOUNT_ID")]
    pub share_accounts: Vec<String>,
    /// Grant every account of this AWS organization (o-…) use of every version the build publishes.
    #[arg(long, value_name = "ORG_ID")]
    pub share_organization: Option<String>,
    /// Grant everyone use of every version the build publishes.
    #[arg(long)]
    pub share_public: bool,
    /// Follow the build until it is published, rejected or failed; print the layer version ARN.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// With --wait: give up after this many seconds (exit 3).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub timeout: u64,
    /// With --wait: seconds between two build-status queries.
    #[arg(long, default_value_t = 2.0, hide = true)]
    pub poll_interval: f64,
}

impl BuildArgs {
    /// The build request of DESIGN section 1.
    pub fn request(&self) -> Result<Value, CliError> {
        let mut request = Map::new();
        request.insert("layer_name".into(), json!(self.name));
        if let Some(text) = &self.requirements {
            request.insert("requirements".into(), json!(text));
        }
        if let Some(path) = &self.requirements_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::Invalid(format!("--requirements-file {}: {e}", path.display()))
            })?;
            request.insert("requirements".into(), json!(text));
        }
        if let Some(uri) = &self.requirements_s3_uri {
            request.insert("requirements_s3_uri".into(), json!(uri));
        }
        // More than one of either makes a matrix (DESIGN section 15): both go as lists.
        if self.runtime.len() > 1 || self.architecture.len() > 1 {
            for (field, values) in [
                ("runtimes", &self.runtime),
                ("architectures", &self.architecture),
            ] {
                if !values.is_empty() {
                    request.insert(field.into(), json!(values));
                }
            }
            if self.no_universal {
                request.insert("universal".into(), json!(false));
            }
        } else if self.no_universal {
            return Err(CliError::Invalid(
                "--no-universal: only for a matrix (repeated --runtime or --architecture)".into(),
            ));
        } else {
            for (field, value) in [
                ("runtime", self.runtime.first()),
                ("architecture", self.architecture.first()),
            ] {
                if let Some(v) = value {
                    request.insert(field.into(), json!(v));
                }
            }
        }
        for (field, value) in [
            ("description", &self.description),
            ("license", &self.license),
            ("installer", &self.installer),
            ("builder", &self.builder),
        ] {
            if let Some(v) = value {
                request.insert(field.into(), json!(v));
            }
        }
        if self.force {
            request.insert("force".into(), json!(true));
        }
        // Only what was given: the defaults are submit-build's.
        if self.no_bytecode {
            request.insert("bytecode".into(), json!(false));
        }
        if self.slim {
            request.insert("slim".into(), json!(true));
        }
        if let Some(mib) = self.max_unzipped_mb {
            request.insert("max_unzipped_mb".into(), json!(mib));
        }
        if !self.share_accounts.is_empty() || self.share_organization.is_some() || self.share_public
        {
            let mut share = Map::new();
            if !self.share_accounts.is_empty() {
                share.insert("accounts".into(), json!(self.share_accounts));
            }
            if let Some(org) = &self.share_organization {
                share.insert("organization_id".into(), json!(org));
            }
            if self.share_public {
                share.insert("public".into(), json!(true));
            }
            request.insert("share".into(), Value::Object(share));
        }
        Ok(Value::Object(request))
    }
}

fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub async fn run(target: &Target, args: BuildArgs) -> Result<u8, CliError> {
    let request = args.request()?;
    let ctx = Context::new(target).await?;
    let submit = ctx.submit_function().await?;
    let response = ctx.invoke(&submit, &request).await?;
    if response.get("matrix_id").is_some() {
        let follow = super::matrix::Follow {
            wait: args.wait,
            json: args.json,
            timeout: Duration::from_secs(args.timeout),
            poll_interval: Duration::from_secs_f64(args.poll_interval.max(0.1)),
        };
        return super::matrix::run(&ctx, response, follow).await;
    }
    let status = text(&response, "status").unwrap_or("?").to_owned();

    if status == "rejected" {
        let reason = text(&response, "reason").unwrap_or("(no reason given)");
        if args.json {
            print_json(&response);
        }
        eprintln!("rejected: {reason}");
        return Ok(1);
    }
    if !args.wait {
        if args.json {
            print_json(&response);
        } else {
            describe_submission(&response);
        }
        return Ok(0);
    }
    if status == "cached"
        && let Some(arn) = text(&response, "layer_version_arn")
    {
        if args.json {
            let mut out = json!({"state": "cached", "layer_version_arn": arn, "submit": response});
            copy(&mut out, &response, &["artifact", "fingerprint"]);
            print_json(&out);
        } else {
            eprintln!("cached: {}", text(&response, "artifact").unwrap_or(""));
            println!("{arn}");
        }
        return Ok(0);
    }

    // Follow the job (submitted, building), or the artifact (cached, waiting to be published).
    let query = match text(&response, "job_id") {
        Some(job) => json!({"job_id": job}),
        None => json!({"artifact": text(&response, "artifact").unwrap_or("")}),
    };
    if !args.json {
        describe_submission(&response);
    }
    let status_fn = ctx.status_function().await?;
    let last = follow(&ctx, &status_fn, &query, &args).await?;
    // With --json the size is in build-status's answer, printed as it is.
    let mut end = Ending::of(&last, !args.json);
    end.hold_to_budget(&last, args.max_unzipped_mb);
    for line in &end.stderr {
        eprintln!("{line}");
    }
    if args.json {
        let mut out = last;
        if let Some(o) = out.as_object_mut() {
            o.insert("submit".into(), response);
        }
        print_json(&out);
    } else if let Some(arn) = &end.stdout {
        println!("{arn}");
    }
    Ok(end.exit_code)
}

/// What `--wait` prints when the build ends.
#[derive(Debug, PartialEq, Eq)]
struct Ending {
    /// With the progress: unless published, the reason; the size (`with_size`, when build-status has it); unless
    /// published, the log's last lines.
    stderr: Vec<String>,
    /// The layer version ARN, when published (printed without `--json`).
    stdout: Option<String>,
    exit_code: u8,
}

impl Ending {
    fn of(last: &Value, with_size: bool) -> Self {
        let state = text(last, "state").unwrap_or("?");
        let size = if with_size {
            size_lines(last)
        } else {
            Vec::new()
        };
        if state == "published" {
            return Self {
                stderr: size,
                stdout: Some(text(last, "layer_version_arn").unwrap_or("").to_owned()),
                exit_code: 0,
            };
        }
        let reason = text(last, "reason").unwrap_or("(no reason given)");
        let code = last
            .get("exit_code")
            .and_then(Value::as_i64)
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default();
        let mut stderr = vec![format!("{state}{code}: {reason}")];
        stderr.extend(size);
        if let Some(tail) = last.get("log_tail").and_then(Value::as_array) {
            stderr.extend(
                tail.iter()
                    .filter_map(Value::as_str)
                    .map(|line| format!("  | {line}")),
            );
        }
        Self {
            stderr,
            stdout: None,
            exit_code: 1,
        }
    }
}

impl Ending {
    /// A request that joined a build already under way (`building`) gets that build's layer, whose size
    /// submit-build couldn't know yet: a layer larger than this request's `--max-unzipped-mb` is reported and
    /// exits 1, although it was published.
    fn hold_to_budget(&mut self, last: &Value, max_unzipped_mb: Option<u64>) {
        let (Some(mib), Some(bytes)) = (
            max_unzipped_mb,
            last.get("size")
                .and_then(|s| s.get("unzipped_bytes"))
                .and_then(Value::as_u64),
        ) else {
            return;
        };
        let budget = mib * crate::vocab::MIB;
        if self.exit_code == 0 && bytes > budget {
            self.stderr.push(format!(
                "over your budget: the layer is {bytes} bytes unzipped, more than --max-unzipped-mb {mib} \
                 ({budget} bytes); this request joined a build already under way, published as it was \
                 asked first"
            ));
            self.stdout = None;
            self.exit_code = 1;
        }
    }
}

fn copy(out: &mut Value, from: &Value, fields: &[&str]) {
    if let Some(o) = out.as_object_mut() {
        for f in fields {
            if let Some(v) = from.get(*f) {
                o.insert((*f).into(), v.clone());
            }
        }
    }
}

fn describe_submission(response: &Value) {
    let status = text(response, "status").unwrap_or("?");
    match (status, text(response, "job_id")) {
        (_, Some(job)) => eprintln!(
            "{status}: job {job} ({}), artifact {}",
            text(response, "job_name").unwrap_or(""),
            text(response, "artifact").unwrap_or("")
        ),
        _ => eprintln!(
            "{status}: artifact {}",
            text(response, "artifact").unwrap_or("")
        ),
    }
    if let Some(builder) = text(response, "builder") {
        eprintln!(
            "builder: {builder} ({})",
            text(response, "builder_reason").unwrap_or("")
        );
    }
    if let Some(why) = text(response, "handed_over") {
        eprintln!("handed over to batch: {why}");
    }
    if status == "cached"
        && let Some(arn) = text(response, "layer_version_arn")
    {
        println!("{arn}");
    }
}

/// The progress label: the state and, when build-status knows it, the path (`running [function]`,
/// `queued [batch, handed over: no wheel for …]`).
fn progress_label(answer: &Value) -> String {
    let state = text(answer, "state").unwrap_or("?");
    match (text(answer, "builder"), text(answer, "handed_over")) {
        (Some(builder), Some(why)) => format!("{state} [{builder}, handed over: {why}]"),
        (Some(builder), None) => format!("{state} [{builder}]"),
        _ => state.to_owned(),
    }
}

/// States after which build-status's answer no longer changes.
const FINAL: &[&str] = &["published", "failed", "rejected"];

/// Queries build-status until a final state; progress on stderr.
async fn follow(
    ctx: &Context,
    function: &str,
    query: &Value,
    args: &BuildArgs,
) -> Result<Value, CliError> {
    let started = Instant::now();
    let mut progress = Progress::new();
    let interval = Duration::from_secs_f64(args.poll_interval.max(0.1));
    loop {
        let answer = match ctx.invoke(function, query).await {
            Ok(a) => a,
            // A record written a moment ago can lag behind; keep asking within the timeout.
            Err(CliError::Invalid(m))
                if m.starts_with("NotFound") && started.elapsed() < Duration::from_secs(30) =>
            {
                progress.update("submitted", started.elapsed(), None);
                tokio::time::sleep(interval).await;
                continue;
            }
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        };
        let state = text(&answer, "state").unwrap_or("?");
        let label = progress_label(&answer);
        let line = answer
            .get("log_tail")
            .and_then(Value::as_array)
            .and_then(|t| t.last())
            .and_then(Value::as_str);
        progress.update(&label, started.elapsed(), line);
        if FINAL.contains(&state) {
            progress.finish();
            return Ok(answer);
        }
        if started.elapsed() > Duration::from_secs(args.timeout) {
            progress.finish();
            return Err(CliError::Aws(format!(
                "the build is still {state} after {} s (--timeout); follow it with `layerforge status {}`",
                args.timeout,
                query
                    .get("job_id")
                    .or(query.get("artifact"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            )));
        }
        tokio::time::sleep(interval).await;
    }
}

/// A spinner on a terminal, plain lines (on changes) otherwise.
enum Progress {
    Spinner(indicatif::ProgressBar),
    Lines(Option<(String, Option<String>)>),
}

impl Progress {
    fn new() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            Progress::Spinner(bar)
        } else {
            Progress::Lines(None)
        }
    }

    fn update(&mut self, state: &str, elapsed: Duration, line: Option<&str>) {
        let secs = elapsed.as_secs();
        match self {
            Progress::Spinner(bar) => {
                let line = line.map(|l| format!("  {}", l.chars().take(100).collect::<String>()));
                bar.set_message(format!("{state} {secs:>4} s{}", line.unwrap_or_default()));
            }
            Progress::Lines(last) => {
                let now = (state.to_owned(), line.map(str::to_owned));
                if last.as_ref() != Some(&now) {
                    match line {
                        Some(l) => eprintln!("[{secs:>4} s] {state}: {l}"),
                        None => eprintln!("[{secs:>4} s] {state}"),
                    }
                    *last = Some(now);
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Progress::Spinner(bar) = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn build(args: &[&str]) -> BuildArgs {
        let cli = Cli::try_parse_from([&["layerforge", "build"], args].concat()).unwrap();
        match cli.command {
            Command::Build(b) => *b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_carry_exactly_the_given_fields() {
        let b = build(&[
            "demo",
            "-r",
            "six==1.16.0|idna==3.10",
            "--architecture",
            "x86_64",
            "--force",
        ]);
        assert_eq!(
            b.request().unwrap(),
            json!({"layer_name": "demo", "requirements": "six==1.16.0|idna==3.10", "architecture": "x86_64", "force": true})
        );
        let b = build(&[
            "demo",
            "--requirements-s3-uri",
            "s3://b/r.txt",
            "--description",
            "- beta",
        ]);
        assert_eq!(
            b.request().unwrap(),
            json!({"layer_name": "demo", "requirements_s3_uri": "s3://b/r.txt", "description": "- beta"})
        );
    }

    #[test]
    fn size_flags_are_sent_only_when_given() {
        let b = build(&["demo", "-r", "six==1.16.0"]);
        assert_eq!(
            b.request().unwrap(),
            json!({"layer_name": "demo", "requirements": "six==1.16.0"})
        );
        let b = build(&[
            "demo",
            "-r",
            "six==1.16.0",
            "--no-bytecode",
            "--slim",
            "--max-unzipped-mb",
            "50",
        ]);
        assert_eq!(
            b.request().unwrap(),
            json!({"layer_name": "demo", "requirements": "six==1.16.0", "bytecode": false, "slim": true,
                   "max_unzipped_mb": 50})
        );
        // submit-build decides the range; the CLI only wants a number.
        assert_eq!(
            build(&["demo", "-r", "six", "--max-unzipped-mb=0"])
                .request()
                .unwrap()["max_unzipped_mb"],
            0
        );
        assert!(
            Cli::try_parse_from([
                "layerforge",
                "build",
                "demo",
                "-r",
                "six",
                "--max-unzipped-mb",
                "lots"
            ])
            .is_err()
        );
    }

    fn size(budget_mib: u64) -> Value {
        use crate::size::{Distribution, SizeReport};
        const MIB: u64 = crate::vocab::MIB;
        let report = SizeReport::tally(
            &[
                ("numpy/x.so".to_owned(), 60 * MIB),
                ("six.py".to_owned(), MIB / 2),
            ],
            &[
                Distribution::from_record("numpy-2.1.3.dist-info", "numpy/x.so,,\n"),
                Distribution::from_record("six-1.16.0.dist-info", "six.py,,\n"),
            ],
            budget_mib * MIB,
        );
        serde_json::to_value(report).unwrap()
    }

    #[test]
    fn a_published_layer_over_the_callers_budget_exits_1() {
        let published =
            json!({"state": "published", "layer_version_arn": "arn:l:1", "size": size(250)});
        let mut end = Ending::of(&published, true);
        end.hold_to_budget(&published, Some(60));
        assert_eq!((end.exit_code, end.stdout.as_deref()), (1, None));
        assert!(
            end.stderr
                .last()
                .unwrap()
                .starts_with("over your budget: the layer is 63438848 bytes"),
            "{:?}",
            end.stderr
        );
        for budget in [None, Some(61)] {
            let mut end = Ending::of(&published, true);
            end.hold_to_budget(&published, budget);
            assert_eq!((end.exit_code, end.stdout.as_deref()), (0, Some("arn:l:1")));
        }
    }

    #[test]
    fn the_end_of_a_wait_shows_the_size_on_stderr_and_only_the_arn_on_stdout() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:layer:demo:1";
        let end = Ending::of(
            &json!({"state": "published", "layer_version_arn": arn, "size": size(250)}),
            true,
        );
        assert_eq!(end.stdout.as_deref(), Some(arn));
        assert_eq!(end.exit_code, 0);
        assert!(
            end.stderr[0].starts_with("size: 60.5 MiB unzipped in 2 files"),
            "{:?}",
            end.stderr
        );
        assert_eq!(
            end.stderr[1..],
            [
                "largest:",
                "  numpy 2.1.3: 60.0 MiB (bytecode 0.0 MiB)",
                "  six 1.16.0: 0.5 MiB (bytecode 0.0 MiB)"
            ]
        );

        // Over the budget: the reason, then the size, then the log.
        let failed = json!({"state": "failed", "exit_code": 4, "reason": "check: the layer is 60.5 MiB …",
                            "size": size(50), "log_tail": ["over budget"]});
        let end = Ending::of(&failed, true);
        assert_eq!(end.stdout, None);
        assert_eq!(end.exit_code, 1);
        assert_eq!(
            end.stderr[0],
            "failed (exit code 4): check: the layer is 60.5 MiB …"
        );
        assert!(
            end.stderr[1].ends_with("; budget 50.0 MiB"),
            "{:?}",
            end.stderr
        );
        assert_eq!(end.stderr.last().unwrap(), "  | over budget");
        // With --json the size is in the answer on stdout; stderr keeps the reason and the log, as before.
        assert_eq!(
            Ending::of(&failed, false).stderr,
            [
                "failed (exit code 4): check: the layer is 60.5 MiB …",
                "  | over budget"
            ]
        );

        // Without a size, as before.
        let end = Ending::of(
            &json!({"state": "published", "layer_version_arn": arn}),
            true,
        );
        assert_eq!(
            end,
            Ending {
                stderr: vec![],
                stdout: Some(arn.to_owned()),
                exit_code: 0
            }
        );
    }

    #[test]
    fn a_requirements_file_is_sent_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requirements.txt");
        std::fs::write(&path, "# pinned\nsix==1.16.0  # inline\n").unwrap();
        let b = build(&["demo", "--requirements-file", path.to_str().unwrap()]);
        assert_eq!(
            b.request().unwrap()["requirements"],
            "# pinned\nsix==1.16.0  # inline\n"
        );
        let missing = build(&["demo", "--requirements-file", "/nonexistent/r.txt"]);
        let err = missing.request().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--requirements-file"), "{err}");
    }

    #[test]
    fn exactly_one_requirements_source() {
        assert!(Cli::try_parse_from(["layerforge", "build", "demo"]).is_err());
        for extra in [
            ["--requirements-s3-uri", "s3://b/k"],
            ["--installer", "conda"],
        ] {
            let args = ["layerforge", "build", "demo", "-r", "six"]
                .into_iter()
                .chain(extra);
            assert!(Cli::try_parse_from(args).is_err(), "{extra:?}");
        }
    }
}
