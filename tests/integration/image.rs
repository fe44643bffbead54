//! Builder images built in the cloud (src/image/): the source zip, the CodeBuild builds against moto's server
//! (projects created as template.yaml declares them), a failed build through aws-smithy-mocks (moto's builds
//! always succeed), `image list` against moto's ECR, and the buildspecs' commands.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use aws_sdk_codebuild::types::{
    ArtifactsType, Build, BuildPhase, BuildPhaseType, ComputeType, EnvironmentType, PhaseContext,
    ProjectArtifacts, ProjectEnvironment, ProjectSource, SourceType, StatusType,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use layerforge::{
    image::{
        BuildOptions, ImageClients, ImageOutcome, ImageStack, Progress, Step,
        build::{self, StartedBuild},
        list, sources,
    },
    request::{Architecture, Runtime},
};
use serde_yaml::Value;

use crate::helpers::{ACCOUNT, REGION, bucket, sdk, unique};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stack(bucket: &str, repository: &str, runtimes: &[Runtime]) -> ImageStack {
    ImageStack {
        bucket: bucket.to_owned(),
        repository_uri: format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}"),
        image_tag: "0.2.0".to_owned(),
        runtimes: runtimes.to_vec(),
        arm64_project: format!("{repository}-builder-image-arm64"),
        x86_64_project: format!("{repository}-builder-image-x86_64"),
        manifest_project: format!("{repository}-builder-image-manifest"),
    }
}

fn load_yaml(relative: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(relative)).expect(relative);
    serde_yaml::from_str(&text).expect(relative)
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| {
        v.get(*k)
            .unwrap_or_else(|| panic!("missing {k} in {path:?}"))
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Creates the three projects in moto with the environment and buildspec template.yaml gives them.
async fn create_projects(codebuild: &aws_sdk_codebuild::Client, stack: &ImageStack) {
    let template = load_yaml("template.yaml");
    for (logical, name) in [
        ("ImageBuildArm64Project", &stack.arm64_project),
        ("ImageBuildX86Project", &stack.x86_64_project),
        ("ImageManifestProject", &stack.manifest_project),
    ] {
        let props = get(&template, &["Resources", logical, "Properties"]);
        let env = get(props, &["Environment"]);
        codebuild
            .create_project()
            .name(name)
            .service_role(format!("arn:aws:iam::{ACCOUNT}:role/image-build"))
            .source(
                ProjectSource::builder()
                    .r#type(SourceType::S3)
                    .location(format!("{}/.layerforge/sources/builder.zip", stack.bucket))
                    .buildspec(text(get(props, &["Source", "BuildSpec"])))
                    .build()
                    .expect("source"),
            )
            .artifacts(
                ProjectArtifacts::builder()
                    .r#type(ArtifactsType::NoArtifacts)
                    .build()
                    .expect("artifacts"),
            )
            .environment(
                ProjectEnvironment::builder()
                    .r#type(EnvironmentType::from(text(get(env, &["Type"])).as_str()))
                    .compute_type(ComputeType::from(text(get(env, &["ComputeType"])).as_str()))
                    .image(text(get(env, &["Image"])))
                    .privileged_mode(text(get(env, &["PrivilegedMode"])) == "true")
                    .build()
                    .expect("environment"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("create project {name}: {e:?}"));
    }
}

async fn repository(ecr: &aws_sdk_ecr::Client) -> String {
    let name = unique("builder").to_lowercase();
    ecr.create_repository()
        .repository_name(&name)
        .send()
        .await
        .expect("create repository");
    name
}

/// Pushes a (fake) image manifest under `tag`, distinct per tag.
async fn put_tag(ecr: &aws_sdk_ecr::Client, repository: &str, tag: &str) {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                   "digest": format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(tag)))},
        "layers": []
    });
    ecr.put_image()
        .repository_name(repository)
        .image_tag(tag)
        .image_manifest(manifest.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put image {tag}: {e:?}"));
}

async fn builds_of(codebuild: &aws_sdk_codebuild::Client, project: &str) -> Vec<String> {
    codebuild
        .list_builds_for_project()
        .project_name(project)
        .send()
        .await
        .expect("list builds")
        .ids()
        .to_vec()
}

#[tokio::test]
async fn the_source_zip_is_byte_identical_on_a_second_pack_and_uploaded_under_sources() {
    let first = tempfile::tempdir().expect("tempdir");
    let second = tempfile::tempdir().expect("tempdir");
    let a = sources::pack(&repo_root(), first.path()).expect("pack");
    let b = sources::pack(&repo_root(), second.path()).expect("pack again");
    let bytes = std::fs::read(&a.path).expect("zip");
    assert_eq!(
        bytes,
        std::fs::read(&b.path).expect("zip"),
        "same tree, same bytes"
    );
    assert_eq!(a.key(), b.key());
    assert_eq!(a.key(), format!(".layerforge/sources/{}.zip", a.sha256));

    let names: Vec<String> = sources::collect(&repo_root())
        .expect("collect")
        .into_iter()
        .map(|s| s.name)
        .collect();
    for needed in [
        "builder/Dockerfile",
        "builder/buildspec.yml",
        "builder/buildspec-manifest.yml",
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
        "src/lib.rs",
        "src/image/sources.rs",
        "src/bin/layer-builder.rs",
    ] {
        assert!(names.iter().any(|n| n == needed), "{needed} in the zip");
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("target/") || n.starts_with("tests/")),
        "only what the image build reads"
    );
    // Each entry's timestamp is the DOS epoch, whatever the files' mtimes.
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).expect("a zip");
    assert_eq!(archive.len(), names.len());
    for i in 0..archive.len() {
        let entry = archive.by_index(i).expect("entry");
        let t = entry.last_modified().expect("timestamp");
        assert_eq!(
            (t.year(), t.month(), t.day()),
            (1980, 1, 1),
            "{}",
            entry.name()
        );
    }

    let sdk = sdk().await;
    let s3 = layerforge::aws::s3_client(&sdk);
    let bucket = bucket(&sdk, "image-src").await;
    let key = sources::upload(&s3, &bucket, &a).await.expect("upload");
    assert_eq!(key, a.key());
    let stored = s3
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(stored.as_ref(), bytes.as_slice(), "uploaded as packed");
}

#[tokio::test]
async fn a_source_tree_without_the_buildspec_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml"] {
        std::fs::write(dir.path().join(f), "x").expect("write");
    }
    std::fs::create_dir_all(dir.path().join("builder")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("src")).expect("mkdir");
    std::fs::write(dir.path().join("builder/Dockerfile"), "FROM scratch").expect("write");
    let err = sources::collect(dir.path()).expect_err("no buildspec");
    assert_eq!(err.error_type(), "Sources");
    assert!(err.to_string().contains("builder/buildspec"), "{err}");
}

#[test]
fn the_plan_builds_each_missing_architecture_then_the_join_with_its_environment() {
    let stack = stack(
        "b",
        "repo",
        &[Runtime::Python311, Runtime::Python312, Runtime::Python313],
    );
    let existing: BTreeSet<String> = [
        "python3.11-0.2.0".to_owned(),       // done: nothing to build
        "python3.12-0.2.0-arm64".to_owned(), // half done: x86_64 and the join
        "python3.12-0.1.0".to_owned(),       // another ImageTag: irrelevant
    ]
    .into();
    let runtimes = [Runtime::Python311, Runtime::Python312, Runtime::Python313];
    let planned = build::plan(&stack, &runtimes, &existing);
    let got: Vec<(Runtime, Step, &str, &str)> = planned
        .iter()
        .map(|p| (p.runtime, p.step, p.project.as_str(), p.image.as_str()))
        .collect();
    let uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/repo";
    let x86 = Step::Arch(Architecture::X86_64);
    let arm = Step::Arch(Architecture::Arm64);
    assert_eq!(
        got,
        vec![
            (
                Runtime::Python312,
                x86,
                "repo-builder-image-x86_64",
                format!("{uri}:python3.12-0.2.0-x86_64").as_str()
            ),
            (
                Runtime::Python312,
                Step::Manifest,
                "repo-builder-image-manifest",
                format!("{uri}:python3.12-0.2.0").as_str()
            ),
            (
                Runtime::Python313,
                arm,
                "repo-builder-image-arm64",
                format!("{uri}:python3.13-0.2.0-arm64").as_str()
            ),
            (
                Runtime::Python313,
                x86,
                "repo-builder-image-x86_64",
                format!("{uri}:python3.13-0.2.0-x86_64").as_str()
            ),
            (
                Runtime::Python313,
                Step::Manifest,
                "repo-builder-image-manifest",
                format!("{uri}:python3.13-0.2.0").as_str()
            ),
        ]
    );
    let env = |i: usize| -> BTreeMap<&str, &str> {
        planned[i]
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    };
    assert_eq!(
        env(2),
        BTreeMap::from([
            ("PYTHON_VERSION", "3.13"),
            ("IMAGE_TAG", "0.2.0"),
            ("REPOSITORY_URI", uri),
            ("ARCH", "arm64")
        ])
    );
    assert_eq!(env(0)["ARCH"], "x86_64");
    assert_eq!(env(0)["PYTHON_VERSION"], "3.12");
    assert!(!env(1).contains_key("ARCH"), "the join is for both");

    let err = build::select_runtimes(&stack, &[Runtime::Python310]).expect_err("not built");
    assert_eq!(err.error_type(), "InvalidInput");
    assert!(err.to_string().starts_with("runtime: python3.10"), "{err}");
    assert_eq!(
        build::select_runtimes(&stack, &[]).expect("all"),
        stack.runtimes
    );
}

#[tokio::test]
async fn image_build_uploads_starts_every_missing_build_follows_them_and_reports_the_images() {
    let sdk = sdk().await;
    let clients = ImageClients::new(&sdk);
    let bucket = bucket(&sdk, "image-build").await;
    let repository = repository(&clients.ecr).await;
    let stack = stack(
        &bucket,
        &repository,
        &[Runtime::Python312, Runtime::Python313, Runtime::Python314],
    );
    create_projects(&clients.codebuild, &stack).await;
    // 3.14 exists already; 3.13 has its arm64 half.
    put_tag(&clients.ecr, &repository, "python3.14-0.2.0").await;
    put_tag(&clients.ecr, &repository, "python3.13-0.2.0-arm64").await;

    let work = tempfile::tempdir().expect("tempdir");
    let options = BuildOptions {
        source_root: repo_root(),
        work_dir: work.path().to_owned(),
        runtimes: vec![],
        wait: true,
        poll: Duration::from_millis(10),
    };
    let mut progress = Vec::new();
    // Printed as `image build` prints them (visible with --nocapture).
    let report = layerforge::image::build_images(&clients, &stack, &options, &mut |p| {
        println!("{p}");
        progress.push(p.clone())
    })
    .await
    .expect("image build");
    for image in &report.images {
        println!("{image}");
    }

    assert!(report.succeeded());
    let outcomes: Vec<(Runtime, &str, &ImageOutcome)> = report
        .images
        .iter()
        .map(|i| (i.runtime, i.image.as_str(), &i.outcome))
        .collect();
    let uri = &stack.repository_uri;
    assert_eq!(
        outcomes,
        vec![
            (
                Runtime::Python312,
                format!("{uri}:python3.12-0.2.0").as_str(),
                &ImageOutcome::Built
            ),
            (
                Runtime::Python313,
                format!("{uri}:python3.13-0.2.0").as_str(),
                &ImageOutcome::Built
            ),
            (
                Runtime::Python314,
                format!("{uri}:python3.14-0.2.0").as_str(),
                &ImageOutcome::Existed
            ),
        ]
    );

    // The source zip is in the bucket under its key.
    let key = report.source_key.clone().expect("uploaded");
    assert!(key.starts_with(".layerforge/sources/") && key.ends_with(".zip"));
    clients
        .s3
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .expect("source zip uploaded");

    // moto holds exactly the builds that were needed, per project.
    assert_eq!(
        builds_of(&clients.codebuild, &stack.arm64_project)
            .await
            .len(),
        1,
        "arm64: 3.12 only"
    );
    assert_eq!(
        builds_of(&clients.codebuild, &stack.x86_64_project)
            .await
            .len(),
        2
    );
    let manifests = builds_of(&clients.codebuild, &stack.manifest_project).await;
    assert_eq!(manifests.len(), 2);

    // Every started build was followed to SUCCEEDED, and the progress said so.
    let started: Vec<&StartedBuild> = progress
        .iter()
        .filter_map(|p| match p {
            Progress::Started(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 5);
    for s in &started {
        assert!(
            progress.iter().any(|p| matches!(p, Progress::Changed(c)
                if c.build_id == s.build_id && c.status == "SUCCEEDED")),
            "{} followed to SUCCEEDED",
            s.build_id
        );
    }
    assert!(manifests.iter().all(|id| {
        started
            .iter()
            .any(|s| &s.build_id == id && s.step == Step::Manifest)
    }));
    assert!(
        progress
            .iter()
            .any(|p| matches!(p, Progress::Existing { runtime, .. }
        if *runtime == Runtime::Python314))
    );
    assert!(
        matches!(&progress[1], Progress::Uploaded { key: k, .. } if *k == key),
        "{progress:?}"
    );
}

#[tokio::test]
async fn without_wait_the_builds_are_started_and_their_ids_reported() {
    let sdk = sdk().await;
    let clients = ImageClients::new(&sdk);
    let bucket = bucket(&sdk, "image-nowait").await;
    let repository = repository(&clients.ecr).await;
    let stack = stack(
        &bucket,
        &repository,
        &[Runtime::Python312, Runtime::Python313],
    );
    create_projects(&clients.codebuild, &stack).await;
    let work = tempfile::tempdir().expect("tempdir");
    let options = BuildOptions {
        source_root: repo_root(),
        work_dir: work.path().to_owned(),
        runtimes: vec![Runtime::Python313],
        wait: false,
        poll: Duration::from_millis(10),
    };
    let report = layerforge::image::build_images(&clients, &stack, &options, &mut |_| {})
        .await
        .expect("image build");
    assert_eq!(report.images.len(), 1, "only the runtime asked for");
    let ImageOutcome::Started { build_ids } = &report.images[0].outcome else {
        panic!("{:?}", report.images[0]);
    };
    assert_eq!(build_ids.len(), 3, "arm64, x86_64, manifest");
    let all: Vec<String> = [
        &stack.arm64_project,
        &stack.x86_64_project,
        &stack.manifest_project,
    ]
    .into_iter()
    .map(|p| p.to_owned())
    .collect();
    for (id, project) in build_ids.iter().zip(&all) {
        assert_eq!(
            builds_of(&clients.codebuild, project).await,
            vec![id.clone()]
        );
    }
}

fn env_of(
    r: &aws_sdk_codebuild::operation::start_build::StartBuildInput,
) -> BTreeMap<String, String> {
    r.environment_variables_override()
        .iter()
        .map(|v| (v.name().to_owned(), v.value().to_owned()))
        .collect()
}

#[tokio::test]
async fn each_build_is_started_with_the_source_and_environment_of_its_runtime_and_architecture() {
    let stack = stack("bkt", "repo", &[Runtime::Python310, Runtime::Python314]);
    let planned = build::plan(&stack, &stack.runtimes, &BTreeSet::new());
    assert_eq!(planned.len(), 6);
    // One rule per expected request: each matches only its project, source and exact environment.
    let rules: Vec<_> = planned
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let project = p.project.clone();
            let expected: BTreeMap<String, String> = p.environment.iter().cloned().collect();
            mock!(aws_sdk_codebuild::Client::start_build)
                .match_requests(move |r| {
                    r.project_name() == Some(project.as_str())
                        && r.source_type_override() == Some(&SourceType::S3)
                        && r.source_location_override() == Some("bkt/.layerforge/sources/abc.zip")
                        && env_of(r) == expected
                })
                .then_output(move || {
                    aws_sdk_codebuild::operation::start_build::StartBuildOutput::builder()
                        .build_value(Build::builder().id(format!("build:{i}")).build())
                        .build()
                })
        })
        .collect();
    let refs: Vec<&aws_smithy_mocks::Rule> = rules.iter().collect();
    let client = mock_client!(aws_sdk_codebuild, RuleMode::MatchAny, refs.as_slice());
    let started = build::start(
        &client,
        "bkt",
        ".layerforge/sources/abc.zip",
        &planned,
        &mut |_| {},
    )
    .await
    .expect("start");
    assert_eq!(started.len(), 6);
    for (i, rule) in rules.iter().enumerate() {
        assert_eq!(rule.num_calls(), 1, "{:?}", planned[i]);
    }
    let expected_envs: Vec<(Runtime, Step, &str, Option<&str>)> = planned
        .iter()
        .map(|p| {
            let env: BTreeMap<&str, &str> = p
                .environment
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            (
                p.runtime,
                p.step,
                env["PYTHON_VERSION"],
                env.get("ARCH").copied(),
            )
        })
        .collect();
    assert_eq!(
        expected_envs,
        vec![
            (
                Runtime::Python310,
                Step::Arch(Architecture::Arm64),
                "3.10",
                Some("arm64")
            ),
            (
                Runtime::Python310,
                Step::Arch(Architecture::X86_64),
                "3.10",
                Some("x86_64")
            ),
            (Runtime::Python310, Step::Manifest, "3.10", None),
            (
                Runtime::Python314,
                Step::Arch(Architecture::Arm64),
                "3.14",
                Some("arm64")
            ),
            (
                Runtime::Python314,
                Step::Arch(Architecture::X86_64),
                "3.14",
                Some("x86_64")
            ),
            (Runtime::Python314, Step::Manifest, "3.14", None),
        ]
    );
}

fn build(id: &str, status: StatusType, phase: &str, phases: Vec<BuildPhase>) -> Build {
    Build::builder()
        .id(id)
        .build_status(status)
        .current_phase(phase)
        .set_phases(Some(phases))
        .build()
}

fn phase(ty: BuildPhaseType, status: StatusType) -> BuildPhase {
    BuildPhase::builder()
        .phase_type(ty)
        .phase_status(status)
        .build()
}

#[tokio::test]
async fn a_failed_build_is_reported_with_its_phase_and_its_manifest_build_is_stopped() {
    let failed_arm = || {
        build(
            "arm",
            StatusType::Failed,
            "COMPLETED",
            vec![
                phase(BuildPhaseType::Submitted, StatusType::Succeeded),
                phase(BuildPhaseType::PreBuild, StatusType::Succeeded),
                BuildPhase::builder()
                    .phase_type(BuildPhaseType::Build)
                    .phase_status(StatusType::Failed)
                    .contexts(
                        PhaseContext::builder()
                            .status_code("COMMAND_EXECUTION_ERROR")
                            .message("Error while executing command: docker build --file builder/Dockerfile. Reason: exit status 1")
                            .build(),
                    )
                    .build(),
                phase(BuildPhaseType::PostBuild, StatusType::Failed),
            ],
        )
    };
    let gets = mock!(aws_sdk_codebuild::Client::batch_get_builds)
        .sequence()
        .output(move || {
            aws_sdk_codebuild::operation::batch_get_builds::BatchGetBuildsOutput::builder()
                .builds(failed_arm())
                .builds(build("x86", StatusType::InProgress, "BUILD", vec![]))
                .builds(build("man", StatusType::InProgress, "PRE_BUILD", vec![]))
                .build()
        })
        .output(|| {
            aws_sdk_codebuild::operation::batch_get_builds::BatchGetBuildsOutput::builder()
                .builds(build("x86", StatusType::Succeeded, "COMPLETED", vec![]))
                .builds(build(
                    "man",
                    StatusType::Stopped,
                    "COMPLETED",
                    vec![phase(BuildPhaseType::PreBuild, StatusType::Stopped)],
                ))
                .build()
        })
        .build();
    let stop = mock!(aws_sdk_codebuild::Client::stop_build)
        .match_requests(|r| r.id() == Some("man"))
        .then_output(|| {
            aws_sdk_codebuild::operation::stop_build::StopBuildOutput::builder().build()
        });
    let client = mock_client!(aws_sdk_codebuild, RuleMode::MatchAny, [&gets, &stop]);
    let started = vec![
        StartedBuild {
            runtime: Runtime::Python312,
            step: Step::Arch(Architecture::Arm64),
            build_id: "arm".into(),
        },
        StartedBuild {
            runtime: Runtime::Python312,
            step: Step::Arch(Architecture::X86_64),
            build_id: "x86".into(),
        },
        StartedBuild {
            runtime: Runtime::Python312,
            step: Step::Manifest,
            build_id: "man".into(),
        },
    ];
    let mut lines = Vec::new();
    let states = build::follow(&client, &started, Duration::from_millis(1), &mut |p| {
        println!("{p}");
        lines.push(p.to_string())
    })
    .await
    .expect("follow");
    assert_eq!(stop.num_calls(), 1, "the manifest build is stopped once");
    assert_eq!(gets.num_calls(), 2);
    let status: Vec<&str> = states.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(status, ["FAILED", "SUCCEEDED", "STOPPED"]);
    let failure = states[0].failure.clone().expect("the failed phase");
    assert_eq!(failure.phase, "BUILD");
    assert_eq!(failure.status, "FAILED");
    assert_eq!(
        failure.context,
        "COMMAND_EXECUTION_ERROR: Error while executing command: docker build --file builder/Dockerfile. Reason: exit status 1"
    );

    let stack = stack("b", "repo", &[Runtime::Python312]);
    let planned = build::plan(&stack, &stack.runtimes, &BTreeSet::new());
    let report = build::report(
        &stack,
        &stack.runtimes,
        &planned,
        &started,
        Some(states.as_slice()),
    );
    assert_eq!(
        report[0].outcome,
        ImageOutcome::Failed {
            step: Step::Arch(Architecture::Arm64),
            build_id: "arm".into(),
            status: "FAILED".into(),
            failure: Some(failure),
        },
        "the architecture's failure, not the stopped join"
    );
    let shown = report[0].to_string();
    println!("{shown}");
    assert!(
        shown.contains(
            "the arm64 build arm ended FAILED in phase BUILD FAILED: COMMAND_EXECUTION_ERROR"
        ),
        "{shown}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("stopping man: the arm64 build arm ended FAILED")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn image_list_shows_which_runtime_and_architecture_images_exist() {
    let sdk = sdk().await;
    let ecr = aws_sdk_ecr::Client::new(&sdk);
    let repository = repository(&ecr).await;
    let stack = stack("b", &repository, &[Runtime::Python312, Runtime::Python313]);
    for tag in [
        "python3.12-0.2.0-arm64",
        "python3.12-0.2.0-x86_64",
        "python3.12-0.2.0",
        "python3.13-0.2.0-x86_64",
        "python3.11-0.1.0", // another ImageTag
    ] {
        put_tag(&ecr, &repository, tag).await;
    }
    let rows = list::list_images(&ecr, &stack).await.expect("list");
    for row in &rows {
        println!("{row}");
    }
    let got: Vec<(Runtime, bool, Vec<Architecture>, bool)> = rows
        .iter()
        .map(|r| (r.runtime, r.multi_arch, r.architectures.clone(), r.in_stack))
        .collect();
    use Architecture::{Arm64, X86_64};
    assert_eq!(
        got,
        vec![
            (Runtime::Python310, false, vec![], false),
            (Runtime::Python311, false, vec![], false),
            (Runtime::Python312, true, vec![Arm64, X86_64], true),
            (Runtime::Python313, false, vec![X86_64], true),
            (Runtime::Python314, false, vec![], false),
        ]
    );
    assert_eq!(
        rows[2].image,
        format!("{}:python3.12-0.2.0", stack.repository_uri)
    );
    assert!(
        rows[3]
            .to_string()
            .contains("multi-arch no   arm64 no   x86_64 yes"),
        "{}",
        rows[3]
    );

    let err = list::list_images(
        &ecr,
        &ImageStack {
            repository_uri: "no-slash".into(),
            ..stack.clone()
        },
    )
    .await
    .expect_err("bad uri");
    assert!(err.to_string().starts_with("repository_uri:"), "{err}");
}

/// The commands of a buildspec phase, each with `$VAR`, `${VAR}`, `${VAR%%/*}` and `${VAR#*/}` replaced from
/// `env`, as bash would.
fn commands(spec: &Value, phase: &str, env: &BTreeMap<&str, String>) -> Vec<String> {
    get(spec, &["phases", phase, "commands"])
        .as_sequence()
        .expect("commands")
        .iter()
        .map(|c| {
            let mut s = text(c);
            // Longest names first so $IMAGE_TAG is not read as $IMAGE.
            let mut names: Vec<&&str> = env.keys().collect();
            names.sort_by_key(|n| std::cmp::Reverse(n.len()));
            for name in names {
                // The two parameter expansions the buildspecs use: the registry host and the repository name.
                let value = &env[*name];
                let (host, repo) = value.split_once('/').unwrap_or((value, ""));
                s = s
                    .replace(&format!("${{{name}%%/*}}"), host)
                    .replace(&format!("${{{name}#*/}}"), repo);
                s = s
                    .replace(&format!("${{{name}}}"), &env[*name])
                    .replace(&format!("${name}"), &env[*name]);
            }
            s
        })
        .collect()
}

#[test]
fn the_buildspecs_build_push_and_join_the_tags_the_library_and_the_job_definitions_use() {
    let stack = stack("b", "repo", &[Runtime::Python313]);
    let runtime = Runtime::Python313;
    let arch = Architecture::X86_64;
    let planned = build::plan(&stack, &[runtime], &BTreeSet::new());
    let arch_build = planned
        .iter()
        .find(|p| p.step == Step::Arch(arch))
        .expect("x86_64 build");
    let mut env: BTreeMap<&str, String> = arch_build
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();

    let spec = load_yaml("builder/buildspec.yml");
    assert_eq!(
        get(&spec, &["version"]).as_f64(),
        Some(0.2),
        "buildspec version 0.2"
    );
    assert_eq!(
        text(get(&spec, &["env", "variables", "DOCKER_BUILDKIT"])),
        "1"
    );
    let pre = commands(&spec, "pre_build", &env);
    // IMAGE is exported in pre_build: evaluate it the same way.
    let image_line = pre
        .iter()
        .find(|c| c.starts_with("export IMAGE="))
        .expect("IMAGE");
    let image = image_line["export IMAGE=".len()..]
        .trim_matches('"')
        .to_owned();
    assert_eq!(image, arch_build.image, "the tag the library reports");
    assert_eq!(
        image,
        format!("{}:python3.13-0.2.0-x86_64", stack.repository_uri)
    );
    assert!(
        pre.iter().any(|c| c.contains("aws ecr get-login-password")
            && c.contains("docker login --username AWS --password-stdin \"123456789012.dkr.ecr.us-east-1.amazonaws.com\"")),
        "{pre:?}"
    );
    env.insert("IMAGE", image.clone());
    let build_cmds = commands(&spec, "build", &env);
    assert_eq!(
        build_cmds,
        vec![format!(
            "docker build --file builder/Dockerfile --build-arg PYTHON_VERSION=\"3.13\" --tag \"{image}\" ."
        )]
    );
    let post = commands(&spec, "post_build", &env);
    assert_eq!(
        post.last().map(String::as_str),
        Some(format!("docker push \"{image}\"").as_str())
    );
    assert!(
        post.iter()
            .any(|c| c.contains("CODEBUILD_BUILD_SUCCEEDING")),
        "no push after a failed build"
    );

    // The join: both architectures' tags into the one the job definitions run.
    let manifest_build = planned
        .iter()
        .find(|p| p.step == Step::Manifest)
        .expect("manifest build");
    let mut env: BTreeMap<&str, String> = manifest_build
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let spec = load_yaml("builder/buildspec-manifest.yml");
    let pre = commands(&spec, "pre_build", &env);
    let tag = pre
        .iter()
        .find_map(|c| c.strip_prefix("export TAG="))
        .expect("TAG")
        .trim_matches('"')
        .to_owned();
    assert_eq!(tag, stack.tag(runtime));
    let wait = pre
        .iter()
        .find(|c| c.contains("describe-images"))
        .expect("the wait for both architectures");
    assert!(
        wait.contains("imageTag=\"$TAG-arm64\" imageTag=\"$TAG-x86_64\""),
        "{wait}"
    );
    env.insert("TAG", tag);
    let uri = &stack.repository_uri;
    assert_eq!(
        commands(&spec, "build", &env),
        vec![
            format!(
                "docker manifest create \"{uri}:python3.13-0.2.0\" \"{uri}:python3.13-0.2.0-arm64\" \"{uri}:python3.13-0.2.0-x86_64\""
            ),
            format!("docker manifest push \"{uri}:python3.13-0.2.0\""),
        ]
    );
    assert_eq!(
        manifest_build.image,
        format!("{uri}:python3.13-0.2.0"),
        "the library reports the joined tag"
    );
    // The Dockerfile takes the Python version the buildspec passes.
    let dockerfile =
        std::fs::read_to_string(repo_root().join("builder/Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("ARG PYTHON_VERSION"));
    for line in dockerfile.lines().filter(|l| l.starts_with("FROM ")) {
        assert!(
            line.contains("public.ecr.aws/"),
            "base image from ECR Public: {line}"
        );
    }
}
