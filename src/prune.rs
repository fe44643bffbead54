//! Retention (DESIGN section 14, issue 24 item 3): delete the old versions of a layer, never the latest and never
//! one a function of this account and region still references.
//!
//! 1. [`plan`] (pure) keeps, with the reason: the newest version; the newest of every runtime and architecture the
//!    versions are compatible with (what the latest pointers name, since they only move forward); the `keep`
//!    newest; those younger than `older_than_days`. The rest are candidates.
//! 2. At delete time ([`prune`]): a candidate whose policy grants anyone (a shared version: other accounts may
//!    use it, and their functions can't be seen from here) is kept unless `include_shared`; a candidate that a
//!    function references is kept, naming the functions. The functions are listed right before the deletions,
//!    every version of every function (ListFunctions with `FunctionVersion=ALL`, whose configurations carry
//!    their layers), so a version attached a moment earlier is seen.
//! 3. The rest are deleted (DeleteLayerVersion), or only reported with `dry_run`.
//!
//! A deleted version keeps working for the functions that use it, but can't be attached anew ("a copy of the
//! version remains in Lambda until no functions refer to it": Lambda API reference, DeleteLayerVersion).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::aws::AwsFault;

/// What to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The newest versions kept whatever their age (at least 1: the latest is never deleted).
    pub keep: usize,
    /// Only versions older than this many days are deleted.
    pub older_than_days: Option<u64>,
    /// Delete shared versions too (their policy grants another account, an organization or everyone).
    pub include_shared: bool,
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
}

/// One version, as ListLayerVersions describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub number: i64,
    pub arn: String,
    /// Epoch seconds of `CreatedDate`, when it parses.
    pub created: Option<i64>,
    pub runtimes: Vec<String>,
    pub architectures: Vec<String>,
}

/// What became of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fate {
    pub version: i64,
    pub layer_version_arn: String,
    /// `kept`, `deleted` or `would delete` (dry run).
    pub decision: &'static str,
    pub reason: String,
    /// The functions (and function versions) that reference it, when that kept it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
}

/// The report of one layer's pruning, newest version first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub layer_name: String,
    pub dry_run: bool,
    pub versions: Vec<Fate>,
}

impl Report {
    pub fn count(&self, decision: &str) -> usize {
        self.versions
            .iter()
            .filter(|f| f.decision == decision)
            .count()
    }
}

/// Which versions are kept (with why) and which are candidates (`None`), newest first.
pub fn plan(versions: &[Version], policy: &Policy, now: i64) -> Vec<(Version, Option<String>)> {
    let mut sorted = versions.to_vec();
    sorted.sort_by_key(|v| std::cmp::Reverse(v.number));
    let mut newest_of: BTreeMap<(String, String), i64> = BTreeMap::new();
    for v in &sorted {
        for runtime in &v.runtimes {
            for architecture in &v.architectures {
                newest_of
                    .entry((runtime.clone(), architecture.clone()))
                    .or_insert(v.number);
            }
        }
    }
    let keep = policy.keep.max(1);
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let latest_of: Vec<String> = newest_of
                .iter()
                .filter(|(_, n)| **n == v.number)
                .map(|((r, a), _)| format!("{r} {a}"))
                .collect();
            let reason = if i == 0 {
                Some("the newest version".to_owned())
            } else if !latest_of.is_empty() {
                Some(format!("the latest for {}", latest_of.join(", ")))
            } else if i < keep {
                Some(format!("one of the {keep} newest (--keep {keep})"))
            } else {
                match (policy.older_than_days, v.created) {
                    (Some(days), Some(created)) if now - created < days as i64 * 86_400 => {
                        Some(format!("younger than {days} days (--older-than {days})"))
                    }
                    (Some(days), None) => Some(format!(
                        "its creation date is unknown (--older-than {days})"
                    )),
                    _ => None,
                }
            };
            (v, reason)
        })
        .collect()
}

/// `CreatedDate` (`2018-11-27T15:10:45.123+0000`, ISO 8601) as epoch seconds; the zone is taken as UTC, which is
/// what Lambda answers.
pub fn parse_created(text: &str) -> Option<i64> {
    let date = text.get(..10)?;
    let time = text.get(11..19)?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm), the inverse of builder::create_date's.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Every version of `layer` (ListLayerVersions, every page).
pub async fn versions(
    lambda: &aws_sdk_lambda::Client,
    layer: &str,
) -> Result<Vec<Version>, AwsFault> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = lambda
            .list_layer_versions()
            .layer_name(layer)
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(|e| AwsFault::from_sdk("ListLayerVersions", &e))?;
        for v in page.layer_versions() {
            out.push(Version {
                number: v.version(),
                arn: v.layer_version_arn().unwrap_or_default().to_owned(),
                created: v.created_date().and_then(parse_created),
                runtimes: v
                    .compatible_runtimes()
                    .iter()
                    .map(|r| r.as_str().to_owned())
                    .collect(),
                architectures: v
                    .compatible_architectures()
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect(),
            });
        }
        marker = page.next_marker().map(str::to_owned);
        if marker.is_none() {
            return Ok(out);
        }
    }
}

/// Layer version ARN -> the functions (every version of each) that reference it.
pub async fn references(
    lambda: &aws_sdk_lambda::Client,
) -> Result<BTreeMap<String, BTreeSet<String>>, AwsFault> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let page = lambda
            .list_functions()
            .function_version(aws_sdk_lambda::types::FunctionVersion::All)
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(|e| AwsFault::from_sdk("ListFunctions", &e))?;
        for f in page.functions() {
            let name = match f.version() {
                Some(v) if v != "$LATEST" => {
                    format!("{}:{v}", f.function_name().unwrap_or_default())
                }
                _ => f.function_name().unwrap_or_default().to_owned(),
            };
            for layer in f.layers() {
                if let Some(arn) = layer.arn() {
                    out.entry(arn.to_owned()).or_default().insert(name.clone());
                }
            }
        }
        marker = page.next_marker().map(str::to_owned);
        if marker.is_none() {
            return Ok(out);
        }
    }
}

/// Prunes `layer` by `policy` at `now` (epoch seconds): see the module docs.
pub async fn prune(
    lambda: &aws_sdk_lambda::Client,
    layer: &str,
    policy: &Policy,
    now: i64,
) -> Result<Report, AwsFault> {
    let planned = plan(&versions(lambda, layer).await?, policy, now);
    // The functions are read once, right before the first deletion.
    let used = if planned.iter().any(|(_, keep)| keep.is_none()) {
        references(lambda).await?
    } else {
        BTreeMap::new()
    };
    let mut fates = Vec::new();
    for (v, keep) in planned {
        let mut fate = Fate {
            version: v.number,
            layer_version_arn: v.arn.clone(),
            decision: "kept",
            reason: String::new(),
            functions: Vec::new(),
        };
        if let Some(reason) = keep {
            fate.reason = reason;
        } else if let Some(functions) = used.get(&v.arn) {
            fate.reason = "a function of this account and region references it".to_owned();
            fate.functions = functions.iter().cloned().collect();
        } else if !policy.include_shared
            && !crate::publish::share::statement_ids(lambda, layer, v.number)
                .await?
                .is_empty()
        {
            fate.reason =
                "shared: its policy grants other accounts, whose functions can't be seen from here (--include-shared prunes it)"
                    .to_owned();
        } else if policy.dry_run {
            fate.decision = "would delete";
            fate.reason = "older than what is kept".to_owned();
        } else {
            lambda
                .delete_layer_version()
                .layer_name(layer)
                .version_number(v.number)
                .send()
                .await
                .map_err(|e| AwsFault::from_sdk("DeleteLayerVersion", &e))?;
            fate.decision = "deleted";
            fate.reason = "older than what is kept".to_owned();
        }
        fates.push(fate);
    }
    Ok(Report {
        layer_name: layer.to_owned(),
        dry_run: policy.dry_run,
        versions: fates,
    })
}

/// The scheduled pruning's settings (`PruneLayersFunction`'s own variables): `PRUNE_KEEP` (default 5),
/// `PRUNE_OLDER_THAN_DAYS` (default 30; 0: any age), `PRUNE_INCLUDE_SHARED` (`true`/`false`, default false).
pub fn scheduled_policy(var: impl Fn(&str) -> Option<String>) -> Result<Policy, String> {
    let number = |name: &str, default: u64| -> Result<u64, String> {
        match var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
        {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name}: a whole number, got {v:?}")),
        }
    };
    let keep = number("PRUNE_KEEP", 5)?;
    if keep == 0 {
        return Err("PRUNE_KEEP: at least 1 (the newest version is always kept)".to_owned());
    }
    let days = number("PRUNE_OLDER_THAN_DAYS", 30)?;
    let include_shared = match var("PRUNE_INCLUDE_SHARED").as_deref().map(str::trim) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "PRUNE_INCLUDE_SHARED: true or false, got {other:?}"
            ));
        }
    };
    Ok(Policy {
        keep: keep as usize,
        older_than_days: (days > 0).then_some(days),
        include_shared,
        dry_run: false,
    })
}

/// The layers this stack built: the `<layer>/` folders of its build records (`.layerforge/builds/`), within its
/// layer names (a layer of the account that this stack never built is never pruned by it).
pub async fn stack_layers(
    s3: &aws_sdk_s3::Client,
    config: &crate::config::Config,
) -> Result<Vec<String>, AwsFault> {
    let prefix = format!("{}/", crate::records::RECORD_PREFIX);
    let mut layers = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(&config.artifact_bucket)
            .prefix(&prefix)
            .delimiter("/")
            .set_continuation_token(token.clone())
            .send()
            .await
            .map_err(|e| AwsFault::from_sdk("ListObjectsV2", &e))?;
        for p in page.common_prefixes() {
            if let Some(name) = p
                .prefix()
                .and_then(|p| p.strip_prefix(&prefix))
                .map(|p| p.trim_end_matches('/'))
                .filter(|n| config.layer_name_prefix.admits(n))
            {
                layers.push(name.to_owned());
            }
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return Ok(layers);
        }
    }
}

/// The scheduled pruning: every layer of the stack ([`stack_layers`]) by `policy`; one report per layer.
pub async fn scheduled(
    s3: &aws_sdk_s3::Client,
    lambda: &aws_sdk_lambda::Client,
    config: &crate::config::Config,
    policy: &Policy,
    now: i64,
) -> Result<Vec<Report>, AwsFault> {
    let mut reports = Vec::new();
    for layer in stack_layers(s3, config).await? {
        let report = prune(lambda, &layer, policy, now).await?;
        tracing::info!(
            layer,
            kept = report.count("kept"),
            deleted = report.count("deleted"),
            "pruned"
        );
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(number: i64, created: i64, runtimes: &[&str], archs: &[&str]) -> Version {
        Version {
            number,
            arn: format!("arn:aws:lambda:us-east-1:123456789012:layer:l:{number}"),
            created: Some(created),
            runtimes: runtimes.iter().map(|s| (*s).to_owned()).collect(),
            architectures: archs.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn the_newest_the_latest_of_each_target_and_keep_n_are_kept() {
        let day = 86_400;
        let now = 100 * day;
        let versions = [
            v(1, 10 * day, &["python3.12"], &["arm64"]),
            v(2, 20 * day, &["python3.11"], &["x86_64"]),
            v(3, 30 * day, &["python3.12"], &["arm64"]),
            v(4, 98 * day, &["python3.12"], &["arm64"]),
            v(5, 99 * day, &["python3.12"], &["arm64"]),
        ];
        let policy = |keep, older_than_days| Policy {
            keep,
            older_than_days,
            include_shared: false,
            dry_run: true,
        };
        let reasons = |p: &Policy| -> Vec<(i64, Option<String>)> {
            plan(&versions, p, now)
                .into_iter()
                .map(|(v, r)| (v.number, r))
                .collect()
        };
        let kept = |p: &Policy| -> Vec<i64> {
            reasons(p)
                .into_iter()
                .filter(|(_, r)| r.is_some())
                .map(|(n, _)| n)
                .collect()
        };
        // keep 0 still keeps the newest; v2 is the latest python3.11 x86_64.
        assert_eq!(kept(&policy(0, None)), [5, 2]);
        assert_eq!(kept(&policy(2, None)), [5, 4, 2]);
        // Only versions older than 5 days go: v4 (2 days old) stays.
        assert_eq!(kept(&policy(1, Some(5))), [5, 4, 2]);
        let all = reasons(&policy(1, None));
        assert_eq!(all[0].1.as_deref(), Some("the newest version"));
        assert_eq!(
            all[3].1.as_deref(),
            Some("the latest for python3.11 x86_64")
        );
    }

    #[test]
    fn created_dates_parse_as_lambda_writes_them() {
        assert_eq!(parse_created("1970-01-01T00:00:00.000+0000"), Some(0));
        assert_eq!(
            parse_created("2023-11-14T22:13:20.123+0000"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_created("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_created("yesterday"), None);
    }
}
