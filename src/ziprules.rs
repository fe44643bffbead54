//! The layer rules applied to the central directory's entries (DESIGN section 6; the list is in
//! [`crate::zipcheck`]'s module docs): names that are relative and under a layer root, only files and
//! directories, no path both a file and a directory, no renaming extra fields, only stored and deflate, no
//! encryption, and the declared uncompressed total within the limit. Every rule is near-linear in the directory's
//! bytes.

use std::collections::HashSet;

use crate::zipformat::{
    CENTRAL_HEADER_LEN, CentralEntry, SIG_CENTRAL, ZipProblem, check_extra, u16_at, u32_at,
    zip64_values,
};

/// The top-level directories a layer may contain (see the module docs for the choice).
pub const LAYER_ROOTS: &[&str] = &["python", "bin", "lib"];

#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) uncompressed: u64,
    pub(crate) compressed: u64,
}

/// The Unix file type bits of `st_mode`.
const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// Regular files and directories only, by the file type in the external attributes' high half (Unix `st_mode`,
/// which Info-ZIP reads whatever the "made by" host when the type bits are set). No type bits: the name's
/// trailing `/` decides, as in every reader.
fn check_entry_type(name: &str, external: u32, uncompressed: u64) -> Result<(), ZipProblem> {
    let is_dir = name.ends_with('/');
    let special = |why| ZipProblem::SpecialEntry {
        name: name.to_owned(),
        why,
    };
    match (external >> 16) & S_IFMT {
        0 => {}
        S_IFLNK => {
            return Err(ZipProblem::Symlink {
                name: name.to_owned(),
            });
        }
        S_IFREG if is_dir => return Err(special("a file type on a directory name")),
        S_IFDIR if !is_dir => return Err(special("a directory type on a file name")),
        S_IFREG | S_IFDIR => {}
        _ => return Err(special("a device, FIFO, socket or unknown file type")),
    }
    if is_dir && uncompressed != 0 {
        return Err(special("a directory entry with content"));
    }
    Ok(())
}

/// Walks `expected` central-directory headers in `cd`, applying the per-entry rules and the size limit.
pub(crate) fn check_entries(
    cd: &[u8],
    expected: u64,
    max_unzipped_bytes: u64,
) -> Result<(Totals, Vec<CentralEntry>), ZipProblem> {
    let mut totals = Totals::default();
    let mut seen: HashSet<&str> = HashSet::new();
    // `expected` is bounded by the directory's size (see `inspect`).
    let mut entries = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    let mut at = 0usize;
    for index in 0..expected {
        let header = cd.get(at..at + CENTRAL_HEADER_LEN).ok_or_else(|| {
            ZipProblem::Malformed(format!("central directory ends inside entry {index}"))
        })?;
        if u32_at(header, 0) != SIG_CENTRAL {
            return Err(ZipProblem::Malformed(format!(
                "entry {index} has no central directory signature"
            )));
        }
        let flags = u16_at(header, 8);
        let method = u16_at(header, 10);
        let crc32 = u32_at(header, 16);
        let mut compressed = u64::from(u32_at(header, 20));
        let mut uncompressed = u64::from(u32_at(header, 24));
        let name_len = usize::from(u16_at(header, 28));
        let extra_len = usize::from(u16_at(header, 30));
        let comment_len = usize::from(u16_at(header, 32));
        let start_disk = u16_at(header, 34);
        let external = u32_at(header, 38);
        let mut offset = u64::from(u32_at(header, 42));

        let name_start = at + CENTRAL_HEADER_LEN;
        let extra_start = name_start + name_len;
        let next = extra_start + extra_len + comment_len;
        let raw_name = cd.get(name_start..extra_start).ok_or_else(|| {
            ZipProblem::Malformed(format!(
                "central directory ends inside entry {index}'s name"
            ))
        })?;
        let extra = cd
            .get(extra_start..extra_start + extra_len)
            .ok_or_else(|| {
                ZipProblem::Malformed(format!(
                    "central directory ends inside entry {index}'s extra field"
                ))
            })?;
        if next > cd.len() {
            return Err(ZipProblem::Malformed(format!(
                "central directory ends inside entry {index}'s comment"
            )));
        }
        let name = std::str::from_utf8(raw_name).map_err(|_| ZipProblem::UnsafePath {
            name: String::from_utf8_lossy(raw_name).into_owned(),
            why: "the name is not UTF-8",
        })?;
        let records = check_extra(name, extra)?;

        let saturated = |v: u64| v == u64::from(u32::MAX);
        let wanted = [
            saturated(uncompressed),
            saturated(compressed),
            saturated(offset),
            start_disk == u16::MAX,
        ];
        if wanted.iter().any(|&w| w) {
            let values = zip64_values(&records, wanted).ok_or_else(|| {
                ZipProblem::Malformed(format!("entry {name:?} lacks its ZIP64 extra field"))
            })?;
            if let Some(u) = values[0] {
                uncompressed = u;
            }
            if let Some(c) = values[1] {
                compressed = c;
            }
            if let Some(o) = values[2] {
                offset = o;
            }
            if values[3].is_some_and(|d| d != 0) {
                return Err(ZipProblem::MultiDisk);
            }
        } else if start_disk != 0 {
            return Err(ZipProblem::MultiDisk);
        }
        check_name(name)?;
        if !seen.insert(name) {
            return Err(ZipProblem::DuplicateEntry {
                name: name.to_owned(),
            });
        }
        // Bit 0: encrypted; bit 6: strong encryption; bit 13: masked local headers (encrypted directory).
        if flags & (1 | 1 << 6 | 1 << 13) != 0 {
            return Err(ZipProblem::Encrypted {
                name: name.to_owned(),
            });
        }
        if method != 0 && method != 8 {
            return Err(ZipProblem::UnsupportedMethod {
                name: name.to_owned(),
                method,
            });
        }
        check_entry_type(name, external, uncompressed)?;
        totals.uncompressed = totals.uncompressed.saturating_add(uncompressed);
        totals.compressed = totals.compressed.saturating_add(compressed);
        if totals.uncompressed > max_unzipped_bytes {
            return Err(ZipProblem::TooLarge {
                declared: totals.uncompressed,
                limit: max_unzipped_bytes,
            });
        }
        entries.push(CentralEntry {
            name: name.to_owned(),
            flags,
            method,
            crc32,
            compressed_size: compressed,
            uncompressed_size: uncompressed,
            local_header_offset: offset,
        });
        at = next;
    }
    if at != cd.len() {
        return Err(ZipProblem::Malformed(format!(
            "the central directory has {} bytes after its {expected} entries",
            cd.len() - at
        )));
    }
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    if let Some(name) = find_file_and_directory(&names).clash {
        return Err(ZipProblem::FileAndDirectory {
            name: name.to_owned(),
        });
    }
    Ok((totals, entries))
}

/// What [`find_file_and_directory`] found, and the work it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClashCheck<'a> {
    /// The first (in byte order) file name that is also a directory.
    pub(crate) clash: Option<&'a str>,
    /// Bytes touched: the sort keys built, the bytes each comparison shared plus one, the neighbours checked.
    pub(crate) work: u64,
}

/// No name is both a file and a directory (an explicit `name/` entry or the parent of another entry), in
/// near-linear time.
///
/// The names (all distinct) are sorted with `/` ordered before every other byte (keys with `/` as NUL, which no
/// name holds: [`check_name`] refuses it), so that a path's descendants come right after it (`a`, `a/b`,
/// `a/b/c`, `a-b`): a file is also a directory exactly when the next name continues it with a `/`. The cost is
/// the sort's: O(n·log n) comparisons, each costing the bytes its two names share, on the order of the
/// directory's bytes times log2(n) (what [`ClashCheck::work`] counts). Collecting every parent path of every name
/// instead (the earlier check) hashes each name's every prefix, quadratic in its depth: 256 names of 65,535
/// bytes (`python/a/a/…`) in a 16 MiB directory cost 2.7·10^11 bytes hashed.
pub(crate) fn find_file_and_directory<'a>(names: &[&'a str]) -> ClashCheck<'a> {
    let mut work = 0u64;
    let mut keys: Vec<(Vec<u8>, &str)> = names
        .iter()
        .map(|name| {
            work += name.len() as u64;
            let key = name
                .bytes()
                .map(|b| if b == b'/' { 0 } else { b })
                .collect();
            (key, *name)
        })
        .collect();
    keys.sort_unstable_by(|(a, _), (b, _)| {
        let common = common_prefix(a, b);
        work += common as u64 + 1;
        a[common..].cmp(&b[common..])
    });
    let mut clash: Option<&str> = None;
    for pair in keys.windows(2) {
        let ((key, name), (next, _)) = (&pair[0], &pair[1]);
        if name.ends_with('/') {
            continue;
        }
        work += key.len() as u64 + 1;
        if next.len() > key.len() && next.starts_with(key) && next[key.len()] == 0 {
            clash = Some(clash.map_or(*name, |c| c.min(*name)));
        }
    }
    ClashCheck { clash, work }
}

/// The length of the common prefix of `a` and `b`, 16 bytes at a time where they agree.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 16 <= n && a[i..i + 16] == b[i..i + 16] {
        i += 16;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// The path rules: relative, `/`-separated, no traversal, under a layer root.
pub(crate) fn check_name(name: &str) -> Result<(), ZipProblem> {
    let unsafe_path = |why| ZipProblem::UnsafePath {
        name: name.to_owned(),
        why,
    };
    if name.is_empty() {
        return Err(unsafe_path("empty name"));
    }
    if name.contains('\0') {
        return Err(unsafe_path("NUL character"));
    }
    if name.contains('\\') {
        return Err(unsafe_path("backslash"));
    }
    if name.starts_with('/') {
        return Err(unsafe_path("absolute path"));
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err(unsafe_path("drive letter"));
    }
    // A directory entry ends with '/', leaving one empty last component; any other empty one is `//`.
    let body = name.strip_suffix('/').unwrap_or(name);
    for component in body.split('/') {
        match component {
            "" => return Err(unsafe_path("empty path component")),
            "." => return Err(unsafe_path("'.' component")),
            ".." => return Err(unsafe_path("'..' component")),
            _ => {}
        }
    }
    let root = body.split('/').next().unwrap_or("");
    // A root directory's own entry (`python/`) is fine; a file named `python` at the top is not.
    let under_root = LAYER_ROOTS.contains(&root) && name.len() > root.len();
    if !under_root {
        return Err(ZipProblem::OutsideLayerRoots {
            name: name.to_owned(),
        });
    }
    Ok(())
}
