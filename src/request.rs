//! The build request (DESIGN section 1): raw JSON in, a [`BuildRequest`] whose fields can't hold a bad value out.
//!
//! Parsing happens in two steps because requirements may live in S3: [`RequestDraft::parse`] checks every field
//! and leaves [`RequirementsInput::S3`] to be fetched; [`RequestDraft::into_request`] takes the validated
//! [`Requirements`] and yields the final request. Every error is an [`InvalidRequest`] naming the field, the
//! rule and the offending value.

use serde_json::{Map, Value};

use crate::config::Config;
pub use crate::{
    requirements::{
        MAX_REQUIREMENT_LINES, MAX_REQUIREMENTS_BYTES, MAX_REQUIREMENTS_OBJECT_BYTES,
        RequirementLine, Requirements,
    },
    vocab::Targets,
    vocab::{
        Architecture, BuilderChoice, Installer, InvalidRequest, LAMBDA_UNZIPPED_LIMIT, LayerName,
        LayerOptions, MAX_BUDGET_MIB, MAX_LAYER_NAME, MIB, Runtime, S3Uri, Share,
    },
};

pub const MAX_DESCRIPTION: usize = 256;
pub const MAX_LICENSE: usize = 512;

/// Fields a build request may carry; anything else (a typo such as `licence`) is refused.
pub const FIELDS: &[&str] = &[
    "layer_name",
    "requirements",
    "requirements_s3_uri",
    "runtime",
    "architecture",
    "description",
    "license",
    "force",
    "installer",
    "bytecode",
    "slim",
    "max_unzipped_mb",
    "vcpu",
    "memory_mib",
    "builder",
    "share",
    "runtimes",
    "architectures",
    "universal",
];

/// The fields of a matrix request (DESIGN section 15), read by [`crate::matrix::expand`] before a request is
/// split into one per pair.
pub const MATRIX_FIELDS: &[&str] = &["runtimes", "architectures", "universal"];

/// Where the requirements of a draft come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequirementsInput {
    Inline(Requirements),
    /// Fetched by the handler, then validated with [`Requirements::parse`].
    S3(S3Uri),
}

/// Compute asked for the build job (both optional, bounded by the deployment's `MAX_VCPU`/`MAX_MEMORY_MIB`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    pub vcpu: Option<f64>,
    pub memory_mib: Option<u32>,
}

/// A request whose every field is valid; inline requirements are parsed, S3 ones not yet read.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestDraft {
    pub layer_name: LayerName,
    pub requirements: RequirementsInput,
    pub runtime: Runtime,
    pub architecture: Architecture,
    pub description: Option<String>,
    pub license: Option<String>,
    pub force: bool,
    pub installer: Installer,
    pub options: LayerOptions,
    pub max_unzipped_bytes: u64,
    pub resources: Resources,
    pub builder: BuilderChoice,
    pub share: Option<Share>,
}

/// A complete, valid build request.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequest {
    pub layer_name: LayerName,
    pub requirements: Requirements,
    /// Where the requirements were read from, if not inline.
    pub requirements_source: Option<S3Uri>,
    pub runtime: Runtime,
    pub architecture: Architecture,
    pub description: Option<String>,
    pub license: Option<String>,
    pub force: bool,
    /// Part of the fingerprint: uv and pip may resolve or lay out the same requirements differently.
    pub installer: Installer,
    /// Bytecode and slim (part of the fingerprint).
    pub options: LayerOptions,
    /// The size budget (`max_unzipped_mb` in bytes): a build whose tree is larger fails. Not part of the
    /// fingerprint: it decides whether an artifact is made, not what it holds.
    pub max_unzipped_bytes: u64,
    pub resources: Resources,
    /// Which path builds it (DESIGN section 12); not part of the fingerprint.
    pub builder: BuilderChoice,
    /// Who may use the versions it publishes (DESIGN section 14); not part of the fingerprint.
    pub share: Option<Share>,
    /// A matrix's one universal version (DESIGN section 15): built on this request's runtime and architecture,
    /// laid out under `python/`, published for all of these. Part of the fingerprint. Only submit-build sets it,
    /// after its probe found the set pure; a caller can't.
    pub universal: Option<Targets>,
}

impl RequestDraft {
    /// Validates every field of a raw request against the rules of DESIGN section 1 and this deployment.
    pub fn parse(event: &Value, config: &Config) -> Result<Self, InvalidRequest> {
        let Value::Object(map) = event else {
            return Err(InvalidRequest::json(
                "request",
                "must be a JSON object",
                event,
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(InvalidRequest::new(
                unknown.as_str(),
                format!("unknown field; expected one of {}", FIELDS.join(", ")),
                unknown,
            ));
        }
        if let Some(field) = MATRIX_FIELDS.iter().find(|f| map.contains_key(**f)) {
            return Err(InvalidRequest::new(
                *field,
                "a matrix request is split into one request per pair before this point",
                field,
            ));
        }

        let layer_name = match string_field(map, "layer_name")? {
            Some(s) => LayerName::parse(s.trim())
                .map_err(|rule| InvalidRequest::new("layer_name", rule, s))?,
            None => return Err(InvalidRequest::new("layer_name", "required", "")),
        };
        if !config.layer_name_prefix.admits(layer_name.as_str()) {
            return Err(InvalidRequest::new(
                "layer_name",
                format!(
                    "must be {}: this deployment publishes only the layers of its prefix \
                     (LAYER_NAME_PREFIX, matched by whole segments)",
                    config.layer_name_prefix.describe()
                ),
                layer_name.as_str(),
            ));
        }

        let requirements = match (
            present(map, "requirements"),
            present(map, "requirements_s3_uri"),
        ) {
            (Some(_), Some(_)) => {
                return Err(InvalidRequest::new(
                    "requirements_s3_uri",
                    "give exactly one of requirements and requirements_s3_uri, not both",
                    "",
                ));
            }
            (None, None) => {
                return Err(InvalidRequest::new(
                    "requirements",
                    "required (or requirements_s3_uri)",
                    "",
                ));
            }
            (Some(value), None) => {
                RequirementsInput::Inline(Requirements::parse(&requirements_text(value)?)?)
            }
            (None, Some(_)) => {
                let raw = string_field(map, "requirements_s3_uri")?.unwrap_or_default();
                let uri = S3Uri::parse(raw.trim())
                    .map_err(|rule| InvalidRequest::new("requirements_s3_uri", rule, raw))?;
                if let Some(area) = config.reserved_area(&uri) {
                    return Err(InvalidRequest::new(
                        "requirements_s3_uri",
                        format!("may not point under {area} of the artifact bucket"),
                        raw,
                    ));
                }
                if !config.requirements_bucket_allowed(&uri.bucket) {
                    return Err(InvalidRequest::new(
                        "requirements_s3_uri",
                        format!(
                            "bucket {} is not allowed; use the artifact bucket or one listed in \
                             ALLOWED_REQUIREMENTS_BUCKETS",
                            uri.bucket
                        ),
                        raw,
                    ));
                }
                RequirementsInput::S3(uri)
            }
        };

        let runtime = match string_field(map, "runtime")? {
            Some(s) => s
                .parse()
                .map_err(|rule| InvalidRequest::new("runtime", rule, s))?,
            None => config.default_runtime,
        };
        let architecture: Architecture = match string_field(map, "architecture")? {
            Some(s) => s
                .parse()
                .map_err(|rule| InvalidRequest::new("architecture", rule, s))?,
            None => config.default_architecture,
        };
        if let Err(missing) = config.build_target(runtime, architecture) {
            let value = if missing.field == "runtime" {
                runtime.as_str()
            } else {
                architecture.as_str()
            };
            return Err(InvalidRequest::new(missing.field, missing.rule, value));
        }

        let description = text_field(map, "description", MAX_DESCRIPTION)?;
        let license = text_field(map, "license", MAX_LICENSE)?;
        let force = bool_field(map, "force", false)?;
        let options = LayerOptions {
            bytecode: bool_field(map, "bytecode", LayerOptions::default().bytecode)?,
            slim: bool_field(map, "slim", LayerOptions::default().slim)?,
        };
        let max_unzipped_bytes = match present(map, "max_unzipped_mb") {
            Some(value) => match value.as_u64() {
                Some(n) if (1..=MAX_BUDGET_MIB).contains(&n) => n * MIB,
                _ => {
                    return Err(InvalidRequest::json(
                        "max_unzipped_mb",
                        format!(
                            "must be a whole number of MiB from 1 to {MAX_BUDGET_MIB} (Lambda's limit for a \
                             function and all its layers, {LAMBDA_UNZIPPED_LIMIT} bytes)"
                        ),
                        value,
                    ));
                }
            },
            None => LAMBDA_UNZIPPED_LIMIT,
        };
        let installer = match string_field(map, "installer")? {
            Some(s) => s
                .parse()
                .map_err(|rule| InvalidRequest::new("installer", rule, s))?,
            None => Installer::default(),
        };

        let vcpu = match present(map, "vcpu") {
            Some(value) => match value.as_f64() {
                Some(n) if n > 0.0 && n <= config.max_vcpu => Some(n),
                _ => {
                    return Err(InvalidRequest::json(
                        "vcpu",
                        format!(
                            "must be a number greater than 0 and at most {} (MAX_VCPU)",
                            config.max_vcpu
                        ),
                        value,
                    ));
                }
            },
            None => None,
        };
        let memory_mib = match present(map, "memory_mib") {
            Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if (512..=config.max_memory_mib).contains(&n) => Some(n),
                _ => {
                    return Err(InvalidRequest::json(
                        "memory_mib",
                        format!(
                            "must be a whole number of MiB from 512 to {} (MAX_MEMORY_MIB)",
                            config.max_memory_mib
                        ),
                        value,
                    ));
                }
            },
            None => None,
        };

        let builder = match string_field(map, "builder")? {
            Some(s) => s
                .parse()
                .map_err(|rule| InvalidRequest::new("builder", rule, s))?,
            None => BuilderChoice::default(),
        };

        let share = match present(map, "share") {
            Some(value) => Some(Share::parse(value)?).filter(|s| !s.is_empty()),
            None => None,
        };

        Ok(Self {
            layer_name,
            requirements,
            runtime,
            architecture,
            description,
            license,
            force,
            installer,
            options,
            max_unzipped_bytes,
            resources: Resources { vcpu, memory_mib },
            builder,
            share,
        })
    }

    /// Completes the draft with validated requirements (for S3 input, read from `source`).
    pub fn into_request(self, requirements: Requirements, source: Option<S3Uri>) -> BuildRequest {
        BuildRequest {
            layer_name: self.layer_name,
            requirements,
            requirements_source: source,
            runtime: self.runtime,
            architecture: self.architecture,
            description: self.description,
            license: self.license,
            force: self.force,
            installer: self.installer,
            options: self.options,
            max_unzipped_bytes: self.max_unzipped_bytes,
            resources: self.resources,
            builder: self.builder,
            share: self.share,
            universal: None,
        }
    }
}

/// A boolean field; `default` when absent or `null`.
fn bool_field(
    map: &Map<String, Value>,
    field: &str,
    default: bool,
) -> Result<bool, InvalidRequest> {
    match present(map, field) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(InvalidRequest::json(field, "must be true or false", other)),
        None => Ok(default),
    }
}

/// A field that is present and not `null`.
fn present<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|v| !v.is_null())
}

fn string_field<'a>(
    map: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, InvalidRequest> {
    match present(map, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(InvalidRequest::json(field, "must be a string", other)),
    }
}

fn text_field(
    map: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, InvalidRequest> {
    let Some(s) = string_field(map, field)? else {
        return Ok(None);
    };
    let s = s.trim();
    if s.chars().count() > max {
        return Err(InvalidRequest::new(
            field,
            format!("at most {max} characters"),
            s,
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidRequest::new(
            field,
            "must not contain control characters",
            s,
        ));
    }
    Ok((!s.is_empty()).then(|| s.to_owned()))
}

/// `requirements` is requirements.txt text or an array of lines.
fn requirements_text(value: &Value) -> Result<String, InvalidRequest> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => {
            let mut lines = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => lines.push(s.as_str()),
                    other => {
                        return Err(InvalidRequest::json(
                            "requirements",
                            format!("element {} must be a string", i + 1),
                            other,
                        ));
                    }
                }
            }
            Ok(lines.join("\n"))
        }
        other => Err(InvalidRequest::json(
            "requirements",
            "must be requirements.txt text or an array of lines",
            other,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Config {
        Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "ALLOWED_REQUIREMENTS_BUCKETS" => Some("team-reqs,layerforge-artifacts".into()),
            "BUILD_TARGETS" => Some(
                r#"{"arm64":{"job_queue":"q-arm","job_definition":"d-arm"},"x86_64":{"job_queue":"q-x86","job_definition":"d-x86"}}"#
                    .into(),
            ),
            _ => None,
        })
        .unwrap()
    }

    fn parse(event: Value) -> Result<RequestDraft, InvalidRequest> {
        RequestDraft::parse(&event, &config())
    }

    fn inline(draft: &RequestDraft) -> &Requirements {
        match &draft.requirements {
            RequirementsInput::Inline(r) => r,
            RequirementsInput::S3(uri) => panic!("expected inline requirements, got {uri}"),
        }
    }

    #[test]
    fn requirements_s3_uri_may_not_read_artifacts_or_bookkeeping() {
        for key in [
            "layers/other-team/python3.12-arm64/0123456789abcdef.zip",
            ".layerforge/claims/abc.json",
            ".layerforge/builds/x/python3.12-arm64/0123456789abcdef.json",
        ] {
            let err = parse(
                json!({"layer_name": "a", "requirements_s3_uri": format!("s3://artifacts/{key}")}),
            )
            .unwrap_err();
            assert_eq!(err.field, "requirements_s3_uri", "{key}");
            assert!(
                err.rule.starts_with("may not point under"),
                "{key}: {}",
                err.rule
            );
        }
        // Elsewhere in the artifact bucket, and in another allowed bucket, it may.
        for uri in [
            "s3://artifacts/requirements/team-a.txt",
            "s3://artifacts/layers-not-the-prefix.txt",
            "s3://team-reqs/layers/x.txt",
        ] {
            assert!(
                parse(json!({"layer_name": "a", "requirements_s3_uri": uri})).is_ok(),
                "{uri}"
            );
        }
    }

    #[test]
    fn size_errors_quote_no_content() {
        let secret = format!("TOP-SECRET-{}", "z".repeat(MAX_REQUIREMENTS_BYTES));
        let err = Requirements::parse(&secret).unwrap_err();
        assert!(!err.to_string().contains("TOP-SECRET"), "{err}");
        let many: String = (0..600).map(|i| format!("SECRET{i}\n")).collect();
        let err = Requirements::parse(&many).unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
        // A bad line is quoted, and only that line.
        let err = Requirements::parse("six==1.16.0\nnot a requirement !!\nattrs").unwrap_err();
        assert!(err.to_string().contains("not a requirement !!"), "{err}");
        assert!(!err.to_string().contains("six==1.16.0"), "{err}");
    }

    #[test]
    fn layer_name_prefix_is_enforced() {
        let config = Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "LAYER_NAME_PREFIX" => Some("team-a-".into()),
            "BUILD_TARGETS" => Some(r#"{"arm64":{"job_queue":"q","job_definition":"d"}}"#.into()),
            _ => None,
        })
        .unwrap();
        let err = RequestDraft::parse(
            &json!({"layer_name": "team-b-http", "requirements": "six"}),
            &config,
        )
        .unwrap_err();
        assert_eq!(err.field, "layer_name");
        assert!(err.rule.contains("\"team-a-\""), "{}", err.rule);
        assert!(
            RequestDraft::parse(
                &json!({"layer_name": "team-a-http", "requirements": "six"}),
                &config
            )
            .is_ok()
        );
        // Without a trailing separator the prefix is a whole segment: a look-alike is someone else's name.
        let config = Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "LAYER_NAME_PREFIX" => Some("team-a".into()),
            "BUILD_TARGETS" => Some(r#"{"arm64":{"job_queue":"q","job_definition":"d"}}"#.into()),
            _ => None,
        })
        .unwrap();
        let err = RequestDraft::parse(
            &json!({"layer_name": "team-admin-x", "requirements": "six"}),
            &config,
        )
        .unwrap_err();
        assert_eq!(err.field, "layer_name");
        assert!(
            err.rule.contains("\"team-a-\" or \"team-a_\""),
            "{}",
            err.rule
        );
        for name in ["team-a", "team-a-x", "team-a_x"] {
            assert!(
                RequestDraft::parse(&json!({"layer_name": name, "requirements": "six"}), &config)
                    .is_ok(),
                "{name}"
            );
        }
        // Without a prefix any name goes.
        assert!(parse(json!({"layer_name": "team-b-http", "requirements": "six"})).is_ok());
    }

    #[test]
    fn original_tool_style_request_is_accepted_with_defaults() {
        let draft = parse(json!({"layer_name": "http-clients", "requirements": "requests == 2.32.3|httpx == 0.27.2"})).unwrap();
        assert_eq!(draft.layer_name.as_str(), "http-clients");
        assert_eq!(draft.runtime, Runtime::Python312);
        assert_eq!(draft.architecture, Architecture::Arm64);
        assert!(!draft.force);
        let reqs = inline(&draft);
        assert_eq!(reqs.to_text(), "requests == 2.32.3\nhttpx == 0.27.2\n");
        assert!(reqs.all_pinned());
        assert_eq!(reqs.lines()[0].canonical, "requests==2.32.3");
    }

    #[test]
    fn specifiers_extras_markers_and_hashes_pass_through_intact() {
        let text = "pandas>=2.2,<3\nrequests[socks,security] == 2.32.3 ; python_version >= \"3.8\"\n\
                    # a comment\n\nnumpy==2.1.3 \\\n    --hash=sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA # pinned\n";
        let draft = parse(json!({"layer_name": "data", "requirements": text, "runtime": "python3.13", "architecture": "x86_64"})).unwrap();
        let reqs = inline(&draft);
        let texts: Vec<&str> = reqs.lines().iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "pandas>=2.2,<3",
                "requests[socks,security] == 2.32.3 ; python_version >= \"3.8\"",
                "numpy==2.1.3 --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ]
        );
        assert!(!reqs.lines()[0].pinned, ">= is a range, not a pin");
        assert!(reqs.lines()[1].pinned);
        assert!(reqs.lines()[2].pinned);
        assert!(!reqs.all_pinned());
        assert_eq!(draft.runtime, Runtime::Python313);
        assert_eq!(draft.architecture, Architecture::X86_64);
    }

    #[test]
    fn requirements_may_be_an_array_and_s3_uris_are_kept_for_fetching() {
        let draft =
            parse(json!({"layer_name": "a", "requirements": ["six==1.16.0", "attrs==24.2.0"]}))
                .unwrap();
        assert_eq!(inline(&draft).lines().len(), 2);
        let draft = parse(json!({"layer_name": "a", "requirements_s3_uri": "s3://team-reqs/app/requirements.txt"})).unwrap();
        assert_eq!(
            draft.requirements,
            RequirementsInput::S3(S3Uri {
                bucket: "team-reqs".into(),
                key: "app/requirements.txt".into()
            })
        );
        let draft = parse(json!({"layer_name": "a", "requirements": "six", "vcpu": 2, "memory_mib": 4096, "force": true, "description": null})).unwrap();
        assert_eq!(
            draft.resources,
            Resources {
                vcpu: Some(2.0),
                memory_mib: Some(4096)
            }
        );
        assert!(draft.force);
        assert_eq!(draft.description, None);
    }

    #[test]
    fn installer_is_uv_unless_the_request_names_pip() {
        let draft = parse(json!({"layer_name": "a", "requirements": "six"})).unwrap();
        assert_eq!(draft.installer, Installer::Uv);
        let draft =
            parse(json!({"layer_name": "a", "requirements": "six", "installer": null})).unwrap();
        assert_eq!(draft.installer, Installer::Uv);
        for installer in Installer::ALL {
            let draft = parse(
                json!({"layer_name": "a", "requirements": "six", "installer": installer.as_str()}),
            )
            .unwrap();
            assert_eq!(draft.installer, installer);
            let request = draft.into_request(Requirements::parse("six").unwrap(), None);
            assert_eq!(request.installer, installer, "carried into the request");
        }
    }

    #[test]
    fn every_bad_request_names_its_field() {
        let long = "x".repeat(300);
        let many_lines = (0..501)
            .map(|i| format!("pkg{i}==1.0"))
            .collect::<Vec<_>>()
            .join("\n");
        let huge = format!("six==1.16.0 # {}", "y".repeat(MAX_REQUIREMENTS_BYTES));
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!("not an object"), "request", "JSON object"),
            (json!({"requirements": "six"}), "layer_name", "required"),
            (
                json!({"layer_name": "", "requirements": "six"}),
                "layer_name",
                "1 to 64",
            ),
            (
                json!({"layer_name": "has space", "requirements": "six"}),
                "layer_name",
                "letters, digits",
            ),
            (
                json!({"layer_name": "a".repeat(65), "requirements": "six"}),
                "layer_name",
                "1 to 64",
            ),
            (
                json!({"layer_name": 42, "requirements": "six"}),
                "layer_name",
                "string",
            ),
            (json!({"layer_name": "a"}), "requirements", "required"),
            (
                json!({"layer_name": "a", "requirements": "six", "requirements_s3_uri": "s3://artifacts/r.txt"}),
                "requirements_s3_uri",
                "exactly one",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "installer": "conda"}),
                "installer",
                "expected uv or pip",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "installer": "UV"}),
                "installer",
                "expected uv or pip",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "installer": true}),
                "installer",
                "must be a string",
            ),
            (
                json!({"layer_name": "a", "requirements": ""}),
                "requirements",
                "at least one",
            ),
            (
                json!({"layer_name": "a", "requirements": "# only a comment\n"}),
                "requirements",
                "at least one",
            ),
            (
                json!({"layer_name": "a", "requirements": 7}),
                "requirements",
                "text or an array",
            ),
            (
                json!({"layer_name": "a", "requirements": ["six", 3]}),
                "requirements",
                "element 2",
            ),
            (
                json!({"layer_name": "a", "requirements": "six\n-i https://evil.example/simple\n"}),
                "requirements",
                "line 2: pip option -i",
            ),
            (
                json!({"layer_name": "a", "requirements": "--index-url=https://evil.example/simple"}),
                "requirements",
                "--index-url",
            ),
            (
                json!({"layer_name": "a", "requirements": "six|--extra-index-url https://x"}),
                "requirements",
                "line 2: pip option --extra-index-url",
            ),
            (
                json!({"layer_name": "a", "requirements": "-e git+https://github.com/x/y"}),
                "requirements",
                "-e",
            ),
            (
                json!({"layer_name": "a", "requirements": "-r other.txt"}),
                "requirements",
                "-r",
            ),
            (
                json!({"layer_name": "a", "requirements": "-c constraints.txt"}),
                "requirements",
                "-c",
            ),
            (
                json!({"layer_name": "a", "requirements": "--trusted-host pypi.evil"}),
                "requirements",
                "--trusted-host",
            ),
            (
                json!({"layer_name": "a", "requirements": "-f https://x/links"}),
                "requirements",
                "-f",
            ),
            (
                json!({"layer_name": "a", "requirements": "six==1.16.0 --global-option=build_ext"}),
                "requirements",
                "--global-option",
            ),
            (
                json!({"layer_name": "a", "requirements": "mypkg @ https://example.com/mypkg-1.0.whl"}),
                "requirements",
                "direct URL",
            ),
            (
                json!({"layer_name": "a", "requirements": "six==1.16.0 --hash=md5:abc"}),
                "requirements",
                "md5",
            ),
            (
                json!({"layer_name": "a", "requirements": "six==1.16.0 --hash=sha256:abc"}),
                "requirements",
                "64 hex digits",
            ),
            (
                json!({"layer_name": "a", "requirements": "--hash=sha256:aaaa"}),
                "requirements",
                "must follow a requirement",
            ),
            (
                json!({"layer_name": "a", "requirements": "six===="}),
                "requirements",
                "line 1: not a PEP 508",
            ),
            (
                json!({"layer_name": "a", "requirements": "six\nre quests==1"}),
                "requirements",
                "line 2: not a PEP 508",
            ),
            (
                json!({"layer_name": "a", "requirements": "six \\"}),
                "requirements",
                "continuation",
            ),
            (
                json!({"layer_name": "a", "requirements": many_lines}),
                "requirements",
                "at most 500 lines",
            ),
            (
                json!({"layer_name": "a", "requirements": huge}),
                "requirements",
                "bytes of text",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "https://bucket/key"}),
                "requirements_s3_uri",
                "s3://",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "s3://artifacts"}),
                "requirements_s3_uri",
                "key",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "s3://artifacts/dir/"}),
                "requirements_s3_uri",
                "not a folder",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "s3://Bad_Bucket/r.txt"}),
                "requirements_s3_uri",
                "bucket name",
            ),
            (
                json!({"layer_name": "a", "requirements_s3_uri": "s3://someone-elses/r.txt"}),
                "requirements_s3_uri",
                "not allowed",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "runtime": "python2.7"}),
                "runtime",
                "python3.10",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "runtime": "nodejs20.x"}),
                "runtime",
                "unknown runtime",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "runtime": 3.12}),
                "runtime",
                "string",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "architecture": "aarch64"}),
                "architecture",
                "arm64 or x86_64",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "description": long}),
                "description",
                "256",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "description": "two\nlines"}),
                "description",
                "control",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "license": "L".repeat(513)}),
                "license",
                "512",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "licence": "MIT"}),
                "licence",
                "unknown field",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "force": "yes"}),
                "force",
                "true or false",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "vcpu": 64}),
                "vcpu",
                "MAX_VCPU",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "vcpu": "2"}),
                "vcpu",
                "number",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "memory_mib": 100}),
                "memory_mib",
                "512",
            ),
            (
                json!({"layer_name": "a", "requirements": "six", "memory_mib": 1.5}),
                "memory_mib",
                "whole number",
            ),
        ];
        assert!(cases.len() >= 25);
        for (event, field, rule) in &cases {
            let err = parse(event.clone()).expect_err(&format!("accepted {event}"));
            assert_eq!(err.field, *field, "{event} -> {err}");
            assert!(
                err.to_string().contains(rule),
                "{event} -> {err} (expected to mention {rule:?})"
            );
            assert!(
                err.to_string().starts_with(field),
                "message must lead with the field: {err}"
            );
        }
    }

    #[test]
    fn sample_events_parse_as_documented() {
        let valid = [
            include_str!("../events/build-request.json"),
            include_str!("../events/build-request-s3.json"),
            include_str!("../events/build-request-x86_64.json"),
            include_str!("../events/local-demo.json"),
        ];
        for text in valid {
            let event: Value = serde_json::from_str(text).unwrap();
            parse(event).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        let x86: Value =
            serde_json::from_str(include_str!("../events/build-request-x86_64.json")).unwrap();
        assert_eq!(
            parse(x86).unwrap().installer,
            Installer::Pip,
            "the x86_64 sample shows the installer field"
        );
        // A request for each runtime.
        let per_runtime = [
            (
                include_str!("../events/build-request-python310.json"),
                Runtime::Python310,
            ),
            (
                include_str!("../events/build-request-python311.json"),
                Runtime::Python311,
            ),
            (
                include_str!("../events/build-request.json"),
                Runtime::Python312,
            ),
            (
                include_str!("../events/build-request-python313.json"),
                Runtime::Python313,
            ),
            (
                include_str!("../events/build-request-python314.json"),
                Runtime::Python314,
            ),
        ];
        for (text, runtime) in per_runtime {
            let event: Value = serde_json::from_str(text).unwrap();
            let draft = parse(event).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(draft.runtime, runtime, "{text}");
        }
        let invalid = [
            (
                include_str!("../events/invalid/unknown-field-licence.json"),
                "licence",
            ),
            (
                include_str!("../events/invalid/pip-option.json"),
                "requirements",
            ),
            (
                include_str!("../events/invalid/layer-name.json"),
                "layer_name",
            ),
            (include_str!("../events/invalid/runtime.json"), "runtime"),
            (
                include_str!("../events/invalid/direct-url.json"),
                "requirements",
            ),
        ];
        for (text, field) in invalid {
            let event: Value = serde_json::from_str(text).unwrap();
            assert_eq!(parse(event).unwrap_err().field, field, "{text}");
        }
    }

    #[test]
    fn architecture_without_a_build_target_is_refused() {
        let config = Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "BUILD_TARGETS" => Some(r#"{"arm64":{"job_queue":"q","job_definition":"d"}}"#.into()),
            _ => None,
        })
        .unwrap();
        let err = RequestDraft::parse(
            &json!({"layer_name": "a", "requirements": "six", "architecture": "x86_64"}),
            &config,
        )
        .unwrap_err();
        assert_eq!(err.field, "architecture");
        assert!(err.rule.contains("builds no x86_64 layers"), "{}", err.rule);
    }

    #[test]
    fn runtime_without_a_build_target_is_refused() {
        let config = Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "BUILD_TARGETS" => Some(
                r#"{"python3.12/arm64":{"job_queue":"q","job_definition":"d"},"python3.13/arm64":null}"#
                    .into(),
            ),
            _ => None,
        })
        .unwrap();
        for runtime in ["python3.10", "python3.13"] {
            let err = RequestDraft::parse(
                &json!({"layer_name": "a", "requirements": "six", "runtime": runtime}),
                &config,
            )
            .unwrap_err();
            assert_eq!(err.field, "runtime", "{runtime}");
            assert!(err.rule.contains("it builds python3.12"), "{}", err.rule);
        }
        assert!(
            RequestDraft::parse(
                &json!({"layer_name": "a", "requirements": "six", "runtime": "python3.12"}),
                &config,
            )
            .is_ok()
        );
    }

    #[test]
    fn long_values_are_truncated_in_errors() {
        let err = parse(json!({"layer_name": "a".repeat(500), "requirements": "six"})).unwrap_err();
        assert!(
            err.value.chars().count() <= crate::vocab::VALUE_PREVIEW + 3,
            "{}",
            err.value
        );
        assert!(err.value.contains('…'));
    }

    #[test]
    fn runtime_and_architecture_names() {
        assert_eq!(Runtime::Python312.python_version(), "3.12");
        assert_eq!(Runtime::Python310.compact(), "python310");
        assert_eq!(Architecture::Arm64.machine(), "aarch64");
        for r in Runtime::ALL {
            assert_eq!(r.as_str().parse::<Runtime>(), Ok(r));
        }
    }
}
