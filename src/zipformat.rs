//! The zip format as the writer (`builder::archive`) and both stages of the check ([`crate::zipcheck`] over the
//! central directory, [`crate::zipstream`] over the bytes) read it: record signatures and ids (APPNOTE 6.3),
//! little-endian fields, extra fields, the directory's entries, and what can be wrong with a zip
//! ([`ZipProblem`]). Below all three, so each speaks of the same records without reaching into another.

pub(crate) const SIG_LOCAL: u32 = 0x0403_4b50;
pub(crate) const SIG_CENTRAL: u32 = 0x0201_4b50;
pub(crate) const SIG_EOCD: u32 = 0x0605_4b50;
pub(crate) const SIG_ZIP64_EOCD: u32 = 0x0606_4b50;
pub(crate) const SIG_ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// Extra-field header id of the ZIP64 extended information.
pub(crate) const ZIP64_EXTRA_ID: u16 = 0x0001;
/// The fixed part of a central-directory header.
pub(crate) const CENTRAL_HEADER_LEN: usize = 46;

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// One central-directory entry: what stage two ([`crate::zipstream`]) checks each local header and the data
/// against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralEntry {
    pub name: String,
    /// The general purpose bit flags.
    pub flags: u16,
    pub method: u16,
    pub crc32: u32,
    /// The real sizes and offset (from the ZIP64 extra field where the classic field is saturated).
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub local_header_offset: u64,
}

/// The checked central directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CentralDirectory {
    /// In directory order.
    pub entries: Vec<CentralEntry>,
    /// Where the directory starts: the entries' local records end exactly here.
    pub offset: u64,
    /// The length of the whole object.
    pub object_len: u64,
}

/// A permanent defect of the object: retrying can't help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZipProblem {
    #[error("the object is empty")]
    Empty,
    #[error(
        "the object is {size} bytes, over the {limit} bytes any valid layer zip can be (Lambda's unzipped limit \
         plus headers)"
    )]
    ObjectTooLarge { size: u64, limit: u64 },
    #[error("not a zip: {0}")]
    NotAZip(String),
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("malformed zip: {0}")]
    Malformed(String),
    #[error("multi-disk (spanned) archives are not supported")]
    MultiDisk,
    #[error("the zip has no entries")]
    NoEntries,
    #[error("the central directory is {size} bytes, over the {limit}-byte limit")]
    CentralDirectoryTooLarge { size: u64, limit: u64 },
    #[error("unsafe entry path {name:?}: {why}")]
    UnsafePath { name: String, why: &'static str },
    #[error("entry {name:?} is outside the layer roots (python/, bin/, lib/)")]
    OutsideLayerRoots { name: String },
    #[error("entry {name:?} appears twice")]
    DuplicateEntry { name: String },
    #[error("entry {name:?} is encrypted")]
    Encrypted { name: String },
    #[error(
        "entry {name:?} uses compression method {method} (only stored and deflate are supported)"
    )]
    UnsupportedMethod { name: String, method: u16 },
    #[error("declared uncompressed size {declared} bytes is over the {limit}-byte limit")]
    TooLarge { declared: u64, limit: u64 },
    #[error("the archive comment holds another end of central directory record")]
    EndRecordInComment,
    #[error(
        "{gap} bytes lie between the central directory's end and the end records (a hidden directory?)"
    )]
    DataAfterCentralDirectory { gap: u64 },
    #[error("ZIP64 end records although no classic end record field is saturated")]
    NeedlessZip64,
    #[error("the ZIP64 end record disagrees with the classic one: {0}")]
    Zip64Mismatch(String),
    #[error("entry {name:?} has an extra field {id:#06x} that renames it")]
    RenamingExtraField { name: String, id: u16 },
    #[error("entry {name:?} is a symbolic link")]
    Symlink { name: String },
    #[error("entry {name:?} is not a regular file or directory: {why}")]
    SpecialEntry { name: String, why: &'static str },
    #[error("{name:?} is both a file and a directory")]
    FileAndDirectory { name: String },
    // Stage two (`zipstream`): what the object's bytes hold.
    #[error("entry {name:?}: the local header's {field} differs from the central directory's")]
    LocalHeaderMismatch { name: String, field: &'static str },
    #[error("the entries do not tile the archive: {0}")]
    NotTiled(String),
    #[error("entry {name:?}: CRC-32 {actual:#010x}, the directory says {declared:#010x}")]
    CrcMismatch {
        name: String,
        declared: u32,
        actual: u32,
    },
    #[error("entry {name:?}: {what} is {actual} bytes, the directory says {declared}")]
    SizeMismatch {
        name: String,
        what: &'static str,
        declared: u64,
        actual: u64,
    },
    #[error("entry {name:?}: corrupt deflate data: {why}")]
    CorruptData { name: String, why: String },
}

impl ZipProblem {
    /// A short stable code, fit for an S3 tag value and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ZipProblem::Empty => "empty-object",
            ZipProblem::ObjectTooLarge { .. } => "object-too-large",
            ZipProblem::NotAZip(_) => "not-a-zip",
            ZipProblem::Truncated(_) => "truncated",
            ZipProblem::Malformed(_) => "malformed-zip",
            ZipProblem::MultiDisk => "multi-disk-zip",
            ZipProblem::NoEntries => "no-entries",
            ZipProblem::CentralDirectoryTooLarge { .. } => "central-directory-too-large",
            ZipProblem::UnsafePath { .. } => "unsafe-path",
            ZipProblem::OutsideLayerRoots { .. } => "outside-layer-roots",
            ZipProblem::DuplicateEntry { .. } => "duplicate-entry",
            ZipProblem::Encrypted { .. } => "encrypted-entry",
            ZipProblem::UnsupportedMethod { .. } => "unsupported-compression",
            ZipProblem::TooLarge { .. } => "too-large-unzipped",
            ZipProblem::EndRecordInComment => "end-record-in-comment",
            ZipProblem::DataAfterCentralDirectory { .. } => "data-after-central-directory",
            ZipProblem::NeedlessZip64 => "needless-zip64",
            ZipProblem::Zip64Mismatch(_) => "zip64-mismatch",
            ZipProblem::RenamingExtraField { .. } => "renaming-extra-field",
            ZipProblem::Symlink { .. } => "symlink-entry",
            ZipProblem::SpecialEntry { .. } => "special-entry",
            ZipProblem::FileAndDirectory { .. } => "file-and-directory",
            ZipProblem::LocalHeaderMismatch { .. } => "local-header-mismatch",
            ZipProblem::NotTiled(_) => "entries-not-tiled",
            ZipProblem::CrcMismatch { .. } => "crc-mismatch",
            ZipProblem::SizeMismatch { .. } => "size-mismatch",
            ZipProblem::CorruptData { .. } => "corrupt-data",
        }
    }
}

/// Why [`inspect`] did not return a summary.
#[derive(Debug, thiserror::Error)]
pub enum InspectError<E> {
    /// The object is not an acceptable layer zip.
    #[error(transparent)]
    Invalid(#[from] ZipProblem),
    /// Reading the object failed; the zip itself may be fine.
    #[error("reading the object failed")]
    Read(#[source] E),
}

/// Extra-field ids whose content replaces an entry's name for the readers that know them.
const RENAMING_EXTRA_IDS: &[u16] = &[
    // Info-ZIP Unicode Path (APPNOTE 4.6.9): honoured by Info-ZIP unzip, ignored by Python's zipfile.
    0x7075,
    // Xceed Unicode extra field ("NU", APPNOTE 4.6.1's list), which carries a Unicode file name as well.
    0x554e,
];

/// The records of an extra field, `(id, body)`; `None` unless they tile it exactly.
pub(crate) fn extra_records(extra: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < extra.len() {
        let header = extra.get(at..at + 4)?;
        let id = u16_at(header, 0);
        let size = usize::from(u16_at(header, 2));
        out.push((id, extra.get(at + 4..at + 4 + size)?));
        at += 4 + size;
    }
    Some(out)
}

/// Checks an entry's extra field (central or local): well-formed and renaming nothing.
pub(crate) fn check_extra<'e>(
    name: &str,
    extra: &'e [u8],
) -> Result<Vec<(u16, &'e [u8])>, ZipProblem> {
    let records = extra_records(extra).ok_or_else(|| {
        ZipProblem::Malformed(format!("entry {name:?} has a malformed extra field"))
    })?;
    if let Some((id, _)) = records
        .iter()
        .find(|(id, _)| RENAMING_EXTRA_IDS.contains(id))
    {
        return Err(ZipProblem::RenamingExtraField {
            name: name.to_owned(),
            id: *id,
        });
    }
    Ok(records)
}

/// The ZIP64 extended information: for each of (uncompressed size, compressed size, local header offset,
/// disk number) that is `wanted` (its classic field saturated), its value, in the order the format fixes.
/// `None` when the field is missing or too short.
pub(crate) fn zip64_values(
    records: &[(u16, &[u8])],
    wanted: [bool; 4],
) -> Option<[Option<u64>; 4]> {
    let (_, body) = records.iter().find(|(id, _)| *id == ZIP64_EXTRA_ID)?;
    let mut cursor = 0usize;
    let mut out = [None; 4];
    for (index, want) in wanted.into_iter().enumerate() {
        if !want {
            continue;
        }
        // The disk number is 4 bytes, the others 8.
        let width = if index == 3 { 4 } else { 8 };
        let bytes = body.get(cursor..cursor + width)?;
        out[index] = Some(if width == 8 {
            u64_at(bytes, 0)
        } else {
            u64::from(u32_at(bytes, 0))
        });
        cursor += width;
    }
    Some(out)
}
