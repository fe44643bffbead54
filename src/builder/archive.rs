//! A deterministic zip writer: the same files give the same bytes, whoever builds them and when.
//!
//! Entries are written in the order given (the caller sorts them), with a fixed timestamp (1980-01-01 00:00,
//! the DOS epoch), Unix permissions normalized to `0644` or `0755`, no extra fields beyond ZIP64 when it is
//! needed, and no directory entries (unzip and Lambda create parent directories from the file paths).
//! Entries are deflated in parallel on every core with libdeflate (a whole-buffer compressor: at the same
//! level 6 it is about 3x quicker than zlib, the deflate of `zip -r`, and its output a little smaller; see
//! [`LEVEL`]); a file that deflate would not shrink is stored. Memory
//! stays bounded: files are compressed in batches of about [`BATCH_BYTES`] and each batch is written out, in
//! order, before the next starts.
//!
//! Only the install tree goes in: a symbolic link in it is resolved by [`resolve_link`] one component at a time
//! without ever leaving the tree (a link that stays inside is stored as the file it points to; one that
//! leads out fails the build, naming it), so nothing elsewhere on the machine is read or even looked at.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::{OnceLock, atomic::AtomicUsize, atomic::Ordering},
};

use libdeflater::{CompressionError, CompressionLvl, Compressor};

use super::contain;
use sha2::{Digest, Sha256};

/// DOS date of 1980-01-01 (year offset 0, month 1, day 1): the earliest a zip can say.
const DOS_DATE: u16 = (1 << 5) | 1;
const DOS_TIME: u16 = 0;
/// Uncompressed bytes compressed concurrently before they are written out.
pub const BATCH_BYTES: u64 = 64 * 1024 * 1024;
/// Deflate level: the default of zlib and of `zip -r`, a good size/time balance for layers that are built once
/// and read often. libdeflate's level 6 gives output no larger than zlib's level 6 (on numpy + pandas 28.98 MB
/// of deflate data against zlib's 29.22 MB) in about a third of the CPU time; the bytes depend on libdeflate's
/// version (pinned by Cargo.lock) and this level, never on the machine or the thread count.
const LEVEL: i32 = 6;

use crate::zipformat::{
    SIG_CENTRAL as CENTRAL_HEADER, SIG_EOCD as END_OF_CENTRAL, SIG_LOCAL as LOCAL_HEADER,
    SIG_ZIP64_EOCD as ZIP64_END_OF_CENTRAL, SIG_ZIP64_LOCATOR as ZIP64_LOCATOR,
    ZIP64_EXTRA_ID as ZIP64_EXTRA,
};
/// "Made by" host 3 (Unix), so readers honour the permission bits in the external attributes.
const MADE_BY_UNIX: u16 = 3 << 8;
const VERSION_DEFAULT: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// General purpose flag bit 11: the name is UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
const METHOD_STORED: u16 = 0;
const METHOD_DEFLATED: u16 = 8;

/// How many symbolic links one path may go through (Linux's own limit, `MAXSYMLINKS`).
const MAX_LINK_HOPS: usize = 40;

/// Resolves `relative` (a path inside `root` that is a symbolic link, or runs through one) to the path it
/// denotes, reading links one component at a time (`readlink`, never `stat` through a link) and refusing any
/// step out of `root`. `root` must be canonical (no links in it). The result is inside `root` and has no
/// symbolic link in it.
pub fn resolve_link(root: &Path, relative: &Path) -> io::Result<PathBuf> {
    use std::path::Component;

    let shown = relative.display();
    let outside = |target: &Path| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "symbolic link {shown} leads outside the install tree (via {}): only files inside it are zipped",
                target.display()
            ),
        )
    };
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = relative
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut hops = 0usize;
    while let Some(part) = pending.pop() {
        match Path::new(&part).components().next() {
            Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                if !resolved.pop() {
                    return Err(outside(relative));
                }
                continue;
            }
            Some(Component::Normal(_)) => {}
            Some(Component::RootDir | Component::Prefix(_)) => return Err(outside(relative)),
        }
        resolved.push(&part);
        let here = root.join(&resolved);
        let metadata = std::fs::symlink_metadata(&here).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "symbolic link {shown} is dangling ({}: {e})",
                    here.display()
                ),
            )
        })?;
        if !metadata.file_type().is_symlink() {
            continue;
        }
        hops += 1;
        if hops > MAX_LINK_HOPS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("symbolic link {shown} goes through more than {MAX_LINK_HOPS} links"),
            ));
        }
        let target = std::fs::read_link(&here)?;
        resolved.pop();
        let target_rel = if target.is_absolute() {
            // An absolute link may still name a place inside the tree.
            resolved = PathBuf::new();
            target
                .strip_prefix(root)
                .map_err(|_| outside(&target))?
                .to_path_buf()
        } else {
            target
        };
        pending.extend(
            target_rel
                .components()
                .rev()
                .map(|c| c.as_os_str().to_owned()),
        );
    }
    Ok(root.join(resolved))
}

/// One file to put in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipSource {
    /// The path inside the archive, `/`-separated, relative.
    pub name: String,
    /// Where the content is read from.
    pub path: PathBuf,
    /// Whether the entry gets `0755` rather than `0644`.
    pub executable: bool,
    /// The file as it was listed: when set, it is opened without following any link and must still be that
    /// file ([`contain::open_listed`]); the builder sets it for every file of an install tree.
    pub expect: Option<contain::FileId>,
}

impl ZipSource {
    /// Opens the content for reading (see [`ZipSource::expect`]).
    pub fn open(&self) -> io::Result<File> {
        match self.expect {
            Some(expect) => contain::open_listed(&self.path, expect),
            None => File::open(&self.path),
        }
    }

    /// Reads the whole content.
    pub fn read(&self) -> io::Result<Vec<u8>> {
        use std::io::Read as _;
        let mut file = self.open()?;
        let mut out = Vec::with_capacity(self.expect.map_or(0, |e| e.len as usize));
        file.read_to_end(&mut out)?;
        Ok(out)
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipSummary {
    pub entries: usize,
    /// Sum of the entries' uncompressed sizes.
    pub unzipped_bytes: u64,
    /// Size of the archive file.
    pub zipped_bytes: u64,
    /// sha256 of the archive file.
    pub sha256: [u8; 32],
}

/// A compressed entry waiting to be written.
struct Compressed {
    method: u16,
    crc: u32,
    size: u64,
    data: Vec<u8>,
}

/// Where a written entry's local header starts, for the central directory.
struct Written {
    method: u16,
    crc: u32,
    size: u64,
    compressed_size: u64,
    offset: u64,
}

/// Writes `sources` (in the given order) to a new zip file at `out` (created or truncated).
pub fn write_zip(sources: &[ZipSource], out: &Path) -> io::Result<ZipSummary> {
    write_zip_to(sources, &File::create(out)?)
}

/// Writes `sources` (in the given order) into `file`, from its current position (a new, empty file), and
/// syncs it; the caller keeps the file open, e.g. to upload exactly what was written.
pub fn write_zip_to(sources: &[ZipSource], file: &File) -> io::Result<ZipSummary> {
    let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let workers = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let mut written = Vec::with_capacity(sources.len());

    for batch in batches(sources)? {
        for (source, compressed) in batch.iter().zip(compress_all(batch, workers)?) {
            let offset = writer.position;
            write_local_header(&mut writer, source, &compressed)?;
            writer.write_all(&compressed.data)?;
            written.push(Written {
                method: compressed.method,
                crc: compressed.crc,
                size: compressed.size,
                compressed_size: compressed.data.len() as u64,
                offset,
            });
        }
    }

    let central_start = writer.position;
    for (source, entry) in sources.iter().zip(&written) {
        write_central_header(&mut writer, source, entry)?;
    }
    let central_size = writer.position - central_start;
    write_end(
        &mut writer,
        written.len() as u64,
        central_size,
        central_start,
    )?;

    let zipped_bytes = writer.position;
    let (inner, sha256) = writer.finish();
    inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(ZipSummary {
        entries: written.len(),
        unzipped_bytes: written.iter().map(|w| w.size).sum(),
        zipped_bytes,
        sha256,
    })
}

/// Splits the sources into consecutive runs of about [`BATCH_BYTES`] (by file size on disk).
fn batches(sources: &[ZipSource]) -> io::Result<Vec<&[ZipSource]>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, source) in sources.iter().enumerate() {
        bytes += match source.expect {
            Some(expect) => expect.len,
            None => std::fs::metadata(&source.path)?.len(),
        };
        if bytes >= BATCH_BYTES {
            out.push(&sources[start..=i]);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < sources.len() {
        out.push(&sources[start..]);
    }
    Ok(out)
}

/// Compresses every source of a batch on `workers` threads; results keep the batch's order.
fn compress_all(batch: &[ZipSource], workers: usize) -> io::Result<Vec<Compressed>> {
    let slots: Vec<OnceLock<io::Result<Compressed>>> =
        batch.iter().map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(batch.len()) {
            scope.spawn(|| {
                // One compressor per thread: it holds libdeflate's working memory (a few hundred KiB).
                let mut compressor = match CompressionLvl::new(LEVEL) {
                    Ok(level) => Compressor::new(level),
                    Err(_) => return,
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(source) = batch.get(i) else { break };
                    // Each slot is claimed by exactly one index, so `set` can't find it filled.
                    let _ = slots[i].set(compress(&mut compressor, source));
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|| Err(io::Error::other("a compression worker stopped early")))
        })
        .collect()
}

fn compress(compressor: &mut Compressor, source: &ZipSource) -> io::Result<Compressed> {
    let raw = source.read()?;
    let crc = crc32fast::hash(&raw);
    let size = raw.len() as u64;
    // Room for one byte less than the file: deflate output that doesn't fit would not shrink it, so the
    // file is stored (the same choice as comparing sizes afterwards, without writing the larger output).
    let mut deflated = vec![0; raw.len().saturating_sub(1)];
    match compressor.deflate_compress(&raw, &mut deflated) {
        Ok(len) => {
            deflated.truncate(len);
            Ok(Compressed {
                method: METHOD_DEFLATED,
                crc,
                size,
                data: deflated,
            })
        }
        Err(CompressionError::InsufficientSpace) => Ok(Compressed {
            method: METHOD_STORED,
            crc,
            size,
            data: raw,
        }),
    }
}

fn flags(name: &str) -> u16 {
    if name.is_ascii() { 0 } else { FLAG_UTF8 }
}

fn mode(executable: bool) -> u32 {
    if executable { 0o100_755 } else { 0o100_644 }
}

fn name_len(name: &str) -> io::Result<u16> {
    u16::try_from(name.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path too long: {name}"),
        )
    })
}

fn write_local_header<W: Write>(
    w: &mut W,
    source: &ZipSource,
    entry: &Compressed,
) -> io::Result<()> {
    let compressed_size = entry.data.len() as u64;
    let zip64 = entry.size >= u64::from(u32::MAX) || compressed_size >= u64::from(u32::MAX);
    let mut extra = Vec::new();
    if zip64 {
        extra.extend(ZIP64_EXTRA.to_le_bytes());
        extra.extend(16u16.to_le_bytes());
        extra.extend(entry.size.to_le_bytes());
        extra.extend(compressed_size.to_le_bytes());
    }
    put32(w, LOCAL_HEADER)?;
    put16(
        w,
        if zip64 {
            VERSION_ZIP64
        } else {
            VERSION_DEFAULT
        },
    )?;
    put16(w, flags(&source.name))?;
    put16(w, entry.method)?;
    put16(w, DOS_TIME)?;
    put16(w, DOS_DATE)?;
    put32(w, entry.crc)?;
    put32(w, clamp32(compressed_size, zip64))?;
    put32(w, clamp32(entry.size, zip64))?;
    put16(w, name_len(&source.name)?)?;
    put16(w, extra.len() as u16)?;
    w.write_all(source.name.as_bytes())?;
    w.write_all(&extra)
}

fn write_central_header<W: Write>(
    w: &mut W,
    source: &ZipSource,
    entry: &Written,
) -> io::Result<()> {
    // ZIP64 extra: only the fields that overflow, in the order the spec fixes.
    let mut extra = Vec::new();
    for value in [entry.size, entry.compressed_size, entry.offset] {
        if value >= u64::from(u32::MAX) {
            extra.extend(value.to_le_bytes());
        }
    }
    let zip64 = !extra.is_empty();
    if zip64 {
        let mut header = ZIP64_EXTRA.to_le_bytes().to_vec();
        header.extend((extra.len() as u16).to_le_bytes());
        extra.splice(0..0, header);
    }
    let version = if zip64 {
        VERSION_ZIP64
    } else {
        VERSION_DEFAULT
    };
    put32(w, CENTRAL_HEADER)?;
    put16(w, MADE_BY_UNIX | version)?;
    put16(w, version)?;
    put16(w, flags(&source.name))?;
    put16(w, entry.method)?;
    put16(w, DOS_TIME)?;
    put16(w, DOS_DATE)?;
    put32(w, entry.crc)?;
    put32(
        w,
        clamp32(
            entry.compressed_size,
            entry.compressed_size >= u64::from(u32::MAX),
        ),
    )?;
    put32(w, clamp32(entry.size, entry.size >= u64::from(u32::MAX)))?;
    put16(w, name_len(&source.name)?)?;
    put16(w, extra.len() as u16)?;
    put16(w, 0)?; // comment length
    put16(w, 0)?; // disk number
    put16(w, 0)?; // internal attributes
    put32(w, mode(source.executable) << 16)?;
    put32(
        w,
        clamp32(entry.offset, entry.offset >= u64::from(u32::MAX)),
    )?;
    w.write_all(source.name.as_bytes())?;
    w.write_all(&extra)
}

fn write_end<W: Write>(
    w: &mut HashingWriter<W>,
    entries: u64,
    central_size: u64,
    central_start: u64,
) -> io::Result<()> {
    let zip64 = entries >= u64::from(u16::MAX)
        || central_size >= u64::from(u32::MAX)
        || central_start >= u64::from(u32::MAX);
    if zip64 {
        let record_start = w.position;
        put32(w, ZIP64_END_OF_CENTRAL)?;
        put64(w, 44)?; // size of the rest of this record
        put16(w, MADE_BY_UNIX | VERSION_ZIP64)?;
        put16(w, VERSION_ZIP64)?;
        put32(w, 0)?; // this disk
        put32(w, 0)?; // disk with the central directory
        put64(w, entries)?;
        put64(w, entries)?;
        put64(w, central_size)?;
        put64(w, central_start)?;
        put32(w, ZIP64_LOCATOR)?;
        put32(w, 0)?;
        put64(w, record_start)?;
        put32(w, 1)?; // total disks
    }
    let entries16 = if zip64 { u16::MAX } else { entries as u16 };
    put32(w, END_OF_CENTRAL)?;
    put16(w, 0)?;
    put16(w, 0)?;
    put16(w, entries16)?;
    put16(w, entries16)?;
    put32(w, clamp32(central_size, zip64))?;
    put32(w, clamp32(central_start, zip64))?;
    put16(w, 0) // comment length
}

/// The 32-bit field value: the real one, or `0xFFFFFFFF` when the ZIP64 extra carries it.
fn clamp32(value: u64, zip64: bool) -> u32 {
    if zip64 { u32::MAX } else { value as u32 }
}

fn put16<W: Write>(w: &mut W, v: u16) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn put32<W: Write>(w: &mut W, v: u32) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn put64<W: Write>(w: &mut W, v: u64) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

/// Counts and hashes everything written, so the sha256 needs no second read of the file.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    position: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            position: 0,
        }
    }

    fn finish(self) -> (W, [u8; 32]) {
        (self.inner, self.hasher.finalize().into())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn tree(dir: &Path, files: &[(&str, &[u8], bool)]) -> Vec<ZipSource> {
        files
            .iter()
            .map(|(name, content, executable)| {
                let path = dir.join(name.replace('/', "_"));
                std::fs::write(&path, content).unwrap();
                ZipSource {
                    name: (*name).to_owned(),
                    path,
                    executable: *executable,
                    expect: None,
                }
            })
            .collect()
    }

    #[test]
    fn archive_reads_back_with_fixed_times_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let big = b"abcdefgh".repeat(10_000);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: incompressible enough that deflate can't shrink it.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let sources = tree(
            dir.path(),
            &[
                ("python/a.py", b"print('a')\n", false),
                ("python/bin/tool", b"#!/bin/sh\necho hi\n", true),
                ("python/big.txt", &big, false),
                ("python/empty", b"", false),
                ("python/noise.bin", &random, false),
                ("python/ünï.txt", b"utf8 name", false),
            ],
        );
        let out = dir.path().join("out.zip");
        let summary = write_zip(&sources, &out).unwrap();
        assert_eq!(summary.entries, 6);
        assert_eq!(
            summary.unzipped_bytes,
            (11 + 18 + big.len() + 4096 + 9) as u64
        );
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(summary.zipped_bytes, bytes.len() as u64);
        assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert!(
            bytes.len() < big.len() / 10,
            "the repetitive file is deflated"
        );

        let mut archive = ::zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
        for (i, source) in sources.iter().enumerate() {
            let mut entry = archive.by_index(i).unwrap();
            assert_eq!(entry.name(), source.name);
            assert_eq!(
                entry.unix_mode(),
                Some(if source.executable {
                    0o100_755
                } else {
                    0o100_644
                })
            );
            let t = entry.last_modified().unwrap();
            assert_eq!(
                (t.year(), t.month(), t.day(), t.hour(), t.minute()),
                (1980, 1, 1, 0, 0)
            );
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            assert_eq!(
                content,
                std::fs::read(&source.path).unwrap(),
                "{}",
                source.name
            );
        }
        let noise = archive.by_name("python/noise.bin").unwrap();
        assert_eq!(
            noise.compression(),
            ::zip::CompressionMethod::Stored,
            "incompressible data is stored"
        );
    }

    #[test]
    fn same_input_gives_same_bytes_whatever_the_file_times() {
        let dir = tempfile::tempdir().unwrap();
        let sources = tree(
            dir.path(),
            &[
                ("python/x.py", b"x = 1\n", false),
                ("python/y.py", b"y = 2\n", false),
            ],
        );
        let first = dir.path().join("1.zip");
        let a = write_zip(&sources, &first).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        for s in &sources {
            std::fs::write(&s.path, std::fs::read(&s.path).unwrap()).unwrap();
        }
        let second = dir.path().join("2.zip");
        let b = write_zip(&sources, &second).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            std::fs::read(first).unwrap(),
            std::fs::read(second).unwrap()
        );
    }

    #[test]
    fn many_entries_switch_to_zip64() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one");
        std::fs::write(&path, b"1").unwrap();
        let count = usize::from(u16::MAX) + 10;
        let sources: Vec<ZipSource> = (0..count)
            .map(|i| ZipSource {
                name: format!("python/f{i:06}"),
                path: path.clone(),
                executable: false,
                expect: None,
            })
            .collect();
        let out = dir.path().join("many.zip");
        let summary = write_zip(&sources, &out).unwrap();
        assert_eq!(summary.entries, count);
        let bytes = std::fs::read(&out).unwrap();
        let eocd = &bytes[bytes.len() - 22..];
        assert_eq!(
            &eocd[8..10],
            &[0xff, 0xff],
            "the classic record defers to ZIP64"
        );
        let archive = ::zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
        assert_eq!(archive.len(), count);
        assert_eq!(
            archive.name_for_index(count - 1),
            Some(format!("python/f{:06}", count - 1).as_str())
        );
    }

    #[test]
    fn links_inside_the_tree_resolve_and_links_out_of_it_fail_naming_them() {
        use std::os::unix::fs::symlink;

        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, "credentials").unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("pkg/sub")).unwrap();
        std::fs::write(root.join("pkg/real.py"), "x = 1\n").unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        // Inside: relative, through `..`, absolute into the tree, a chain, through a linked folder.
        symlink("real.py", root.join("pkg/alias.py")).unwrap();
        symlink("../real.py", root.join("pkg/sub/up.py")).unwrap();
        symlink(root.join("pkg/real.py"), root.join("pkg/absolute.py")).unwrap();
        symlink("alias.py", root.join("pkg/chain.py")).unwrap();
        symlink("pkg", root.join("linked")).unwrap();
        for link in [
            "pkg/alias.py",
            "pkg/sub/up.py",
            "pkg/absolute.py",
            "pkg/chain.py",
            "linked/real.py",
        ] {
            assert_eq!(
                resolve_link(&root, Path::new(link)).unwrap(),
                root.join("pkg/real.py"),
                "{link}"
            );
        }
        // Outside: up and out, absolute elsewhere, out and back in, a folder link leading out, dangling, a loop.
        symlink("../../secret.txt", root.join("pkg/out.py")).unwrap();
        symlink(&outside, root.join("pkg/abs-out.py")).unwrap();
        symlink("../../tree/pkg/real.py", root.join("pkg/round-trip.py")).unwrap();
        symlink(dir.path(), root.join("escape")).unwrap();
        symlink("missing.py", root.join("pkg/dangling.py")).unwrap();
        symlink("loop-b", root.join("loop-a")).unwrap();
        symlink("loop-a", root.join("loop-b")).unwrap();
        for (link, says) in [
            ("pkg/out.py", "leads outside the install tree"),
            ("pkg/abs-out.py", "leads outside the install tree"),
            ("pkg/round-trip.py", "leads outside the install tree"),
            ("escape/secret.txt", "leads outside the install tree"),
            ("pkg/dangling.py", "is dangling"),
            ("loop-a", "more than 40 links"),
        ] {
            let err = resolve_link(&root, Path::new(link))
                .unwrap_err()
                .to_string();
            assert!(err.contains(link) && err.contains(says), "{link}: {err}");
        }
    }

    #[test]
    fn the_builder_zips_inside_links_as_files_and_fails_on_outside_ones() {
        use std::os::unix::fs::symlink;

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.txt"), "credentials").unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("pkg")).unwrap();
        std::fs::write(root.join("pkg/real.py"), "x = 1\n").unwrap();
        symlink("real.py", root.join("pkg/alias.py")).unwrap();

        let collected = crate::builder::collect(&root, "python").unwrap();
        let out = dir.path().join("layer.zip");
        write_zip(&collected.files, &out).unwrap();
        let mut archive = ::zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
        let mut alias = archive.by_name("python/pkg/alias.py").unwrap();
        assert_eq!(
            alias.unix_mode(),
            Some(0o100_644),
            "stored as a regular file"
        );
        let mut content = String::new();
        alias.read_to_string(&mut content).unwrap();
        assert_eq!(content, "x = 1\n");
        drop(alias);
        assert_eq!(archive.len(), 2);

        symlink("../../secret.txt", root.join("pkg/leak.py")).unwrap();
        let err = crate::builder::collect(&root, "python").unwrap_err();
        assert!(
            err.to_string().contains("pkg/leak.py") && err.to_string().contains("outside"),
            "{err}"
        );
    }

    #[test]
    fn batches_cover_every_source_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sources = tree(
            dir.path(),
            &[("a", b"1", false), ("b", b"2", false), ("c", b"3", false)],
        );
        let batches = batches(&sources).unwrap();
        let flat: Vec<&ZipSource> = batches.iter().flat_map(|b| b.iter()).collect();
        assert_eq!(flat, sources.iter().collect::<Vec<_>>());
    }
}
