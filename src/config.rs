//! Environment -> typed [`Config`], parsed once at cold start.
//!
//! Every variable layerforge reads is listed in [`ENV_VARS`]; the template test checks that `template.yaml`
//! sets exactly these, so the code and the deployment can't drift apart.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::request::{Architecture, Runtime};

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
];

/// Upper bounds for Fargate: 16 vCPU and 120 GiB are the largest task sizes Fargate offers.
const FARGATE_MAX_VCPU: f64 = 16.0;
const FARGATE_MAX_MEMORY_MIB: u32 = 122_880;

/// Where a build for one architecture runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildTarget {
    pub job_queue: String,
    pub job_definition: String,
}

/// The typed configuration of the functions (DESIGN section 7).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub artifact_bucket: String,
    /// Key prefix without leading or trailing slashes, e.g. `layers`.
    pub artifact_prefix: String,
    pub build_targets: BTreeMap<Architecture, BuildTarget>,
    pub default_runtime: Runtime,
    pub default_architecture: Architecture,
    /// Buckets a `requirements_s3_uri` may name besides the artifact bucket.
    pub allowed_requirements_buckets: BTreeSet<String>,
    pub max_vcpu: f64,
    pub max_memory_mib: u32,
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

        Ok(Self {
            artifact_bucket,
            artifact_prefix,
            build_targets,
            default_runtime,
            default_architecture,
            allowed_requirements_buckets,
            max_vcpu,
            max_memory_mib,
        })
    }

    /// The queue and job definition for `arch`, if this deployment builds for it.
    pub fn build_target(&self, arch: Architecture) -> Option<&BuildTarget> {
        self.build_targets.get(&arch)
    }

    /// Whether a `requirements_s3_uri` may point into `bucket`.
    pub fn requirements_bucket_allowed(&self, bucket: &str) -> bool {
        bucket == self.artifact_bucket || self.allowed_requirements_buckets.contains(bucket)
    }
}

fn parse_build_targets(raw: &str) -> Result<BTreeMap<Architecture, BuildTarget>, ConfigError> {
    let map: BTreeMap<String, BuildTarget> = serde_json::from_str(raw).map_err(|e| {
        ConfigError::new(
            "BUILD_TARGETS",
            format!("expected a JSON object architecture -> {{job_queue, job_definition}}: {e}"),
        )
    })?;
    let mut targets = BTreeMap::new();
    for (arch, target) in map {
        let arch = arch
            .parse::<Architecture>()
            .map_err(|e| ConfigError::new("BUILD_TARGETS", e))?;
        if target.job_queue.trim().is_empty() || target.job_definition.trim().is_empty() {
            return Err(ConfigError::new(
                "BUILD_TARGETS",
                format!("{arch}: job_queue and job_definition must not be empty"),
            ));
        }
        targets.insert(arch, target);
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
        assert_eq!(
            c.build_target(Architecture::X86_64).unwrap().job_queue,
            "q-x86"
        );
        assert_eq!(
            c.build_target(Architecture::Arm64).unwrap().job_definition,
            "d-arm"
        );
        assert!(c.requirements_bucket_allowed("reqs-b"));
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
        ];
        for (vars, var) in cases {
            let err = config(vars).unwrap_err();
            assert_eq!(err.var, *var, "{vars:?}");
        }
    }
}
