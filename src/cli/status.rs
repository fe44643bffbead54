//! `layerforge status JOB_ID|s3://BUCKET/KEY`: one build-status query (DESIGN section 9).

use clap::Args;
use serde_json::{Value, json};

use super::context::{Context, Target, print_json};
use super::error::CliError;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A job id (from `layerforge build`) or an artifact (s3://BUCKET/KEY).
    #[arg(value_name = "JOB_ID|s3://BUCKET/KEY")]
    pub build: String,
    /// Print build-status's JSON answer on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The build-status query for a job id or an artifact.
pub fn query(build: &str) -> Value {
    if build.starts_with("s3://") {
        json!({"artifact": build})
    } else {
        json!({"job_id": build})
    }
}

pub async fn run(target: &Target, args: StatusArgs) -> Result<u8, CliError> {
    let ctx = Context::new(target).await?;
    let function = ctx.status_function().await?;
    let answer = ctx.invoke(&function, &query(&args.build)).await?;
    let state = answer.get("state").and_then(Value::as_str).unwrap_or("?");
    if args.json {
        print_json(&answer);
    } else {
        println!("state: {state}");
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
                Some(Value::String(s)) if !s.is_empty() => println!("{field}: {s}"),
                Some(Value::Number(n)) => println!("{field}: {n}"),
                _ => {}
            }
        }
        if let Some(tail) = answer.get("log_tail").and_then(Value::as_array) {
            println!("log_tail:");
            for line in tail.iter().filter_map(Value::as_str) {
                println!("  | {line}");
            }
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
}
