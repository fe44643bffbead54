//! The docs against the code: README.md is the front door, `docs/` the reference, and both stay true.
//!
//! - Every flag and subcommand of the `layerforge` CLI (its clap definition, [`layerforge::cli::Cli`]) appears in
//!   `docs/cli.md`, and every flag of `layer-builder` ([`layerforge::builder::cli::Args`], long and short) in
//!   `docs/builder.md`; a flag named in those pages' flag tables is one the program has.
//! - Every field the request parser accepts appears in `docs/request.md`'s field table, and the table names no
//!   field the parser refuses. The accepted fields are read from the parser's own answer to an unknown field
//!   ("expected one of …"), and each is then sent back to check that it is not refused as unknown.
//! - Every parameter of `template.yaml` and every variable of [`ENV_VARS`] appears in `docs/deploy.md`.
//! - README.md is at most 16 KiB, its set-up block is exactly the two commands, it links every page of `docs/`,
//!   and every relative link in README.md and `docs/*.md` reaches a file (and a heading, for `#anchor`s).
//!
//! The checks are functions of text that return what is wrong; the `*_can_fail` tests feed them broken text.
//! No server is needed: these tests read files only.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use clap::CommandFactory;
use layerforge::{config::ENV_VARS, request::RequestDraft};
use serde_json::{Value, json};

/// The README's size limit (issue 20): a newcomer reads it in five minutes.
const README_MAX_BYTES: usize = 16 * 1024;

/// The two set-up commands a newcomer runs on a fresh machine, in order.
const SETUP_COMMANDS: &[&str] = &["scripts/run-local.sh", "scripts/test.sh"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// README.md and every `docs/*.md`, as (path relative to the root, text), sorted.
fn markdown_files() -> Vec<(String, String)> {
    let mut files = vec![("README.md".to_owned(), read("README.md"))];
    let mut pages: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| {
            e.expect("docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "docs/ holds no page");
    files.extend(pages.into_iter().map(|name| {
        let path = format!("docs/{name}");
        let text = read(&path);
        (path, text)
    }));
    files
}

// ---------------------------------------------------------------------------------------------- text helpers

/// The lines outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            out.push(line);
        }
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Whether `text` names `flag` (`--name`, `-n`) as a whole word: `--key` is not found in `--key-prefix`.
fn mentions_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + flag.len()..].chars().next();
        !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
    })
}

/// The tables of a Markdown text: header cells, then the rows' cells.
fn tables(text: &str) -> Vec<(Vec<String>, Vec<Vec<String>>)> {
    fn cells(line: &str) -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        // `\|` inside a cell is an escaped pipe, not a separator.
        inner
            .replace("\\|", "\u{1}")
            .split('|')
            .map(|c| c.trim().replace('\u{1}', "|"))
            .collect()
    }
    let lines = prose_lines(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < lines.len() {
        let is_separator = lines[i + 1].trim().starts_with('|') && lines[i + 1].contains("---");
        if lines[i].trim().starts_with('|') && is_separator {
            let header = cells(lines[i]);
            let mut rows = Vec::new();
            i += 2;
            while i < lines.len() && lines[i].trim().starts_with('|') {
                rows.push(cells(lines[i]));
                i += 1;
            }
            out.push((header, rows));
        } else {
            i += 1;
        }
    }
    out
}

/// The text of each `code span` in `text`.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The flags (`--name`, `-n`) in the first cell of every row of the tables whose first header is one of
/// `headers`.
fn table_flags(text: &str, headers: &[&str]) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for (header, rows) in tables(text) {
        if !header
            .first()
            .is_some_and(|h| headers.contains(&h.as_str()))
        {
            continue;
        }
        for row in rows {
            for span in code_spans(&row[0]) {
                if span.starts_with('-') {
                    flags.insert(span.split([' ', '=']).next().unwrap_or(span).to_owned());
                }
            }
        }
    }
    flags
}

// ---------------------------------------------------------------------------------------------- CLIs

/// Every flag (`--long`, `-s`) and subcommand path (`layerforge image build`) of a clap command, hidden ones
/// included, `--help` and `--version` too.
fn clap_surface(mut command: clap::Command) -> (BTreeSet<String>, BTreeSet<String>) {
    command.build();
    let mut flags = BTreeSet::new();
    let mut subcommands = BTreeSet::new();
    fn walk(
        command: &clap::Command,
        path: &str,
        flags: &mut BTreeSet<String>,
        subcommands: &mut BTreeSet<String>,
    ) {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                flags.insert(format!("--{long}"));
            }
            if let Some(short) = arg.get_short() {
                flags.insert(format!("-{short}"));
            }
        }
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue; // clap's own `help` subcommand
            }
            let path = format!("{path} {}", sub.get_name());
            subcommands.insert(path.clone());
            walk(sub, &path, flags, subcommands);
        }
    }
    let name = command.get_name().to_owned();
    walk(&command, &name, &mut flags, &mut subcommands);
    (flags, subcommands)
}

/// What `doc` is missing of a program's surface, and what its flag tables name that the program lacks.
fn cli_doc_problems(
    program: &str,
    doc: &str,
    flags: &BTreeSet<String>,
    subcommands: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for flag in flags {
        if !mentions_flag(doc, flag) {
            problems.push(format!("{program}'s flag {flag} is not documented"));
        }
    }
    for sub in subcommands {
        if !doc.contains(sub.as_str()) {
            problems.push(format!("the subcommand `{sub}` is not documented"));
        }
    }
    for flag in table_flags(doc, &["flag", "option"]) {
        if !flags.contains(&flag) {
            problems.push(format!(
                "the doc's flag table names {flag}, which {program} does not have"
            ));
        }
    }
    problems
}

#[test]
fn every_flag_and_subcommand_of_the_layerforge_cli_is_in_docs_cli_md() {
    let (flags, subcommands) = clap_surface(layerforge::cli::Cli::command());
    // The surface is read from clap, not assumed: these must be in it.
    for expected in ["--wait", "--sam-cache", "--stack", "--local"] {
        assert!(flags.contains(expected), "{expected} not in {flags:?}");
    }
    for expected in [
        "layerforge build",
        "layerforge image build",
        "layerforge local up",
    ] {
        assert!(
            subcommands.contains(expected),
            "{expected} not in {subcommands:?}"
        );
    }
    let problems = cli_doc_problems("layerforge", &read("docs/cli.md"), &flags, &subcommands);
    assert!(problems.is_empty(), "docs/cli.md:\n{}", problems.join("\n"));
}

#[test]
fn every_flag_of_layer_builder_is_in_docs_builder_md() {
    let (flags, subcommands) = clap_surface(layerforge::builder::cli::Args::command());
    for expected in ["--name", "-n", "--platform-mode", "--key-prefix", "-k"] {
        assert!(flags.contains(expected), "{expected} not in {flags:?}");
    }
    let problems = cli_doc_problems(
        "layer-builder",
        &read("docs/builder.md"),
        &flags,
        &subcommands,
    );
    assert!(
        problems.is_empty(),
        "docs/builder.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn cli_doc_checks_can_fail() {
    let flags: BTreeSet<String> = ["--key", "--key-prefix", "-k"].map(String::from).into();
    let subcommands: BTreeSet<String> = ["tool local up".to_owned()].into();
    let doc = "\
`--key-prefix`, `-k` and `tool local up`.

| option | meaning |
| --- | --- |
| `--key-prefix` | a prefix |
| `--gone` | removed |
";
    let problems = cli_doc_problems("tool", doc, &flags, &subcommands);
    assert_eq!(
        problems,
        [
            "tool's flag --key is not documented",
            "the doc's flag table names --gone, which tool does not have",
        ]
    );
    let problems = cli_doc_problems(
        "tool",
        "`--key`, `--key-prefix`, `-k`",
        &flags,
        &subcommands,
    );
    assert_eq!(
        problems,
        ["the subcommand `tool local up` is not documented"]
    );
}

// ---------------------------------------------------------------------------------------------- the request

/// A configuration for the parser: any valid one, the fields don't depend on it.
fn config() -> layerforge::config::Config {
    layerforge::config::Config::from_lookup(|name| match name {
        "ARTIFACT_BUCKET" => Some("docs-check".to_owned()),
        "BUILD_TARGETS" => Some(
            r#"{"arm64": {"job_queue": "q", "job_definition": "d"}, "x86_64": {"job_queue": "q", "job_definition": "d"}}"#
                .to_owned(),
        ),
        _ => None,
    })
    .expect("a valid configuration")
}

/// Whether the parser refuses `field` as an unknown field; `Some(rule)` carries its message.
fn refused_as_unknown(field: &str, value: Value) -> Option<String> {
    let mut request = json!({"layer_name": "docs-check", "requirements": "six==1.16.0"});
    request[field] = value;
    match RequestDraft::parse(&request, &config()) {
        Err(e) if e.field == field && e.rule.starts_with("unknown field") => Some(e.rule),
        _ => None,
    }
}

/// The fields the request parser accepts, from its answer to an unknown field.
fn accepted_request_fields() -> BTreeSet<String> {
    let rule = refused_as_unknown("not_a_field", json!(1))
        .expect("the parser refuses an unknown field, naming it");
    let list = rule
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("the refusal lists the accepted fields: {rule:?}"))
        .1;
    let fields: BTreeSet<String> = list.split(',').map(|f| f.trim().to_owned()).collect();
    for field in &fields {
        assert!(
            refused_as_unknown(field, Value::Null).is_none(),
            "the parser lists {field} as accepted but refuses it as unknown"
        );
    }
    fields
}

/// The field names in the first column of a page's `| field | … |` tables.
fn documented_fields(doc: &str) -> BTreeSet<String> {
    tables(doc)
        .into_iter()
        .filter(|(header, _)| header.first().is_some_and(|h| h == "field"))
        .flat_map(|(_, rows)| rows)
        .flat_map(|row| {
            code_spans(&row[0])
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn request_doc_problems(doc: &str, accepted: &BTreeSet<String>) -> Vec<String> {
    let documented = documented_fields(doc);
    let mut problems: Vec<String> = accepted
        .difference(&documented)
        .map(|f| format!("the request field {f} is not in the field table"))
        .collect();
    problems.extend(
        documented
            .difference(accepted)
            .map(|f| format!("the field table names {f}, which the parser refuses")),
    );
    problems
}

#[test]
fn every_request_field_is_in_docs_request_md() {
    let accepted = accepted_request_fields();
    for expected in ["layer_name", "requirements", "installer", "memory_mib"] {
        assert!(
            accepted.contains(expected),
            "{expected} not in {accepted:?}"
        );
    }
    // The shipped examples use fields the parser accepts.
    for entry in std::fs::read_dir(root().join("events")).expect("events/") {
        let path = entry.expect("events/ entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !(name.starts_with("build-request") && name.ends_with(".json")) {
            continue;
        }
        let example: Value = serde_json::from_str(&read(&format!("events/{name}")))
            .unwrap_or_else(|e| panic!("events/{name}: {e}"));
        for key in example.as_object().expect("a JSON object").keys() {
            assert!(
                accepted.contains(key),
                "events/{name}: {key} is not accepted"
            );
        }
    }
    let problems = request_doc_problems(&read("docs/request.md"), &accepted);
    assert!(
        problems.is_empty(),
        "docs/request.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn request_doc_check_can_fail() {
    let accepted: BTreeSet<String> = ["layer_name", "vcpu", "memory_mib"]
        .map(String::from)
        .into();
    let doc = "\
| field | rule |
| --- | --- |
| `layer_name` | required |
| `vcpu` | a size |
| `licence` | a typo |
";
    assert_eq!(
        request_doc_problems(doc, &accepted),
        [
            "the request field memory_mib is not in the field table",
            "the field table names licence, which the parser refuses",
        ]
    );
}

// ---------------------------------------------------------------------------------------------- deployment

/// The names of `template.yaml`'s parameters.
fn template_parameters() -> Vec<String> {
    let template: serde_yaml::Value =
        serde_yaml::from_str(&read("template.yaml")).expect("template.yaml parses");
    template
        .get("Parameters")
        .and_then(serde_yaml::Value::as_mapping)
        .expect("template.yaml has Parameters")
        .keys()
        .map(|k| k.as_str().expect("a parameter name").to_owned())
        .collect()
}

fn missing_names<'a>(doc: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let spans: BTreeSet<&str> = code_spans(doc).into_iter().collect();
    names
        .into_iter()
        .filter(|name| !spans.contains(name))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_parameter_and_environment_variable_is_in_docs_deploy_md() {
    let parameters = template_parameters();
    assert!(parameters.iter().any(|p| p == "LayerNamePrefix"));
    let doc = read("docs/deploy.md");
    let missing = missing_names(&doc, parameters.iter().map(String::as_str));
    assert!(
        missing.is_empty(),
        "docs/deploy.md lacks the parameters {missing:?}"
    );
    let missing = missing_names(&doc, ENV_VARS.iter().copied());
    assert!(
        missing.is_empty(),
        "docs/deploy.md lacks the variables {missing:?}"
    );
    assert_eq!(
        missing_names("`SubnetIds` and `VpcIds`", ["SubnetIds", "VpcId"]),
        ["VpcId"]
    );
}

// ---------------------------------------------------------------------------------------------- README and links

/// The commands of the README's set-up block: the first fenced block after `## Set up`, first word of each line.
fn setup_commands(readme: &str) -> Vec<String> {
    let after = readme
        .split_once("\n## Set up\n")
        .map(|(_, rest)| rest)
        .unwrap_or("");
    let Some((_, block)) = after.split_once("```sh\n") else {
        return Vec::new();
    };
    let block = block.split("```").next().unwrap_or("");
    block
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(|line| line.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

fn readme_problems(readme: &str, pages: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if readme.len() > README_MAX_BYTES {
        problems.push(format!(
            "README.md is {} bytes, over {README_MAX_BYTES}",
            readme.len()
        ));
    }
    let commands = setup_commands(readme);
    if commands != SETUP_COMMANDS {
        problems.push(format!(
            "the set-up block runs {commands:?}, not exactly {SETUP_COMMANDS:?}"
        ));
    }
    let targets: BTreeSet<String> = links(readme)
        .into_iter()
        .map(|t| t.split('#').next().unwrap_or("").to_owned())
        .collect();
    for page in pages {
        if !targets.contains(page) {
            problems.push(format!("README.md does not link {page}"));
        }
    }
    problems
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = read("README.md");
    let pages: Vec<String> = markdown_files()
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| path.starts_with("docs/"))
        .collect();
    let problems = readme_problems(&readme, &pages);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for command in SETUP_COMMANDS {
        assert!(
            root().join(command).is_file(),
            "{command} is not in the tree"
        );
    }
}

#[test]
fn readme_check_can_fail() {
    let pages = vec!["docs/a.md".to_owned(), "docs/b.md".to_owned()];
    let good = "# x\n\n## Set up\n\n```sh\nscripts/run-local.sh   # all\nscripts/test.sh  # tests\n```\n\n\
                [a](docs/a.md) [b](docs/b.md#part)\n";
    assert!(readme_problems(good, &pages).is_empty());
    let three = good.replace("scripts/test.sh", "scripts/bootstrap.sh\nscripts/test.sh");
    assert_eq!(readme_problems(&three, &pages).len(), 1);
    let unlinked = good.replace("[b](docs/b.md#part)", "b");
    assert_eq!(
        readme_problems(&unlinked, &pages),
        ["README.md does not link docs/b.md"]
    );
    let long = format!("{good}{}", "x".repeat(README_MAX_BYTES));
    assert_eq!(readme_problems(&long, &pages).len(), 1);
}

/// The targets of the inline links and images in `text`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        // Code spans hold no links.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].trim().to_owned());
                rest = &rest[end..];
            }
        }
    }
    out
}

/// GitHub's anchors for the headings of a Markdown text: lower case, punctuation dropped, spaces to `-`, and
/// `-1`, `-2`… for repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(title) = line
            .strip_prefix('#')
            .map(|t| t.trim_start_matches('#'))
            .filter(|t| t.starts_with(' '))
        else {
            continue;
        };
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// The relative links of `file` (at `path`, relative to `root`) that reach no file or no heading.
fn broken_links(root: &Path, path: &str, text: &str) -> Vec<String> {
    let dir = Path::new(path).parent().unwrap_or(Path::new(""));
    let mut broken = Vec::new();
    for target in links(text) {
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = match target.split_once('#') {
            Some((file, anchor)) => (file, Some(anchor)),
            None => (target.as_str(), None),
        };
        let resolved = if file.is_empty() {
            root.join(path)
        } else {
            root.join(dir).join(file)
        };
        if !resolved.exists() {
            broken.push(format!("{path}: {target} (no such file)"));
            continue;
        }
        if let Some(anchor) = anchor {
            let headings = match std::fs::read_to_string(&resolved) {
                Ok(target_text) => anchors(&target_text),
                Err(_) => BTreeSet::new(),
            };
            if !headings.contains(anchor) {
                broken.push(format!("{path}: {target} (no such heading)"));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_reaches_its_file_and_heading() {
    let mut broken = Vec::new();
    let mut count = 0;
    for (path, text) in markdown_files() {
        count += links(&text).len();
        broken.extend(broken_links(&root(), &path, &text));
    }
    assert!(
        count > 20,
        "only {count} links found: the link reader is broken"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn link_check_can_fail() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::create_dir(dir.path().join("docs")).expect("docs/");
    std::fs::write(
        dir.path().join("docs/a.md"),
        "# The `a` page\n\n## Part one\n\n## Part one\n",
    )
    .expect("write");
    let text = "[ok](docs/a.md#the-a-page) [ok](docs/a.md#part-one-1) `[no](nowhere.md)`\n\
                [gone](docs/gone.md) [bad](docs/a.md#part-two) [web](https://example.com/x.md)\n\
                ```\n[fenced](nowhere.md)\n```\n";
    assert_eq!(
        broken_links(dir.path(), "README.md", text),
        [
            "README.md: docs/gone.md (no such file)",
            "README.md: docs/a.md#part-two (no such heading)",
        ]
    );
    assert!(mentions_flag("`--key` and", "--key"));
    assert!(!mentions_flag("`--key-prefix`", "--key"));
    assert!(!mentions_flag("`--runtime`", "-r"));
}
