//! Zip inspection over ranged reads: a layer zip is checked from its central directory, never downloaded.
//!
//! [`inspect`] reads, through any [`RangeReader`] (S3 ranged `GetObject` in production, a byte slice in
//! tests):
//!
//! 1. the last `min(len, 65,557)` bytes: the end-of-central-directory record (EOCD, 22 bytes) followed by a
//!    comment of at most 65,535 bytes must lie there. The EOCD is searched backwards and must account exactly
//!    for the bytes after it (its comment length), so a stray signature inside compressed data is not taken
//!    for it;
//! 2. for ZIP64 archives (any EOCD field saturated), the ZIP64 EOCD locator (20 bytes just before the EOCD)
//!    and the ZIP64 EOCD record it points to (56 bytes);
//! 3. the central directory itself, at most [`Limits::max_central_directory_bytes`] bytes, unless step 1
//!    already holds it.
//!
//! The bytes read therefore depend on the number of entries and the length of their names, never on the size
//! of their contents: a 1 GB layer costs the same few reads as a 1 KB one. [`ZipSummary::bytes_read`] counts
//! them.
//!
//! Rules (every failure is a [`ZipProblem`], a permanent property of the object):
//! - the object is not empty and not larger than any valid layer zip can be ([`MAX_OBJECT_BYTES`]), judged
//!   from its length before anything is read;
//! - it ends with a well-formed EOCD and central directory (else *not a zip* or *truncated*: a zip cut short
//!   loses its EOCD but still starts with a local file header);
//! - one reading only, whatever the extractor: the EOCD ends exactly at the end of the object and its comment
//!   holds no other EOCD signature (readers that search forwards or backwards would pick different records);
//!   the central directory ends exactly where the end records begin (nothing, such as a second directory,
//!   hides in between); ZIP64 end records only when a classic field is saturated, and then the classic fields
//!   that are not saturated agree with them;
//! - no extra field that renames an entry (Info-ZIP Unicode Path `0x7075`, Xceed Unicode `0x554e`): Info-ZIP
//!   `unzip` honours them, Python's `zipfile` does not; extra fields must be well-formed;
//! - only regular files and directories (the Unix file type in the external attributes: no symlinks, devices,
//!   FIFOs or sockets), directories without content, and no path that is both a file and a directory;
//! - single-disk archives only, at least one entry, entries counted by the EOCD all present;
//! - every entry name is relative UTF-8 with `/` separators: no absolute path, drive letter, backslash, NUL,
//!   empty, `.` or `..` component, no duplicates;
//! - every entry lies under one of [`LAYER_ROOTS`]: `python/` (the Python runtimes' search path
//!   `/opt/python`), `bin/` (on `PATH`) and `lib/` (on `LD_LIBRARY_PATH`). The other roots Lambda documents
//!   (`nodejs/`, `java/`, `ruby/`) are only read by other runtimes, and a layerforge layer is compatible with
//!   Python runtimes only, so content there is a sign of a wrong artifact and is refused;
//! - no encrypted entries, and only the stored and deflate methods (what Lambda's extractor handles);
//! - the declared uncompressed total is at most [`MAX_UNZIPPED_BYTES`] (Lambda's limit for a function and
//!   its layers). Declared sizes can lie: Lambda still enforces the limit when it extracts; this check makes
//!   honest oversize layers fail early, with a clear reason.
//!
//! Every rule costs time near-linear in the directory's bytes (at most [`MAX_CENTRAL_DIRECTORY_BYTES`], so at
//! most 364,722 entries): names are hashed once for duplicates, and the file-and-directory rule sorts the names
//! instead of collecting every parent path, whose cost grows with the square of a name's depth (see
//! `find_file_and_directory`). A crafted directory is refused or accepted, never a way to burn the time budget.
//!
//! The parsed directory ([`ZipSummary::directory`]) is what stage two ([`crate::zipstream`]) checks the
//! object's bytes against.

use std::{fmt, future::Future};

/// Lambda's limit on the unzipped size of a function and all its layers.
pub const MAX_UNZIPPED_BYTES: u64 = 262_144_000;

/// The central directory [`inspect`] reads at most, by default: 16 MiB holds well over 100,000 entries with
/// typical site-packages paths, and bounds the entries at 16 MiB / 46 bytes (the fixed header) = 364,722.
pub const MAX_CENTRAL_DIRECTORY_BYTES: u64 = 16 * 1024 * 1024;

/// The largest object a valid layer zip can be, by default: 330,276,864 bytes (315 MiB). A zip is its entries'
/// data plus records, and what passes both stages bounds each part:
/// - data: at most [`MAX_UNZIPPED_BYTES`] stored (stored data is the content), and deflate never grows data by
///   more than 5 bytes per 64 KiB stored block (RFC 1951 3.2.4; zlib's `deflateBound` allows ~0.03%): the
///   allowance of 1/256 (~0.4%, 1,024,000 bytes) is over ten times that;
/// - records: the central directory ([`MAX_CENTRAL_DIRECTORY_BYTES`]); the local headers, which repeat each
///   name and extra field after a 30-byte fixed part (the central one is 46 bytes); data descriptors (at most 24
///   bytes an entry, less than its 46-byte central header); and as much again for local extra fields that are
///   longer than the central ones (writers add a few timestamps): 4 x 16 MiB.
///
/// So 262,144,000 + 1,024,000 + 4 x 16,777,216. An object over it is refused from HeadObject's length, before
/// any byte is read: it could only pass by holding what no layer writer makes.
pub const MAX_OBJECT_BYTES: u64 =
    MAX_UNZIPPED_BYTES + MAX_UNZIPPED_BYTES / 256 + 4 * MAX_CENTRAL_DIRECTORY_BYTES;

/// The EOCD record without its comment.
const EOCD_LEN: u64 = 22;
/// The longest comment an EOCD can carry.
const MAX_COMMENT_LEN: u64 = u16::MAX as u64;
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_LEN: u64 = 56;

use crate::{
    zipformat::{
        CENTRAL_HEADER_LEN, SIG_EOCD, SIG_LOCAL, SIG_ZIP64_EOCD, SIG_ZIP64_LOCATOR, u16_at, u32_at,
        u64_at,
    },
    ziprules::check_entries,
};
pub use crate::{
    zipformat::{CentralDirectory, CentralEntry, InspectError, ZipProblem},
    ziprules::LAYER_ROOTS,
};

/// Bounds on what [`inspect`] accepts and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The declared uncompressed total may not exceed this.
    pub max_unzipped_bytes: u64,
    /// The central directory is read in one request and held in memory: bound it
    /// ([`MAX_CENTRAL_DIRECTORY_BYTES`]).
    pub max_central_directory_bytes: u64,
    /// A longer object is refused before anything is read ([`MAX_OBJECT_BYTES`]).
    pub max_object_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unzipped_bytes: MAX_UNZIPPED_BYTES,
            max_central_directory_bytes: MAX_CENTRAL_DIRECTORY_BYTES,
            max_object_bytes: MAX_OBJECT_BYTES,
        }
    }
}

/// Random access to an object of known length: S3 ranged GETs in production, memory in tests.
pub trait RangeReader {
    /// Why a read failed (a network or service fault: not a property of the zip).
    type Error;

    /// The object's total length in bytes.
    fn len(&self) -> u64;

    /// Whether the object has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exactly the bytes `start..start + len` (the caller never asks beyond [`RangeReader::len`]).
    fn read(
        &self,
        start: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;
}

/// An in-memory object, e.g. a zip built by a test.
impl RangeReader for [u8] {
    type Error = std::convert::Infallible;

    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    async fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, Self::Error> {
        // `inspect` only asks for ranges inside the object; clamp anyway so a bug can't panic here.
        let total = <[u8]>::len(self);
        let start = usize::try_from(start).unwrap_or(total).min(total);
        let end = start
            .saturating_add(usize::try_from(len).unwrap_or(total))
            .min(total);
        Ok(self[start..end].to_vec())
    }
}

/// What a valid layer zip declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipSummary {
    /// Number of central-directory entries (files and directories).
    pub entries: u64,
    /// Sum of the declared uncompressed sizes.
    pub uncompressed_bytes: u64,
    /// Sum of the declared compressed sizes.
    pub compressed_bytes: u64,
    pub central_directory_bytes: u64,
    /// Whether the archive uses ZIP64 end records.
    pub zip64: bool,
    /// How many bytes were read from the object, all requests together.
    pub bytes_read: u64,
    /// How many range requests were made.
    pub reads: u32,
    /// The entries, for stage two.
    pub directory: CentralDirectory,
}

/// Counts what is read and serves ranges already held in the tail buffer without a new request.
struct Tracked<'a, R: RangeReader + ?Sized> {
    reader: &'a R,
    /// The last bytes of the object and where they start.
    tail: Vec<u8>,
    tail_start: u64,
    bytes_read: u64,
    reads: u32,
}

impl<R: RangeReader + ?Sized + Sync> Tracked<'_, R> {
    async fn read(&mut self, start: u64, len: u64) -> Result<Vec<u8>, InspectError<R::Error>> {
        let total = self.reader.len();
        let end = start
            .checked_add(len)
            .filter(|&e| e <= total)
            .ok_or_else(|| {
                ZipProblem::Truncated(format!(
                    "a record at {start}+{len} lies beyond the end of the {total}-byte object"
                ))
            })?;
        if start >= self.tail_start && !self.tail.is_empty() {
            let from = to_usize(start - self.tail_start)?;
            let to = to_usize(end - self.tail_start)?;
            if let Some(bytes) = self.tail.get(from..to) {
                return Ok(bytes.to_vec());
            }
        }
        let bytes = self
            .reader
            .read(start, len)
            .await
            .map_err(InspectError::Read)?;
        self.bytes_read += bytes.len() as u64;
        self.reads += 1;
        if bytes.len() as u64 != len {
            return Err(ZipProblem::Truncated(format!(
                "asked for {len} bytes at {start}, got {}",
                bytes.len()
            ))
            .into());
        }
        Ok(bytes)
    }
}

fn to_usize(n: u64) -> Result<usize, ZipProblem> {
    usize::try_from(n)
        .map_err(|_| ZipProblem::Malformed(format!("offset {n} does not fit in memory")))
}

/// Where the central directory is, as the end records declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Directory {
    entries: u64,
    size: u64,
    offset: u64,
    /// Where the first end record (ZIP64 or classic) starts: the directory must end at or before it.
    end_records_at: u64,
    zip64: bool,
}

/// The classic EOCD fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Eocd {
    disk: u16,
    cd_disk: u16,
    entries_on_disk: u16,
    entries: u16,
    size: u32,
    offset: u32,
}

impl Eocd {
    /// The classic fields that are not saturated must say what the ZIP64 record says.
    fn agrees_with(&self, zip64: &Directory) -> Result<(), ZipProblem> {
        let pairs: [(&str, u64, u64, u64); 3] = [
            (
                "entries",
                u64::from(self.entries),
                u64::from(u16::MAX),
                zip64.entries,
            ),
            (
                "directory size",
                u64::from(self.size),
                u64::from(u32::MAX),
                zip64.size,
            ),
            (
                "directory offset",
                u64::from(self.offset),
                u64::from(u32::MAX),
                zip64.offset,
            ),
        ];
        for (field, classic, saturated, wide) in pairs {
            if classic != saturated && classic != wide {
                return Err(ZipProblem::Zip64Mismatch(format!(
                    "{field} {classic} in the classic record, {wide} in the ZIP64 record"
                )));
            }
        }
        Ok(())
    }

    fn needs_zip64(&self) -> bool {
        self.entries == u16::MAX
            || self.entries_on_disk == u16::MAX
            || self.size == u32::MAX
            || self.offset == u32::MAX
            || self.disk == u16::MAX
            || self.cd_disk == u16::MAX
    }
}

/// Finds the EOCD in `tail` (the object's last bytes): the first signature whose comment length accounts for
/// exactly the bytes after the record, so that its comment covers every later candidate. Returns its position
/// in `tail`.
fn find_eocd(tail: &[u8]) -> Option<usize> {
    let len = tail.len();
    if len < EOCD_LEN as usize {
        return None;
    }
    (0..=len - EOCD_LEN as usize).find(|&p| {
        u32_at(tail, p) == SIG_EOCD && p + EOCD_LEN as usize + u16_at(tail, p + 20) as usize == len
    })
}

/// Whether `bytes` hold the EOCD signature anywhere.
fn holds_eocd_signature(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == SIG_EOCD.to_le_bytes())
}

fn parse_eocd(b: &[u8]) -> Eocd {
    Eocd {
        disk: u16_at(b, 4),
        cd_disk: u16_at(b, 6),
        entries_on_disk: u16_at(b, 8),
        entries: u16_at(b, 10),
        size: u32_at(b, 12),
        offset: u32_at(b, 16),
    }
}

/// Checks the zip behind `reader` against `limits` and the layer rules of the module docs.
pub async fn inspect<R>(reader: &R, limits: &Limits) -> Result<ZipSummary, InspectError<R::Error>>
where
    R: RangeReader + ?Sized + Sync,
{
    let total = reader.len();
    if total == 0 {
        return Err(ZipProblem::Empty.into());
    }
    // From the length alone (HeadObject's): an object no layer can be is not worth a read.
    if total > limits.max_object_bytes {
        return Err(ZipProblem::ObjectTooLarge {
            size: total,
            limit: limits.max_object_bytes,
        }
        .into());
    }
    let mut io = Tracked {
        reader,
        tail: Vec::new(),
        tail_start: total,
        bytes_read: 0,
        reads: 0,
    };
    let tail_len = total.min(EOCD_LEN + MAX_COMMENT_LEN);
    let tail = io.read(total - tail_len, tail_len).await?;
    io.tail_start = total - tail_len;
    io.tail = tail;

    let Some(eocd_in_tail) = find_eocd(&io.tail) else {
        // A zip cut short keeps its first local header but loses the end record.
        let head = if io.tail_start == 0 {
            io.tail.get(..4).map(<[u8]>::to_vec)
        } else if total >= 4 {
            Some(io.read(0, 4).await?)
        } else {
            None
        };
        return Err(match head {
            Some(h) if u32_at(&h, 0) == SIG_LOCAL => {
                ZipProblem::Truncated("the end of central directory record is missing".to_owned())
            }
            _ => ZipProblem::NotAZip("no end of central directory record".to_owned()),
        }
        .into());
    };
    let eocd_at = io.tail_start + eocd_in_tail as u64;
    let eocd = parse_eocd(&io.tail[eocd_in_tail..]);
    // Readers that scan backwards for the signature would take a record in the comment for the real one.
    if holds_eocd_signature(&io.tail[eocd_in_tail + EOCD_LEN as usize..]) {
        return Err(ZipProblem::EndRecordInComment.into());
    }

    // A ZIP64 locator right before the EOCD makes the ZIP64 record authoritative for readers that look for it
    // (Python's zipfile, Info-ZIP) and not for others: it is allowed only when the classic record needs it.
    let has_locator = match eocd_at.checked_sub(ZIP64_LOCATOR_LEN) {
        Some(at) => u32_at(&io.read(at, 4).await?, 0) == SIG_ZIP64_LOCATOR,
        None => false,
    };
    let directory = if has_locator {
        if !eocd.needs_zip64() {
            return Err(ZipProblem::NeedlessZip64.into());
        }
        let directory = zip64_directory(&mut io, eocd_at).await?;
        eocd.agrees_with(&directory)?;
        directory
    } else if eocd.needs_zip64() {
        return Err(ZipProblem::Malformed(
            "ZIP64 fields but no ZIP64 end of central directory locator".to_owned(),
        )
        .into());
    } else {
        if eocd.disk != 0 || eocd.cd_disk != 0 || eocd.entries_on_disk != eocd.entries {
            return Err(ZipProblem::MultiDisk.into());
        }
        Directory {
            entries: u64::from(eocd.entries),
            size: u64::from(eocd.size),
            offset: u64::from(eocd.offset),
            end_records_at: eocd_at,
            zip64: false,
        }
    };

    if directory.entries == 0 {
        return Err(ZipProblem::NoEntries.into());
    }
    if directory.size > limits.max_central_directory_bytes {
        return Err(ZipProblem::CentralDirectoryTooLarge {
            size: directory.size,
            limit: limits.max_central_directory_bytes,
        }
        .into());
    }
    let cd_end = directory
        .offset
        .checked_add(directory.size)
        .ok_or_else(|| ZipProblem::Malformed("central directory offset overflows".to_owned()))?;
    if cd_end > directory.end_records_at {
        return Err(ZipProblem::Truncated(format!(
            "the central directory ({} bytes at {}) runs past the end records at {}",
            directory.size, directory.offset, directory.end_records_at
        ))
        .into());
    }
    if cd_end < directory.end_records_at {
        return Err(ZipProblem::DataAfterCentralDirectory {
            gap: directory.end_records_at - cd_end,
        }
        .into());
    }
    // Each entry takes at least its fixed header: a count that can't fit is a lie (and a memory bomb).
    if directory.entries > directory.size / CENTRAL_HEADER_LEN as u64 {
        return Err(ZipProblem::Malformed(format!(
            "{} entries can't fit in a {}-byte central directory",
            directory.entries, directory.size
        ))
        .into());
    }
    let cd = io.read(directory.offset, directory.size).await?;
    let (totals, entries) = check_entries(&cd, directory.entries, limits.max_unzipped_bytes)?;

    Ok(ZipSummary {
        entries: directory.entries,
        uncompressed_bytes: totals.uncompressed,
        compressed_bytes: totals.compressed,
        central_directory_bytes: directory.size,
        zip64: directory.zip64,
        bytes_read: io.bytes_read,
        reads: io.reads,
        directory: CentralDirectory {
            entries,
            offset: directory.offset,
            object_len: total,
        },
    })
}

/// Reads the ZIP64 locator just before the EOCD at `eocd_at`, then the ZIP64 EOCD record it points to.
async fn zip64_directory<R>(
    io: &mut Tracked<'_, R>,
    eocd_at: u64,
) -> Result<Directory, InspectError<R::Error>>
where
    R: RangeReader + ?Sized + Sync,
{
    let locator_at = eocd_at.checked_sub(ZIP64_LOCATOR_LEN).ok_or_else(|| {
        ZipProblem::Malformed("ZIP64 fields without room for a ZIP64 locator".to_owned())
    })?;
    let locator = io.read(locator_at, ZIP64_LOCATOR_LEN).await?;
    if u32_at(&locator, 0) != SIG_ZIP64_LOCATOR {
        return Err(ZipProblem::Malformed(
            "ZIP64 fields but no ZIP64 end of central directory locator".to_owned(),
        )
        .into());
    }
    if u32_at(&locator, 4) != 0 || u32_at(&locator, 16) > 1 {
        return Err(ZipProblem::MultiDisk.into());
    }
    let record_at = u64_at(&locator, 8);
    if record_at
        .checked_add(ZIP64_EOCD_LEN)
        .is_none_or(|end| end > locator_at)
    {
        return Err(ZipProblem::Malformed(format!(
            "ZIP64 end record offset {record_at} overlaps the locator"
        ))
        .into());
    }
    let record = io.read(record_at, ZIP64_EOCD_LEN).await?;
    if u32_at(&record, 0) != SIG_ZIP64_EOCD {
        return Err(ZipProblem::Malformed(format!(
            "no ZIP64 end of central directory record at {record_at}"
        ))
        .into());
    }
    // The record's own size field (the bytes after it): the record must end exactly where the locator starts.
    let record_end = u64_at(&record, 4)
        .checked_add(record_at + 12)
        .ok_or_else(|| ZipProblem::Malformed("ZIP64 end record size overflows".to_owned()))?;
    if record_end > locator_at {
        return Err(ZipProblem::Malformed(format!(
            "the ZIP64 end record at {record_at} runs into its locator"
        ))
        .into());
    }
    if record_end < locator_at {
        return Err(ZipProblem::DataAfterCentralDirectory {
            gap: locator_at.abs_diff(record_end),
        }
        .into());
    }
    let (disk, cd_disk) = (u32_at(&record, 16), u32_at(&record, 20));
    let (entries_on_disk, entries) = (u64_at(&record, 24), u64_at(&record, 32));
    if disk != 0 || cd_disk != 0 || entries_on_disk != entries {
        return Err(ZipProblem::MultiDisk.into());
    }
    Ok(Directory {
        entries,
        size: u64_at(&record, 40),
        offset: u64_at(&record, 48),
        end_records_at: record_at,
        zip64: true,
    })
}

impl fmt::Display for ZipSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries, {} bytes unzipped, {} bytes read in {} requests",
            self.entries, self.uncompressed_bytes, self.bytes_read, self.reads
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use zip::{CompressionMethod, ZipWriter, write::SimpleFileOptions};

    use super::*;
    use crate::{
        zipformat::{SIG_CENTRAL, ZIP64_EXTRA_ID, check_extra},
        ziprules::{S_IFREG, find_file_and_directory},
    };

    /// How a test zip is written.
    #[derive(Clone, Copy, Default)]
    struct Make {
        large_file: bool,
        zip64_end: bool,
        stored: bool,
    }

    fn make(entries: &[(&str, &[u8])], how: Make) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(if how.stored {
                CompressionMethod::Stored
            } else {
                CompressionMethod::Deflated
            })
            .large_file(how.large_file);
        for (name, data) in entries {
            if name.ends_with('/') {
                w.add_directory(*name, options).unwrap();
            } else {
                w.start_file(*name, options).unwrap();
                w.write_all(data).unwrap();
            }
        }
        if how.zip64_end {
            w.set_zip64_comment(Some(""));
        }
        w.finish().unwrap().into_inner()
    }

    fn layer() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("python/", b""),
            (
                "python/lib/python3.12/site-packages/six.py",
                b"# six\nimport sys\n",
            ),
            (
                "python/lib/python3.12/site-packages/six-1.16.0.dist-info/METADATA",
                b"Name: six\n",
            ),
            ("bin/tool", b"#!/bin/sh\n"),
            ("lib/libfoo.so.1", b"\x7fELF"),
        ]
    }

    fn check(bytes: &[u8]) -> Result<ZipSummary, ZipProblem> {
        block_on(inspect(bytes, &Limits::default())).map_err(|e| match e {
            InspectError::Invalid(p) => p,
            InspectError::Read(never) => match never {},
        })
    }

    /// The tests' futures never wait on I/O (memory reads): a current-thread runtime drives them.
    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Offsets of the central-directory headers, found through the EOCD.
    fn central_headers(zip: &[u8]) -> Vec<usize> {
        let eocd = find_eocd(&zip[zip.len().saturating_sub(65_557)..]).unwrap()
            + zip.len().saturating_sub(65_557);
        let entries = u16_at(zip, eocd + 10) as usize;
        let mut at = u32_at(zip, eocd + 16) as usize;
        let mut out = Vec::new();
        for _ in 0..entries {
            assert_eq!(u32_at(zip, at), SIG_CENTRAL);
            out.push(at);
            at += CENTRAL_HEADER_LEN
                + u16_at(zip, at + 28) as usize
                + u16_at(zip, at + 30) as usize
                + u16_at(zip, at + 32) as usize;
        }
        out
    }

    #[test]
    fn a_layer_zip_passes_and_is_summarised() {
        let zip = make(&layer(), Make::default());
        let summary = check(&zip).unwrap();
        assert_eq!(summary.entries, 5);
        assert_eq!(summary.uncompressed_bytes, (17 + 10 + 10 + 4) as u64);
        assert!(!summary.zip64);
        // A small object is read whole in one request.
        assert_eq!(summary.reads, 1);
        assert_eq!(summary.bytes_read, zip.len() as u64);
    }

    #[test]
    fn zip64_end_records_are_read_only_when_a_classic_field_is_saturated() {
        let mut zip = make(
            &layer(),
            Make {
                large_file: true,
                zip64_end: true,
                ..Make::default()
            },
        );
        // The fixture really is ZIP64: locator before the EOCD and saturated sizes in the central headers.
        let headers = central_headers(&zip);
        assert_eq!(u32_at(&zip, headers[1] + 24), u32::MAX);
        // The zip crate writes the ZIP64 end records for 5 entries: nothing needs them.
        assert_eq!(check(&zip), Err(ZipProblem::NeedlessZip64));

        // With the classic entry counts saturated (as a writer of over 65,535 entries does), they are read.
        let eocd = zip.len() - EOCD_LEN as usize;
        zip[eocd + 8..eocd + 12].copy_from_slice(&[0xFF; 4]);
        let summary = check(&zip).unwrap();
        assert!(summary.zip64);
        assert_eq!(summary.entries, 5);
        assert_eq!(summary.uncompressed_bytes, 41);
        assert_eq!(summary.directory.entries.len(), 5);
        assert_eq!(summary.directory.entries[1].uncompressed_size, 17);

        // Nothing may hide between the ZIP64 end record and its locator either.
        let locator = eocd - ZIP64_LOCATOR_LEN as usize;
        let mut gapped = zip[..locator].to_vec();
        gapped.extend_from_slice(b"junk");
        gapped.extend_from_slice(&zip[locator..]);
        assert_eq!(
            check(&gapped),
            Err(ZipProblem::DataAfterCentralDirectory { gap: 4 })
        );

        // A classic field that is not saturated must agree with the ZIP64 record.
        let mut disagreeing = zip.clone();
        let size = u32_at(&disagreeing, eocd + 12);
        disagreeing[eocd + 12..eocd + 16].copy_from_slice(&(size + 1).to_le_bytes());
        assert_eq!(check(&disagreeing).unwrap_err().code(), "zip64-mismatch");
    }

    #[test]
    fn a_large_zip_costs_the_same_reads_as_a_small_one() {
        // 24 MiB of stored (incompressible or not, stored keeps it big) content in three files.
        let chunk: Vec<u8> = (0..8 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let names = [
            "python/lib/python3.12/site-packages/big/a.bin",
            "python/lib/python3.12/site-packages/big/b.bin",
            "python/lib/python3.12/site-packages/big/c.bin",
        ];
        let big: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, chunk.as_slice())).collect();
        let zip = make(
            &big,
            Make {
                stored: true,
                ..Make::default()
            },
        );
        assert!(zip.len() > 24 * 1024 * 1024);
        let summary = check(&zip).unwrap();
        assert_eq!(summary.uncompressed_bytes, 3 * 8 * 1024 * 1024);
        // The tail (EOCD + maximal comment), the locator probe is served from it, the CD too.
        assert!(summary.bytes_read <= EOCD_LEN + MAX_COMMENT_LEN + summary.central_directory_bytes);
        assert!(
            summary.bytes_read < 70_000,
            "read {} bytes",
            summary.bytes_read
        );
        assert!(summary.reads <= 2, "{} reads", summary.reads);

        // The same names with 1/128 of the content: exactly the same bytes read.
        let small: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, &chunk[..64 * 1024])).collect();
        let small_zip = make(
            &small,
            Make {
                stored: true,
                ..Make::default()
            },
        );
        let small_summary = check(&small_zip).unwrap();
        assert_eq!(small_summary.reads, summary.reads);
        assert_eq!(small_summary.bytes_read, summary.bytes_read);
    }

    #[test]
    fn empty_object_and_non_zips_are_refused() {
        assert_eq!(check(b""), Err(ZipProblem::Empty));
        assert_eq!(check(b"PK").unwrap_err().code(), "not-a-zip");
        assert_eq!(
            check(b"hello, this is plain text and not a zip at all")
                .unwrap_err()
                .code(),
            "not-a-zip"
        );
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_246_822_519) >> 7) as u8)
            .collect();
        assert_eq!(check(&noise).unwrap_err().code(), "not-a-zip");
        // A zip with no entries at all.
        let empty = make(&[], Make::default());
        assert_eq!(check(&empty), Err(ZipProblem::NoEntries));
    }

    #[test]
    fn truncated_zips_are_named_truncated() {
        let zip = make(&layer(), Make::default());
        for cut in [zip.len() / 2, zip.len() - 10, zip.len() - 1] {
            assert_eq!(
                check(&zip[..cut]).unwrap_err().code(),
                "truncated",
                "cut at {cut}"
            );
        }
        // Bytes missing from the middle: the central directory now runs into the end record.
        let headers = central_headers(&zip);
        let mut spliced = zip[..headers[0]].to_vec();
        spliced.extend_from_slice(&zip[headers[0] + 30..]);
        let err = check(&spliced).unwrap_err();
        assert!(
            matches!(err, ZipProblem::Truncated(_) | ZipProblem::Malformed(_)),
            "{err}"
        );
    }

    #[test]
    fn unsafe_and_misplaced_paths_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("python/../../etc/passwd", "unsafe-path"),
            ("../python/x.py", "unsafe-path"),
            ("/python/x.py", "unsafe-path"),
            ("python\\x.py", "unsafe-path"),
            ("C:/python/x.py", "unsafe-path"),
            ("python//x.py", "unsafe-path"),
            ("python/./x.py", "unsafe-path"),
            ("nodejs/node_modules/x.js", "outside-layer-roots"),
            ("site-packages/six.py", "outside-layer-roots"),
            ("python", "outside-layer-roots"),
            ("pythonic/x.py", "outside-layer-roots"),
        ];
        for (name, code) in cases {
            // Written under a same-length placeholder, then renamed in the central directory, since zip
            // writers sanitise names.
            let placeholder = "p".repeat(name.len());
            let mut zip = make(
                &[("python/ok.py", b"x"), (&placeholder, b"y")],
                Make::default(),
            );
            let h = central_headers(&zip)[1];
            zip[h + CENTRAL_HEADER_LEN..h + CENTRAL_HEADER_LEN + name.len()]
                .copy_from_slice(name.as_bytes());
            assert_eq!(check(&zip).unwrap_err().code(), *code, "{name}");
        }
    }

    #[test]
    fn duplicates_encryption_and_odd_methods_are_refused() {
        let base = make(
            &[("python/a.py", b"1"), ("python/b.py", b"2")],
            Make::default(),
        );
        let second = central_headers(&base)[1];

        let mut dup = base.clone();
        dup[second + CENTRAL_HEADER_LEN + 7] = b'a';
        assert_eq!(check(&dup).unwrap_err().code(), "duplicate-entry");

        let mut encrypted = base.clone();
        encrypted[second + 8] |= 1;
        assert_eq!(check(&encrypted).unwrap_err().code(), "encrypted-entry");

        let mut bzip2 = base.clone();
        bzip2[second + 10..second + 12].copy_from_slice(&12u16.to_le_bytes());
        assert_eq!(
            check(&bzip2),
            Err(ZipProblem::UnsupportedMethod {
                name: "python/b.py".into(),
                method: 12
            })
        );
    }

    #[test]
    fn bombs_declaring_huge_sizes_are_refused() {
        // Classic headers: two entries declaring ~4 GiB each.
        let mut zip = make(
            &[("python/a.py", b"1"), ("python/b.py", b"2")],
            Make::default(),
        );
        for h in central_headers(&zip) {
            zip[h + 24..h + 28].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        }
        assert!(matches!(check(&zip), Err(ZipProblem::TooLarge { .. })));

        // Just over the limit in total across many small declarations.
        let mut zip = make(
            &[("python/a.py", b"1"), ("python/b.py", b"2")],
            Make::default(),
        );
        let half = (MAX_UNZIPPED_BYTES / 2 + 1) as u32;
        for h in central_headers(&zip) {
            zip[h + 24..h + 28].copy_from_slice(&half.to_le_bytes());
        }
        assert_eq!(
            check(&zip),
            Err(ZipProblem::TooLarge {
                declared: 2 * u64::from(half),
                limit: MAX_UNZIPPED_BYTES
            })
        );

        // ZIP64: one entry whose extra field declares a terabyte.
        let mut zip = make(
            &[("python/a.py", b"1")],
            Make {
                large_file: true,
                ..Make::default()
            },
        );
        let h = central_headers(&zip)[0];
        let name_len = u16_at(&zip, h + 28) as usize;
        let extra = h + CENTRAL_HEADER_LEN + name_len;
        assert_eq!(u16_at(&zip, extra), ZIP64_EXTRA_ID);
        zip[extra + 4..extra + 12].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(
            matches!(check(&zip), Err(ZipProblem::TooLarge { declared, .. }) if declared >= 1 << 40)
        );

        // An entry count that can't fit in the directory's size is refused before anything is allocated.
        let mut zip = make(&[("python/a.py", b"1")], Make::default());
        let eocd = zip.len() - EOCD_LEN as usize;
        zip[eocd + 8..eocd + 12].copy_from_slice(&[0xFE, 0xFF, 0xFE, 0xFF]);
        assert_eq!(check(&zip).unwrap_err().code(), "malformed-zip");
    }

    #[test]
    fn the_central_directory_size_is_bounded() {
        let zip = make(&layer(), Make::default());
        let limits = Limits {
            max_central_directory_bytes: 100,
            ..Limits::default()
        };
        let err = block_on(inspect(zip.as_slice(), &limits)).unwrap_err();
        assert!(matches!(
            err,
            InspectError::Invalid(ZipProblem::CentralDirectoryTooLarge { limit: 100, .. })
        ));
    }

    #[test]
    fn a_comment_is_allowed_unless_it_holds_an_end_record_and_multi_disk_is_not() {
        let commented = |comment: &[u8]| {
            let mut w = ZipWriter::new(Cursor::new(Vec::new()));
            w.start_file("python/x.py", SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"x").unwrap();
            w.set_raw_comment(comment.to_vec().into_boxed_slice());
            w.finish().unwrap().into_inner()
        };
        assert_eq!(
            check(&commented(b"built by layerforge")).unwrap().entries,
            1
        );
        // A reader scanning backwards for the signature would stop inside the comment.
        assert_eq!(
            check(&commented(b"built by PK\x05\x06 test")),
            Err(ZipProblem::EndRecordInComment)
        );

        let mut spanned = make(&layer(), Make::default());
        let eocd = spanned.len() - EOCD_LEN as usize;
        spanned[eocd + 4] = 1;
        assert_eq!(check(&spanned), Err(ZipProblem::MultiDisk));
    }

    #[test]
    fn the_directory_must_end_where_the_end_record_begins() {
        let zip = make(&layer(), Make::default());
        let eocd = zip.len() - EOCD_LEN as usize;
        // Eight bytes slipped in between the directory and the EOCD (whose offset fields stay right).
        let mut padded = zip[..eocd].to_vec();
        padded.extend_from_slice(b"PK\x01\x02junk");
        padded.extend_from_slice(&zip[eocd..]);
        assert_eq!(
            check(&padded),
            Err(ZipProblem::DataAfterCentralDirectory { gap: 8 })
        );
    }

    #[test]
    fn entry_types_and_renaming_extras_are_checked() {
        let base = make(
            &[("python/a.py", b"1"), ("python/b.py", b"2")],
            Make::default(),
        );
        let second = central_headers(&base)[1];
        let with_mode = |mode: u32| {
            let mut zip = base.clone();
            zip[second + 38..second + 42].copy_from_slice(&(mode << 16).to_le_bytes());
            check(&zip)
        };
        assert!(with_mode(0o100_644).is_ok());
        assert!(with_mode(0).is_ok(), "no type bits: the name decides");
        assert_eq!(
            with_mode(0o120_777),
            Err(ZipProblem::Symlink {
                name: "python/b.py".into()
            })
        );
        for mode in [0o010_644, 0o020_644, 0o060_644, 0o140_644, 0o040_755] {
            assert_eq!(
                with_mode(mode).unwrap_err().code(),
                "special-entry",
                "{mode:o}"
            );
        }

        // Both Unicode name extras rename; an unknown id is fine; a malformed extra is not.
        for (id, code) in [
            (0x7075u16, Some("renaming-extra-field")),
            (0x554e, Some("renaming-extra-field")),
            (0xcafe, None),
        ] {
            let mut body = vec![1u8];
            body.extend(crc32fast::hash(b"python/b.py").to_le_bytes());
            body.extend(b"nodejs/evil");
            let mut record = id.to_le_bytes().to_vec();
            record.extend((body.len() as u16).to_le_bytes());
            record.extend(&body);
            assert_eq!(
                check_extra("python/b.py", &record).err().map(|p| p.code()),
                code
            );
        }
        assert_eq!(
            check_extra("python/b.py", &[0x75, 0x70, 9, 0, 1])
                .unwrap_err()
                .code(),
            "malformed-zip"
        );
    }

    #[test]
    fn a_path_may_not_be_both_a_file_and_a_directory() {
        let clash = make(
            &[("python/a", b"file"), ("python/a/b.py", b"x")],
            Make::default(),
        );
        assert_eq!(
            check(&clash),
            Err(ZipProblem::FileAndDirectory {
                name: "python/a".into()
            })
        );
        let explicit = make(
            &[("python/a", b"file"), ("python/a/", b"")],
            Make::default(),
        );
        assert_eq!(check(&explicit).unwrap_err().code(), "file-and-directory");
        let fine = make(
            &[
                ("python/", b""),
                ("python/a/", b""),
                ("python/a/b.py", b"x"),
                ("python/ab", b"y"),
            ],
            Make::default(),
        );
        assert_eq!(check(&fine).unwrap().entries, 4);
    }

    /// The rule the sort-based check must agree with, the slow way: a file name that another name continues
    /// with a `/`.
    fn clashes_naively<'a>(names: &[&'a str]) -> Option<&'a str> {
        let mut clashes: Vec<&str> = names
            .iter()
            .filter(|f| !f.ends_with('/'))
            .filter(|f| {
                names.iter().any(|n| {
                    n.len() > f.len() && n.starts_with(**f) && n.as_bytes()[f.len()] == b'/'
                })
            })
            .copied()
            .collect();
        clashes.sort_unstable();
        clashes.first().copied()
    }

    #[test]
    fn the_file_and_directory_check_agrees_with_the_rule() {
        // Every set of distinct names over a small alphabet that sorts `-` and `.` between a name and its `/`.
        let parts = [
            "a", "a-b", "a.b", "a/", "a/b", "a/b/", "a/b/c", "a-b/c", "ab", "ab/",
        ];
        let mut checked = 0;
        for mask in 0u32..(1 << parts.len()) {
            let names: Vec<String> = (0..parts.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| format!("python/{}", parts[i]))
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let check = find_file_and_directory(&names);
            assert_eq!(check.clash, clashes_naively(&names), "{names:?}");
            checked += usize::from(check.clash.is_some());
        }
        // Both answers occur (a test that only ever saw `None` would prove nothing).
        assert!(checked > 100 && checked < 1 << parts.len(), "{checked}");
    }

    /// A zip of empty stored files, by hand: quick to write for tens of thousands of entries.
    fn empty_files_zip(names: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offsets = Vec::with_capacity(names.len());
        for name in names {
            offsets.push(u32::try_from(out.len()).unwrap());
            out.extend_from_slice(&SIG_LOCAL.to_le_bytes());
            // Version needed, flags, method (stored), time, date; CRC-32 and both sizes 0.
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0; 12]);
            out.extend_from_slice(&u16::try_from(name.len()).unwrap().to_le_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(name.as_bytes());
        }
        let directory_at = u32::try_from(out.len()).unwrap();
        for (name, offset) in names.iter().zip(&offsets) {
            out.extend_from_slice(&SIG_CENTRAL.to_le_bytes());
            // Made by Unix 2.0, needs 2.0; flags, method, time, date; CRC-32 and sizes 0.
            out.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0; 12]);
            out.extend_from_slice(&u16::try_from(name.len()).unwrap().to_le_bytes());
            // Extra, comment, disk, internal attributes; external: a regular file, 0644.
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&((S_IFREG | 0o644) << 16).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        let directory_len = u32::try_from(out.len()).unwrap() - directory_at;
        let count = u16::try_from(names.len()).unwrap().to_le_bytes();
        out.extend_from_slice(&SIG_EOCD.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&count);
        out.extend_from_slice(&count);
        out.extend_from_slice(&directory_len.to_le_bytes());
        out.extend_from_slice(&directory_at.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    /// What collecting every parent path of every name costs: each prefix up to a `/` hashed.
    fn parent_paths_work(names: &[String]) -> u64 {
        names
            .iter()
            .map(|n| n.match_indices('/').map(|(i, _)| i as u64).sum::<u64>())
            .sum()
    }

    #[test]
    fn a_deep_directory_of_many_entries_is_checked_in_near_linear_work() {
        // 60,000 site-packages files and 180 names of ~55,000 bytes, 27,490 directories deep, under one chain of
        // directories: 15 MiB of central directory, within the 16 MiB limit.
        let mut names: Vec<String> = (0..60_000)
            .map(|i| format!("python/lib/python3.12/site-packages/p{}/m{i}.py", i / 100))
            .collect();
        let deep = format!("python/{}", "a/".repeat(27_490));
        names.extend((0..180).map(|i| format!("{deep}f{i}")));
        let zip = empty_files_zip(&names);
        let summary = check(&zip).unwrap();
        assert_eq!(summary.entries, 60_180);
        assert!(
            summary.central_directory_bytes > 15_000_000,
            "{}",
            summary.central_directory_bytes
        );

        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let bytes: u64 = refs.iter().map(|n| n.len() as u64).sum();
        let check_ok = find_file_and_directory(&refs);
        assert_eq!(check_ok.clash, None);
        // The same directory with a file where the deep chain has a directory is refused, at the same cost.
        let mut clashing = refs.clone();
        clashing.push("python/a/a/a");
        let check_clash = find_file_and_directory(&clashing);
        assert_eq!(check_clash.clash, Some("python/a/a/a"));

        // The work: the keys (the names' bytes) and the sort, O(bytes · log2 n); the parent-path sets of the
        // earlier check would hash each deep name's 27,490 prefixes, 1.4·10^11 bytes in all.
        let log2_n = u64::from(refs.len().ilog2()) + 1;
        for check in [check_ok, check_clash] {
            assert!(
                check.work <= bytes * (log2_n + 2),
                "work {} for {bytes} bytes of names",
                check.work
            );
        }
        let quadratic = parent_paths_work(&names);
        assert!(quadratic > 100_000_000_000, "{quadratic}");
        assert!(
            check_ok.work * 100 < quadratic,
            "work {} is not far below the parent-path sets' {quadratic}",
            check_ok.work
        );
        eprintln!(
            "file-and-directory check: {} entries, {bytes} bytes of names, work {} (parent-path sets: {quadratic})",
            refs.len(),
            check_ok.work
        );
    }

    /// A reader of a given length that counts the reads asked of it (and answers none).
    struct Counting {
        len: u64,
        reads: std::sync::atomic::AtomicU32,
    }

    impl RangeReader for Counting {
        type Error = &'static str;
        fn len(&self) -> u64 {
            self.len
        }
        async fn read(&self, _start: u64, _len: u64) -> Result<Vec<u8>, Self::Error> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err("counted")
        }
    }

    #[test]
    fn an_object_larger_than_any_layer_is_refused_before_any_read() {
        // The figure the constant's docs justify.
        assert_eq!(MAX_OBJECT_BYTES, 330_276_864);
        let over = Counting {
            len: MAX_OBJECT_BYTES + 1,
            reads: Default::default(),
        };
        match block_on(inspect(&over, &Limits::default())) {
            Err(InspectError::Invalid(problem)) => {
                assert_eq!(
                    problem,
                    ZipProblem::ObjectTooLarge {
                        size: MAX_OBJECT_BYTES + 1,
                        limit: MAX_OBJECT_BYTES
                    }
                );
                assert_eq!(problem.code(), "object-too-large");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(over.reads.load(std::sync::atomic::Ordering::SeqCst), 0);
        // At the limit the check goes on to read the end of the object.
        let at = Counting {
            len: MAX_OBJECT_BYTES,
            reads: Default::default(),
        };
        assert!(matches!(
            block_on(inspect(&at, &Limits::default())),
            Err(InspectError::Read("counted"))
        ));
        assert_eq!(at.reads.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The limit is the caller's: a small one refuses a valid zip just over it.
        let zip = make(&layer(), Make::default());
        let limits = Limits {
            max_object_bytes: zip.len() as u64 - 1,
            ..Limits::default()
        };
        let err = block_on(inspect(zip.as_slice(), &limits)).unwrap_err();
        assert!(matches!(
            err,
            InspectError::Invalid(ZipProblem::ObjectTooLarge { .. })
        ));
    }

    /// A reader whose reads fail, as a network would.
    struct Failing(u64);

    impl RangeReader for Failing {
        type Error = &'static str;
        fn len(&self) -> u64 {
            self.0
        }
        async fn read(&self, _start: u64, _len: u64) -> Result<Vec<u8>, Self::Error> {
            Err("connection reset")
        }
    }

    #[test]
    fn read_failures_are_not_zip_problems() {
        let err = block_on(inspect(&Failing(1000), &Limits::default())).unwrap_err();
        assert!(matches!(err, InspectError::Read("connection reset")));
    }
}
