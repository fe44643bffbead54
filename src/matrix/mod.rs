//! One request, many targets (DESIGN section 15, issue 23).
//!
//! A request with `runtimes` and/or `architectures` lists is a matrix: one build per (runtime, architecture) pair,
//! all validated before anything is submitted ([`expand`]). Its id ([`matrix_id`]) names a record
//! (`.layerforge/matrices/<id>.json`) that lists every pair and the artifact that serves it, which build-status
//! answers for as a whole ([`overall`]).
//!
//! A pure-Python set publishes once: when the fast builder's probe ([`crate::fast::probe`]) finds the same files
//! for every pair, no ELF file and no top-level `.pth` file, the matrix is one universal build whose version lists
//! every runtime and architecture, with its files in `python/` (on sys.path for every Python runtime).

pub mod record;
pub mod status;
pub mod submit;

pub use record::{MATRIX_PREFIX, MatrixRecord, PairRecord, matrix_id, record_key, valid_id};

use serde_json::{Map, Value};

use crate::{
    config::Config,
    request::{Architecture, InvalidRequest, MATRIX_FIELDS, Runtime},
};

/// A matrix request, split: its pairs (runtimes × architectures, in order) and one request per pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    pub pairs: Vec<(Runtime, Architecture)>,
    /// The request of each pair: the original fields, with `runtime` and `architecture` set.
    pub events: Vec<Value>,
    /// `universal` (default true): whether a pure-Python set may publish one version for every pair.
    pub universal: bool,
}

/// `Some` for a matrix request (`runtimes` or `architectures` given), `None` for a single-target one. Every error
/// names the field (`runtimes[2]`, `architectures`, `universal`) or the pair without a build target.
pub fn expand(event: &Value, config: &Config) -> Result<Option<Expanded>, InvalidRequest> {
    let Value::Object(map) = event else {
        return Ok(None);
    };
    if !["runtimes", "architectures"]
        .iter()
        .any(|f| map.contains_key(*f))
    {
        if map.contains_key("universal") {
            return Err(InvalidRequest::new(
                "universal",
                "only for a matrix request (runtimes or architectures)",
                &map["universal"].to_string(),
            ));
        }
        return Ok(None);
    }
    let runtimes: Vec<Runtime> = list(map, "runtimes", "runtime", config.default_runtime)?;
    let architectures: Vec<Architecture> = list(
        map,
        "architectures",
        "architecture",
        config.default_architecture,
    )?;
    let universal = match map.get("universal") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(InvalidRequest::json(
                "universal",
                "must be true or false",
                other,
            ));
        }
    };
    let count = runtimes.len() * architectures.len();
    if count > config.max_matrix_pairs {
        return Err(InvalidRequest::new(
            "runtimes",
            format!(
                "{} runtime(s) × {} architecture(s) is {count} pairs; at most {} per request (MAX_MATRIX_PAIRS)",
                runtimes.len(),
                architectures.len(),
                config.max_matrix_pairs
            ),
            &format!("{count}"),
        ));
    }
    let mut pairs = Vec::with_capacity(count);
    let mut events = Vec::with_capacity(count);
    for &runtime in &runtimes {
        for &architecture in &architectures {
            if let Err(missing) = config.build_target(runtime, architecture) {
                let field = if missing.field == "runtime" {
                    "runtimes"
                } else {
                    "architectures"
                };
                return Err(InvalidRequest::new(
                    field,
                    format!(
                        "the pair {runtime}/{architecture} has no build target: {}",
                        missing.rule
                    ),
                    &format!("{runtime}/{architecture}"),
                ));
            }
            let mut pair: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| !MATRIX_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            pair.insert("runtime".into(), Value::from(runtime.as_str()));
            pair.insert("architecture".into(), Value::from(architecture.as_str()));
            pairs.push((runtime, architecture));
            events.push(Value::Object(pair));
        }
    }
    Ok(Some(Expanded {
        pairs,
        events,
        universal,
    }))
}

/// A list field (`runtimes`), or the single field (`runtime`) as a one-element list, or the default. Sorted,
/// duplicates removed.
fn list<T>(
    map: &Map<String, Value>,
    field: &str,
    single: &str,
    default: T,
) -> Result<Vec<T>, InvalidRequest>
where
    T: std::str::FromStr<Err = String> + Ord + Copy,
{
    let given = map.get(field).filter(|v| !v.is_null());
    if given.is_some() && map.get(single).is_some_and(|v| !v.is_null()) {
        return Err(InvalidRequest::new(
            field,
            format!("give {single} or {field}, not both"),
            &map[single].to_string(),
        ));
    }
    let Some(value) = given else {
        return Ok(vec![match map.get(single).and_then(Value::as_str) {
            Some(s) => s
                .parse()
                .map_err(|rule| InvalidRequest::new(single, rule, s))?,
            None => default,
        }]);
    };
    let Value::Array(items) = value else {
        return Err(InvalidRequest::json(
            field,
            "must be an array of strings",
            value,
        ));
    };
    if items.is_empty() {
        return Err(InvalidRequest::new(field, "must not be empty", "[]"));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = format!("{field}[{i}]");
        let text = item
            .as_str()
            .ok_or_else(|| InvalidRequest::json(&name, "must be a string", item))?;
        out.push(
            text.parse()
                .map_err(|rule| InvalidRequest::new(name.as_str(), rule, text))?,
        );
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The state of a whole matrix from its pairs' states (build-status's words): `published` when every pair is,
/// `failed` (or `rejected`) as soon as one is, else the least advanced of the others.
pub fn overall(states: &[&str]) -> &'static str {
    const ORDER: [&str; 4] = ["queued", "running", "built", "published"];
    if states.contains(&"failed") {
        return "failed";
    }
    if states.contains(&"rejected") {
        return "rejected";
    }
    ORDER
        .iter()
        .find(|s| states.contains(s))
        .copied()
        .unwrap_or("queued")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(targets: &str, max_pairs: Option<&str>) -> Config {
        let mut vars = vec![("ARTIFACT_BUCKET", "b"), ("BUILD_TARGETS", targets)];
        if let Some(n) = max_pairs {
            vars.push(("MAX_MATRIX_PAIRS", n));
        }
        Config::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap()
    }

    const TARGETS: &str = r#"{"arm64": {"job_queue": "q", "job_definition": "d"}, "x86_64": {"job_queue": "q", "job_definition": "d"}}"#;

    #[test]
    fn lists_make_one_request_per_pair_in_order() {
        let event = json!({"layer_name": "a", "requirements": "six", "runtimes": ["python3.13", "python3.11", "python3.11"],
            "architectures": ["x86_64", "arm64"], "license": "MIT"});
        let m = expand(&event, &config(TARGETS, None)).unwrap().unwrap();
        assert_eq!(
            m.pairs,
            vec![
                (Runtime::Python311, Architecture::Arm64),
                (Runtime::Python311, Architecture::X86_64),
                (Runtime::Python313, Architecture::Arm64),
                (Runtime::Python313, Architecture::X86_64),
            ]
        );
        assert!(m.universal);
        assert_eq!(
            m.events[1],
            json!({"layer_name": "a", "requirements": "six", "runtime": "python3.11", "architecture": "x86_64", "license": "MIT"})
        );
        // One list with the other field single (or defaulted).
        let m = expand(
            &json!({"layer_name": "a", "requirements": "six", "runtimes": ["python3.12"], "architecture": "x86_64", "universal": false}),
            &config(TARGETS, None),
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.pairs, vec![(Runtime::Python312, Architecture::X86_64)]);
        assert!(!m.universal);
        assert_eq!(
            expand(
                &json!({"layer_name": "a", "requirements": "six"}),
                &config(TARGETS, None)
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn every_bad_matrix_names_its_field_or_pair() {
        let bad = |event: Value, cfg: &Config| expand(&event, cfg).unwrap_err();
        let cfg = config(TARGETS, Some("4"));
        let err = bad(
            json!({"layer_name": "a", "requirements": "six", "runtimes": ["python3.12", "python2.7"]}),
            &cfg,
        );
        assert_eq!(err.field, "runtimes[1]");
        let err = bad(
            json!({"layer_name": "a", "requirements": "six", "runtime": "python3.12", "runtimes": ["python3.12"]}),
            &cfg,
        );
        assert_eq!(
            (err.field.as_str(), err.rule.as_str()),
            ("runtimes", "give runtime or runtimes, not both")
        );
        let err = bad(
            json!({"layer_name": "a", "requirements": "six", "architectures": []}),
            &cfg,
        );
        assert_eq!(err.field, "architectures");
        let err = bad(
            json!({"layer_name": "a", "requirements": "six", "architectures": "arm64"}),
            &cfg,
        );
        assert_eq!(err.field, "architectures");
        let err = bad(
            json!({"layer_name": "a", "requirements": "six", "runtimes": ["python3.10", "python3.11", "python3.12"], "architectures": ["arm64", "x86_64"]}),
            &cfg,
        );
        assert_eq!(err.field, "runtimes");
        assert!(err.rule.contains("is 6 pairs; at most 4"), "{}", err.rule);
        let err = bad(
            json!({"layer_name": "a", "requirements": "six", "universal": true}),
            &cfg,
        );
        assert_eq!(err.field, "universal");
        let err = bad(
            json!({"layer_name": "a", "requirements": "six", "runtimes": ["python3.12"], "universal": "yes"}),
            &cfg,
        );
        assert_eq!(err.field, "universal");
        // A pair without a build target: the error names the pair.
        let cfg = config(
            r#"{"python3.12/arm64": {"job_queue": "q", "job_definition": "d"}, "python3.12/x86_64": {"job_queue": "q", "job_definition": "d"}, "python3.13/arm64": {"job_queue": "q", "job_definition": "d"}}"#,
            None,
        );
        let err = bad(
            json!({"layer_name": "a", "requirements": "six", "runtimes": ["python3.12", "python3.13"], "architectures": ["arm64", "x86_64"]}),
            &cfg,
        );
        assert_eq!(err.field, "runtimes");
        assert!(
            err.rule
                .starts_with("the pair python3.13/x86_64 has no build target"),
            "{}",
            err.rule
        );
    }

    #[test]
    fn ids_are_stable_and_checked() {
        let a = matrix_id("http", &["0123456789abcdef", "fedcba9876543210"]);
        assert_eq!(
            a,
            matrix_id("http", &["0123456789abcdef", "fedcba9876543210"])
        );
        assert_ne!(
            a,
            matrix_id("other", &["0123456789abcdef", "fedcba9876543210"])
        );
        assert!(valid_id(&a), "{a}");
        for bad in [
            "m-../../x",
            "m-0123",
            "x-0123456789abcdef",
            "m-0123456789ABCDEF",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_whole_is_published_only_when_every_pair_is() {
        assert_eq!(overall(&["published", "published"]), "published");
        assert_eq!(overall(&["published", "running"]), "running");
        assert_eq!(overall(&["published", "built"]), "built");
        assert_eq!(overall(&["queued", "published"]), "queued");
        assert_eq!(overall(&["published", "failed", "running"]), "failed");
        assert_eq!(overall(&["rejected", "published"]), "rejected");
    }
}
