//! What `template.yaml` creates, provisioned in moto's server: the one implementation used by
//! `layerforge local up` and by the integration tests.
//!
//! - a versioned artifact bucket whose `s3:ObjectCreated:*` events for `PREFIX/…/*.zip` go to an SQS queue
//!   (moto's S3 → Lambda notification needs Docker and fails silently; its S3 → SQS notification delivers the
//!   real event records, DESIGN section 8);
//! - IAM roles, a VPC with a subnet and a security group, a Fargate compute environment, and per
//!   architecture a job queue and a job definition (`runtimePlatform` ARM64 / X86_64);
//! - Batch switched to "no Docker", so jobs SUCCEED at once (the local cloud runs their commands itself).

use aws_config::SdkConfig;
use aws_sdk_batch::types::{
    AssignPublicIp, CeState, CeType, ComputeEnvironmentOrder, ComputeResource, ContainerProperties,
    CrType, FargatePlatformConfiguration, JobDefinitionType, JqState, NetworkConfiguration,
    PlatformCapability, ResourceRequirement, ResourceType, RuntimePlatform,
};
use aws_sdk_s3::types::{
    BucketVersioningStatus, Event, FilterRule, FilterRuleName, NotificationConfiguration,
    NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter, VersioningConfiguration,
};
use serde::{Deserialize, Serialize};

use super::moto::{Moto, MotoError, REGION, xml_value};
use crate::{
    aws::AwsFault,
    request::{Architecture, Runtime},
};

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Moto(#[from] MotoError),
    #[error(transparent)]
    Aws(#[from] AwsFault),
    #[error("{0}: moto's answer lacks the field")]
    Missing(&'static str),
}

/// The Batch side of the stack, shaped like the template's: arm64 has a job definition per runtime (keys
/// `"python3.X/arm64"` in `BUILD_TARGETS`, as the template writes them), x86_64 one definition for every runtime
/// (an architecture-only key, as a deployment with one image has), so both key forms are exercised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStack {
    /// `BUILD_TARGETS` JSON.
    pub build_targets: String,
    /// (job queue ARN, job definition ARN) of arm64 (the architecture's own definition, not in `BUILD_TARGETS`).
    pub arm64: (String, String),
    /// The arm64 job definition ARN of each runtime.
    pub arm64_by_runtime: Vec<(Runtime, String)>,
    /// (job queue ARN, job definition ARN) of x86_64.
    pub x86_64: (String, String),
}

impl BatchStack {
    /// (queue ARN, job definition ARN) a request for `runtime` on `arch` is submitted to.
    pub fn target(&self, runtime: Runtime, arch: Architecture) -> (String, String) {
        match arch {
            Architecture::Arm64 => {
                let definition = self
                    .arm64_by_runtime
                    .iter()
                    .find(|(r, _)| *r == runtime)
                    .map_or_else(|| self.arm64.1.clone(), |(_, d)| d.clone());
                (self.arm64.0.clone(), definition)
            }
            Architecture::X86_64 => self.x86_64.clone(),
        }
    }

    /// The job queues, one per architecture.
    pub fn queues(&self) -> [&str; 2] {
        [&self.arm64.0, &self.x86_64.0]
    }
}

/// The whole local stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStack {
    /// The stack's name (`STACK_NAME` of the functions: the latest pointers' parameters name it).
    #[serde(default = "default_stack_name")]
    pub name: String,
    pub bucket: String,
    pub prefix: String,
    /// The queue the bucket's artifact events go to.
    pub queue_url: String,
    pub batch: BatchStack,
}

impl LocalStack {
    /// The functions' environment (the template's `Environment.Variables`, pointed at moto).
    pub fn functions_env(&self, moto_endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", moto_endpoint.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("ARTIFACT_BUCKET", self.bucket.clone()),
            ("ARTIFACT_PREFIX", self.prefix.clone()),
            ("BUILD_TARGETS", self.batch.build_targets.clone()),
            ("DEFAULT_RUNTIME", "python3.12".to_owned()),
            ("DEFAULT_ARCHITECTURE", "arm64".to_owned()),
            ("ALLOWED_REQUIREMENTS_BUCKETS", String::new()),
            ("MAX_VCPU", "4".to_owned()),
            ("MAX_MEMORY_MIB", "16384".to_owned()),
            // The local cloud is one user's account in moto: it owns every layer name (`LayerNamePrefix=*`), so
            // `local-demo` and any name a user tries publishes as it would on a stack deployed with `*`.
            ("LAYER_NAME_PREFIX", String::new()),
            ("STACK_NAME", self.name.clone()),
        ]
    }
}

/// The name of a local stack whose state file predates the field: `layerforge local up`'s only name.
fn default_stack_name() -> String {
    "layerforge".to_owned()
}

/// Provisions the stack named `name` (bucket `NAME-artifacts`, queue `NAME-artifact-events`, …).
pub async fn stack(sdk: &SdkConfig, moto: &Moto, name: &str) -> Result<LocalStack, ProvisionError> {
    let prefix = "layers".to_owned();
    let bucket = format!("{name}-artifacts");
    let queue_url = bucket_with_events(
        sdk,
        &bucket,
        &format!("{name}-artifact-events"),
        Some(&format!("{prefix}/")),
    )
    .await?;
    let batch = batch_stack(sdk, moto, name).await?;
    Ok(LocalStack {
        name: name.to_owned(),
        bucket,
        prefix,
        queue_url,
        batch,
    })
}

/// A versioned bucket `bucket` whose `ObjectCreated` events for `.zip` keys (under `key_prefix`, when given)
/// go to a new SQS queue `queue`; returns the queue URL. moto's first message on it is an `s3:TestEvent`.
pub async fn bucket_with_events(
    sdk: &SdkConfig,
    bucket: &str,
    queue: &str,
    key_prefix: Option<&str>,
) -> Result<String, ProvisionError> {
    let s3 = crate::aws::s3_client(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("CreateBucket", &e))?;
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("PutBucketVersioning", &e))?;
    let queue_url = sqs
        .create_queue()
        .queue_name(queue)
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("CreateQueue", &e))?
        .queue_url
        .ok_or(ProvisionError::Missing("CreateQueue.QueueUrl"))?;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("GetQueueAttributes", &e))?;
    let queue_arn = attrs
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .ok_or(ProvisionError::Missing("GetQueueAttributes.QueueArn"))?
        .clone();
    let rule =
        |name: FilterRuleName, value: &str| FilterRule::builder().name(name).value(value).build();
    let rules: Vec<FilterRule> = key_prefix
        .map(|p| rule(FilterRuleName::Prefix, p))
        .into_iter()
        .chain([rule(FilterRuleName::Suffix, ".zip")])
        .collect();
    let queue_config = QueueConfiguration::builder()
        .queue_arn(queue_arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .filter(
            NotificationConfigurationFilter::builder()
                .key(S3KeyFilter::builder().set_filter_rules(Some(rules)).build())
                .build(),
        )
        .build()
        .map_err(|_| ProvisionError::Missing("QueueConfiguration"))?;
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(queue_config)
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("PutBucketNotificationConfiguration", &e))?;
    Ok(queue_url)
}

/// An IAM role's ARN, created in moto.
pub async fn iam_role(moto: &Moto, name: &str, service: &str) -> Result<String, ProvisionError> {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    })
    .to_string();
    let xml = moto
        .query(
            "iam",
            &[
                ("Action", "CreateRole"),
                ("Version", "2010-05-08"),
                ("RoleName", name),
                ("AssumeRolePolicyDocument", &policy),
            ],
        )
        .await?;
    Ok(xml_value(&xml, "Arn", "iam CreateRole")?)
}

/// A VPC with one subnet and one security group: (subnet id, security group id).
async fn network(moto: &Moto, name: &str) -> Result<(String, String), ProvisionError> {
    let ec2 = |params: Vec<(&'static str, String)>| async move {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        moto.query("ec2", &params).await
    };
    let v = "2016-11-15".to_owned();
    let xml = ec2(vec![
        ("Action", "CreateVpc".into()),
        ("Version", v.clone()),
        ("CidrBlock", "10.0.0.0/16".into()),
    ])
    .await?;
    let vpc = xml_value(&xml, "vpcId", "ec2 CreateVpc")?;
    let xml = ec2(vec![
        ("Action", "CreateSubnet".into()),
        ("Version", v.clone()),
        ("VpcId", vpc.clone()),
        ("CidrBlock", "10.0.1.0/24".into()),
    ])
    .await?;
    let subnet = xml_value(&xml, "subnetId", "ec2 CreateSubnet")?;
    let xml = ec2(vec![
        ("Action", "CreateSecurityGroup".into()),
        ("Version", v),
        ("VpcId", vpc),
        ("GroupName", name.to_owned()),
        ("GroupDescription", "layerforge builder".into()),
    ])
    .await?;
    let group = xml_value(&xml, "groupId", "ec2 CreateSecurityGroup")?;
    Ok((subnet, group))
}

/// Service and job roles, network, a FARGATE compute environment, one job queue and one job definition per
/// architecture, all named after `name`; Batch is switched to "no Docker" first.
pub async fn batch_stack(
    sdk: &SdkConfig,
    moto: &Moto,
    name: &str,
) -> Result<BatchStack, ProvisionError> {
    moto.batch_without_docker().await?;
    let batch = aws_sdk_batch::Client::new(sdk);
    let service_role = iam_role(
        moto,
        &format!("{name}-batch-service"),
        "batch.amazonaws.com",
    )
    .await?;
    // The execution role (image pull, logs), as the template's BuildExecutionRole; like the template, the job
    // definitions have no job role: a build job holds no AWS credential (issue 19, upload grants).
    let execution_role = iam_role(
        moto,
        &format!("{name}-builder-execution"),
        "ecs-tasks.amazonaws.com",
    )
    .await?;
    let (subnet, group) = network(moto, &format!("{name}-builder")).await?;

    let ce_arn = batch
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
        .map_err(|e| AwsFault::from_sdk("CreateComputeEnvironment", &e))?
        .compute_environment_arn
        .ok_or(ProvisionError::Missing(
            "CreateComputeEnvironment.computeEnvironmentArn",
        ))?;

    let mut targets = Vec::new();
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
            .map_err(|e| AwsFault::from_sdk("CreateJobQueue", &e))?
            .job_queue_arn
            .ok_or(ProvisionError::Missing("CreateJobQueue.jobQueueArn"))?;
        let definition = register_definition(
            &batch,
            format!("{name}-builder-{arch}"),
            format!("123456789012.dkr.ecr.{REGION}.amazonaws.com/layerforge-builder:latest"),
            cpu,
            &execution_role,
        )
        .await?;
        targets.push((queue, definition));
    }
    let [arm64, x86_64]: [(String, String); 2] = targets
        .try_into()
        .map_err(|_| ProvisionError::Missing("job queues"))?;
    // One arm64 definition per runtime, on that Python version's image tag, as the template's
    // Fn::ForEach::JobDefinitions writes them.
    let mut arm64_by_runtime = Vec::new();
    let mut build_targets = serde_json::Map::new();
    for runtime in Runtime::ALL {
        let definition = register_definition(
            &batch,
            format!("{name}-builder-{}-arm64", runtime.compact()),
            format!(
                "123456789012.dkr.ecr.{REGION}.amazonaws.com/layerforge-builder:{runtime}-0.1.0"
            ),
            "ARM64",
            &execution_role,
        )
        .await?;
        build_targets.insert(
            format!("{runtime}/arm64"),
            serde_json::json!({"job_queue": arm64.0, "job_definition": definition}),
        );
        arm64_by_runtime.push((runtime, definition));
    }
    build_targets.insert(
        "x86_64".to_owned(),
        serde_json::json!({"job_queue": x86_64.0, "job_definition": x86_64.1}),
    );
    Ok(BatchStack {
        build_targets: serde_json::Value::Object(build_targets).to_string(),
        arm64,
        arm64_by_runtime,
        x86_64,
    })
}

/// Registers a Fargate job definition for `cpu` (`ARM64`/`X86_64`) on `image`; returns its ARN.
async fn register_definition(
    batch: &aws_sdk_batch::Client,
    name: String,
    image: String,
    cpu: &str,
    execution_role: &str,
) -> Result<String, ProvisionError> {
    let requirement =
        |t: ResourceType, v: &str| ResourceRequirement::builder().r#type(t).value(v).build();
    batch
        .register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .platform_capabilities(PlatformCapability::Fargate)
        .container_properties(
            ContainerProperties::builder()
                .image(image)
                .execution_role_arn(execution_role)
                .resource_requirements(requirement(ResourceType::Vcpu, "2"))
                .resource_requirements(requirement(ResourceType::Memory, "4096"))
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
        .map_err(|e| AwsFault::from_sdk("RegisterJobDefinition", &e))?
        .job_definition_arn
        .ok_or(ProvisionError::Missing(
            "RegisterJobDefinition.jobDefinitionArn",
        ))
}
