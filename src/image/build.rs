//! `layerforge image build`: plan the builds still needed, start them, follow them to their images.

use std::{collections::BTreeSet, fmt, path::PathBuf, time::Duration};

use aws_sdk_codebuild::types::{Build, EnvironmentVariable, EnvironmentVariableType, SourceType};
use tracing::{info, warn};

use super::error::ImageError;
use super::list;
use super::sources;
use super::stack::{ImageStack, Step};
use crate::{
    aws::AwsFault,
    request::{Architecture, Runtime},
};

/// BatchGetBuilds takes at most 100 ids (CodeBuild API reference, BatchGetBuilds: "ids … Maximum number of 100
/// items").
const BATCH_GET_MAX: usize = 100;

/// The SDK clients the image commands use.
#[derive(Debug, Clone)]
pub struct ImageClients {
    pub s3: aws_sdk_s3::Client,
    pub codebuild: aws_sdk_codebuild::Client,
    pub ecr: aws_sdk_ecr::Client,
}

impl ImageClients {
    /// The clients of one SDK configuration (S3 path-style when an endpoint is set, as everywhere).
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            s3: crate::aws::s3_client(sdk),
            codebuild: aws_sdk_codebuild::Client::new(sdk),
            ecr: aws_sdk_ecr::Client::new(sdk),
        }
    }
}

/// What `image build` was asked for.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The source tree holding `builder/`, `src/`, `Cargo.toml`…
    pub source_root: PathBuf,
    /// Where the source zip is written before the upload.
    pub work_dir: PathBuf,
    /// The runtimes to build; empty: every runtime of the stack.
    pub runtimes: Vec<Runtime>,
    /// Follow the builds until they end.
    pub wait: bool,
    /// Time between two BatchGetBuilds.
    pub poll: Duration,
}

/// One build to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBuild {
    pub runtime: Runtime,
    pub step: Step,
    pub project: String,
    /// The environment overrides, in order.
    pub environment: Vec<(String, String)>,
    /// What it pushes.
    pub image: String,
}

/// A started build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedBuild {
    pub runtime: Runtime,
    pub step: Step,
    pub build_id: String,
}

/// The phase a build failed in: its type and CodeBuild's context message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedPhase {
    /// e.g. `BUILD`, `PRE_BUILD`, `DOWNLOAD_SOURCE`.
    pub phase: String,
    /// The phase's status: `FAILED`, `FAULT`, `TIMED_OUT`, `STOPPED`, `CLIENT_ERROR`.
    pub status: String,
    /// The phase contexts, `STATUS_CODE: message`, joined with `; `.
    pub context: String,
}

impl fmt::Display for FailedPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phase {} {}", self.phase, self.status)?;
        if !self.context.is_empty() {
            write!(f, ": {}", self.context)?;
        }
        Ok(())
    }
}

/// What CodeBuild last said about a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildState {
    pub runtime: Runtime,
    pub step: Step,
    pub build_id: String,
    /// CodeBuild's buildStatus: IN_PROGRESS, SUCCEEDED, FAILED, FAULT, TIMED_OUT, STOPPED (NOT_FOUND when
    /// BatchGetBuilds does not know the id).
    pub status: String,
    /// The current phase, e.g. `BUILD`.
    pub phase: Option<String>,
    /// For a build that ended unsuccessfully, the phase that failed.
    pub failure: Option<FailedPhase>,
}

impl BuildState {
    pub fn is_done(&self) -> bool {
        self.status != "IN_PROGRESS"
    }
}

/// What happens, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Uploaded {
        key: String,
        entries: usize,
        bytes: u64,
    },
    Existing {
        runtime: Runtime,
        image: String,
    },
    Started(StartedBuild),
    Changed(BuildState),
    Stopping {
        build_id: String,
        because: String,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Uploaded {
                key,
                entries,
                bytes,
            } => write!(f, "sources: {key} ({entries} files, {bytes} bytes)"),
            Progress::Existing { runtime, image } => {
                write!(
                    f,
                    "{runtime}: {image} exists (tags are immutable), not rebuilt"
                )
            }
            Progress::Started(s) => write!(f, "{} {}: started {}", s.runtime, s.step, s.build_id),
            Progress::Changed(s) => {
                write!(f, "{} {}: {}", s.runtime, s.step, s.status)?;
                if let Some(phase) = &s.phase {
                    write!(f, " ({phase})")?;
                }
                if let Some(failure) = &s.failure {
                    write!(f, ": {failure}")?;
                }
                Ok(())
            }
            Progress::Stopping { build_id, because } => {
                write!(f, "stopping {build_id}: {because}")
            }
        }
    }
}

/// How one runtime's image came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageOutcome {
    /// The tag was already there; nothing was started.
    Existed,
    /// Builds were started and not followed (no `--wait`).
    Started { build_ids: Vec<String> },
    /// Every build succeeded: the image exists.
    Built,
    /// A build ended unsuccessfully.
    Failed {
        step: Step,
        build_id: String,
        status: String,
        failure: Option<FailedPhase>,
    },
}

/// One runtime's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReport {
    pub runtime: Runtime,
    /// `<repository>:python3.X-<ImageTag>`.
    pub image: String,
    pub outcome: ImageOutcome,
}

impl fmt::Display for ImageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            ImageOutcome::Existed => write!(f, "{} {} (existed)", self.runtime, self.image),
            ImageOutcome::Built => write!(f, "{} {} (built)", self.runtime, self.image),
            ImageOutcome::Started { build_ids } => write!(
                f,
                "{} {} (building: {})",
                self.runtime,
                self.image,
                build_ids.join(", ")
            ),
            ImageOutcome::Failed {
                step,
                build_id,
                status,
                failure,
            } => {
                write!(
                    f,
                    "{} {} FAILED: the {step} build {build_id} ended {status}",
                    self.runtime, self.image
                )?;
                if let Some(failure) = failure {
                    write!(f, " in {failure}")?;
                }
                Ok(())
            }
        }
    }
}

/// What `image build` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// The uploaded source zip; `None` when every image existed.
    pub source_key: Option<String>,
    pub images: Vec<ImageReport>,
}

impl BuildReport {
    /// No image failed.
    pub fn succeeded(&self) -> bool {
        !self
            .images
            .iter()
            .any(|i| matches!(i.outcome, ImageOutcome::Failed { .. }))
    }
}

/// The runtimes to build: those asked for (each must be one the stack builds), or all the stack's.
pub fn select_runtimes(stack: &ImageStack, asked: &[Runtime]) -> Result<Vec<Runtime>, ImageError> {
    if asked.is_empty() {
        return Ok(stack.runtimes.clone());
    }
    let mut out = Vec::new();
    for runtime in asked {
        if !stack.runtimes.contains(runtime) {
            return Err(ImageError::InvalidInput {
                field: "runtime",
                message: format!(
                    "{runtime} is not in the stack's BuildRuntimes ({}); no job runs its image",
                    stack
                        .runtimes
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if !out.contains(runtime) {
            out.push(*runtime);
        }
    }
    Ok(out)
}

/// The environment a build of `step` for `runtime` is started with.
pub fn environment(stack: &ImageStack, runtime: Runtime, step: Step) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PYTHON_VERSION".to_owned(),
            runtime.python_version().to_owned(),
        ),
        ("IMAGE_TAG".to_owned(), stack.image_tag.clone()),
        ("REPOSITORY_URI".to_owned(), stack.repository_uri.clone()),
    ];
    if let Step::Arch(arch) = step {
        env.push(("ARCH".to_owned(), arch.as_str().to_owned()));
    }
    env
}

/// The builds still needed for `runtimes`, given the repository's `existing` tags: nothing for a runtime whose
/// multi-architecture tag exists; otherwise each architecture whose tag is missing, then the manifest join.
pub fn plan(
    stack: &ImageStack,
    runtimes: &[Runtime],
    existing: &BTreeSet<String>,
) -> Vec<PlannedBuild> {
    let mut out = Vec::new();
    for &runtime in runtimes {
        if existing.contains(&stack.step_tag(runtime, Step::Manifest)) {
            continue;
        }
        let steps = Architecture::ALL
            .into_iter()
            .map(Step::Arch)
            .filter(|step| !existing.contains(&stack.step_tag(runtime, *step)))
            .chain([Step::Manifest]);
        for step in steps {
            out.push(PlannedBuild {
                runtime,
                step,
                project: stack.project(step).to_owned(),
                environment: environment(stack, runtime, step),
                image: stack.image_uri(&stack.step_tag(runtime, step)),
            });
        }
    }
    out
}

/// Starts the planned builds on the source zip at `bucket/source_key`.
pub async fn start(
    codebuild: &aws_sdk_codebuild::Client,
    bucket: &str,
    source_key: &str,
    planned: &[PlannedBuild],
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<StartedBuild>, ImageError> {
    let mut started = Vec::with_capacity(planned.len());
    for build in planned {
        let mut request = codebuild
            .start_build()
            .project_name(&build.project)
            .source_type_override(SourceType::S3)
            // An S3 source location is BUCKET/KEY (CodeBuild API reference, ProjectSource.location).
            .source_location_override(format!("{bucket}/{source_key}"));
        for (name, value) in &build.environment {
            let variable = EnvironmentVariable::builder()
                .name(name)
                .value(value)
                .r#type(EnvironmentVariableType::Plaintext)
                .build()
                .map_err(|e| ImageError::InvalidInput {
                    field: "environment",
                    message: format!("{name}: {e}"),
                })?;
            request = request.environment_variables_override(variable);
        }
        let out = request
            .send()
            .await
            .map_err(|e| AwsFault::from_sdk("StartBuild", &e))?;
        let build_id = out
            .build_value()
            .and_then(Build::id)
            .ok_or_else(|| ImageError::InvalidInput {
                field: "build.id",
                message: format!("StartBuild on {} answered no build id", build.project),
            })?
            .to_owned();
        info!(project = build.project, build_id, runtime = %build.runtime, step = %build.step, "build started");
        let s = StartedBuild {
            runtime: build.runtime,
            step: build.step,
            build_id,
        };
        on_progress(&Progress::Started(s.clone()));
        started.push(s);
    }
    Ok(started)
}

/// The first phase that did not succeed, with its contexts.
pub fn failed_phase(build: &Build) -> Option<FailedPhase> {
    build.phases().iter().find_map(|phase| {
        let status = phase.phase_status()?.as_str();
        if status == "SUCCEEDED" {
            return None;
        }
        let context = phase
            .contexts()
            .iter()
            .map(|c| match (c.status_code(), c.message()) {
                (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
                (Some(code), _) => code.to_owned(),
                (None, Some(message)) => message.to_owned(),
                (None, None) => String::new(),
            })
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Some(FailedPhase {
            phase: phase
                .phase_type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_else(|| "UNKNOWN".to_owned()),
            status: status.to_owned(),
            context,
        })
    })
}

/// Follows `started` with BatchGetBuilds every `poll` until each has ended, reporting every change of status or
/// phase. When an architecture's build ends unsuccessfully, its runtime's manifest build (which would wait for
/// an image that never comes) is stopped.
pub async fn follow(
    codebuild: &aws_sdk_codebuild::Client,
    started: &[StartedBuild],
    poll: Duration,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<BuildState>, ImageError> {
    let mut states: Vec<BuildState> = started
        .iter()
        .map(|s| BuildState {
            runtime: s.runtime,
            step: s.step,
            build_id: s.build_id.clone(),
            status: "IN_PROGRESS".to_owned(),
            phase: None,
            failure: None,
        })
        .collect();
    let mut stop_requested = BTreeSet::new();
    loop {
        let pending: Vec<String> = states
            .iter()
            .filter(|s| !s.is_done())
            .map(|s| s.build_id.clone())
            .collect();
        if pending.is_empty() {
            return Ok(states);
        }
        for ids in pending.chunks(BATCH_GET_MAX) {
            let out = codebuild
                .batch_get_builds()
                .set_ids(Some(ids.to_vec()))
                .send()
                .await
                .map_err(|e| AwsFault::from_sdk("BatchGetBuilds", &e))?;
            for build in out.builds() {
                let Some(state) = states
                    .iter_mut()
                    .find(|s| Some(s.build_id.as_str()) == build.id())
                else {
                    continue;
                };
                let status = build
                    .build_status()
                    .map_or("IN_PROGRESS", |s| s.as_str())
                    .to_owned();
                let phase = build.current_phase().map(str::to_owned);
                let failure = (status != "IN_PROGRESS" && status != "SUCCEEDED")
                    .then(|| failed_phase(build))
                    .flatten();
                if state.status != status || state.phase != phase || state.failure != failure {
                    state.status = status;
                    state.phase = phase;
                    state.failure = failure;
                    on_progress(&Progress::Changed(state.clone()));
                }
            }
            for missing in out.builds_not_found() {
                if let Some(state) = states.iter_mut().find(|s| &s.build_id == missing) {
                    state.status = "NOT_FOUND".to_owned();
                    on_progress(&Progress::Changed(state.clone()));
                }
            }
        }
        // A manifest build whose architecture failed would wait in vain: stop it.
        let doomed: Vec<(String, String)> = states
            .iter()
            .filter(|m| m.step == Step::Manifest && !m.is_done())
            .filter(|m| !stop_requested.contains(&m.build_id))
            .filter_map(|m| {
                states
                    .iter()
                    .find(|a| {
                        a.runtime == m.runtime
                            && matches!(a.step, Step::Arch(_))
                            && a.is_done()
                            && a.status != "SUCCEEDED"
                    })
                    .map(|a| {
                        (
                            m.build_id.clone(),
                            format!("the {} build {} ended {}", a.step, a.build_id, a.status),
                        )
                    })
            })
            .collect();
        for (build_id, because) in doomed {
            on_progress(&Progress::Stopping {
                build_id: build_id.clone(),
                because,
            });
            if let Err(e) = codebuild.stop_build().id(&build_id).send().await {
                // Left alone it gives up by itself after its wait (WAIT_SECONDS): not worth failing the command.
                warn!(build_id, error = %AwsFault::from_sdk("StopBuild", &e), "could not stop the manifest build");
            }
            stop_requested.insert(build_id);
        }
        if states.iter().any(|s| !s.is_done()) {
            tokio::time::sleep(poll).await;
        }
    }
}

/// One report per runtime: what happened to its image.
pub fn report(
    stack: &ImageStack,
    runtimes: &[Runtime],
    planned: &[PlannedBuild],
    started: &[StartedBuild],
    states: Option<&[BuildState]>,
) -> Vec<ImageReport> {
    runtimes
        .iter()
        .map(|&runtime| {
            let image = stack.image_uri(&stack.tag(runtime));
            let outcome = if !planned.iter().any(|p| p.runtime == runtime) {
                ImageOutcome::Existed
            } else if let Some(states) = states {
                let mine: Vec<&BuildState> =
                    states.iter().filter(|s| s.runtime == runtime).collect();
                // An architecture's failure explains a stopped manifest build, so it comes first.
                let failed = mine
                    .iter()
                    .filter(|s| s.status != "SUCCEEDED")
                    .min_by_key(|s| s.step);
                match failed {
                    None => ImageOutcome::Built,
                    Some(s) => ImageOutcome::Failed {
                        step: s.step,
                        build_id: s.build_id.clone(),
                        status: s.status.clone(),
                        failure: s.failure.clone(),
                    },
                }
            } else {
                ImageOutcome::Started {
                    build_ids: started
                        .iter()
                        .filter(|s| s.runtime == runtime)
                        .map(|s| s.build_id.clone())
                        .collect(),
                }
            };
            ImageReport {
                runtime,
                image,
                outcome,
            }
        })
        .collect()
}

/// `layerforge image build`: uploads the sources, starts the builds still needed and, with `options.wait`,
/// follows them to their images.
pub async fn build_images(
    clients: &ImageClients,
    stack: &ImageStack,
    options: &BuildOptions,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<BuildReport, ImageError> {
    let runtimes = select_runtimes(stack, &options.runtimes)?;
    let existing = list::existing_tags(&clients.ecr, stack.repository_name()?).await?;
    let planned = plan(stack, &runtimes, &existing);
    for &runtime in &runtimes {
        if !planned.iter().any(|p| p.runtime == runtime) {
            on_progress(&Progress::Existing {
                runtime,
                image: stack.image_uri(&stack.tag(runtime)),
            });
        }
    }
    if planned.is_empty() {
        return Ok(BuildReport {
            source_key: None,
            images: report(stack, &runtimes, &planned, &[], Some(&[])),
        });
    }
    // Reading and deflating the tree is blocking work: off the async workers.
    let (root, work_dir) = (options.source_root.clone(), options.work_dir.clone());
    let packed = tokio::task::spawn_blocking(move || sources::pack(&root, &work_dir))
        .await
        .map_err(|e| ImageError::Sources {
            path: options.source_root.clone(),
            source: std::io::Error::other(e),
        })??;
    let key = sources::upload(&clients.s3, &stack.bucket, &packed).await?;
    on_progress(&Progress::Uploaded {
        key: key.clone(),
        entries: packed.entries,
        bytes: packed.bytes,
    });
    let started = start(
        &clients.codebuild,
        &stack.bucket,
        &key,
        &planned,
        on_progress,
    )
    .await?;
    let states = if options.wait {
        Some(follow(&clients.codebuild, &started, options.poll, on_progress).await?)
    } else {
        None
    };
    Ok(BuildReport {
        source_key: Some(key),
        images: report(stack, &runtimes, &planned, &started, states.as_deref()),
    })
}
