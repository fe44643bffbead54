//! `layerforge local serve` (started in the background by `local up`): what AWS would do between the functions.
//!
//! - The Lambda endpoint: the front before cargo-lambda's Runtime API ([`super::front`]), on the port of
//!   `state.json`'s `lambda_endpoint`.
//! - Fargate stand-in: moto's Batch jobs SUCCEED at once and never run, so every second the job queues are
//!   listed (ListJobs, SUCCEEDED) and each new job's own command and environment, read back with DescribeJobs,
//!   run here with `layer-builder` (one at a time; its output goes to `DIR/jobs/JOB_ID.log`). A job with upload
//!   grants ([`crate::grant`], every job submit-build makes) gets no AWS variable at all, as on Fargate without a
//!   job role: it writes through its grants' URLs, which point at moto ([`builder_env`]).
//! - S3-event forwarder: moto delivers the artifact bucket's event records to SQS (DESIGN section 8); each
//!   message with records is handed to `publish-layer` through the Runtime API, as S3 would invoke it, and
//!   deleted once the invocation succeeded (a failed one comes back after the queue's visibility timeout, as
//!   Lambda's asynchronous retries would). Test events are deleted.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use aws_sdk_batch::types::JobStatus;
use aws_smithy_types::Blob;
use serde_json::Value;

use super::{LocalError, PUBLISH_FUNCTION, State, sdk_for};
use crate::{
    aws::error_chain,
    builder::{UV_ENV, isolation},
};

fn log(line: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!("[{now}] {line}");
}

/// Runs until killed (`local down`).
pub async fn serve(dir: &Path) -> Result<(), LocalError> {
    let state = State::load(dir)?;
    let jobs_dir = dir.join("jobs");
    std::fs::create_dir_all(&jobs_dir).map_err(LocalError::io(&jobs_dir))?;
    let front_addr: std::net::SocketAddr = state
        .lambda_endpoint
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            LocalError::Setup(format!(
                "the Lambda endpoint {} is not http://ADDRESS:PORT",
                state.lambda_endpoint
            ))
        })?;
    // template.yaml's EventInvokeConfig of the fast builder: one retry, then submit-build hands it over.
    let asynchronous = super::front::AsyncInvocation {
        retries: super::FAST_BUILDER_RETRIES,
        delay: Duration::from_secs(1),
        on_failure: [(
            super::FAST_FUNCTION.to_owned(),
            super::SUBMIT_FUNCTION.to_owned(),
        )]
        .into(),
    };
    super::front::start(front_addr, state.runtime_api_endpoint.clone(), asynchronous)
        .await
        .map_err(|e| LocalError::Setup(format!("the Lambda front on {front_addr}: {e}")))?;
    log(&format!(
        "Lambda endpoint {} (Invoke answered as Lambda does) before cargo-lambda's {}",
        state.lambda_endpoint, state.runtime_api_endpoint
    ));
    let moto = sdk_for(&state.moto_endpoint).await;
    // publish-layer is invoked through the front, as S3 would: a function error is `function_error()`.
    let functions = sdk_for(&state.lambda_endpoint).await;
    let batch = aws_sdk_batch::Client::new(&moto);
    let sqs = aws_sdk_sqs::Client::new(&moto);
    let lambda = aws_sdk_lambda::Client::new(&functions);
    let builder = std::env::current_exe()
        .map_err(|e| LocalError::Setup(format!("where is this layerforge binary? {e}")))?
        .with_file_name("layer-builder");
    log(&format!(
        "serving: jobs of {:?} run with {}; events of {} go to {PUBLISH_FUNCTION} at {}",
        state.stack.batch.queues(),
        builder.display(),
        state.stack.queue_url,
        state.lambda_endpoint
    ));
    let uv = uv_for_jobs()?;
    if let Some(uv) = &uv {
        log(&format!(
            "the build user can't run the uv found here; jobs use a copy it can run: {}",
            uv.display()
        ));
    }
    tokio::join!(
        run_jobs(&state, &batch, &builder, uv.as_deref(), &jobs_dir),
        forward_events(&state, &sqs, &lambda)
    );
    Ok(())
}

/// The uv the jobs' layer-builder gives its build user: `None` (layer-builder's own choice) unless this is root
/// and the build user can't run the uv found here (a checkout under a root-only home, issue 19); then a copy
/// it can run ([`isolation::stage_for_build_user`]).
pub(crate) fn uv_for_jobs() -> Result<Option<PathBuf>, LocalError> {
    let sandbox = isolation::Sandbox::from_env().map_err(LocalError::Setup)?;
    if sandbox.user.is_none() {
        return Ok(None);
    }
    let program = std::env::var_os(UV_ENV)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "uv".into());
    if isolation::probe_program(&program, &sandbox).is_ok() {
        return Ok(None);
    }
    // Not found at all: layer-builder falls back to pip and says so.
    let Some(found) = isolation::resolve_on_path(&program, &sandbox) else {
        return Ok(None);
    };
    let staged = isolation::stage_for_build_user(&found).map_err(|e| {
        LocalError::Setup(format!(
            "staging {} for the build user: {e}",
            found.display()
        ))
    })?;
    isolation::probe_program(staged.as_os_str(), &sandbox).map_err(LocalError::Setup)?;
    Ok(Some(staged))
}

async fn run_jobs(
    state: &State,
    batch: &aws_sdk_batch::Client,
    builder: &Path,
    uv: Option<&Path>,
    jobs_dir: &Path,
) {
    let mut seen = HashSet::new();
    loop {
        for queue in state.stack.batch.queues() {
            let listed = batch
                .list_jobs()
                .job_queue(queue)
                .job_status(JobStatus::Succeeded)
                .send()
                .await;
            let jobs = match listed {
                Ok(out) => out.job_summary_list,
                Err(e) => {
                    log(&format!("ListJobs {queue}: {}", error_chain(&e)));
                    continue;
                }
            };
            for job_id in jobs
                .unwrap_or_default()
                .into_iter()
                .filter_map(|j| j.job_id)
            {
                if seen.insert(job_id.clone()) {
                    run_job(state, batch, builder, uv, jobs_dir, &job_id).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run_job(
    state: &State,
    batch: &aws_sdk_batch::Client,
    builder: &Path,
    uv: Option<&Path>,
    jobs_dir: &Path,
    job_id: &str,
) {
    let described = match batch.describe_jobs().jobs(job_id).send().await {
        Ok(out) => out,
        Err(e) => return log(&format!("DescribeJobs {job_id}: {}", error_chain(&e))),
    };
    let Some(container) = described.jobs().first().and_then(|j| j.container()) else {
        return log(&format!("job {job_id}: no container command"));
    };
    let (command, job_env) = job_command_and_env(container);
    let env = builder_env(
        &job_env,
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
        &state.moto_endpoint,
        job_id,
    );
    let log_path = jobs_dir.join(format!("{job_id}.log"));
    let Ok(out) = std::fs::File::create(&log_path) else {
        return log(&format!("job {job_id}: can't write {}", log_path.display()));
    };
    let Ok(err) = out.try_clone() else {
        return log(&format!("job {job_id}: can't write {}", log_path.display()));
    };
    log(&format!(
        "job {job_id}: layer-builder {command:?} ({})",
        if env.grants {
            "upload grants, no AWS credentials"
        } else {
            "moto's test credentials"
        }
    ));
    let mut builder_command = tokio::process::Command::new(builder);
    for name in &env.remove {
        builder_command.env_remove(name);
    }
    let status = builder_command
        .args(&command)
        .envs(env.set.iter().map(|(k, v)| (k, v)))
        .envs(uv.map(|uv| (UV_ENV, uv)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .await;
    match status {
        Ok(s) => log(&format!(
            "job {job_id}: layer-builder exited with {s} (log {})",
            log_path.display()
        )),
        Err(e) => log(&format!("job {job_id}: layer-builder did not start: {e}")),
    }
}

/// A job's command and environment as DescribeJobs gives them back (the overrides merged with the job
/// definition's): what the Fargate stand-in runs layer-builder with.
pub fn job_command_and_env(
    container: &aws_sdk_batch::types::ContainerDetail,
) -> (Vec<String>, Vec<(String, String)>) {
    let env = container
        .environment()
        .iter()
        .filter_map(|kv| Some((kv.name()?.to_owned(), kv.value()?.to_owned())))
        .collect();
    (container.command().to_vec(), env)
}

/// The variables of a job's environment that reach its layer-builder: the upload grants submit-build signs, and
/// the deployment's wheels-only switch (the template's job definitions set it).
pub const JOB_ENV_ALLOWED: &[&str] = &[
    crate::grant::ARTIFACT_GRANT_ENV,
    crate::grant::REPORT_GRANT_ENV,
    crate::builder::isolation::WHEELS_ONLY_ENV,
];

/// How a job's layer-builder environment differs from this process's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderEnv {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
    /// The job carries upload grants.
    pub grants: bool,
}

/// The job's environment (DescribeJobs' `container.environment`: the overrides merged with the job
/// definition's), plus `AWS_BATCH_JOB_ID`. With upload grants, every `AWS_*` variable this process inherited
/// is removed and none is set: the builder must upload through its grants alone. Without (a job submitted by
/// hand), moto's endpoint and test credentials, as before grants.
pub fn builder_env(
    job_env: &[(String, String)],
    inherited: impl Iterator<Item = String>,
    moto_endpoint: &str,
    job_id: &str,
) -> BuilderEnv {
    let grants = job_env
        .iter()
        .any(|(k, _)| k == crate::grant::ARTIFACT_GRANT_ENV);
    // Only what a build job's environment may hold: anyone who reaches moto can submit a job, and this runs
    // layer-builder as root here, so LD_PRELOAD, LAYERFORGE_UV or PATH from a job must never get through.
    let mut set: Vec<(String, String)> = job_env
        .iter()
        .filter(|(k, _)| JOB_ENV_ALLOWED.contains(&k.as_str()))
        .cloned()
        .collect();
    set.push(("AWS_BATCH_JOB_ID".to_owned(), job_id.to_owned()));
    let remove = if grants {
        inherited
            .filter(|k| k.starts_with("AWS_") && k != "AWS_BATCH_JOB_ID")
            .collect()
    } else {
        for (k, v) in [
            ("AWS_ENDPOINT_URL", moto_endpoint),
            ("AWS_REGION", super::moto::REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ] {
            set.push((k.to_owned(), v.to_owned()));
        }
        Vec::new()
    };
    BuilderEnv {
        set,
        remove,
        grants,
    }
}

async fn forward_events(state: &State, sqs: &aws_sdk_sqs::Client, lambda: &aws_sdk_lambda::Client) {
    let queue = &state.stack.queue_url;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                log(&format!("ReceiveMessage: {}", error_chain(&e)));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for message in messages {
            let body = message.body().unwrap_or("");
            let handled = match serde_json::from_str::<Value>(body) {
                Ok(event) if event.get("Records").is_some() => publish(lambda, body).await,
                Ok(_) => true, // s3:TestEvent
                Err(e) => {
                    log(&format!(
                        "dropping a queue message that is not JSON ({e}): {body:.200}"
                    ));
                    true
                }
            };
            if handled
                && let Some(handle) = message.receipt_handle()
                && let Err(e) = sqs
                    .delete_message()
                    .queue_url(queue)
                    .receipt_handle(handle)
                    .send()
                    .await
            {
                log(&format!("DeleteMessage: {}", error_chain(&e)));
            }
        }
    }
}

/// Invokes publish-layer with one S3 event; true when it succeeded.
async fn publish(lambda: &aws_sdk_lambda::Client, event: &str) -> bool {
    let out = lambda
        .invoke()
        .function_name(PUBLISH_FUNCTION)
        .payload(Blob::new(event.as_bytes()))
        .send()
        .await;
    match out {
        Ok(out) => {
            let payload = out
                .payload()
                .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
                .unwrap_or_default();
            match out.function_error() {
                Some(kind) => {
                    log(&format!(
                        "{PUBLISH_FUNCTION} failed ({kind}): {payload:.500}"
                    ));
                    false
                }
                None => {
                    log(&format!("{PUBLISH_FUNCTION}: {payload:.500}"));
                    true
                }
            }
        }
        Err(e) => {
            log(&format!("Invoke {PUBLISH_FUNCTION}: {}", error_chain(&e)));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_with_grants_gets_no_aws_variable() {
        let job_env = vec![
            ("LAYERFORGE_ARTIFACT_GRANT".to_owned(), "{}".to_owned()),
            ("LAYERFORGE_REPORT_GRANT".to_owned(), "{}".to_owned()),
            ("LAYERFORGE_WHEELS_ONLY".to_owned(), "0".to_owned()),
            ("AWS_BATCH_JOB_ID".to_owned(), "moto-id".to_owned()),
            // What anyone who reaches moto could put in a job: never passed to the root layer-builder.
            ("LD_PRELOAD".to_owned(), "/tmp/evil.so".to_owned()),
            ("LAYERFORGE_UV".to_owned(), "/tmp/evil-uv".to_owned()),
            ("PATH".to_owned(), "/tmp/evil".to_owned()),
            ("AWS_ENDPOINT_URL".to_owned(), "http://evil".to_owned()),
        ];
        let inherited = [
            "PATH",
            "AWS_PROFILE",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
        ]
        .map(str::to_owned);
        let env = builder_env(
            &job_env,
            inherited.clone().into_iter(),
            "http://127.0.0.1:1",
            "job-1",
        );
        assert!(env.grants);
        assert_eq!(
            env.remove,
            [
                "AWS_PROFILE",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_ENDPOINT_URL"
            ]
        );
        let set: Vec<&str> = env.set.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            set,
            [
                "LAYERFORGE_ARTIFACT_GRANT",
                "LAYERFORGE_REPORT_GRANT",
                "LAYERFORGE_WHEELS_ONLY",
                "AWS_BATCH_JOB_ID"
            ]
        );
        assert!(
            env.set
                .contains(&("AWS_BATCH_JOB_ID".to_owned(), "job-1".to_owned()))
        );

        let without = builder_env(&[], inherited.into_iter(), "http://127.0.0.1:1", "job-2");
        assert!(!without.grants && without.remove.is_empty());
        assert!(
            without.set.contains(&(
                "AWS_ENDPOINT_URL".to_owned(),
                "http://127.0.0.1:1".to_owned()
            )),
            "a job without grants still reaches moto with test credentials"
        );
    }
}
