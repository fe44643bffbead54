//! `layerforge build` for a matrix (repeated `--runtime`/`--architecture`, DESIGN section 15): one line per pair
//! for the submission and for each change of its state, every ARN at the end, exit 0 only when every pair is
//! published.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::context::{Context, print_json};
use super::error::CliError;

/// How `build` was asked to report.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    pub wait: bool,
    pub json: bool,
    pub timeout: Duration,
    pub poll_interval: Duration,
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

fn pair(p: &Value) -> String {
    format!("{}/{}", text(p, "runtime"), text(p, "architecture"))
}

fn pairs(v: &Value) -> &[Value] {
    v.get("pairs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The pair's state and path, as the single-build progress shows them.
fn label(p: &Value) -> String {
    let state = text(p, "state");
    match (text(p, "builder"), text(p, "handed_over")) {
        ("", _) => state.to_owned(),
        (builder, "") => format!("{state} [{builder}]"),
        (builder, why) => format!("{state} [{builder}, handed over: {why}]"),
    }
}

/// States a pair doesn't leave.
const FINAL: &[&str] = &["published", "failed", "rejected"];

/// After submit-build answered a matrix (`response`).
pub async fn run(ctx: &Context, response: Value, follow: Follow) -> Result<u8, CliError> {
    let id = text(&response, "matrix_id").to_owned();
    if !follow.json {
        eprintln!(
            "matrix {id}: {} pair(s), {}",
            pairs(&response).len(),
            if response["universal"] == json!(true) {
                format!(
                    "one universal version ({})",
                    text(&response, "universal_reason")
                )
            } else {
                format!(
                    "one version per pair ({})",
                    text(&response, "universal_reason")
                )
            }
        );
        for p in pairs(&response) {
            let job = match text(p, "job_id") {
                "" => String::new(),
                job => format!(" job {job}"),
            };
            let builder = match text(p, "builder") {
                "" => String::new(),
                b => format!(" [{b}]"),
            };
            eprintln!(
                "  {}: {}{job}{builder} {}",
                pair(p),
                text(p, "status"),
                text(p, "artifact")
            );
        }
    }
    let rejected = text(&response, "status") == "rejected";
    if !follow.wait {
        if follow.json {
            print_json(&response);
        }
        return Ok(u8::from(rejected));
    }
    let status_fn = ctx.status_function().await?;
    let query = json!({ "matrix_id": id });
    let started = Instant::now();
    let mut shown: Vec<String> = Vec::new();
    let last = loop {
        let answer = match ctx.invoke(&status_fn, &query).await {
            Ok(a) => a,
            Err(CliError::Invalid(m))
                if m.starts_with("NotFound") && started.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(follow.poll_interval).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let secs = started.elapsed().as_secs();
        let now: Vec<String> = pairs(&answer).iter().map(label).collect();
        for (i, p) in pairs(&answer).iter().enumerate() {
            if shown.get(i) != now.get(i) {
                eprintln!("[{secs:>4} s] {}: {}", pair(p), now[i]);
            }
        }
        shown = now;
        if pairs(&answer)
            .iter()
            .all(|p| FINAL.contains(&text(p, "state")))
        {
            break answer;
        }
        if started.elapsed() > follow.timeout {
            return Err(CliError::Aws(format!(
                "the matrix is still {} after {} s (--timeout); follow it with `layerforge status {id}`",
                text(&answer, "state"),
                follow.timeout.as_secs()
            )));
        }
        tokio::time::sleep(follow.poll_interval).await;
    };
    let all_published =
        !pairs(&last).is_empty() && pairs(&last).iter().all(|p| text(p, "state") == "published");
    if follow.json {
        let mut out = last;
        out["submit"] = response;
        print_json(&out);
    } else {
        for p in pairs(&last) {
            match text(p, "state") {
                "published" => println!("{}\t{}", pair(p), text(p, "layer_version_arn")),
                state => eprintln!("{}: {state}: {}", pair(p), text(p, "reason")),
            }
        }
    }
    Ok(if all_published { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_show_the_path_like_a_single_build() {
        assert_eq!(
            label(&json!({"state": "running", "builder": "function"})),
            "running [function]"
        );
        assert_eq!(
            label(&json!({"state": "queued", "builder": "batch", "handed_over": "no wheel"})),
            "queued [batch, handed over: no wheel]"
        );
        assert_eq!(label(&json!({"state": "published"})), "published");
        assert_eq!(
            pair(&json!({"runtime": "python3.12", "architecture": "arm64"})),
            "python3.12/arm64"
        );
    }
}
