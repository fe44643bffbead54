//! The install tree, read as the zip will hold it: [`collect`] lists its files (sorted, no bytecode, in-tree
//! links resolved without leaving the tree, each file's identity kept for [`super::contain::open_listed`]), and
//! [`check_elf`] checks every ELF file against the target architecture and the runtime's glibc/libstdc++ ceiling.

use std::path::Path;

use tracing::{info, warn};

use super::{
    archive::{self, ZipSource},
    contain, elf,
    error::BuildError,
    platform,
};
use crate::{
    size::SlimItem,
    vocab::{Architecture, Runtime},
};

/// The files of a tree, ready to zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Sorted by name (byte order).
    pub files: Vec<ZipSource>,
    pub unzipped_bytes: u64,
    /// `__pycache__` folders and `.pyc`/`.pyo` files left out.
    pub skipped: usize,
    /// What [`Keep::slim`] left out, by kind (only kinds that removed something).
    pub slimmed: Vec<SlimItem>,
}

/// What [`collect_with`] keeps besides the installed files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keep {
    /// Keep the bytecode the build compiled: `__pycache__/NAME.{tag}.pyc` (tag `cpython-312`). Every other
    /// bytecode file (other interpreters', optimized levels, `.pyc` outside `__pycache__`) is left out.
    pub bytecode_tag: Option<String>,
    /// Leave out what can't break an import: `bin/` at the top of site-packages (console scripts, whose
    /// shebang names the build host's interpreter) and `*.pyi` type stubs.
    pub slim: bool,
}

/// The slim kinds, as the report names them.
pub const SLIM_BIN: &str = "bin/ (console scripts)";
pub const SLIM_STUBS: &str = "*.pyi (type stubs)";

/// [`collect_with`] without bytecode and without slimming.
pub fn collect(root: &Path, prefix: &str) -> std::io::Result<Collected> {
    collect_with(root, prefix, &Keep::default())
}

/// Lists the regular files under `root` as zip entries named `prefix/relative/path`, sorted, without
/// bytecode other than `keep`'s, and without what `keep.slim` removes. A symbolic link that stays inside `root`
/// is stored as the file it points to (links to folders are left out, so a link cycle can't loop); one that
/// leads out is an error naming it ([`archive::resolve_link`]).
pub fn collect_with(root: &Path, prefix: &str, keep: &Keep) -> std::io::Result<Collected> {
    // The root is taken as given, never through a link: its canonical form must be itself.
    if std::fs::canonicalize(root)? != root {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is not a canonical path (a symbolic link or a relative part in it): refused",
                root.display()
            ),
        ));
    }
    let mut collected = Collected {
        files: Vec::new(),
        unzipped_bytes: 0,
        skipped: 0,
        slimmed: Vec::new(),
    };
    let mut slimmed: std::collections::BTreeMap<&'static str, (usize, u64)> = Default::default();
    let bytecode_suffix = keep.bytecode_tag.as_ref().map(|tag| format!(".{tag}.pyc"));
    let top = prefix.trim_end_matches('/').to_owned();
    let mut pending = vec![(root.to_path_buf(), top.clone(), false)];
    while let Some((dir, name, in_pycache)) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("file name is not UTF-8: {}", entry.path().display()),
                ));
            };
            let entry_name = format!("{name}/{file_name}");
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                if file_name == "__pycache__" && (bytecode_suffix.is_none() || in_pycache) {
                    collected.skipped += 1;
                } else {
                    let pycache = file_name == "__pycache__";
                    pending.push((entry.path(), entry_name, pycache));
                }
                continue;
            }
            if file_name.ends_with(".pyc") || file_name.ends_with(".pyo") {
                // The build's own: the runtime's tag, no optimization level, beside its source.
                let ours = in_pycache
                    && file_type.is_file()
                    && bytecode_suffix.as_deref().is_some_and(|suffix| {
                        file_name.strip_suffix(suffix).is_some_and(|stem| {
                            !stem.is_empty()
                                && !stem.contains('.')
                                && dir.parent().is_some_and(|source_dir| {
                                    std::fs::symlink_metadata(source_dir.join(format!("{stem}.py")))
                                        .is_ok_and(|m| m.is_file() || m.is_symlink())
                                })
                        })
                    });
                if !ours {
                    collected.skipped += 1;
                    continue;
                }
            } else if in_pycache {
                // Nothing but bytecode belongs in __pycache__.
                collected.skipped += 1;
                continue;
            }
            let slim_kind = if !keep.slim {
                None
            } else if entry_name.starts_with(&format!("{top}/bin/")) {
                Some(SLIM_BIN)
            } else if file_name.ends_with(".pyi") {
                Some(SLIM_STUBS)
            } else {
                None
            };
            let path = if file_type.is_symlink() {
                let relative = entry.path().strip_prefix(root).map(Path::to_path_buf);
                archive::resolve_link(root, &relative.unwrap_or_else(|_| entry.path()))?
            } else {
                entry.path()
            };
            let metadata = std::fs::symlink_metadata(&path)?;
            if !metadata.is_file() {
                warn!(path = %entry.path().display(), "left out: not a regular file");
                continue;
            }
            if let Some(kind) = slim_kind {
                let entry = slimmed.entry(kind).or_default();
                entry.0 += 1;
                entry.1 += metadata.len();
                continue;
            }
            collected.unzipped_bytes += metadata.len();
            collected.files.push(ZipSource {
                name: entry_name,
                path,
                executable: is_executable(&metadata),
                expect: Some(contain::FileId::of(&metadata)),
            });
        }
    }
    collected
        .files
        .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    collected.slimmed = slimmed
        .into_iter()
        .map(|(what, (files, bytes))| SlimItem {
            what: what.to_owned(),
            files,
            bytes,
        })
        .collect();
    Ok(collected)
}

#[cfg(unix)]
fn is_executable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &std::fs::Metadata) -> bool {
    false
}

/// Checks every ELF file: built for `architecture` ([`BuildError::WrongArchitecture`]), and needing no newer
/// glibc or libstdc++ symbol version than `runtime` offers ([`BuildError::AboveCeiling`]). Returns how many ELF
/// files there were.
pub fn check_elf(
    files: &[ZipSource],
    architecture: Architecture,
    runtime: Runtime,
) -> Result<usize, BuildError> {
    let expected = elf::expected_machine(architecture);
    let ceiling = platform::ceiling(runtime);
    let mut wrong = Vec::new();
    let mut violations = Vec::new();
    let mut elf_files = 0usize;
    for file in files {
        let read_error = || BuildError::io(format!("reading {}", file.path.display()));
        // One open per file, through the listed-file check: the bytes checked are the bytes zipped.
        let mut opened = file.open().map_err(read_error())?;
        let mut data = Vec::with_capacity(20);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut opened, 20), &mut data)
            .map_err(read_error())?;
        let Some(machine) = elf::elf_machine(&data) else {
            continue;
        };
        elf_files += 1;
        if machine != expected {
            wrong.push((file.name.clone(), machine));
            continue;
        }
        std::io::Read::read_to_end(&mut opened, &mut data).map_err(read_error())?;
        let needs = match elf::version_needs(&data) {
            Ok(needs) => needs,
            Err(reason) => {
                // A file that starts like ELF but can't be parsed can't be loaded either.
                violations.push(platform::Violation {
                    file: file.name.clone(),
                    needs: format!("an unreadable ELF file ({reason})"),
                    ceiling: format!("{} ({})", ceiling.glibc_version(), ceiling.os),
                });
                continue;
            }
        };
        for needs in ceiling.check(needs.iter().map(String::as_str)) {
            violations.push(platform::Violation {
                file: file.name.clone(),
                ceiling: ceiling.describe_for(&needs),
                needs,
            });
        }
    }
    info!(
        elf_files,
        wrong_architecture = wrong.len(),
        above_ceiling = violations.len(),
        %architecture,
        %runtime,
        glibc = ceiling.glibc_version(),
        glibcxx = ceiling.glibcxx_version(),
        "ELF check"
    );
    if !wrong.is_empty() {
        return Err(BuildError::WrongArchitecture {
            architecture,
            files: wrong,
        });
    }
    if !violations.is_empty() {
        return Err(BuildError::AboveCeiling {
            runtime,
            violations,
        });
    }
    Ok(elf_files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_builds_own_bytecode_is_kept_and_slim_leaves_out_scripts_and_stubs() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        for (path, body) in [
            ("pkg/__init__.py", "x = 1\n"),
            ("pkg/__init__.pyi", "x: int\n"),
            ("pkg/__pycache__/__init__.cpython-312.pyc", "ours"),
            (
                "pkg/__pycache__/orphan.cpython-312.pyc",
                "no source beside it",
            ),
            (
                "pkg/__pycache__/__init__.cpython-311.pyc",
                "another interpreter's",
            ),
            (
                "pkg/__pycache__/__init__.cpython-312.opt-1.pyc",
                "optimized",
            ),
            ("pkg/__pycache__/notes.txt", "not bytecode"),
            ("pkg/__pycache__/__pycache__/x.cpython-312.pyc", "nested"),
            ("pkg/stray.pyc", "outside __pycache__"),
            ("bin/tool", "#!/usr/bin/python3\n"),
            ("pkg/bin/data", "a package's own bin/ stays"),
            ("pkg-1.0.dist-info/RECORD", "pkg/__init__.py,,\n"),
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        let names = |keep: &Keep| -> (Vec<String>, Vec<SlimItem>) {
            let c = collect_with(&root, "p", keep).unwrap();
            (c.files.into_iter().map(|f| f.name).collect(), c.slimmed)
        };
        let (plain, _) = names(&Keep::default());
        assert!(!plain.iter().any(|n| n.ends_with(".pyc")), "{plain:?}");

        let (with_bytecode, slimmed) = names(&Keep {
            bytecode_tag: Some("cpython-312".into()),
            slim: false,
        });
        let pycs: Vec<&String> = with_bytecode
            .iter()
            .filter(|n| n.contains("__pycache__"))
            .collect();
        assert_eq!(pycs, ["p/pkg/__pycache__/__init__.cpython-312.pyc"]);
        assert!(with_bytecode.contains(&"p/bin/tool".to_owned()));
        assert!(slimmed.is_empty());

        let (slim, slimmed) = names(&Keep {
            bytecode_tag: Some("cpython-312".into()),
            slim: true,
        });
        assert!(
            !slim
                .iter()
                .any(|n| n.starts_with("p/bin/") || n.ends_with(".pyi")),
            "{slim:?}"
        );
        assert!(slim.contains(&"p/pkg/bin/data".to_owned()), "{slim:?}");
        assert!(
            slim.contains(&"p/pkg-1.0.dist-info/RECORD".to_owned()),
            "dist-info stays"
        );
        assert_eq!(
            slimmed,
            [
                SlimItem {
                    what: SLIM_STUBS.into(),
                    files: 1,
                    bytes: 7
                },
                SlimItem {
                    what: SLIM_BIN.into(),
                    files: 1,
                    bytes: 19
                },
            ]
        );
    }
}
