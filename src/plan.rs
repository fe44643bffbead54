//! The exact AWS Batch job of a build request (DESIGN section 3), pure: request + config -> [`JobPlan`], the
//! layer-builder argv, the job's tags and resources, and the artifact metadata known before the build. submit-build
//! submits it; the fast builder gets it in its payload ([`crate::fast::JobSpec`]) and submits the same job when it
//! hands a build over.

use std::collections::HashMap;

use aws_sdk_batch::types::ResourceType;

use crate::{
    artifact::{ArtifactKey, ArtifactMetadata, Fingerprint},
    config::Config,
    fast,
    request::{BuildRequest, InvalidRequest},
};

/// The exact SubmitJob input for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub job_name: String,
    pub job_queue: String,
    pub job_definition: String,
    /// The layer-builder argv after the program name (the image's ENTRYPOINT is the binary).
    pub command: Vec<String>,
    pub resources: Vec<(ResourceType, String)>,
    pub tags: HashMap<String, String>,
    pub fingerprint: Fingerprint,
    pub key: ArtifactKey,
}

impl From<&JobPlan> for fast::JobSpec {
    fn from(plan: &JobPlan) -> Self {
        Self {
            job_name: plan.job_name.clone(),
            job_queue: plan.job_queue.clone(),
            job_definition: plan.job_definition.clone(),
            command: plan.command.clone(),
            resources: plan
                .resources
                .iter()
                .map(|(kind, value)| (kind.as_str().to_owned(), value.clone()))
                .collect(),
            tags: plan
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Batch's limit on job names.
const MAX_JOB_NAME: usize = 128;

/// Builds the SubmitJob input (DESIGN section 3). The request was validated against this config, so its
/// architecture has a build target; a config without one is reported as an invalid request all the same.
pub fn plan_job(request: &BuildRequest, config: &Config) -> Result<JobPlan, InvalidRequest> {
    let target = config
        .build_target(request.runtime, request.architecture)
        .map_err(|missing| {
            let value = if missing.field == "runtime" {
                request.runtime.as_str()
            } else {
                request.architecture.as_str()
            };
            InvalidRequest::new(missing.field, missing.rule, value)
        })?;
    let fingerprint = Fingerprint::compute(
        &request.requirements,
        request.runtime,
        request.architecture,
        request.installer,
        request.options,
    )
    .universal(request.universal.as_ref());
    let key = ArtifactKey::new(
        &config.artifact_prefix,
        &request.layer_name,
        request.runtime,
        request.architecture,
        &fingerprint,
    );

    let mut job_name = match &request.universal {
        None => format!(
            "layer-{}-{}-{}",
            request.layer_name,
            request.runtime.compact(),
            request.architecture
        ),
        Some(_) => format!("layer-{}-universal", request.layer_name),
    };
    job_name.truncate(MAX_JOB_NAME);

    // `--flag=value`, one element each: a value that begins with `-` (a layer name `-x`, a description
    // `- beta`, a requirements text starting with a comment line `--hash`…) can't be read as an option.
    let mut command = vec![
        format!("--name={}", request.layer_name),
        format!("--requirements={}", request.requirements.to_text()),
        format!("--runtime={}", request.runtime),
        format!("--architecture={}", request.architecture),
        format!("--installer={}", request.installer),
        format!("--bucket={}", config.artifact_bucket),
        format!("--key={key}"),
    ];
    if let Some(targets) = &request.universal {
        command.push(format!("--universal={targets}"));
    }
    if !request.options.bytecode {
        command.push("--no-bytecode".to_owned());
    }
    if request.options.slim {
        command.push("--slim".to_owned());
    }
    if request.max_unzipped_bytes != crate::request::LAMBDA_UNZIPPED_LIMIT {
        command.push(format!(
            "--max-unzipped-mb={}",
            request.max_unzipped_bytes / crate::request::MIB
        ));
    }
    // Batch refuses empty command elements: optional flags appear only with a value.
    for (flag, value) in [
        ("--license", &request.license),
        ("--description", &request.description),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            command.push(format!("{flag}={v}"));
        }
    }

    let mut resources = Vec::new();
    if let Some(vcpu) = request.resources.vcpu {
        resources.push((ResourceType::Vcpu, format_vcpu(vcpu)));
    }
    if let Some(memory) = request.resources.memory_mib {
        resources.push((ResourceType::Memory, memory.to_string()));
    }

    let tags = HashMap::from([
        (
            "layerforge:layer-name".to_owned(),
            request.layer_name.to_string(),
        ),
        (
            "layerforge:fingerprint".to_owned(),
            fingerprint.short().to_owned(),
        ),
        ("layerforge:runtime".to_owned(), request.runtime.to_string()),
        (
            "layerforge:architecture".to_owned(),
            request.architecture.to_string(),
        ),
    ]);

    Ok(JobPlan {
        job_name,
        job_queue: target.job_queue.clone(),
        job_definition: target.job_definition.clone(),
        command,
        resources,
        tags,
        fingerprint,
        key,
    })
}

/// Fargate takes vCPU as a decimal string: `0.25`, `1`, `2`.
pub(crate) fn format_vcpu(vcpu: f64) -> String {
    let text = format!("{vcpu:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The artifact metadata of DESIGN section 5 that is known before the build: everything but
/// `content-sha256` (publish-layer takes the digest from the bytes). `python-version` is the runtime's X.Y.
pub fn artifact_metadata(
    request: &BuildRequest,
    plan: &JobPlan,
    now: std::time::SystemTime,
) -> ArtifactMetadata {
    let (compatible_runtimes, compatible_architectures) = crate::request::Targets::compatible(
        request.universal.as_ref(),
        request.runtime,
        request.architecture,
    );
    ArtifactMetadata {
        layer_name: request.layer_name.to_string(),
        requirements: request
            .requirements
            .lines()
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("|"),
        license: request.license.clone().filter(|l| !l.is_empty()),
        python_version: request.runtime.python_version().to_owned(),
        compatible_runtimes,
        compatible_architectures,
        create_date: crate::builder::create_date(now),
        fingerprint: Some(plan.fingerprint.short().to_owned()),
        content_sha256: None,
        description: request.description.clone().filter(|d| !d.is_empty()),
        builder_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    }
}
