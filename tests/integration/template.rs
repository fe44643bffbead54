//! Integration tests: `template.yaml` against the code it deploys.
//!
//! The template is parsed with CloudFormation's short-form tags (`!Ref`, `!Sub`, ...) kept as tagged YAML values,
//! and a small evaluator ([`Stack`]) resolves the intrinsic functions the template uses with the parameters'
//! defaults (or overrides) and stand-ins for resource references (`arn:fake:LOGICAL_ID`). The tests then feed the
//! resolved values to the library itself, so that the template and the code can't drift apart:
//! - each function's environment is exactly [`ENV_VARS`], and the resolved values parse with
//!   [`Config::from_lookup`] (bucket name, build targets pointing at the right queue and job definition per
//!   architecture);
//! - the S3 event filter matches keys rendered by [`ArtifactKey`] and never a claim record
//!   ([`publish::claim_key`] under [`CLAIM_PREFIX`]), and IAM grants publish-layer exactly that claim prefix;
//! - the functions are arm64 `provided.al2023` cargo-lambda builds of this package's binaries;
//! - the IAM policies allow what each component does, and refuse what it must not do.
//!
//! No server is needed: these tests read files only.

use std::collections::{BTreeMap, BTreeSet};

use layerforge::{
    artifact::{ArtifactKey, Fingerprint},
    config::{Config, ENV_VARS},
    publish::{self, CLAIM_PREFIX},
    request::{Architecture, Installer, LayerName, Requirements, Runtime},
};
use serde_yaml::{Mapping, Value};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const STACK_UUID: &str = "0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b";

/// The three functions and the binary each must be built from.
const FUNCTIONS: &[(&str, &str)] = &[
    ("SubmitBuildFunction", "submit-build"),
    ("PublishLayerFunction", "publish-layer"),
    ("BuildStatusFunction", "build-status"),
    ("FastBuilderFunction", "fast-builder"),
    ("PruneLayersFunction", "prune-layers"),
];

/// The fast builder's variables besides [`ENV_VARS`]: the managed runtime's wrapper that starts the Rust binary,
/// and the uv of its layer.
const FAST_BUILDER_EXTRA: &[(&str, &str)] = &[
    ("AWS_LAMBDA_EXEC_WRAPPER", "/var/task/bootstrap"),
    ("LAYERFORGE_UV", "/opt/bin/uv"),
];

fn manifest_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_template() -> Value {
    let path = manifest_dir().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let template: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    expand_for_each(&template)
}

/// `AWS::LanguageExtensions`' `Fn::ForEach::Loop: [Identifier, [values], {fragment}]`: the fragment once per value,
/// with `${Identifier}` and `&{Identifier}` replaced in its keys and strings (nested loops too).
fn expand_for_each(v: &Value) -> Value {
    match v {
        Value::Mapping(m) => {
            let mut out = Mapping::new();
            for (k, val) in m {
                if str_of(k).starts_with("Fn::ForEach::") {
                    let parts = val.as_sequence().expect("Fn::ForEach: a list");
                    let id = str_of(&parts[0]);
                    for value in parts[1].as_sequence().expect("Fn::ForEach: literal values") {
                        let fragment = replace_identifier(&parts[2], id, str_of(value));
                        let Value::Mapping(entries) = expand_for_each(&fragment) else {
                            panic!("Fn::ForEach: the fragment is a mapping")
                        };
                        for (key, entry) in entries {
                            assert!(
                                out.insert(key.clone(), entry).is_none(),
                                "Fn::ForEach: {key:?} twice"
                            );
                        }
                    }
                } else {
                    out.insert(k.clone(), expand_for_each(val));
                }
            }
            Value::Mapping(out)
        }
        Value::Sequence(items) => Value::Sequence(items.iter().map(expand_for_each).collect()),
        Value::Tagged(t) => Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: t.tag.clone(),
            value: expand_for_each(&t.value),
        })),
        other => other.clone(),
    }
}

fn replace_identifier(v: &Value, id: &str, value: &str) -> Value {
    // `!Ref Identifier` is the value itself.
    if let Some(("Ref", arg)) = intrinsic(v).as_ref().map(|(f, a)| (f.as_str(), *a))
        && arg.as_str() == Some(id)
    {
        return Value::String(value.to_owned());
    }
    let text = |s: &str| {
        let alnum: String = value.chars().filter(char::is_ascii_alphanumeric).collect();
        s.replace(&format!("${{{id}}}"), value)
            .replace(&format!("&{{{id}}}"), &alnum)
    };
    match v {
        Value::String(s) => Value::String(text(s)),
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, val)| {
                    (
                        replace_identifier(k, id, value),
                        replace_identifier(val, id, value),
                    )
                })
                .collect(),
        ),
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|i| replace_identifier(i, id, value))
                .collect(),
        ),
        Value::Tagged(t) => Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: t.tag.clone(),
            value: replace_identifier(&t.value, id, value),
        })),
        other => other.clone(),
    }
}

/// `v[path[0]][path[1]]...`, failing the test with the path when a step is missing.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        cur = cur
            .get(*key)
            .unwrap_or_else(|| panic!("template: {} is missing", path[..=i].join(".")));
    }
    cur
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

/// A plain scalar as a string (CloudFormation passes numbers and booleans as strings).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// An intrinsic function call: short form (`!Sub x`) or long form (`{"Fn::Sub": x}`, `{"Ref": x}`).
fn intrinsic(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let name = if name == "Ref" || name == "Condition" {
                name.to_owned()
            } else {
                format!("Fn::{name}")
            };
            Some((name, &t.value))
        }
        Value::Mapping(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next()?;
            let k = k.as_str()?;
            (k == "Ref" || k.starts_with("Fn::")).then(|| (k.to_owned(), arg))
        }
        _ => None,
    }
}

/// The template evaluated for one set of parameter values.
struct Stack {
    template: Value,
    params: BTreeMap<String, Value>,
}

impl Stack {
    /// The template with its parameters' defaults, `overrides` applied on top. A parameter without a default gets
    /// a plausible stand-in.
    fn new(overrides: &[(&str, &str)]) -> Self {
        let template = load_template();
        let overrides: BTreeMap<&str, &str> = overrides.iter().copied().collect();
        let mut params = BTreeMap::new();
        let declared = at(&template, &["Parameters"])
            .as_mapping()
            .expect("Parameters is a mapping");
        for (name, decl) in declared {
            let name = str_of(name);
            let ty = str_of(at(decl, &["Type"]));
            let raw = match (overrides.get(name), decl.get("Default")) {
                (Some(v), _) => (*v).to_owned(),
                (None, Some(d)) => scalar(d),
                (None, None) if ty.starts_with("List<") => {
                    "subnet-0a1b2c3d,subnet-4e5f6a7b".to_owned()
                }
                (None, None) => panic!("parameter {name} has no default and no stand-in"),
            };
            let value = if ty == "CommaDelimitedList" || ty.starts_with("List<") {
                Value::Sequence(
                    raw.split(',')
                        .map(|s| Value::String(s.trim().to_owned()))
                        .collect(),
                )
            } else {
                Value::String(raw)
            };
            params.insert(name.to_owned(), value);
        }
        for name in overrides.keys() {
            assert!(
                params.contains_key(*name),
                "override of an undeclared parameter {name}"
            );
        }
        Self { template, params }
    }

    /// The logical id of the job definition an ARN (from !Ref) names.
    fn job_definition_by_arn(&self, arn: &str) -> String {
        let name = arn
            .rsplit_once(":job-definition/")
            .and_then(|(_, rest)| rest.split(':').next())
            .unwrap_or_else(|| panic!("not a job definition ARN: {arn}"));
        self.resources_of_type("AWS::Batch::JobDefinition")
            .into_iter()
            .find(|logical| {
                self.resolve_str(at(
                    self.resource(logical),
                    &["Properties", "JobDefinitionName"],
                )) == name
            })
            .unwrap_or_else(|| panic!("no job definition named {name}"))
    }

    fn resource(&self, logical: &str) -> &Value {
        at(&self.template, &["Resources", logical])
    }

    fn resource_type(&self, logical: &str) -> &str {
        str_of(at(self.resource(logical), &["Type"]))
    }

    /// Logical ids of the resources of `ty`, in template order.
    fn resources_of_type(&self, ty: &str) -> Vec<String> {
        at(&self.template, &["Resources"])
            .as_mapping()
            .expect("Resources is a mapping")
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .map(|(k, _)| str_of(k).to_owned())
            .collect()
    }

    fn reference(&self, name: &str) -> Value {
        let s = |v: &str| Value::String(v.to_owned());
        match name {
            "AWS::StackId" => s(&format!(
                "arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/layerforge/{STACK_UUID}"
            )),
            "AWS::StackName" => s("layerforge"),
            "AWS::Partition" => s("aws"),
            "AWS::Region" => s(REGION),
            "AWS::AccountId" => s(ACCOUNT),
            "AWS::URLSuffix" => s("amazonaws.com"),
            "AWS::NoValue" => Value::Null,
            _ => {
                if let Some(v) = self.params.get(name) {
                    return v.clone();
                }
                let resources = at(&self.template, &["Resources"]);
                let resource = resources
                    .get(name)
                    .unwrap_or_else(|| panic!("!Ref {name}: no such parameter or resource"));
                // A job definition's !Ref is its ARN with the revision; IAM matches it by name.
                if let Some(definition) = at(resource, &["Properties"]).get("JobDefinitionName") {
                    return s(&format!(
                        "arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{}:1",
                        self.resolve_str(definition)
                    ));
                }
                s(&format!("arn:fake:{name}"))
            }
        }
    }

    fn get_att(&self, logical: &str, attribute: &str) -> Value {
        assert!(
            at(&self.template, &["Resources"]).get(logical).is_some(),
            "!GetAtt {logical}.{attribute}: no such resource"
        );
        Value::String(format!("arn:fake:{logical}.{attribute}"))
    }

    fn condition(&self, name: &str) -> bool {
        self.eval_condition(at(&self.template, &["Conditions", name]))
    }

    fn eval_condition(&self, v: &Value) -> bool {
        let (func, arg) = intrinsic(v).unwrap_or_else(|| panic!("not a condition: {v:?}"));
        let args = || {
            arg.as_sequence()
                .unwrap_or_else(|| panic!("{func}: expected a list"))
        };
        match func.as_str() {
            "Condition" => self.condition(str_of(arg)),
            "Fn::Equals" => {
                let a = args();
                self.resolve(&a[0]) == self.resolve(&a[1])
            }
            "Fn::Not" => !self.eval_condition(&args()[0]),
            "Fn::And" => args().iter().all(|c| self.eval_condition(c)),
            "Fn::Or" => args().iter().any(|c| self.eval_condition(c)),
            other => panic!("unsupported condition function {other}"),
        }
    }

    fn resolve_str(&self, v: &Value) -> String {
        match self.resolve(v) {
            Value::String(s) => s,
            other => scalar(&other),
        }
    }

    fn resolve_list(&self, v: &Value) -> Vec<Value> {
        match self.resolve(v) {
            Value::Sequence(items) => items,
            other => panic!("expected a list, got {other:?}"),
        }
    }

    /// Evaluates every intrinsic function in `v`; `AWS::NoValue` removes the list item or mapping entry.
    fn resolve(&self, v: &Value) -> Value {
        if let Some((func, arg)) = intrinsic(v) {
            return self.call(&func, arg);
        }
        match v {
            Value::Sequence(items) => Value::Sequence(
                items
                    .iter()
                    .map(|i| self.resolve(i))
                    .filter(|i| !i.is_null())
                    .collect(),
            ),
            Value::Mapping(m) => {
                let mut out = Mapping::new();
                for (k, val) in m {
                    let val = self.resolve(val);
                    if !val.is_null() {
                        out.insert(k.clone(), val);
                    }
                }
                Value::Mapping(out)
            }
            other => other.clone(),
        }
    }

    fn call(&self, func: &str, arg: &Value) -> Value {
        let args = || {
            arg.as_sequence()
                .unwrap_or_else(|| panic!("{func}: expected a list, got {arg:?}"))
        };
        match func {
            "Ref" => self.reference(str_of(arg)),
            "Fn::GetAtt" => match arg {
                Value::String(s) => {
                    let (logical, attribute) =
                        s.split_once('.').expect("!GetAtt Resource.Attribute");
                    self.get_att(logical, attribute)
                }
                _ => self.get_att(str_of(&args()[0]), str_of(&args()[1])),
            },
            "Fn::If" => {
                let a = args();
                if self.condition(str_of(&a[0])) {
                    self.resolve(&a[1])
                } else {
                    self.resolve(&a[2])
                }
            }
            "Fn::Join" => {
                let a = args();
                let delimiter = str_of(&a[0]);
                let parts: Vec<String> = self.resolve_list(&a[1]).iter().map(scalar).collect();
                Value::String(parts.join(delimiter))
            }
            "Fn::Split" => {
                let a = args();
                let delimiter = str_of(&a[0]);
                let s = self.resolve_str(&a[1]);
                Value::Sequence(
                    s.split(delimiter)
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                )
            }
            "Fn::FindInMap" => {
                let a = args();
                let map = str_of(&a[0]);
                let (top, second) = (self.resolve_str(&a[1]), self.resolve_str(&a[2]));
                self.resolve(at(&self.template, &["Mappings", map, &top, &second]))
            }
            "Fn::Select" => {
                let a = args();
                let index: usize = scalar(&self.resolve(&a[0])).parse().expect("!Select index");
                self.resolve_list(&a[1]).swap_remove(index)
            }
            "Fn::Sub" => match arg {
                Value::String(s) => Value::String(self.substitute(s, &BTreeMap::new())),
                _ => {
                    let a = args();
                    let vars = a[1]
                        .as_mapping()
                        .expect("!Sub variables")
                        .iter()
                        .map(|(k, v)| (str_of(k).to_owned(), self.resolve_str(v)))
                        .collect();
                    Value::String(self.substitute(str_of(&a[0]), &vars))
                }
            },
            other => panic!("unsupported intrinsic function {other}"),
        }
    }

    /// `Fn::Sub`: `${Name}` is a variable, parameter, pseudo parameter or resource; `${Res.Attr}` an attribute;
    /// `${!Literal}` stays `${Literal}`.
    fn substitute(&self, template: &str, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .expect("!Sub: unclosed ${");
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(v);
            } else if let Some((logical, attribute)) = name.split_once('.') {
                out.push_str(&scalar(&self.get_att(logical, attribute)));
            } else {
                out.push_str(&scalar(&self.reference(name)));
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The function's properties with `Globals.Function` merged in (SAM merges maps, the function's keys win).
    fn function_properties(&self, logical: &str) -> Mapping {
        let globals = self
            .template
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        let own = at(self.resource(logical), &["Properties"])
            .as_mapping()
            .expect("Properties")
            .clone();
        merge(globals, own)
    }

    /// The environment a function gets, resolved.
    fn function_environment(&self, logical: &str) -> BTreeMap<String, String> {
        let props = Value::Mapping(self.function_properties(logical));
        let vars = at(&props, &["Environment", "Variables"]);
        let resolved = self.resolve(vars);
        resolved
            .as_mapping()
            .expect("Variables is a mapping")
            .iter()
            .map(|(k, v)| (str_of(k).to_owned(), scalar(v)))
            .collect()
    }

    /// The typed configuration a function builds from its environment (as `Config::from_env` would).
    fn function_config(&self, logical: &str) -> Config {
        let env = self.function_environment(logical);
        Config::from_lookup(|k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("{logical}: the template's environment doesn't parse: {e}"))
    }

    /// Every inline policy statement of a role or a function, resolved, with the owner's logical id.
    fn statements(&self, logical: &str) -> Vec<Value> {
        let resource = self.resource(logical);
        let policies = at(resource, &["Properties", "Policies"])
            .as_sequence()
            .expect("Policies is a list");
        let mut out = Vec::new();
        for policy in policies {
            let document = match self.resource_type(logical) {
                "AWS::IAM::Role" => at(policy, &["PolicyDocument"]),
                "AWS::Serverless::Function" => {
                    // Only inline documents: a managed policy name or a SAM policy template would hide what the
                    // function may do from this test.
                    assert!(
                        policy.get("Statement").is_some(),
                        "{logical}: a policy that is not an inline document"
                    );
                    policy
                }
                other => panic!("{logical}: no policies on a {other}"),
            };
            let statements = self.resolve(at(document, &["Statement"]));
            out.extend(
                statements
                    .as_sequence()
                    .expect("Statement is a list")
                    .iter()
                    .cloned(),
            );
        }
        out
    }

    /// Whether the inline policies of `logical` allow `action` on `resource` (Allow statements only; the template
    /// has no Deny in roles).
    fn allows(&self, logical: &str, action: &str, resource: &str) -> bool {
        self.statements(logical).iter().any(|st| {
            str_of(at(st, &["Effect"])) == "Allow"
                && strings(at(st, &["Action"])).iter().any(|a| glob(a, action))
                && strings(at(st, &["Resource"]))
                    .iter()
                    .any(|r| glob(r, resource))
        })
    }
}

fn merge(mut base: Mapping, over: Mapping) -> Mapping {
    for (k, v) in over {
        let merged = match (base.get(&k), &v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => {
                Value::Mapping(merge(b.clone(), o.clone()))
            }
            _ => v,
        };
        base.insert(k, merged);
    }
    base
}

/// A string or a list of strings.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        other => vec![scalar(other)],
    }
}

/// IAM's wildcard matching: `*` any run of characters, `?` one character (case-sensitive).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn sample_key(prefix: &str) -> ArtifactKey {
    let requirements =
        Requirements::parse("requests==2.32.3\nhttpx==0.27.2").expect("valid requirements");
    let fingerprint = Fingerprint::compute(
        &requirements,
        Runtime::Python312,
        Architecture::Arm64,
        Installer::Uv,
        layerforge::request::LayerOptions::default(),
    );
    let name = LayerName::parse("http-clients").expect("valid layer name");
    ArtifactKey::new(
        prefix,
        &name,
        Runtime::Python312,
        Architecture::Arm64,
        &fingerprint,
    )
}

/// The S3 key filter of the function's S3 event: (prefix, suffix), resolved. Also checks the event's shape.
fn s3_event_filter(stack: &Stack, logical: &str) -> (String, String) {
    let events = at(stack.resource(logical), &["Properties", "Events"])
        .as_mapping()
        .expect("Events");
    let s3: Vec<&Value> = events
        .values()
        .filter(|e| e.get("Type").and_then(Value::as_str) == Some("S3"))
        .collect();
    assert_eq!(s3.len(), 1, "{logical}: exactly one S3 event");
    let props = at(s3[0], &["Properties"]);
    assert_eq!(
        stack.resolve_str(at(props, &["Bucket"])),
        "arn:fake:ArtifactBucket"
    );
    assert_eq!(strings(at(props, &["Events"])), ["s3:ObjectCreated:*"]);
    let rules = stack.resolve(at(props, &["Filter", "S3Key", "Rules"]));
    let mut prefix = None;
    let mut suffix = None;
    for rule in rules.as_sequence().expect("Rules is a list") {
        let value = scalar(at(rule, &["Value"]));
        match str_of(at(rule, &["Name"])) {
            "prefix" => prefix = Some(value),
            "suffix" => suffix = Some(value),
            other => panic!("unknown S3 filter rule {other}"),
        }
    }
    (
        prefix.expect("a prefix rule"),
        suffix.expect("a suffix rule"),
    )
}

/// What S3 does with a key filter: the key starts with the prefix and ends with the suffix.
fn filter_matches((prefix, suffix): &(String, String), key: &str) -> bool {
    key.starts_with(prefix.as_str()) && key.ends_with(suffix.as_str())
}

#[test]
fn each_function_environment_is_exactly_what_config_reads() {
    let stack = Stack::new(&[]);
    let functions = stack.resources_of_type("AWS::Serverless::Function");
    let expected_functions: Vec<&str> = FUNCTIONS.iter().map(|(f, _)| *f).collect();
    assert_eq!(functions, expected_functions, "the template's functions");

    let wanted: BTreeSet<&str> = ENV_VARS.iter().copied().collect();
    assert_eq!(
        wanted.len(),
        ENV_VARS.len(),
        "ENV_VARS lists a variable twice"
    );
    // Rule: both functions read the whole Config (Config::from_env), so each gets exactly ENV_VARS.
    for function in functions {
        let env = stack.function_environment(&function);
        let keys: BTreeSet<&str> = env.keys().map(String::as_str).collect();
        let mut wanted = wanted.clone();
        if function == "FastBuilderFunction" {
            for (name, value) in FAST_BUILDER_EXTRA {
                assert_eq!(env.get(*name).map(String::as_str), Some(*value), "{name}");
                wanted.insert(name);
            }
        }
        if function == "PruneLayersFunction" {
            // Its own settings, parsed as the function parses them.
            wanted.extend(["PRUNE_KEEP", "PRUNE_OLDER_THAN_DAYS"]);
            let policy = layerforge::prune::scheduled_policy(|k| env.get(k).cloned()).unwrap();
            assert_eq!((policy.keep, policy.older_than_days), (5, Some(30)));
        }
        assert_eq!(
            keys, wanted,
            "{function}: environment variables != layerforge::config::ENV_VARS"
        );
    }
}

#[test]
fn the_environment_parses_into_config_and_points_at_the_stacks_resources() {
    for (x86, expected_archs) in [
        ("false", vec![Architecture::Arm64]),
        ("true", vec![Architecture::Arm64, Architecture::X86_64]),
    ] {
        let stack = Stack::new(&[
            ("EnableX86SpotQueue", x86),
            ("AllowedRequirementsBuckets", "reqs-a, reqs-b"),
        ]);
        let bucket = stack.resolve_str(at(
            stack.resource("ArtifactBucket"),
            &["Properties", "BucketName"],
        ));
        for (function, _) in FUNCTIONS {
            let config = stack.function_config(function);
            // The functions name the bucket by the same computed name the bucket is created with.
            assert_eq!(config.artifact_bucket, bucket, "{function}");
            assert_eq!(
                config.artifact_prefix, "layers",
                "{function}: ArtifactPrefix default"
            );
            assert_eq!(config.default_architecture, Architecture::Arm64);
            assert_eq!(config.default_runtime, Runtime::Python312);
            assert!(
                config.requirements_bucket_allowed("reqs-b"),
                "{function}: {config:?}"
            );
            assert_eq!(config.max_vcpu, 4.0);
            assert_eq!(config.max_memory_mib, 16_384);

            // Every runtime of BuildRuntimes (default: all five) on every architecture built, each with its own
            // job definition.
            let keys: Vec<(Option<Runtime>, Architecture)> = config
                .build_targets
                .keys()
                .map(|k| (k.runtime, k.architecture))
                .collect();
            let expected: Vec<(Option<Runtime>, Architecture)> = Runtime::ALL
                .into_iter()
                .flat_map(|r| expected_archs.iter().map(move |a| (Some(r), *a)))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            assert_eq!(
                keys, expected,
                "{function}: build targets with EnableX86SpotQueue={x86}"
            );
            assert!(
                config
                    .build_target(config.default_runtime, config.default_architecture)
                    .is_ok()
            );
            let mut definitions = BTreeSet::new();
            for (key, target) in &config.build_targets {
                let arch = key.architecture;
                let runtime = key.runtime.expect("keyed by runtime");
                let queue = target
                    .job_queue
                    .strip_prefix("arn:fake:")
                    .expect("a queue of this stack");
                let definition = stack.job_definition_by_arn(&target.job_definition);
                assert!(definitions.insert(definition.clone()), "{definition} twice");
                let image = stack.resolve_str(at(
                    stack.resource(&definition),
                    &["Properties", "ContainerProperties", "Image"],
                ));
                assert!(
                    image.ends_with(&format!(":{runtime}-0.1.0")),
                    "{key}: the image of its Python version, got {image}"
                );
                assert_eq!(stack.resource_type(queue), "AWS::Batch::JobQueue");
                assert_eq!(
                    stack.resource_type(&definition),
                    "AWS::Batch::JobDefinition"
                );
                let platform = at(
                    stack.resource(&definition),
                    &["Properties", "ContainerProperties", "RuntimePlatform"],
                );
                let cpu = match arch {
                    Architecture::Arm64 => "ARM64",
                    Architecture::X86_64 => "X86_64",
                };
                assert_eq!(
                    stack.resolve_str(at(platform, &["CpuArchitecture"])),
                    cpu,
                    "{arch}: {definition}"
                );
                assert_eq!(str_of(at(platform, &["OperatingSystemFamily"])), "LINUX");
            }
        }
    }
}

#[test]
fn build_runtimes_chooses_the_job_definitions_and_the_targets() {
    let stack = Stack::new(&[
        ("BuildRuntimes", "python3.12,python3.13"),
        ("EnableX86SpotQueue", "true"),
    ]);
    let config = stack.function_config("SubmitBuildFunction");
    let definitions: BTreeSet<String> = config
        .build_targets
        .values()
        .map(|t| stack.job_definition_by_arn(&t.job_definition))
        .collect();
    assert_eq!(
        definitions,
        [
            "Arm64Python312JobDefinition",
            "Arm64Python313JobDefinition",
            "X86Python312JobDefinition",
            "X86Python313JobDefinition"
        ]
        .map(String::from)
        .into(),
    );
    for definition in &definitions {
        let condition = stack.resolve_str(at(stack.resource(definition), &["Condition"]));
        assert!(stack.condition(&condition), "{definition}: {condition}");
    }
    for (runtime, built) in [
        (Runtime::Python310, false),
        (Runtime::Python311, false),
        (Runtime::Python312, true),
        (Runtime::Python313, true),
        (Runtime::Python314, false),
    ] {
        for arch in Architecture::ALL {
            let name = format!(
                "{}Python3{}JobDefinition",
                if arch == Architecture::Arm64 {
                    "Arm64"
                } else {
                    "X86"
                },
                &runtime.python_version()[2..]
            );
            let condition = stack.resolve_str(at(stack.resource(&name), &["Condition"]));
            assert_eq!(stack.condition(&condition), built, "{name}");
            match config.build_target(runtime, arch) {
                Ok(_) => assert!(built, "{runtime}/{arch}"),
                Err(missing) => {
                    assert!(!built, "{runtime}/{arch}");
                    assert_eq!(missing.field, "runtime");
                }
            }
        }
    }
}

#[test]
fn allow_source_builds_reaches_every_job_definition_as_the_builders_variable() {
    for (allow, expected) in [("true", "0"), ("false", "1")] {
        let stack = Stack::new(&[("AllowSourceBuilds", allow)]);
        for definition in stack.resources_of_type("AWS::Batch::JobDefinition") {
            let env = stack.resolve(at(
                stack.resource(&definition),
                &["Properties", "ContainerProperties", "Environment"],
            ));
            let value = env
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|e| {
                    e.get("Name").and_then(Value::as_str)
                        == Some(layerforge::builder::isolation::WHEELS_ONLY_ENV)
                })
                .and_then(|e| e.get("Value"))
                .map(scalar);
            assert_eq!(value.as_deref(), Some(expected), "{definition}: {allow}");
        }
    }
}

#[test]
fn the_bucket_name_is_a_valid_unique_s3_name() {
    let stack = Stack::new(&[]);
    let bucket = stack.resolve_str(at(
        stack.resource("ArtifactBucket"),
        &["Properties", "BucketName"],
    ));
    assert_eq!(bucket, format!("layerforge-{STACK_UUID}"));
    assert!((3..=63).contains(&bucket.len()), "{bucket}");
    assert!(
        bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{bucket}"
    );
}

#[test]
fn the_s3_event_filter_matches_artifact_keys_and_never_claims() {
    for prefix in ["layers", "team-a/layers"] {
        let stack = Stack::new(&[("ArtifactPrefix", prefix)]);
        let filter = s3_event_filter(&stack, "PublishLayerFunction");
        let config = stack.function_config("PublishLayerFunction");
        assert_eq!(config.artifact_prefix, prefix);

        let key = sample_key(&config.artifact_prefix).to_string();
        assert!(filter_matches(&filter, &key), "{filter:?} must match {key}");
        assert_eq!(
            ArtifactKey::parse(&config.artifact_prefix, &key),
            Some(sample_key(prefix))
        );

        let bucket = config.artifact_bucket.as_str();
        for not_an_artifact in [
            // The claim publish-layer writes for this very artifact, for a versioned and an unversioned bucket.
            publish::claim_key(
                bucket,
                &key,
                "3HL4kqtJlcpXroDTDmJ.rSt1kQnIFIcwt",
                "python3.12/arm64",
            ),
            publish::claim_key(bucket, &key, "", ""),
            format!("{CLAIM_PREFIX}/{key}"),
            // The build record and the builder's failure report of this artifact.
            layerforge::records::record_key(&sample_key(prefix)),
            layerforge::records::report_key(&key),
            format!("{key}.json"),
            format!("other/{key}"),
            // A prefix that merely starts like the artifact prefix is not under it.
            key.replacen(&format!("{prefix}/"), &format!("{prefix}x/"), 1),
        ] {
            assert!(
                !filter_matches(&filter, &not_an_artifact),
                "{filter:?} must not match {not_an_artifact}"
            );
        }
    }

    // ArtifactPrefix must start with a letter or digit, and the claims prefix starts with something else, so
    // no allowed artifact prefix can contain the claims.
    let stack = Stack::new(&[]);
    let pattern = str_of(at(
        &stack.template,
        &["Parameters", "ArtifactPrefix", "AllowedPattern"],
    ));
    assert!(pattern.starts_with("^[A-Za-z0-9]"), "{pattern}");
    assert!(
        !CLAIM_PREFIX.starts_with(|c: char| c.is_ascii_alphanumeric()),
        "{CLAIM_PREFIX}"
    );
}

#[test]
fn functions_are_arm64_cargo_lambda_builds_of_this_packages_binaries() {
    let stack = Stack::new(&[]);
    let cargo_toml =
        std::fs::read_to_string(manifest_dir().join("Cargo.toml")).expect("Cargo.toml");
    for (function, binary) in FUNCTIONS {
        // The CLI finds each function through the stack's `<Logical>Name` output.
        assert_eq!(
            stack.resolve_str(at(
                &stack.template,
                &["Outputs", &format!("{function}Name"), "Value"]
            )),
            format!("arn:fake:{function}"),
            "output {function}Name"
        );
        let props = Value::Mapping(stack.function_properties(function));
        // The fast builder runs on the managed python3.12 runtime for its interpreter (DESIGN section 12); its
        // wrapper starts the same kind of binary.
        let runtime = if *function == "FastBuilderFunction" {
            "python3.12"
        } else {
            "provided.al2023"
        };
        assert_eq!(str_of(at(&props, &["Runtime"])), runtime, "{function}");
        assert_eq!(
            strings(at(&props, &["Architectures"])),
            ["arm64"],
            "{function}"
        );
        assert_eq!(str_of(at(&props, &["Handler"])), "bootstrap", "{function}");
        let metadata = at(stack.resource(function), &["Metadata"]);
        if *function == "FastBuilderFunction" {
            // A makefile build of the same binary (SAM's rust-cargolambda workflow can't build a python runtime's
            // function): the Makefile runs cargo lambda for this binary and names it bootstrap.
            assert_eq!(str_of(at(metadata, &["BuildMethod"])), "makefile");
            let dir = str_of(at(&props, &["CodeUri"]));
            let makefile =
                std::fs::read_to_string(manifest_dir().join(dir).join("Makefile")).unwrap();
            assert!(
                makefile.contains(&format!("build-{function}:"))
                    && makefile.contains(&format!(
                        "cargo lambda build --release --arm64 --bin {binary}"
                    ))
                    && makefile.contains("$(ARTIFACTS_DIR)/bootstrap"),
                "{makefile}"
            );
        } else {
            assert_eq!(str_of(at(&props, &["CodeUri"])), ".", "{function}");
            assert_eq!(
                str_of(at(metadata, &["BuildMethod"])),
                "rust-cargolambda",
                "{function}"
            );
            assert_eq!(
                str_of(at(metadata, &["BuildProperties", "Binary"])),
                *binary,
                "{function}"
            );
        }
        assert!(
            cargo_toml.contains(&format!("name = \"{binary}\"")),
            "{function}: Cargo.toml has no [[bin]] {binary}"
        );
        assert!(
            manifest_dir()
                .join(format!("src/bin/{binary}.rs"))
                .is_file(),
            "{binary}"
        );

        assert_eq!(
            str_of(at(&props, &["LoggingConfig", "LogFormat"])),
            "JSON",
            "{function}"
        );
        let log_group = stack.resolve_str(at(&props, &["LoggingConfig", "LogGroup"]));
        let log_group = log_group
            .strip_prefix("arn:fake:")
            .expect("a log group of this stack");
        assert_eq!(stack.resource_type(log_group), "AWS::Logs::LogGroup");
        let retention = stack.resolve_str(at(
            stack.resource(log_group),
            &["Properties", "RetentionInDays"],
        ));
        assert!(
            retention.parse::<u32>().is_ok_and(|d| d > 0),
            "{log_group}: retention {retention}"
        );
    }

    // publish-layer: failed async invocations are retried, then kept in the on-failure queue.
    let publish = Value::Mapping(stack.function_properties("PublishLayerFunction"));
    let invoke = at(&publish, &["EventInvokeConfig"]);
    assert!(
        stack
            .resolve_str(at(invoke, &["MaximumRetryAttempts"]))
            .parse::<u32>()
            .is_ok_and(|n| n >= 1)
    );
    let on_failure = at(invoke, &["DestinationConfig", "OnFailure"]);
    assert_eq!(str_of(at(on_failure, &["Type"])), "SQS");
    assert_eq!(
        stack.resolve_str(at(on_failure, &["Destination"])),
        "arn:fake:PublishFailureQueue.Arn"
    );
}

#[test]
fn iam_has_no_wildcard_actions_and_no_star_resources_where_arns_exist() {
    // Actions that have no resource-level permissions, and so may only be granted on "*".
    const UNSCOPED: &[&str] = &[
        "ecr:GetAuthorizationToken",
        "batch:DescribeJobs",
        "lambda:ListFunctions",
    ];
    let stack = Stack::new(&[
        ("EnableX86SpotQueue", "true"),
        ("AllowedRequirementsBuckets", "reqs-a"),
    ]);
    let mut owners = stack.resources_of_type("AWS::IAM::Role");
    owners.extend(stack.resources_of_type("AWS::Serverless::Function"));
    // Two roles (image builds, the job's execution) and five functions; the build job has no role.
    assert_eq!(owners.len(), 7, "{owners:?}");
    let mut checked = 0;
    for owner in &owners {
        for st in stack.statements(owner) {
            assert!(
                st.get("NotAction").is_none() && st.get("NotResource").is_none(),
                "{owner}: {st:?}"
            );
            let actions = strings(at(&st, &["Action"]));
            for action in &actions {
                assert!(
                    action != "*" && !action.ends_with(":*"),
                    "{owner}: action {action}"
                );
            }
            for resource in strings(at(&st, &["Resource"])) {
                if resource == "*" {
                    assert!(
                        actions.iter().all(|a| UNSCOPED.contains(&a.as_str())),
                        "{owner}: {actions:?} on *"
                    );
                } else {
                    assert!(resource.starts_with("arn:"), "{owner}: resource {resource}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} statements found");
}

#[test]
fn each_role_may_do_its_job_and_nothing_next_to_it() {
    let stack = Stack::new(&[
        ("EnableX86SpotQueue", "true"),
        ("AllowedRequirementsBuckets", "reqs-a,reqs-b"),
        ("LayerNamePrefix", "team-a-"),
    ]);
    let config = stack.function_config("SubmitBuildFunction");
    let object = |bucket: &str, key: &str| format!("arn:aws:s3:::{bucket}/{key}");
    let bucket = config.artifact_bucket.as_str();
    let artifact = object(bucket, &sample_key(&config.artifact_prefix).to_string());
    let artifact_key = sample_key(&config.artifact_prefix).to_string();
    let claim = object(
        bucket,
        &publish::claim_key(bucket, &artifact_key, "v1", "python3.12/arm64"),
    );
    let elsewhere = object(bucket, "other/file.zip");
    let record = object(
        bucket,
        &layerforge::records::record_key(&sample_key(&config.artifact_prefix)),
    );
    let report = object(bucket, &layerforge::records::report_key(&artifact_key));
    let layer = |name: &str| format!("arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}");

    // submit-build: submits only to its own queues and definitions, keeps the build record, and signs the job's
    // upload grants (a presigned PUT acts with the signer's permissions).
    let submit = "SubmitBuildFunction";
    for target in config.build_targets.values() {
        for resource in [&target.job_queue, &target.job_definition] {
            assert!(
                stack.allows(submit, "batch:SubmitJob", resource),
                "{resource}"
            );
            assert!(
                stack.allows(submit, "batch:TagResource", resource),
                "{resource}"
            );
        }
    }
    assert!(!stack.allows(
        submit,
        "batch:SubmitJob",
        "arn:aws:batch:us-east-1:123456789012:job-queue/other"
    ));
    assert!(!stack.allows(
        submit,
        "batch:SubmitJob",
        "arn:aws:batch:us-east-1:123456789012:job-definition/other-builder-python312-arm64:1"
    ));
    assert!(stack.allows(submit, "s3:GetObject", &artifact));
    assert!(stack.allows(submit, "s3:GetObjectTagging", &artifact));
    assert!(stack.allows(
        submit,
        "s3:GetObject",
        &object("reqs-b", "team/requirements.txt")
    ));
    assert!(stack.allows(submit, "s3:ListBucket", &format!("arn:aws:s3:::{bucket}")));
    assert!(!stack.allows(
        submit,
        "s3:GetObject",
        &object("reqs-c", "requirements.txt")
    ));
    assert!(
        stack.allows(submit, "s3:PutObject", &artifact),
        "the artifact grant"
    );
    assert!(!stack.allows(submit, "s3:PutObject", &elsewhere));
    // ... and keeps the build record, reading the last build's report and job.
    assert!(stack.allows(submit, "s3:PutObject", &record));
    assert!(stack.allows(submit, "s3:GetObject", &record));
    assert!(stack.allows(submit, "s3:GetObject", &report));
    assert!(
        stack.allows(submit, "s3:PutObject", &report),
        "the failure report grant"
    );
    assert!(!stack.allows(submit, "s3:PutObject", &claim));
    assert!(stack.allows(
        submit,
        "batch:DescribeJobs",
        "arn:aws:batch:us-east-1:123456789012:job/any"
    ));

    // publish-layer: reads and tags artifacts, writes only claims, publishes only its layer names.
    let publish = "PublishLayerFunction";
    for action in [
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetObjectTagging",
        "s3:GetObjectVersionTagging",
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
    ] {
        assert!(stack.allows(publish, action, &artifact), "{action}");
        assert!(
            !stack.allows(publish, action, &elsewhere),
            "{action} outside the prefix"
        );
    }
    assert!(stack.allows(publish, "s3:PutObject", &claim));
    assert!(stack.allows(publish, "s3:GetObject", &claim));
    assert!(stack.allows(publish, "s3:GetObject", &record));
    assert!(
        stack.allows(publish, "s3:PutObject", &record),
        "completes the build record"
    );
    assert!(!stack.allows(publish, "s3:PutObject", &report));
    assert!(
        stack.allows(publish, "s3:GetObject", &report),
        "reads the builder's size report for the record"
    );
    assert!(
        !stack.allows(publish, "s3:PutObject", &artifact),
        "publish-layer must not create artifacts"
    );
    assert!(!stack.allows(publish, "s3:DeleteObject", &artifact));
    assert!(stack.allows(
        publish,
        "lambda:PublishLayerVersion",
        &layer("team-a-http-clients")
    ));
    assert!(stack.allows(
        publish,
        "lambda:ListLayerVersions",
        &layer("team-a-http-clients")
    ));
    assert!(stack.allows(
        publish,
        "lambda:GetLayerVersion",
        &format!("{}:3", layer("team-a-http-clients"))
    ));
    assert!(!stack.allows(
        publish,
        "lambda:PublishLayerVersion",
        &layer("http-clients")
    ));
    assert!(!stack.allows(
        publish,
        "lambda:DeleteLayerVersion",
        &format!("{}:3", layer("team-a-x"))
    ));
    // publish-layer keeps the latest pointers: their truth under .layerforge/latest/, their SSM parameters
    // under /layerforge/<this stack>/ only.
    let pointer = object(
        bucket,
        &publish::pointer_key("team-a-http", "python3.12", "arm64"),
    );
    assert!(stack.allows(publish, "s3:GetObject", &pointer));
    assert!(stack.allows(publish, "s3:PutObject", &pointer));
    assert!(!stack.allows(publish, "s3:DeleteObject", &pointer));
    assert_eq!(config.stack_name.as_deref(), Some("layerforge"));
    let parameter = |stack_name: &str| {
        let name = publish::parameter_name(stack_name, "team-a-http", "python3.12", "arm64");
        format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}")
    };
    for action in ["ssm:GetParameter", "ssm:PutParameter"] {
        assert!(
            stack.allows(publish, action, &parameter("layerforge")),
            "{action}"
        );
        assert!(
            !stack.allows(publish, action, &parameter("layerforge-other")),
            "{action} on another stack's parameter"
        );
        assert!(
            !stack.allows(
                publish,
                action,
                &format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/other/x")
            ),
            "{action} outside /layerforge/"
        );
    }
    assert!(!stack.allows(publish, "ssm:DeleteParameter", &parameter("layerforge")));
    for other in ["SubmitBuildFunction", "BuildStatusFunction"] {
        assert!(
            !stack.allows(other, "ssm:PutParameter", &parameter("layerforge")),
            "{other}"
        );
        assert!(!stack.allows(other, "s3:PutObject", &pointer), "{other}");
    }

    // submit-build checks that a cached build's version still exists, on the stack's layer names only.
    let submit_fn = "SubmitBuildFunction";
    assert!(stack.allows(
        submit_fn,
        "lambda:GetLayerVersion",
        &format!("{}:3", layer("team-a-http-clients"))
    ));
    assert!(!stack.allows(
        submit_fn,
        "lambda:GetLayerVersion",
        &format!("{}:3", layer("http-clients"))
    ));
    assert!(!stack.allows(
        submit_fn,
        "lambda:PublishLayerVersion",
        &layer("team-a-http-clients")
    ));

    // The build job has no role: no credential in its container to steal. It writes through its grants only,
    // so no role but the signer's may write artifacts or failure reports.
    assert!(
        stack
            .resources_of_type("AWS::IAM::Role")
            .iter()
            .all(|r| r != "BuilderJobRole"),
        "no job role"
    );
    let mut roles = stack.resources_of_type("AWS::IAM::Role");
    roles.extend(stack.resources_of_type("AWS::Serverless::Function"));
    for role in roles.iter().filter(|r| *r != submit) {
        for resource in [&artifact, &report] {
            assert!(
                !stack.allows(role, "s3:PutObject", resource),
                "{role} may write {resource}; only {submit} signs the job's uploads"
            );
        }
    }

    // build-status: reads records, reports, artifacts and their tags, the job and its log; writes nothing.
    let status = "BuildStatusFunction";
    for resource in [&record, &report, &artifact] {
        assert!(stack.allows(status, "s3:GetObject", resource), "{resource}");
        assert!(
            !stack.allows(status, "s3:PutObject", resource),
            "{resource}"
        );
    }
    assert!(stack.allows(status, "s3:GetObjectTagging", &artifact));
    assert!(!stack.allows(status, "s3:PutObjectTagging", &artifact));
    assert!(!stack.allows(status, "s3:GetObject", &claim));
    assert!(!stack.allows(status, "s3:GetObject", &elsewhere));
    assert!(stack.allows(status, "s3:ListBucket", &format!("arn:aws:s3:::{bucket}")));
    assert!(stack.allows(
        status,
        "batch:DescribeJobs",
        "arn:aws:batch:us-east-1:123456789012:job/any"
    ));
    assert!(!stack.allows(status, "batch:SubmitJob", "arn:fake:Arm64JobQueue"));
    assert!(!stack.allows(
        status,
        "batch:TerminateJob",
        "arn:aws:batch:us-east-1:123456789012:job/any"
    ));
    assert!(stack.allows(status, "logs:GetLogEvents", "arn:fake:BuildLogGroup.Arn"));
    assert!(!stack.allows(
        status,
        "logs:GetLogEvents",
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/other:*"
    ));
    assert!(!stack.allows(status, "lambda:PublishLayerVersion", &layer("team-a-x")));

    // Separate execution role: pulls the image and writes the job log, touches no data.
    let exec = "BuilderExecutionRole";
    assert!(stack.allows(exec, "ecr:BatchGetImage", "arn:fake:BuilderRepository.Arn"));
    assert!(stack.allows(exec, "logs:PutLogEvents", "arn:fake:BuildLogGroup.Arn"));
    assert!(!stack.allows(exec, "s3:GetObject", &artifact));
    for definition in stack.resources_of_type("AWS::Batch::JobDefinition") {
        let container = at(
            stack.resource(&definition),
            &["Properties", "ContainerProperties"],
        );
        assert!(
            container.get("JobRoleArn").is_none(),
            "{definition}: a job role would put credentials in the container"
        );
        assert_eq!(
            stack.resolve_str(at(container, &["ExecutionRoleArn"])),
            "arn:fake:BuilderExecutionRole.Arn"
        );
    }
}

#[test]
fn layer_names_are_owned_by_whole_segments_in_iam_and_in_the_code() {
    let layer = |name: &str| format!("arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}");
    let names = [
        "team-a",
        "team-a-x",
        "team-a_x",
        "team-a-",
        "team-admin-x",
        "team-a1",
        "layerforge",
        "layerforge-http",
        "layerforge_http",
        "layerforgex",
        "layerforge2-http",
        "http-clients",
    ];
    // (LayerNamePrefix, what LAYER_NAME_PREFIX must be, names it admits); the stand-in stack is "layerforge".
    let cases: &[(&str, &str, &[&str])] = &[
        // The default: the stack name's layers, not every layer of the account.
        (
            "",
            "layerforge",
            &["layerforge", "layerforge-http", "layerforge_http"],
        ),
        (
            "team-a",
            "team-a",
            &["team-a", "team-a-x", "team-a_x", "team-a-"],
        ),
        ("team-a-", "team-a-", &["team-a-x", "team-a-"]),
        ("*", "", &names),
    ];
    for (parameter, env, admitted) in cases {
        let stack = Stack::new(&[("LayerNamePrefix", parameter)]);
        for (function, _) in FUNCTIONS {
            assert_eq!(
                stack.function_config(function).layer_name_prefix.as_str(),
                *env,
                "{function} with LayerNamePrefix={parameter:?}"
            );
        }
        let config = stack.function_config("PublishLayerFunction");
        for name in names {
            let expected = admitted.contains(&name);
            assert_eq!(
                config.layer_name_prefix.admits(name),
                expected,
                "code: LayerNamePrefix={parameter:?}, {name}"
            );
            for (action, resource) in [
                ("lambda:PublishLayerVersion", layer(name)),
                ("lambda:ListLayerVersions", layer(name)),
                ("lambda:GetLayerVersion", format!("{}:3", layer(name))),
            ] {
                assert_eq!(
                    stack.allows("PublishLayerFunction", action, &resource),
                    expected,
                    "IAM: LayerNamePrefix={parameter:?}, {action} on {resource}"
                );
            }
        }
    }
}

#[test]
fn glob_follows_iam_wildcards() {
    assert!(glob(
        "arn:aws:s3:::b/layers/*",
        "arn:aws:s3:::b/layers/x/y.zip"
    ));
    assert!(!glob(
        "arn:aws:s3:::b/layers/*",
        "arn:aws:s3:::b/layersx/y.zip"
    ));
    assert!(glob("layer:team-*:*", "layer:team-a:3"));
    assert!(!glob("layer:team-*:*", "layer:team-a"));
    assert!(glob("s3:Get?bject", "s3:GetObject"));
    assert!(glob("*", ""));
}

/// The builder image projects (issue 15): one per architecture on its own container type, privileged for
/// Docker, each building the buildspec the source zip holds, with ARCH as the library names it; their role may
/// read only the source zips, push only to the stack's repository and write only its own log group.
#[test]
fn builder_image_projects_build_each_architecture_with_a_least_privilege_role() {
    use layerforge::image::sources::{REQUIRED, SOURCE_PREFIX};

    let stack = Stack::new(&[]);
    let config = stack.function_config("PublishLayerFunction");
    let bucket = config.artifact_bucket.as_str();
    let projects = stack.resources_of_type("AWS::CodeBuild::Project");
    assert_eq!(
        projects,
        [
            "ImageBuildArm64Project",
            "ImageBuildX86Project",
            "ImageManifestProject"
        ]
    );
    let environment =
        |logical: &str| stack.resolve(at(stack.resource(logical), &["Properties", "Environment"]));
    let variables = |logical: &str| -> BTreeMap<String, String> {
        environment(logical)
            .get("EnvironmentVariables")
            .and_then(Value::as_sequence)
            .expect("EnvironmentVariables")
            .iter()
            .map(|v| {
                (
                    str_of(at(v, &["Name"])).to_owned(),
                    scalar(at(v, &["Value"])),
                )
            })
            .collect()
    };
    for (logical, arch, container, image) in [
        (
            "ImageBuildArm64Project",
            Some(Architecture::Arm64),
            "ARM_CONTAINER",
            "aws/codebuild/amazonlinux-aarch64-standard:3.0",
        ),
        (
            "ImageBuildX86Project",
            Some(Architecture::X86_64),
            "LINUX_CONTAINER",
            "aws/codebuild/amazonlinux-x86_64-standard:5.0",
        ),
        (
            "ImageManifestProject",
            None,
            "LINUX_CONTAINER",
            "aws/codebuild/amazonlinux-x86_64-standard:5.0",
        ),
    ] {
        let env = environment(logical);
        assert_eq!(str_of(at(&env, &["Type"])), container, "{logical}");
        assert_eq!(str_of(at(&env, &["Image"])), image, "{logical}");
        assert_eq!(
            at(&env, &["PrivilegedMode"]),
            &Value::Bool(true),
            "{logical}: Docker needs it"
        );
        let vars = variables(logical);
        assert_eq!(
            vars.get("ARCH").map(String::as_str),
            arch.map(Architecture::as_str),
            "{logical}"
        );
        assert_eq!(vars["IMAGE_TAG"], "0.1.0", "{logical}");
        assert_eq!(
            vars["REPOSITORY_URI"],
            "arn:fake:BuilderRepository.RepositoryUri"
        );

        let props = stack.resolve(at(stack.resource(logical), &["Properties"]));
        assert_eq!(
            str_of(at(&props, &["ServiceRole"])),
            "arn:fake:ImageBuildRole.Arn"
        );
        assert_eq!(str_of(at(&props, &["Source", "Type"])), "S3");
        let location = str_of(at(&props, &["Source", "Location"]));
        assert!(
            location.starts_with(&format!("{bucket}/{SOURCE_PREFIX}")),
            "{logical}: {location}"
        );
        let buildspec = str_of(at(&props, &["Source", "BuildSpec"]));
        assert!(
            REQUIRED.contains(&buildspec),
            "{logical}: {buildspec} is packed in the source zip"
        );
        assert!(
            manifest_dir().join(buildspec).is_file(),
            "{buildspec} exists"
        );
        assert_eq!(
            str_of(at(&props, &["LogsConfig", "CloudWatchLogs", "GroupName"])),
            "arn:fake:ImageBuildLogGroup"
        );
    }

    // The source zips trigger nothing.
    let filter = s3_event_filter(&stack, "PublishLayerFunction");
    let source_key = format!("{SOURCE_PREFIX}{}.zip", "ab".repeat(32));
    assert!(
        !filter_matches(&filter, &source_key),
        "{source_key} must not reach publish-layer"
    );

    let role = "ImageBuildRole";
    let object = |key: &str| format!("arn:aws:s3:::{bucket}/{key}");
    let repo = "arn:fake:BuilderRepository.Arn";
    let push = [
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
        "ecr:BatchGetImage",
        "ecr:DescribeImages",
    ];
    assert!(stack.allows(role, "s3:GetObject", &object(&source_key)));
    assert!(stack.allows(role, "s3:GetObjectVersion", &object(&source_key)));
    assert!(stack.allows(
        role,
        "s3:GetBucketLocation",
        &format!("arn:aws:s3:::{bucket}")
    ));
    for action in push {
        assert!(stack.allows(role, action, repo), "{action}");
        assert!(
            !stack.allows(
                role,
                action,
                "arn:aws:ecr:us-east-1:123456789012:repository/other"
            ),
            "{action} elsewhere"
        );
    }
    assert!(stack.allows(role, "ecr:GetAuthorizationToken", "*"));
    assert!(stack.allows(role, "logs:PutLogEvents", "arn:fake:ImageBuildLogGroup.Arn"));
    let artifact = object(&sample_key(&config.artifact_prefix).to_string());
    let source = object(&source_key);
    let record = object(".layerforge/builds/x.json");
    for (action, resource) in [
        ("s3:GetObject", artifact.as_str()),
        ("s3:PutObject", artifact.as_str()),
        ("s3:PutObject", source.as_str()),
        ("s3:GetObject", record.as_str()),
        ("ecr:DeleteRepository", repo),
        ("ecr:BatchDeleteImage", repo),
        ("logs:PutLogEvents", "arn:fake:BuildLogGroup.Arn"),
        ("iam:PassRole", "*"),
    ] {
        assert!(
            !stack.allows(role, action, resource),
            "{action} on {resource}"
        );
    }
    let trust = stack.resolve(at(
        stack.resource(role),
        &["Properties", "AssumeRolePolicyDocument"],
    ));
    assert_eq!(
        strings(
            at(&trust, &["Statement"])
                .as_sequence()
                .expect("statements")[0]
                .get("Principal")
                .and_then(|p| p.get("Service"))
                .expect("service")
        ),
        ["codebuild.amazonaws.com"]
    );

    // The stack tells `layerforge image build` what it needs.
    let outputs = at(&stack.template, &["Outputs"]);
    // Exactly the outputs ImageStack::from_outputs reads.
    for output in layerforge::image::STACK_OUTPUTS {
        assert!(outputs.get(output).is_some(), "output {output}");
    }
    assert_eq!(
        stack.resolve_str(at(outputs, &["BuiltRuntimes", "Value"])),
        "python3.10,python3.11,python3.12,python3.13,python3.14"
    );
}

#[test]
fn the_fast_builder_is_a_python312_arm64_function_that_submit_build_invokes_and_hands_over_to_batch()
 {
    let stack = Stack::new(&[]);
    let fast = "FastBuilderFunction";
    let props = Value::Mapping(stack.function_properties(fast));
    // Invoked by the name submit-build reads, and only that function.
    let name = stack.resolve_str(at(&props, &["FunctionName"]));
    let submit_config = stack.function_config("SubmitBuildFunction");
    let configured = submit_config
        .fast_builder
        .expect("FAST_BUILDER_FUNCTION is set");
    assert_eq!(configured.function, name);
    assert_eq!(
        configured.runtimes,
        [layerforge::request::Runtime::Python312]
    );
    let arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}");
    assert!(stack.allows("SubmitBuildFunction", "lambda:InvokeFunction", &arn));
    assert!(!stack.allows("PublishLayerFunction", "lambda:InvokeFunction", &arn));
    // Sized by parameters (facts A3: memory and /tmp up to 10,240 MB, timeout up to 900 s).
    for (property, parameter) in [
        (&["MemorySize"][..], "FastBuilderMemoryMib"),
        (&["Timeout"][..], "FastBuilderTimeoutSeconds"),
        (
            &["EphemeralStorage", "Size"][..],
            "FastBuilderEphemeralStorageMib",
        ),
    ] {
        let custom = Stack::new(&[(parameter, "777")]);
        let props = Value::Mapping(custom.function_properties(fast));
        assert_eq!(
            custom.resolve_str(at(&props, property)),
            "777",
            "{parameter}"
        );
    }
    let storage: u32 = stack
        .resolve_str(at(&props, &["EphemeralStorage", "Size"]))
        .parse()
        .unwrap();
    assert!(
        storage >= 1024,
        "a 250 MB tree, its wheels and its zip fit in /tmp"
    );
    // uv comes from a layer sam build assembles without Docker.
    let layers = strings(&stack.resolve(at(&props, &["Layers"])));
    assert_eq!(layers, ["arn:fake:UvLayer"]);
    let uv = stack.resource("UvLayer");
    assert_eq!(str_of(at(uv, &["Metadata", "BuildMethod"])), "makefile");
    let content = str_of(at(uv, &["Properties", "ContentUri"]));
    let makefile = std::fs::read_to_string(manifest_dir().join(content).join("Makefile")).unwrap();
    assert!(makefile.contains("build-UvLayer:"), "{makefile}");
    let pinned =
        std::fs::read_to_string(manifest_dir().join(content).join("requirements.txt")).unwrap();
    assert!(
        pinned.contains("uv==") && pinned.contains("--hash=sha256:"),
        "{pinned}"
    );
    // A failed fast build is retried, then handed to submit-build (which submits it to Batch).
    let invoke = at(&props, &["EventInvokeConfig"]);
    let on_failure = at(invoke, &["DestinationConfig", "OnFailure"]);
    assert_eq!(str_of(at(on_failure, &["Type"])), "Lambda");
    assert_eq!(
        stack.resolve_str(at(on_failure, &["Destination"])),
        "arn:fake:SubmitBuildFunction.Arn"
    );
    // It submits the planned job, notes it in the record, and writes nothing else with its role (artifacts go
    // through the job's grants).
    let queue = stack.resolve_str(&serde_yaml::from_str::<Value>("!Ref Arm64JobQueue").unwrap());
    assert!(stack.allows(fast, "batch:SubmitJob", &queue));
    let bucket = format!("layerforge-{STACK_UUID}");
    assert!(stack.allows(
        fast,
        "s3:PutObject",
        &format!("arn:aws:s3:::{bucket}/.layerforge/builds/a/b.json")
    ));
    assert!(!stack.allows(
        fast,
        "s3:PutObject",
        &format!("arn:aws:s3:::{bucket}/layers/a/python3.12-arm64/f.zip")
    ));
    assert!(!stack.allows(
        fast,
        "lambda:PublishLayerVersion",
        &format!("arn:aws:lambda:{REGION}:{ACCOUNT}:layer:a")
    ));

    // Turned off: no name for submit-build, so every build goes to Batch.
    let off = Stack::new(&[("FastBuilder", "false")]);
    assert!(
        off.function_config("SubmitBuildFunction")
            .fast_builder
            .is_none()
    );
}
