//! What a layer costs its functions in size (DESIGN section 13): unzipped bytes per installed distribution,
//! bytecode's share, the total against Lambda's limit and the request's budget, and what `slim` removed.
//!
//! layer-builder makes the report ([`SizeReport::tally`]) from the files it zips and the `RECORD` of every
//! `*.dist-info`; it goes into the builder's summary, its report object (so build-status and the build record
//! have it) and the CLI. Files no `RECORD` lists are counted under the distribution that owns their top-level
//! folder, else under [`UNLISTED`]; bytecode under the distribution of its source.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::vocab::{LAMBDA_UNZIPPED_LIMIT, MIB};

/// The name files of no distribution are counted under.
pub const UNLISTED: &str = "(files no RECORD lists)";
/// How many distributions the human forms (summary, CLI, a budget failure's reason) show.
pub const TOP: usize = 5;

/// The size of a layer, by distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeReport {
    /// Every file of the zip, uncompressed.
    pub unzipped_bytes: u64,
    /// Of which bytecode (`__pycache__/*.pyc`).
    pub bytecode_bytes: u64,
    pub files: usize,
    /// Lambda's limit for a function's code and all its layers, unzipped.
    pub limit_bytes: u64,
    /// The request's budget (the limit unless the request set `max_unzipped_mb`).
    pub budget_bytes: u64,
    /// Every distribution, largest first (ties by name).
    pub distributions: Vec<DistributionSize>,
    /// What `slim` removed, when it was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slim: Option<SlimReport>,
}

/// One installed distribution's share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionSize {
    pub name: String,
    /// Empty for [`UNLISTED`].
    #[serde(default)]
    pub version: String,
    pub bytes: u64,
    pub bytecode_bytes: u64,
    pub files: usize,
}

/// What `slim` did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlimReport {
    /// Each kind of removal with what it saved, e.g. `bin/ (console scripts)`.
    pub removed: Vec<SlimItem>,
    /// Parts kept because an import failed without them (e.g. `scipy tests: import scipy.x failed …`).
    #[serde(default)]
    pub kept: Vec<String>,
    pub saved_bytes: u64,
}

/// One kind of removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlimItem {
    pub what: String,
    pub files: usize,
    pub bytes: u64,
}

/// An installed distribution as its `*.dist-info` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    pub name: String,
    pub version: String,
    /// Paths relative to site-packages, as `RECORD` lists them (`/`-separated).
    pub paths: Vec<String>,
}

impl Distribution {
    /// From a `*.dist-info` folder name (`numpy-2.1.3.dist-info`) and its `RECORD` text.
    pub fn from_record(dist_info: &str, record: &str) -> Self {
        let stem = dist_info.trim_end_matches(".dist-info");
        let (name, version) = stem.split_once('-').unwrap_or((stem, ""));
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            paths: record.lines().filter_map(record_path).collect(),
        }
    }
}

/// The first field of a `RECORD` line (CSV: quoted when it holds a comma or a quote).
fn record_path(line: &str) -> Option<String> {
    let line = line.trim_end_matches('\r');
    if line.is_empty() {
        return None;
    }
    let path = if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    out.push('"');
                    chars.next();
                }
                '"' => break,
                c => out.push(c),
            }
        }
        out
    } else {
        line.split(',').next().unwrap_or_default().to_owned()
    };
    (!path.is_empty()).then_some(path)
}

/// Whether a path (relative to site-packages) is bytecode: a `.pyc` in a `__pycache__` folder.
pub fn is_bytecode(path: &str) -> bool {
    path.ends_with(".pyc") && path.contains("__pycache__/")
}

/// The source of a bytecode path: `pkg/__pycache__/mod.cpython-312.pyc` -> `pkg/mod.py`.
pub fn bytecode_source(path: &str) -> Option<String> {
    let (dir, file) = path.rsplit_once("__pycache__/")?;
    let stem = file.strip_suffix(".pyc")?;
    let (module, _tag) = stem.split_once('.')?;
    Some(format!("{dir}{module}.py"))
}

impl SizeReport {
    /// Tallies `files` (paths relative to site-packages, with their sizes) by the distributions that own them.
    pub fn tally(
        files: &[(String, u64)],
        distributions: &[Distribution],
        budget_bytes: u64,
    ) -> Self {
        let mut owner: HashMap<&str, usize> = HashMap::new();
        let mut top_owner: HashMap<&str, usize> = HashMap::new();
        for (i, dist) in distributions.iter().enumerate() {
            for path in &dist.paths {
                owner.entry(path.as_str()).or_insert(i);
                if !path.starts_with("..") {
                    let top = path.split('/').next().unwrap_or_default();
                    top_owner.entry(top).or_insert(i);
                }
            }
        }
        let mut sizes: BTreeMap<Option<usize>, (u64, u64, usize)> = BTreeMap::new();
        let (mut total, mut bytecode) = (0u64, 0u64);
        for (path, bytes) in files {
            let is_pyc = is_bytecode(path);
            let source = if is_pyc { bytecode_source(path) } else { None };
            let key = source.as_deref().unwrap_or(path);
            let who = owner.get(key).copied().or_else(|| {
                let top = key.split('/').next().unwrap_or_default();
                top_owner.get(top).copied()
            });
            let entry = sizes.entry(who).or_default();
            entry.0 += bytes;
            entry.2 += 1;
            total += bytes;
            if is_pyc {
                entry.1 += bytes;
                bytecode += bytes;
            }
        }
        let mut out: Vec<DistributionSize> = sizes
            .into_iter()
            .map(|(who, (bytes, bytecode_bytes, files))| {
                let (name, version) = match who {
                    Some(i) => (
                        distributions[i].name.clone(),
                        distributions[i].version.clone(),
                    ),
                    None => (UNLISTED.to_owned(), String::new()),
                };
                DistributionSize {
                    name,
                    version,
                    bytes,
                    bytecode_bytes,
                    files,
                }
            })
            .collect();
        out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        Self {
            unzipped_bytes: total,
            bytecode_bytes: bytecode,
            files: files.len(),
            limit_bytes: LAMBDA_UNZIPPED_LIMIT,
            budget_bytes,
            distributions: out,
            slim: None,
        }
    }

    /// Whether the layer is larger than its budget.
    pub fn over_budget(&self) -> bool {
        self.unzipped_bytes > self.budget_bytes
    }

    /// Whether bytecode alone takes the layer over its budget (without it the layer would fit).
    pub fn bytecode_breaks_budget(&self) -> bool {
        self.over_budget() && self.unzipped_bytes - self.bytecode_bytes <= self.budget_bytes
    }

    /// One line: `41.2 MiB unzipped (bytecode 6.0 MiB, 14%), 15.7% of Lambda's 250 MiB`.
    pub fn headline(&self) -> String {
        let mut line = format!(
            "{} unzipped in {} files (bytecode {}, {}%), {:.1}% of Lambda's 250 MiB for a function and all its layers",
            mib(self.unzipped_bytes),
            self.files,
            mib(self.bytecode_bytes),
            percent(self.bytecode_bytes, self.unzipped_bytes),
            self.unzipped_bytes as f64 * 100.0 / self.limit_bytes as f64,
        );
        if self.budget_bytes != self.limit_bytes {
            line.push_str(&format!("; budget {}", mib(self.budget_bytes)));
        }
        line
    }

    /// The `n` largest distributions, one per line: `numpy 2.1.3: 61.2 MiB (bytecode 3.1 MiB)`.
    pub fn top_lines(&self, n: usize) -> Vec<String> {
        let mut lines: Vec<String> = self
            .distributions
            .iter()
            .take(n)
            .map(|d| {
                let name = if d.version.is_empty() {
                    d.name.clone()
                } else {
                    format!("{} {}", d.name, d.version)
                };
                format!(
                    "{name}: {} (bytecode {})",
                    mib(d.bytes),
                    mib(d.bytecode_bytes)
                )
            })
            .collect();
        let rest = self.distributions.len().saturating_sub(n);
        if rest > 0 {
            let bytes: u64 = self.distributions.iter().skip(n).map(|d| d.bytes).sum();
            lines.push(format!("{rest} more: {}", mib(bytes)));
        }
        lines
    }

    /// Why a build over its budget failed: the sizes, the largest distributions, and what to do.
    pub fn budget_reason(&self) -> String {
        let mut reason = format!(
            "the layer is {} unzipped ({} bytes), over its budget of {} ({} bytes){}; largest: {}",
            mib(self.unzipped_bytes),
            self.unzipped_bytes,
            mib(self.budget_bytes),
            self.budget_bytes,
            if self.budget_bytes == self.limit_bytes {
                ", Lambda's limit for a function and all its layers"
            } else {
                " (max_unzipped_mb)"
            },
            self.top_lines(TOP).join("; ")
        );
        if self.bytecode_breaks_budget() {
            reason.push_str(&format!(
                ". Bytecode ({}) is what takes it over: without it the layer is {}. Turn it off \
                 (\"bytecode\": false, --no-bytecode) at the cost of compiling the modules on every cold start",
                mib(self.bytecode_bytes),
                mib(self.unzipped_bytes - self.bytecode_bytes)
            ));
        } else if self.slim.is_none() {
            reason.push_str(". \"slim\": true (--slim) removes console scripts, stubs and tests that nothing imports");
        }
        reason
    }
}

impl SlimReport {
    /// `removed bin/ (console scripts) 12 files 0.1 MiB; … saved 3.2 MiB`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .removed
            .iter()
            .map(|i| format!("{} ({} files, {})", i.what, i.files, mib(i.bytes)))
            .collect();
        if parts.is_empty() {
            parts.push("nothing".to_owned());
        }
        let mut text = format!(
            "removed {}; saved {}",
            parts.join(", "),
            mib(self.saved_bytes)
        );
        if !self.kept.is_empty() {
            text.push_str(&format!("; kept {}", self.kept.join("; ")));
        }
        text
    }
}

/// Bytes as MiB with one decimal: `61.2 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

fn percent(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(name: &str, version: &str, paths: &[&str]) -> Distribution {
        Distribution {
            name: name.into(),
            version: version.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn record_lines_give_their_paths_quoted_or_not() {
        let d = Distribution::from_record(
            "six-1.16.0.dist-info",
            "six.py,sha256=abc,34549\r\n\"odd,name.py\",sha256=x,1\n\"q\"\"uote.py\",,\nsix-1.16.0.dist-info/RECORD,,\n\n",
        );
        assert_eq!((d.name.as_str(), d.version.as_str()), ("six", "1.16.0"));
        assert_eq!(
            d.paths,
            [
                "six.py",
                "odd,name.py",
                "q\"uote.py",
                "six-1.16.0.dist-info/RECORD"
            ]
        );
    }

    #[test]
    fn bytecode_counts_under_its_source_and_unlisted_files_under_their_folder() {
        let dists = [
            dist("numpy", "2.1.3", &["numpy/__init__.py", "numpy/core/x.so"]),
            dist("six", "1.16.0", &["six.py"]),
        ];
        let files = vec![
            ("numpy/__init__.py".to_owned(), 100),
            ("numpy/__pycache__/__init__.cpython-312.pyc".to_owned(), 40),
            ("numpy/core/x.so".to_owned(), 1000),
            // Not in numpy's RECORD, but in its folder.
            ("numpy/core/__pycache__/extra.cpython-312.pyc".to_owned(), 7),
            ("six.py".to_owned(), 50),
            ("__pycache__/six.cpython-312.pyc".to_owned(), 20),
            ("stray.txt".to_owned(), 3),
        ];
        let report = SizeReport::tally(&files, &dists, LAMBDA_UNZIPPED_LIMIT);
        assert_eq!(report.unzipped_bytes, 1220);
        assert_eq!(report.bytecode_bytes, 67);
        assert_eq!(report.files, 7);
        let got: Vec<(&str, u64, u64, usize)> = report
            .distributions
            .iter()
            .map(|d| (d.name.as_str(), d.bytes, d.bytecode_bytes, d.files))
            .collect();
        assert_eq!(
            got,
            [
                ("numpy", 1147, 47, 4),
                ("six", 70, 20, 2),
                (UNLISTED, 3, 0, 1)
            ]
        );
        assert!(!report.over_budget());
        assert_eq!(report.top_lines(1).len(), 2, "the rest summed on a line");
        assert!(report.top_lines(1)[1].starts_with("2 more"));
    }

    #[test]
    fn a_budget_reason_names_the_largest_and_blames_bytecode_only_when_it_is_the_cause() {
        let dists = [
            dist("big", "1", &["big/a.py"]),
            dist("small", "2", &["s.py"]),
        ];
        let files = vec![
            ("big/a.py".to_owned(), 3 * MIB),
            ("big/__pycache__/a.cpython-312.pyc".to_owned(), 2 * MIB),
            ("s.py".to_owned(), MIB / 2),
        ];
        // 5.5 MiB against 4 MiB: without bytecode 3.5 MiB fits.
        let report = SizeReport::tally(&files, &dists, 4 * MIB);
        assert!(report.over_budget() && report.bytecode_breaks_budget());
        let reason = report.budget_reason();
        assert!(
            reason.contains("big 1: 5.0 MiB (bytecode 2.0 MiB)"),
            "{reason}"
        );
        assert!(reason.contains("(max_unzipped_mb)"), "{reason}");
        assert!(reason.contains("\"bytecode\": false"), "{reason}");
        // 5.5 MiB against 3 MiB: bytecode is not the cause.
        let report = SizeReport::tally(&files, &dists, 3 * MIB);
        assert!(report.over_budget() && !report.bytecode_breaks_budget());
        assert!(!report.budget_reason().contains("\"bytecode\": false"));
        assert!(report.budget_reason().contains("--slim"));
    }

    #[test]
    fn bytecode_paths_map_to_their_sources() {
        assert_eq!(
            bytecode_source("a/b/__pycache__/mod.cpython-312.pyc").as_deref(),
            Some("a/b/mod.py")
        );
        assert_eq!(
            bytecode_source("__pycache__/six.cpython-311.pyc").as_deref(),
            Some("six.py")
        );
        assert!(!is_bytecode("a/mod.pyc"), "only __pycache__ holds ours");
        assert!(is_bytecode("a/__pycache__/mod.cpython-312.pyc"));
    }
}
