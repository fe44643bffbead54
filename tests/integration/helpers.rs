//! Fixtures against moto's server: the local AWS every integration test talks to over HTTP.
//!
//! `MOTO_ENDPOINT` (e.g. `http://127.0.0.1:5055`) must point at a running `moto_server`; `scripts/test.sh`
//! starts one. A missing server is a test failure, never a skip.

#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use layerforge::{
    config::Config,
    request::{Architecture, Runtime},
};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// The moto server's base URL; panics (fails the test) when it is not configured.
pub fn endpoint() -> String {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(v) if !v.is_empty() => v.trim_end_matches('/').to_owned(),
        _ => panic!(
            "MOTO_ENDPOINT is not set: integration tests need moto's server (run scripts/test.sh, which starts it)"
        ),
    }
}

/// SDK configuration pointing at moto with dummy credentials.
pub async fn sdk() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

/// A name no other test (or earlier run against the same server) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos % 0xfffff)
}

/// Sends one raw HTTP/1.1 request to moto and returns (status, body). Used for moto's own API and for the
/// few query-protocol calls (IAM, EC2) whose SDK crates would cost minutes of compile time for a fixture.
pub fn http(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let base = endpoint();
    let authority = base
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("MOTO_ENDPOINT must be http://host:port, got {base}"));
    let mut stream =
        TcpStream::connect(authority).unwrap_or_else(|e| panic!("moto at {authority}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response from moto: {response:.200}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // moto answers these small calls without chunking; if it chunks, strip the size lines.
    (status, dechunk(&body))
}

fn dechunk(body: &str) -> String {
    let first = body.lines().next().unwrap_or("");
    if !first.is_empty()
        && first.len() <= 8
        && first.chars().all(|c| c.is_ascii_hexdigit())
        && body.contains("\r\n0\r\n")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n.min(tail.len())]);
            rest = tail.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        body.to_owned()
    }
}

/// An AWS query-protocol call (form-encoded POST) to `service`; moto routes by the credential scope.
pub fn query(service: &str, params: &[(&str, &str)]) -> String {
    let body: String = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let (status, text) = http(
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
        ],
        &body,
    );
    assert!(
        status < 300,
        "{service} {params:?} -> {status}: {text:.500}"
    );
    text
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The text of the first `<tag>…</tag>` in an XML answer.
pub fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml:.500}"))
        + open.len();
    let end = xml[start..].find(&format!("</{tag}>")).unwrap() + start;
    xml[start..end].to_owned()
}

/// Tells moto's Batch not to use Docker: jobs then succeed at once without running a container.
pub fn batch_without_docker() {
    let (status, body) = http(
        "POST",
        "/moto-api/config",
        &[("Content-Type", "application/json")],
        r#"{"batch":{"use_docker":false}}"#,
    );
    assert!(status < 300, "moto config: {status} {body}");
}

/// An IAM role's ARN, created in moto.
pub fn iam_role(name: &str, service: &str) -> String {
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"{service}"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let xml = query(
        "iam",
        &[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", &policy),
        ],
    );
    xml_value(&xml, "Arn")
}

/// A VPC with one subnet and one security group: (subnet id, security group id).
pub fn network(name: &str) -> (String, String) {
    let vpc = xml_value(
        &query(
            "ec2",
            &[
                ("Action", "CreateVpc"),
                ("Version", "2016-11-15"),
                ("CidrBlock", "10.0.0.0/16"),
            ],
        ),
        "vpcId",
    );
    let subnet = xml_value(
        &query(
            "ec2",
            &[
                ("Action", "CreateSubnet"),
                ("Version", "2016-11-15"),
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.1.0/24"),
            ],
        ),
        "subnetId",
    );
    let group = xml_value(
        &query(
            "ec2",
            &[
                ("Action", "CreateSecurityGroup"),
                ("Version", "2016-11-15"),
                ("VpcId", &vpc),
                ("GroupName", name),
                ("GroupDescription", "layerforge builder"),
            ],
        ),
        "groupId",
    );
    (subnet, group)
}

/// What the SAM template would create for the builds: per architecture a Fargate queue; for arm64 one job
/// definition per runtime (keys `"python3.X/arm64"`, as the template writes them), for x86_64 one definition for
/// every runtime (an architecture-only key, as a deployment with one image has).
#[derive(Debug, Clone)]
pub struct BatchStack {
    /// `BUILD_TARGETS` JSON for [`Config`].
    pub build_targets: String,
    /// (queue ARN, arm64 job definition ARN of each runtime).
    pub arm64: (String, Vec<(Runtime, String)>),
    /// (queue ARN, job definition ARN).
    pub x86_64: (String, String),
}

impl BatchStack {
    /// (queue ARN, job definition ARN) for `runtime` on `arch`.
    pub fn target(&self, runtime: Runtime, arch: Architecture) -> (String, String) {
        match arch {
            Architecture::Arm64 => {
                let definition = self
                    .arm64
                    .1
                    .iter()
                    .find(|(r, _)| *r == runtime)
                    .map(|(_, d)| d.clone())
                    .expect("every runtime has an arm64 definition");
                (self.arm64.0.clone(), definition)
            }
            Architecture::X86_64 => self.x86_64.clone(),
        }
    }
}

/// Provisions, in moto: service and job roles, network, a FARGATE compute environment, one job queue per
/// architecture and the job definitions of [`BatchStack`] (`runtimePlatform` ARM64 / X86_64).
pub async fn batch_stack(sdk: &SdkConfig) -> BatchStack {
    use aws_sdk_batch::types::{
        AssignPublicIp, CeState, CeType, ComputeEnvironmentOrder, ComputeResource,
        ContainerProperties, CrType, FargatePlatformConfiguration, JobDefinitionType, JqState,
        NetworkConfiguration, PlatformCapability, ResourceRequirement, ResourceType,
        RuntimePlatform,
    };
    batch_without_docker();
    let batch = aws_sdk_batch::Client::new(sdk);
    let name = unique("lf");
    let service_role = iam_role(&format!("{name}-batch"), "batch.amazonaws.com");
    let job_role = iam_role(&format!("{name}-job"), "ecs-tasks.amazonaws.com");
    let (subnet, group) = network(&name);

    let ce = batch
        .create_compute_environment()
        .compute_environment_name(format!("{name}-fargate"))
        .r#type(CeType::Managed)
        .state(CeState::Enabled)
        .service_role(&service_role)
        .compute_resources(
            ComputeResource::builder()
                .r#type(CrType::Fargate)
                .maxv_cpus(16)
                .subnets(&subnet)
                .security_group_ids(&group)
                .build(),
        )
        .send()
        .await
        .expect("create compute environment");
    let ce_arn = ce.compute_environment_arn().unwrap().to_owned();

    let mut queues = Vec::new();
    let mut definitions = Vec::new();
    for (arch, cpu) in [
        (Architecture::Arm64, "ARM64"),
        (Architecture::X86_64, "X86_64"),
    ] {
        let queue = batch
            .create_job_queue()
            .job_queue_name(format!("{name}-{arch}"))
            .state(JqState::Enabled)
            .priority(1)
            .compute_environment_order(
                ComputeEnvironmentOrder::builder()
                    .order(1)
                    .compute_environment(&ce_arn)
                    .build(),
            )
            .send()
            .await
            .expect("create job queue");
        queues.push(queue.job_queue_arn().unwrap().to_owned());
        let runtimes: Vec<Option<Runtime>> = match arch {
            Architecture::Arm64 => Runtime::ALL.into_iter().map(Some).collect(),
            Architecture::X86_64 => vec![None],
        };
        for runtime in runtimes {
            let (suffix, tag) = match runtime {
                Some(r) => (format!("{}-{arch}", r.compact()), r.to_string()),
                None => (arch.to_string(), "latest".to_owned()),
            };
            let definition = batch
                .register_job_definition()
                .job_definition_name(format!("{name}-builder-{suffix}"))
                .r#type(JobDefinitionType::Container)
                .platform_capabilities(PlatformCapability::Fargate)
                .container_properties(
                    ContainerProperties::builder()
                        .image(format!(
                            "123456789012.dkr.ecr.us-east-1.amazonaws.com/layerforge-builder:{tag}"
                        ))
                        .execution_role_arn(&job_role)
                        .job_role_arn(&job_role)
                        .resource_requirements(
                            ResourceRequirement::builder()
                                .r#type(ResourceType::Vcpu)
                                .value("2")
                                .build(),
                        )
                        .resource_requirements(
                            ResourceRequirement::builder()
                                .r#type(ResourceType::Memory)
                                .value("4096")
                                .build(),
                        )
                        .runtime_platform(
                            RuntimePlatform::builder()
                                .cpu_architecture(cpu)
                                .operating_system_family("LINUX")
                                .build(),
                        )
                        .network_configuration(
                            NetworkConfiguration::builder()
                                .assign_public_ip(AssignPublicIp::Enabled)
                                .build(),
                        )
                        .fargate_platform_configuration(
                            FargatePlatformConfiguration::builder()
                                .platform_version("LATEST")
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .expect("register job definition");
            definitions.push((
                runtime,
                arch,
                definition.job_definition_arn().unwrap().to_owned(),
            ));
        }
    }
    let mut json = serde_json::Map::new();
    for (runtime, arch, definition) in &definitions {
        let key = match runtime {
            Some(r) => format!("{r}/{arch}"),
            None => arch.to_string(),
        };
        let queue = &queues[usize::from(*arch == Architecture::X86_64)];
        json.insert(
            key,
            serde_json::json!({"job_queue": queue, "job_definition": definition}),
        );
    }
    BatchStack {
        build_targets: serde_json::Value::Object(json).to_string(),
        arm64: (
            queues[0].clone(),
            definitions
                .iter()
                .filter(|(_, a, _)| *a == Architecture::Arm64)
                .map(|(r, _, d)| (r.expect("arm64 definitions are per runtime"), d.clone()))
                .collect(),
        ),
        x86_64: (
            queues[1].clone(),
            definitions
                .iter()
                .find(|(_, a, _)| *a == Architecture::X86_64)
                .map(|(_, _, d)| d.clone())
                .unwrap(),
        ),
    }
}

/// A new bucket in moto.
pub async fn bucket(sdk: &SdkConfig, prefix: &str) -> String {
    let s3 = layerforge::aws::s3_client(sdk);
    let name = unique(prefix).to_lowercase();
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create bucket");
    name
}

/// A [`Config`] for this deployment, as the template's environment would give it.
pub fn config(bucket: &str, build_targets: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> = vec![
        ("ARTIFACT_BUCKET".into(), bucket.into()),
        ("BUILD_TARGETS".into(), build_targets.into()),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::from_lookup(|k| {
        vars.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    })
    .expect("config")
}

/// A versioned bucket whose `ObjectCreated` events for `.zip` keys (under `key_prefix`, when given) go to a new SQS
/// queue, as the template's S3 event does: (bucket, queue URL). moto's first message on it is an `s3:TestEvent`.
pub async fn bucket_with_events(
    sdk: &SdkConfig,
    name: &str,
    key_prefix: Option<&str>,
) -> (String, String) {
    use aws_sdk_s3::types::{
        BucketVersioningStatus, Event, FilterRule, FilterRuleName, NotificationConfiguration,
        NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter, VersioningConfiguration,
    };
    let s3 = layerforge::aws::s3_client(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let bucket = bucket(sdk, name).await;
    s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let queue_url = sqs
        .create_queue()
        .queue_name(unique(&format!("{name}-events")))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let queue_arn =
        attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    let filter =
        |name: FilterRuleName, value: &str| FilterRule::builder().name(name).value(value).build();
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(queue_arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(
                            NotificationConfigurationFilter::builder()
                                .key(
                                    S3KeyFilter::builder()
                                        .set_filter_rules(Some(
                                            key_prefix
                                                .map(|p| filter(FilterRuleName::Prefix, p))
                                                .into_iter()
                                                .chain([filter(FilterRuleName::Suffix, ".zip")])
                                                .collect(),
                                        ))
                                        .build(),
                                )
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    (bucket, queue_url)
}
