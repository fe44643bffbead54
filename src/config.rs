//! Environment -> typed [`Config`], parsed once at cold start.
//!
//! Every variable layerforge reads is listed in [`ENV_VARS`]; the template test checks that `template.yaml`
//! sets exactly these, so the code and the deployment can't drift apart.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::vocab::{Architecture, MAX_LAYER_NAME, Runtime, S3Uri};

/// Every environment variable [`Config::from_env`] reads.
pub const ENV_VARS: &[&str] = &[
    "ARTIFACT_BUCKET",
    "ARTIFACT_PREFIX",
    "BUILD_TARGETS",
    "DEFAULT_RUNTIME",
    "DEFAULT_ARCHITECTURE",
    "ALLOWED_REQUIREMENTS_BUCKETS",
    "MAX_VCPU",
    "MAX_MEMORY_MIB",
    "LAYER_NAME_PREFIX",
    "JOB_TIMEOUT_SECONDS",
    "UPLOAD_GRANT_SECONDS",
    "STACK_NAME",
    "FAST_BUILDER_FUNCTION",
    "FAST_BUILDER_RUNTIMES",
    "FAST_BUILDER_DEADLINE_SECONDS",
    "MAX_MATRIX_PAIRS",
];

/// The most pairs a matrix can have: every Lambda Python runtime (5) on both architectures.
pub const MATRIX_PAIRS_CEILING: usize = 10;

/// Upper bounds for Fargate: 16 vCPU and 120 GiB are the largest task sizes Fargate offers.
const FARGATE_MAX_VCPU: f64 = 16.0;
const FARGATE_MAX_MEMORY_MIB: u32 = 122_880;

/// The template's `JobTimeoutSeconds` default: one attempt of a build job.
const DEFAULT_JOB_TIMEOUT_SECONDS: u64 = 1800;
/// Attempts of one job: the template's largest `RetryStrategy.Attempts` (x86_64, Spot reclaims).
const JOB_ATTEMPTS: u64 = 3;
/// Time a job may wait in its queue (RUNNABLE) and between attempts before its grants are used.
const QUEUE_ALLOWANCE_SECONDS: u64 = 6 * 3600;

/// Where a build for one runtime and architecture runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildTarget {
    pub job_queue: String,
    pub job_definition: String,
}

/// A key of `BUILD_TARGETS`: `"<runtime>/<architecture>"`, or `"<architecture>"` for every runtime (a deployment
/// with one builder image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKey {
    /// `None`: every runtime of the architecture without a key of its own.
    pub runtime: Option<Runtime>,
    pub architecture: Architecture,
}

impl TargetKey {
    fn parse(raw: &str) -> Result<Self, String> {
        match raw.split_once('/') {
            Some((runtime, architecture)) => Ok(Self {
                runtime: Some(runtime.parse()?),
                architecture: architecture.parse()?,
            }),
            None => Ok(Self {
                runtime: None,
                architecture: raw.parse()?,
            }),
        }
    }
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.runtime {
            Some(runtime) => write!(f, "{runtime}/{}", self.architecture),
            None => write!(f, "{}", self.architecture),
        }
    }
}

/// The fast builder (DESIGN section 12): a Lambda function that builds wheel-only requests in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastBuilder {
    /// `FAST_BUILDER_FUNCTION`: its name or ARN (invoked asynchronously).
    pub function: String,
    /// `FAST_BUILDER_RUNTIMES` (comma separated, default `python3.12`; `none` for none): the runtimes whose
    /// bytecode it can compile, i.e. the Python versions it has an interpreter of (its own managed runtime's). A
    /// request with bytecode for another runtime goes to Batch.
    pub runtimes: Vec<Runtime>,
    /// `FAST_BUILDER_DEADLINE_SECONDS` (default 3,600: three attempts of at most 900 s and Lambda's retry delays):
    /// a fast build that neither produced its artifact nor was handed over by then is `failed`.
    pub deadline: std::time::Duration,
}

/// Why a runtime/architecture has no build target; names the request field to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoTarget {
    /// `architecture` when nothing is built for the architecture, else `runtime`.
    pub field: &'static str,
    pub rule: String,
}

/// The typed configuration of the functions (DESIGN section 7).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub artifact_bucket: String,
    /// Key prefix without leading or trailing slashes, e.g. `layers`.
    pub artifact_prefix: String,
    /// `BUILD_TARGETS`; a key whose value is JSON `null` (a runtime the stack does not build) is left out.
    pub build_targets: BTreeMap<TargetKey, BuildTarget>,
    pub default_runtime: Runtime,
    pub default_architecture: Architecture,
    /// Buckets a `requirements_s3_uri` may name besides the artifact bucket.
    pub allowed_requirements_buckets: BTreeSet<String>,
    pub max_vcpu: f64,
    pub max_memory_mib: u32,
    /// The layer names this deployment owns (submit-build refuses others, publish-layer rejects them).
    pub layer_name_prefix: LayerNamePrefix,
    /// How long the upload grants submit-build signs are valid (`UPLOAD_GRANT_SECONDS`; default: every attempt
    /// of the job at `JOB_TIMEOUT_SECONDS`, plus [`QUEUE_ALLOWANCE_SECONDS`], at most SigV4's 7 days). The
    /// signer's session may end earlier: see [`crate::grant`] for what a job that starts too late does.
    pub upload_grant: std::time::Duration,
    /// `STACK_NAME`: the stack's name (the template sets `AWS::StackName`), the second segment of the latest
    /// pointers' SSM parameters `/layerforge/<stack>/<layer>/<runtime>/<arch>/latest`. Unset: publish-layer
    /// keeps no latest pointer.
    pub stack_name: Option<String>,
    /// The fast builder, when the deployment has one (`FAST_BUILDER_FUNCTION` set).
    pub fast_builder: Option<FastBuilder>,
    /// `MAX_MATRIX_PAIRS` (default and most [`MATRIX_PAIRS_CEILING`]): how many runtime/architecture pairs one
    /// request may plan (DESIGN section 15).
    pub max_matrix_pairs: usize,
}

/// `LAYER_NAME_PREFIX`: which layer names a deployment owns, matched by whole segments (DESIGN section 16).
///
/// A prefix `team-a` admits `team-a` itself and the names that continue it with a separator, `team-a-…` and
/// `team-a_…`, never `team-admin-x` (a look-alike that another team owns). A prefix that ends in a separator
/// (`team-a-`) admits every name that starts with it. Empty: every name. template.yaml's IAM resources for
/// PublishLayerVersion follow the same rule (`layer:P`, `layer:P-*`, `layer:P_*`, or `layer:P*` after a
/// separator), checked by the template tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerNamePrefix(String);

impl LayerNamePrefix {
    /// The longest prefix: a layer name is at most 64 characters ([`MAX_LAYER_NAME`]), and
    /// the prefix itself is a name it admits.
    pub const MAX_LEN: usize = MAX_LAYER_NAME;

    /// At most [`Self::MAX_LEN`] of `A-Z a-z 0-9 - _` (the characters of a layer name); empty admits all.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > Self::MAX_LEN
            || !raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "must be at most {} of A-Z a-z 0-9 - _, got {raw:?}",
                Self::MAX_LEN
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this deployment owns the layer `name` (the rule in the type's docs).
    pub fn admits(&self, name: &str) -> bool {
        let prefix = self.0.as_str();
        if prefix.is_empty() || prefix.ends_with(['-', '_']) {
            return name.starts_with(prefix);
        }
        match name.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with(['-', '_']),
            None => false,
        }
    }
}

impl LayerNamePrefix {
    /// The names admitted, in words (for messages): `"team-a" or a name that starts with "team-a-" or "team-a_"`.
    pub fn describe(&self) -> String {
        let prefix = self.0.as_str();
        if prefix.is_empty() {
            "any name".to_owned()
        } else if prefix.ends_with(['-', '_']) {
            format!("a name that starts with {prefix:?}")
        } else {
            format!("{prefix:?} or a name that starts with \"{prefix}-\" or \"{prefix}_\"")
        }
    }
}

impl std::fmt::Display for LayerNamePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A variable that is missing or can't be parsed; names the variable.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("configuration: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &'static str| {
            lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let artifact_bucket = get("ARTIFACT_BUCKET")
            .ok_or_else(|| ConfigError::new("ARTIFACT_BUCKET", "required"))?;
        let artifact_prefix = get("ARTIFACT_PREFIX")
            .unwrap_or_else(|| "layers".to_owned())
            .trim_matches('/')
            .to_owned();
        if artifact_prefix.is_empty() {
            return Err(ConfigError::new(
                "ARTIFACT_PREFIX",
                "must not be only slashes",
            ));
        }

        let default_runtime = match get("DEFAULT_RUNTIME") {
            Some(v) => v
                .parse::<Runtime>()
                .map_err(|e| ConfigError::new("DEFAULT_RUNTIME", e))?,
            None => Runtime::Python312,
        };
        let default_architecture = match get("DEFAULT_ARCHITECTURE") {
            Some(v) => v
                .parse::<Architecture>()
                .map_err(|e| ConfigError::new("DEFAULT_ARCHITECTURE", e))?,
            None => Architecture::Arm64,
        };

        let build_targets = match get("BUILD_TARGETS") {
            Some(raw) => parse_build_targets(&raw)?,
            None => BTreeMap::new(),
        };

        let allowed_requirements_buckets = get("ALLOWED_REQUIREMENTS_BUCKETS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|b| !b.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();

        let max_vcpu = match get("MAX_VCPU") {
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n > 0.0 && n <= FARGATE_MAX_VCPU => n,
                _ => {
                    return Err(ConfigError::new(
                        "MAX_VCPU",
                        format!("must be a number in (0, {FARGATE_MAX_VCPU}], got {v:?}"),
                    ));
                }
            },
            None => 4.0,
        };
        let max_memory_mib = match get("MAX_MEMORY_MIB") {
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (512..=FARGATE_MAX_MEMORY_MIB).contains(&n) => n,
                _ => {
                    return Err(ConfigError::new(
                        "MAX_MEMORY_MIB",
                        format!(
                            "must be a whole number of MiB in 512..={FARGATE_MAX_MEMORY_MIB}, got {v:?}"
                        ),
                    ));
                }
            },
            None => 16_384,
        };

        let layer_name_prefix =
            LayerNamePrefix::parse(&get("LAYER_NAME_PREFIX").unwrap_or_default())
                .map_err(|rule| ConfigError::new("LAYER_NAME_PREFIX", rule))?;

        let seconds = |var: &'static str, min: u64, max: u64| -> Result<Option<u64>, ConfigError> {
            get(var)
                .map(|v| match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(ConfigError::new(
                        var,
                        format!("must be a whole number of seconds in {min}..={max}, got {v:?}"),
                    )),
                })
                .transpose()
        };
        let max_grant = crate::grant::MAX_GRANT.as_secs();
        let job_timeout =
            seconds("JOB_TIMEOUT_SECONDS", 60, max_grant)?.unwrap_or(DEFAULT_JOB_TIMEOUT_SECONDS);
        let upload_grant = seconds("UPLOAD_GRANT_SECONDS", 60, max_grant)?.unwrap_or_else(|| {
            (job_timeout * JOB_ATTEMPTS + QUEUE_ALLOWANCE_SECONDS).min(max_grant)
        });

        let stack_name = get("STACK_NAME")
            .map(|v| parse_stack_name(&v).map_err(|rule| ConfigError::new("STACK_NAME", rule)))
            .transpose()?;

        let fast_builder = match get("FAST_BUILDER_FUNCTION") {
            Some(function) => {
                let runtimes = get("FAST_BUILDER_RUNTIMES")
                    .unwrap_or_else(|| "python3.12".to_owned())
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty() && *r != "none")
                    .map(|r| {
                        r.parse::<Runtime>()
                            .map_err(|rule| ConfigError::new("FAST_BUILDER_RUNTIMES", rule))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let deadline =
                    seconds("FAST_BUILDER_DEADLINE_SECONDS", 60, 86_400)?.unwrap_or(3600);
                Some(FastBuilder {
                    function: function.trim().to_owned(),
                    runtimes,
                    deadline: std::time::Duration::from_secs(deadline),
                })
            }
            None => None,
        };

        let max_matrix_pairs = match get("MAX_MATRIX_PAIRS") {
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MATRIX_PAIRS_CEILING).contains(&n) => n,
                _ => {
                    return Err(ConfigError::new(
                        "MAX_MATRIX_PAIRS",
                        format!("must be a whole number in 1..={MATRIX_PAIRS_CEILING}, got {v:?}"),
                    ));
                }
            },
            None => MATRIX_PAIRS_CEILING,
        };

        Ok(Self {
            max_matrix_pairs,
            artifact_bucket,
            artifact_prefix,
            build_targets,
            default_runtime,
            default_architecture,
            allowed_requirements_buckets,
            max_vcpu,
            max_memory_mib,
            layer_name_prefix,
            upload_grant: std::time::Duration::from_secs(upload_grant),
            stack_name,
            fast_builder,
        })
    }

    /// The queue and job definition for `runtime` on `architecture`: the exact `"<runtime>/<architecture>"` key,
    /// else the architecture-only key. The error names the request field to blame.
    pub fn build_target(
        &self,
        runtime: Runtime,
        architecture: Architecture,
    ) -> Result<&BuildTarget, NoTarget> {
        let exact = TargetKey {
            runtime: Some(runtime),
            architecture,
        };
        let any = TargetKey {
            runtime: None,
            architecture,
        };
        if let Some(target) = self
            .build_targets
            .get(&exact)
            .or_else(|| self.build_targets.get(&any))
        {
            return Ok(target);
        }
        let built: Vec<&str> = self
            .build_targets
            .keys()
            .filter(|k| k.architecture == architecture)
            .filter_map(|k| k.runtime.map(Runtime::as_str))
            .collect();
        if built.is_empty() {
            Err(NoTarget {
                field: "architecture",
                rule: format!("this deployment builds no {architecture} layers (BUILD_TARGETS)"),
            })
        } else {
            Err(NoTarget {
                field: "runtime",
                rule: format!(
                    "this deployment builds no {runtime} layers for {architecture}; it builds {}",
                    built.join(", ")
                ),
            })
        }
    }

    /// The architectures this deployment builds for (any runtime).
    pub fn architectures(&self) -> BTreeSet<Architecture> {
        self.build_targets.keys().map(|k| k.architecture).collect()
    }

    /// The area of the artifact bucket `uri` points into that no request may read: the artifact prefix (other
    /// builds' zips) and `.layerforge/` (publish-layer's and submit-build's bookkeeping). `None` elsewhere.
    pub fn reserved_area(&self, uri: &S3Uri) -> Option<String> {
        if uri.bucket != self.artifact_bucket {
            return None;
        }
        let key = uri.key.trim_start_matches('/');
        [
            format!("{}/", self.artifact_prefix),
            ".layerforge/".to_owned(),
        ]
        .into_iter()
        .find(|area| key.starts_with(area.as_str()))
    }

    /// Whether a `requirements_s3_uri` may point into `bucket`.
    pub fn requirements_bucket_allowed(&self, bucket: &str) -> bool {
        bucket == self.artifact_bucket || self.allowed_requirements_buckets.contains(bucket)
    }
}

/// `{"python3.12/arm64": {job_queue, job_definition}, "x86_64": {…}, "python3.10/arm64": null, …}`. A `null`
/// value is a runtime the stack does not build (the template writes one for each runtime left out of
/// `BuildRuntimes`, since CloudFormation can't drop a key from a string it joins).
/// A CloudFormation stack name: a letter, then letters, digits and hyphens, at most 128 characters (also a valid
/// segment of an SSM parameter name).
fn parse_stack_name(raw: &str) -> Result<String, String> {
    let mut chars = raw.chars();
    let valid = raw.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "must be a stack name (a letter, then at most 127 of A-Z a-z 0-9 -), got {raw:?}"
        ))
    }
}

fn parse_build_targets(raw: &str) -> Result<BTreeMap<TargetKey, BuildTarget>, ConfigError> {
    let map: BTreeMap<String, Option<BuildTarget>> = serde_json::from_str(raw).map_err(|e| {
        ConfigError::new(
            "BUILD_TARGETS",
            format!(
                "expected a JSON object \"<runtime>/<architecture>\" or \"<architecture>\" -> \
                 {{job_queue, job_definition}}: {e}"
            ),
        )
    })?;
    let mut targets = BTreeMap::new();
    for (raw_key, target) in map {
        let key = TargetKey::parse(&raw_key)
            .map_err(|e| ConfigError::new("BUILD_TARGETS", format!("key {raw_key:?}: {e}")))?;
        let Some(target) = target else { continue };
        if target.job_queue.trim().is_empty() || target.job_definition.trim().is_empty() {
            return Err(ConfigError::new(
                "BUILD_TARGETS",
                format!("{key}: job_queue and job_definition must not be empty"),
            ));
        }
        targets.insert(key, target);
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_bucket_is_set() {
        let c = config(&[("ARTIFACT_BUCKET", "b")]).unwrap();
        assert_eq!(c.artifact_prefix, "layers");
        assert_eq!(c.default_runtime, Runtime::Python312);
        assert_eq!(c.default_architecture, Architecture::Arm64);
        assert!(c.build_targets.is_empty());
        assert!(c.requirements_bucket_allowed("b"));
        assert!(!c.requirements_bucket_allowed("other"));
    }

    #[test]
    fn the_stack_name_is_a_stack_name() {
        let stack =
            |v: &str| config(&[("ARTIFACT_BUCKET", "b"), ("STACK_NAME", v)]).map(|c| c.stack_name);
        assert_eq!(stack(""), Ok(None));
        assert_eq!(
            stack("layerforge-dev2"),
            Ok(Some("layerforge-dev2".to_owned()))
        );
        for bad in ["2fast", "a/b", "a_b", "a.b", &"a".repeat(129)] {
            assert_eq!(stack(bad).unwrap_err().var, "STACK_NAME", "{bad}");
        }
    }

    #[test]
    fn the_upload_grant_covers_every_attempt_and_the_queue_unless_set() {
        let grant = |vars: &[(&str, &str)]| {
            let mut all = vec![("ARTIFACT_BUCKET", "b")];
            all.extend_from_slice(vars);
            config(&all).map(|c| c.upload_grant.as_secs())
        };
        assert_eq!(grant(&[]), Ok(3 * 1800 + 6 * 3600));
        assert_eq!(
            grant(&[("JOB_TIMEOUT_SECONDS", "14400")]),
            Ok(3 * 14400 + 6 * 3600)
        );
        assert_eq!(
            grant(&[
                ("JOB_TIMEOUT_SECONDS", "14400"),
                ("UPLOAD_GRANT_SECONDS", "7200")
            ]),
            Ok(7200),
            "an explicit lifetime wins"
        );
        assert_eq!(
            grant(&[("JOB_TIMEOUT_SECONDS", "604800")]),
            Ok(604_800),
            "never past SigV4's 7 days"
        );
        for (var, bad) in [
            ("UPLOAD_GRANT_SECONDS", "604801"),
            ("UPLOAD_GRANT_SECONDS", "10"),
            ("UPLOAD_GRANT_SECONDS", "1h"),
            ("JOB_TIMEOUT_SECONDS", "-1"),
        ] {
            assert_eq!(grant(&[(var, bad)]).unwrap_err().var, var, "{var}={bad}");
        }
    }

    #[test]
    fn build_targets_are_parsed_by_architecture() {
        let c = config(&[
            ("ARTIFACT_BUCKET", "b"),
            ("ARTIFACT_PREFIX", "/custom/"),
            (
                "BUILD_TARGETS",
                r#"{"arm64":{"job_queue":"q-arm","job_definition":"d-arm"},"x86_64":{"job_queue":"q-x86","job_definition":"d-x86"}}"#,
            ),
            ("ALLOWED_REQUIREMENTS_BUCKETS", " reqs-a, reqs-b ,"),
        ])
        .unwrap();
        assert_eq!(c.artifact_prefix, "custom");
        for runtime in Runtime::ALL {
            assert_eq!(
                c.build_target(runtime, Architecture::X86_64)
                    .unwrap()
                    .job_queue,
                "q-x86",
                "an architecture-only key serves every runtime"
            );
            assert_eq!(
                c.build_target(runtime, Architecture::Arm64)
                    .unwrap()
                    .job_definition,
                "d-arm"
            );
        }
        assert!(c.requirements_bucket_allowed("reqs-b"));
    }

    #[test]
    fn build_targets_by_runtime_prefer_the_exact_key_and_skip_nulls() {
        let c = config(&[
            ("ARTIFACT_BUCKET", "b"),
            (
                "BUILD_TARGETS",
                r#"{"python3.11/arm64":{"job_queue":"q","job_definition":"d311"},
                    "python3.12/arm64":{"job_queue":"q","job_definition":"d312"},
                    "python3.13/arm64":null,
                    "x86_64":{"job_queue":"qx","job_definition":"dx"},
                    "python3.14/x86_64":{"job_queue":"qx","job_definition":"dx314"}}"#,
            ),
        ])
        .unwrap();
        let def = |r, a| c.build_target(r, a).map(|t| t.job_definition.as_str());
        assert_eq!(def(Runtime::Python311, Architecture::Arm64), Ok("d311"));
        assert_eq!(def(Runtime::Python312, Architecture::Arm64), Ok("d312"));
        assert_eq!(def(Runtime::Python314, Architecture::X86_64), Ok("dx314"));
        assert_eq!(def(Runtime::Python310, Architecture::X86_64), Ok("dx"));
        let missing = c
            .build_target(Runtime::Python313, Architecture::Arm64)
            .unwrap_err();
        assert_eq!(missing.field, "runtime");
        assert!(
            missing.rule.contains("python3.11, python3.12"),
            "{}",
            missing.rule
        );
        let c = config(&[
            ("ARTIFACT_BUCKET", "b"),
            (
                "BUILD_TARGETS",
                r#"{"python3.12/arm64":{"job_queue":"q","job_definition":"d"}}"#,
            ),
        ])
        .unwrap();
        let missing = c
            .build_target(Runtime::Python312, Architecture::X86_64)
            .unwrap_err();
        assert_eq!(missing.field, "architecture");
        assert_eq!(
            c.architectures().into_iter().collect::<Vec<_>>(),
            vec![Architecture::Arm64]
        );
    }

    #[test]
    fn each_bad_variable_is_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "ARTIFACT_BUCKET"),
            (
                &[("ARTIFACT_BUCKET", "b"), ("BUILD_TARGETS", "{")],
                "BUILD_TARGETS",
            ),
            (
                &[
                    ("ARTIFACT_BUCKET", "b"),
                    (
                        "BUILD_TARGETS",
                        r#"{"sparc":{"job_queue":"q","job_definition":"d"}}"#,
                    ),
                ],
                "BUILD_TARGETS",
            ),
            (
                &[
                    ("ARTIFACT_BUCKET", "b"),
                    (
                        "BUILD_TARGETS",
                        r#"{"python2.7/arm64":{"job_queue":"q","job_definition":"d"}}"#,
                    ),
                ],
                "BUILD_TARGETS",
            ),
            (
                &[("ARTIFACT_BUCKET", "b"), ("DEFAULT_RUNTIME", "python2.7")],
                "DEFAULT_RUNTIME",
            ),
            (
                &[("ARTIFACT_BUCKET", "b"), ("DEFAULT_ARCHITECTURE", "sparc")],
                "DEFAULT_ARCHITECTURE",
            ),
            (&[("ARTIFACT_BUCKET", "b"), ("MAX_VCPU", "0")], "MAX_VCPU"),
            (
                &[("ARTIFACT_BUCKET", "b"), ("MAX_MEMORY_MIB", "lots")],
                "MAX_MEMORY_MIB",
            ),
            (
                &[("ARTIFACT_BUCKET", "b"), ("ARTIFACT_PREFIX", "//")],
                "ARTIFACT_PREFIX",
            ),
            (
                &[("ARTIFACT_BUCKET", "b"), ("LAYER_NAME_PREFIX", "team a")],
                "LAYER_NAME_PREFIX",
            ),
        ];
        for (vars, var) in cases {
            let err = config(vars).unwrap_err();
            assert_eq!(err.var, *var, "{vars:?}");
        }
    }

    #[test]
    fn a_layer_name_prefix_matches_whole_segments() {
        let cases: &[(&str, &str, bool)] = &[
            ("team-a", "team-a", true),
            ("team-a", "team-a-x", true),
            ("team-a", "team-a_x", true),
            ("team-a", "team-a-", true),
            // Look-alikes another team owns.
            ("team-a", "team-admin-x", false),
            ("team-a", "team-a1", false),
            ("team-a", "team-", false),
            ("team-a", "Team-a-x", false),
            ("team-a", "xteam-a", false),
            // A prefix that ends in a separator admits what starts with it, as before.
            ("team-a-", "team-a-x", true),
            ("team-a-", "team-a-", true),
            ("team-a-", "team-a", false),
            ("team-a-", "team-admin", false),
            ("team_", "team_x", true),
            ("team_", "team-x", false),
            ("", "anything", true),
        ];
        for (prefix, name, admitted) in cases {
            let prefix = LayerNamePrefix::parse(prefix).unwrap();
            assert_eq!(prefix.admits(name), *admitted, "{prefix:?} {name:?}");
        }
        let longest = "a".repeat(LayerNamePrefix::MAX_LEN);
        assert!(LayerNamePrefix::parse(&longest).is_ok());
        assert!(LayerNamePrefix::parse(&format!("{longest}a")).is_err());
        assert!(LayerNamePrefix::parse("*").is_err());
        let c = config(&[("ARTIFACT_BUCKET", "b"), ("LAYER_NAME_PREFIX", "team-a")]).unwrap();
        assert_eq!(c.layer_name_prefix.as_str(), "team-a");
        assert!(!c.layer_name_prefix.admits("team-admin-x"));
        let c = config(&[("ARTIFACT_BUCKET", "b")]).unwrap();
        assert_eq!(c.layer_name_prefix, LayerNamePrefix::default());
    }
}
