//! `layerforge status JOB_ID|s3://BUCKET/KEY|MATRIX_ID`: one build-status query (DESIGN sections 9 and 15).

use clap::Args;
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::context::{Context, Target, print_json};
use super::error::CliError;
use crate::size::{SizeReport, TOP};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A job id (from `layerforge build`) or an artifact (s3://BUCKET/KEY).
    #[arg(value_name = "JOB_ID|s3://BUCKET/KEY|MATRIX_ID")]
    pub build: String,
    /// Print build-status's JSON answer on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The build-status query for a job id or an artifact.
pub fn query(build: &str) -> Value {
    if build.starts_with("s3://") {
        json!({"artifact": build})
    } else if crate::matrix::valid_id(build) {
        json!({"matrix_id": build})
    } else {
        json!({"job_id": build})
    }
}

/// The size lines of a build-status answer that has a `size` (DESIGN section 13): the headline, the largest
/// distributions, and what slim removed when it ran. None without one, or with one this CLI can't read.
pub fn size_lines(answer: &Value) -> Vec<String> {
    let Some(size) = answer
        .get("size")
        .and_then(|v| SizeReport::deserialize(v).ok())
    else {
        return Vec::new();
    };
    let mut lines = vec![format!("size: {}", size.headline()), "largest:".to_owned()];
    lines.extend(size.top_lines(TOP).into_iter().map(|l| format!("  {l}")));
    if let Some(slim) = &size.slim {
        lines.push(format!("slim: {}", slim.describe()));
    }
    lines
}

/// The human form of a build-status answer: `key: value` lines, the size, the log's last lines.
pub fn human(answer: &Value) -> Vec<String> {
    let state = answer.get("state").and_then(Value::as_str).unwrap_or("?");
    let mut lines = vec![format!("state: {state}")];
    for field in [
        "job_id",
        "artifact",
        "layer_name",
        "runtime",
        "architecture",
        "layer_version_arn",
        "reason",
        "exit_code",
    ] {
        match answer.get(field) {
            Some(Value::String(s)) if !s.is_empty() => lines.push(format!("{field}: {s}")),
            Some(Value::Number(n)) => lines.push(format!("{field}: {n}")),
            _ => {}
        }
    }
    lines.extend(size_lines(answer));
    if let Some(tail) = answer.get("log_tail").and_then(Value::as_array) {
        lines.push("log_tail:".to_owned());
        for line in tail.iter().filter_map(Value::as_str) {
            lines.push(format!("  | {line}"));
        }
    }
    lines
}

pub async fn run(target: &Target, args: StatusArgs) -> Result<u8, CliError> {
    let ctx = Context::new(target).await?;
    let function = ctx.status_function().await?;
    let answer = ctx.invoke(&function, &query(&args.build)).await?;
    let state = answer.get("state").and_then(Value::as_str).unwrap_or("?");
    if args.json {
        print_json(&answer);
    } else if let Some(pairs) = answer.get("pairs").and_then(Value::as_array) {
        // A matrix: its state, then one line per pair.
        println!("state: {state}");
        for p in pairs {
            let field = |f: &str| p.get(f).and_then(Value::as_str).unwrap_or("");
            let detail = match field("state") {
                "published" => field("layer_version_arn"),
                "failed" | "rejected" => field("reason"),
                _ => field("artifact"),
            };
            println!(
                "{}/{}: {} {detail}",
                field("runtime"),
                field("architecture"),
                field("state")
            );
        }
    } else {
        for line in human(&answer) {
            println!("{line}");
        }
    }
    Ok(if matches!(state, "failed" | "rejected") {
        1
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_and_job_ids_are_told_apart() {
        assert_eq!(
            query("s3://b/layers/x.zip"),
            json!({"artifact": "s3://b/layers/x.zip"})
        );
        assert_eq!(query("7f3c"), json!({"job_id": "7f3c"}));
    }

    /// A build-status answer of a published build of six distributions, slimmed.
    fn published() -> Value {
        use crate::size::{Distribution, SlimItem, SlimReport};
        const MIB: u64 = crate::vocab::MIB;
        let names = ["a", "b", "c", "d", "e", "f"];
        let files: Vec<(String, u64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{n}/x.py"), (6 - i as u64) * MIB))
            .collect();
        let dists: Vec<Distribution> = names
            .iter()
            .map(|n| {
                Distribution::from_record(&format!("{n}-1.0.dist-info"), &format!("{n}/x.py,,\n"))
            })
            .collect();
        let mut size = SizeReport::tally(&files, &dists, crate::vocab::LAMBDA_UNZIPPED_LIMIT);
        size.slim = Some(SlimReport {
            removed: vec![SlimItem {
                what: "bin/ (console scripts)".into(),
                files: 2,
                bytes: MIB,
            }],
            kept: vec![],
            saved_bytes: MIB,
        });
        json!({"state": "published", "job_id": "j-1", "artifact": "s3://b/layers/x.zip",
               "layer_version_arn": "arn:aws:lambda:us-east-1:123456789012:layer:x:1",
               "size": size})
    }

    #[test]
    fn the_human_form_shows_the_size_headline_the_largest_and_slim() {
        let lines = human(&published());
        let at = |prefix: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} line in {lines:#?}"))
        };
        assert_eq!(
            lines[at("size: ")],
            "size: 21.0 MiB unzipped in 6 files (bytecode 0.0 MiB, 0%), 8.4% of Lambda's 250 MiB for a \
             function and all its layers"
        );
        assert_eq!(
            lines[at("largest:") + 1],
            "  a 1.0: 6.0 MiB (bytecode 0.0 MiB)"
        );
        assert_eq!(
            lines[at("largest:") + 5],
            "  e 1.0: 2.0 MiB (bytecode 0.0 MiB)"
        );
        assert_eq!(
            lines[at("largest:") + 6],
            "  1 more: 1.0 MiB",
            "TOP, then the rest"
        );
        assert_eq!(
            lines[at("slim: ")],
            "slim: removed bin/ (console scripts) (2 files, 1.0 MiB); saved 1.0 MiB"
        );
        assert!(at("layer_version_arn: ") < at("size: "));

        let mut without = published();
        without.as_object_mut().unwrap().remove("size");
        assert!(size_lines(&without).is_empty());
        assert!(!human(&without).iter().any(|l| l.starts_with("size")));
    }
}
