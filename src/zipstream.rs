//! Stage two of the zip check: one streamed read of the whole object verifies what any extractor would see.
//!
//! Stage one ([`crate::zipcheck`]) reads only the end records and the central directory. An extractor that
//! walks the local headers from the start of the file (a streaming unzip) or trusts them over the directory
//! could still see other names or other bytes. [`verify`] reads the object once, front to back, against the
//! directory stage one checked, and requires:
//!
//! - **tiling**: the entries' local records, in offset order, start at byte 0 and follow each other with no
//!   gap and no overlap (a data descriptor, when flag bit 3 says so, is the only thing allowed after an
//!   entry's data), and the last one ends exactly where the central directory starts;
//! - **local headers agree** with the directory: signature, name (byte for byte), flags, method, CRC-32 and
//!   sizes (zero in the local header is allowed only under flag bit 3, and then the data descriptor must
//!   agree); the local extra field is well-formed and renames nothing;
//! - **data**: each entry's compressed bytes are exactly its declared compressed size (a deflate stream ends
//!   exactly at its last byte), and the inflated bytes have the declared CRC-32 and uncompressed size.
//!
//! Memory stays bounded whatever the object's size: entries are inflated through fixed 64 KiB buffers and
//! never held (the directory, already bounded by stage one, is the only per-entry state).
//!
//! The same read computes the object's SHA-256 ([`StreamSummary::code_sha256`], in Lambda's CodeSha256 form):
//! the identity publish-layer claims and adopts by is taken from the bytes it checked, never from metadata.
//!
//! The core is pure over any [`AsyncRead`] (tests feed byte slices); [`verify_s3_object`] is the edge that
//! publish-layer calls with one S3 GetObject of the object version.

use base64::Engine;
use flate2::{Decompress, FlushDecompress, Status};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};

use crate::{
    aws::{AwsFault, FaultKind, error_chain},
    zipformat::{
        CentralDirectory, CentralEntry, InspectError, SIG_LOCAL, ZipProblem, check_extra, u16_at,
        u32_at, u64_at, zip64_values,
    },
};

/// The fixed part of a local file header.
const LOCAL_HEADER_LEN: usize = 30;
/// Optional signature of a data descriptor (APPNOTE 4.3.9.3).
const SIG_DATA_DESCRIPTOR: u32 = 0x0807_4b50;
/// Flag bit 3: CRC-32 and sizes follow the data in a data descriptor.
const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
/// The size of the read and inflate buffers.
const BUFFER: usize = 64 * 1024;

/// What the stream held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub entries: usize,
    /// Bytes read from the object (all of it).
    pub bytes_read: u64,
    /// Bytes produced by inflating and copying every entry.
    pub uncompressed_bytes: u64,
    /// The SHA-256 of every byte read, base64 (Lambda's `CodeSha256` of this zip).
    pub code_sha256: String,
}

/// Reads `reader` (the whole object, from byte 0) and checks it against `directory` (see the module docs).
/// A read error is returned as [`InspectError::Read`]; everything else wrong is a [`ZipProblem`].
pub async fn verify<R>(
    reader: R,
    directory: &CentralDirectory,
) -> Result<StreamSummary, InspectError<std::io::Error>>
where
    R: AsyncRead + Unpin,
{
    let mut stream = Stream {
        inner: BufReader::with_capacity(BUFFER, reader),
        position: 0,
        buffer: vec![0; BUFFER],
        output: vec![0; BUFFER],
        sha256: Sha256::new(),
    };
    let mut order: Vec<&CentralEntry> = directory.entries.iter().collect();
    order.sort_by_key(|e| e.local_header_offset);
    let mut uncompressed_bytes = 0u64;
    for (index, entry) in order.iter().enumerate() {
        let next = order
            .get(index + 1)
            .map_or(directory.offset, |e| e.local_header_offset);
        stream.expect_position(entry.local_header_offset, &entry.name)?;
        uncompressed_bytes += stream.entry(entry, next).await?;
    }
    stream.expect_position(directory.offset, "the central directory")?;
    // The directory and end records were checked by stage one; the object must end where it said.
    let rest = stream.skip_to_end().await?;
    let bytes_read = stream.position;
    if bytes_read != directory.object_len {
        let why = format!(
            "the object streamed {bytes_read} bytes, {} expected ({rest} after the directory's start)",
            directory.object_len
        );
        return Err(if bytes_read < directory.object_len {
            ZipProblem::Truncated(why)
        } else {
            ZipProblem::NotTiled(why)
        }
        .into());
    }
    Ok(StreamSummary {
        entries: order.len(),
        bytes_read,
        uncompressed_bytes,
        code_sha256: base64::engine::general_purpose::STANDARD.encode(stream.sha256.finalize()),
    })
}

/// One GetObject of `bucket/key` (the given version), streamed through [`verify`]. The object's length must be
/// the one stage one saw: anything else means it changed under us, a fault rather than a property of the zip.
pub async fn verify_s3_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    directory: &CentralDirectory,
) -> Result<StreamSummary, InspectError<AwsFault>> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version_id.map(str::to_owned))
        .send()
        .await
        .map_err(|e| InspectError::Read(AwsFault::from_sdk("GetObject", &e)))?;
    // S3 always sends the length; should it be missing, the stream's own length is checked in `verify`.
    let length = out.content_length().and_then(|l| u64::try_from(l).ok());
    if let Some(length) = length.filter(|&l| l != directory.object_len) {
        return Err(InspectError::Read(AwsFault {
            operation: "GetObject",
            kind: FaultKind::Transient,
            code: "ObjectChanged".to_owned(),
            message: format!(
                "the object is {length} bytes, {} when its directory was read",
                directory.object_len
            ),
            http_status: None,
        }));
    }
    verify(out.body.into_async_read(), directory)
        .await
        .map_err(|e| match e {
            InspectError::Invalid(problem) => InspectError::Invalid(problem),
            InspectError::Read(io) => InspectError::Read(AwsFault {
                operation: "GetObject",
                kind: FaultKind::Transient,
                code: "BodyReadFailed".to_owned(),
                message: error_chain(&io),
                http_status: None,
            }),
        })
}

/// The object being read, with the position of the next byte and the digest of the bytes before it.
struct Stream<R> {
    inner: BufReader<R>,
    position: u64,
    buffer: Vec<u8>,
    output: Vec<u8>,
    /// Every byte read goes through [`Stream::exact`] or [`Stream::chunk`], which feed it here.
    sha256: Sha256,
}

type Checked<T> = Result<T, InspectError<std::io::Error>>;

/// Sizes and CRC as one header (local or descriptor) states them.
#[derive(Debug, Clone, Copy)]
struct Stated {
    crc32: u32,
    compressed: u64,
    uncompressed: u64,
}

impl<R: AsyncRead + Unpin> Stream<R> {
    fn expect_position(&self, at: u64, what: &str) -> Checked<()> {
        match self.position.cmp(&at) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(ZipProblem::NotTiled(format!(
                "{} unaccounted bytes at {} before {what:?}",
                at - self.position,
                self.position
            ))
            .into()),
            std::cmp::Ordering::Greater => Err(ZipProblem::NotTiled(format!(
                "{what:?} at {at} overlaps the previous entry, which ends at {}",
                self.position
            ))
            .into()),
        }
    }

    /// Exactly `len` bytes (`len` is at most 64 KiB + a header: a name or an extra field).
    async fn exact(&mut self, len: usize, what: &str) -> Checked<Vec<u8>> {
        let mut bytes = vec![0; len];
        match self.inner.read_exact(&mut bytes).await {
            Ok(_) => {
                self.position += len as u64;
                self.sha256.update(&bytes);
                Ok(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(ZipProblem::Truncated(format!("the object ends inside {what}")).into())
            }
            Err(e) => Err(InspectError::Read(e)),
        }
    }

    /// Up to `max` bytes into `self.buffer`; 0 only at the end of the object.
    async fn chunk(&mut self, max: usize) -> Checked<usize> {
        let want = max.min(self.buffer.len());
        let n = self
            .inner
            .read(&mut self.buffer[..want])
            .await
            .map_err(InspectError::Read)?;
        self.position += n as u64;
        self.sha256.update(&self.buffer[..n]);
        Ok(n)
    }

    async fn skip_to_end(&mut self) -> Checked<u64> {
        let mut skipped = 0u64;
        loop {
            let n = self.chunk(BUFFER).await?;
            if n == 0 {
                return Ok(skipped);
            }
            skipped += n as u64;
        }
    }

    /// One entry: local header, data, optional descriptor, ending exactly at `next`. Returns the bytes it
    /// inflated to.
    async fn entry(&mut self, entry: &CentralEntry, next: u64) -> Checked<u64> {
        let name = entry.name.as_str();
        let mismatch = |field| -> InspectError<std::io::Error> {
            ZipProblem::LocalHeaderMismatch {
                name: name.to_owned(),
                field,
            }
            .into()
        };
        let header = self
            .exact(LOCAL_HEADER_LEN, &format!("{name:?}'s local header"))
            .await?;
        if u32_at(&header, 0) != SIG_LOCAL {
            return Err(mismatch("signature"));
        }
        let flags = u16_at(&header, 6);
        let method = u16_at(&header, 8);
        let name_len = usize::from(u16_at(&header, 26));
        let extra_len = usize::from(u16_at(&header, 28));
        let raw_name = self
            .exact(name_len, &format!("{name:?}'s local name"))
            .await?;
        if raw_name != name.as_bytes() {
            return Err(mismatch("name"));
        }
        if flags != entry.flags {
            return Err(mismatch("flags"));
        }
        if method != entry.method {
            return Err(mismatch("compression method"));
        }
        let extra = self
            .exact(extra_len, &format!("{name:?}'s local extra field"))
            .await?;
        let records = check_extra(name, &extra)?;
        let mut local = Stated {
            crc32: u32_at(&header, 14),
            compressed: u64::from(u32_at(&header, 18)),
            uncompressed: u64::from(u32_at(&header, 22)),
        };
        let saturated = |v: u64| v == u64::from(u32::MAX);
        if saturated(local.compressed) || saturated(local.uncompressed) {
            // A local ZIP64 extra carries both sizes (APPNOTE 4.5.3).
            let values = zip64_values(&records, [true, true, false, false])
                .ok_or_else(|| mismatch("ZIP64 extra field"))?;
            local.uncompressed = values[0].unwrap_or_default();
            local.compressed = values[1].unwrap_or_default();
        }
        let deferred = flags & FLAG_DATA_DESCRIPTOR != 0;
        // Under flag bit 3 a streaming writer leaves zeros here; otherwise the values must be the directory's.
        let agrees = |local: u64, central: u64| local == central || (deferred && local == 0);
        if !agrees(u64::from(local.crc32), u64::from(entry.crc32)) {
            return Err(mismatch("CRC-32"));
        }
        if !agrees(local.compressed, entry.compressed_size) {
            return Err(mismatch("compressed size"));
        }
        if !agrees(local.uncompressed, entry.uncompressed_size) {
            return Err(mismatch("uncompressed size"));
        }

        let data_end = self
            .position
            .checked_add(entry.compressed_size)
            .filter(|&end| end <= next)
            .ok_or_else(|| {
                ZipProblem::NotTiled(format!(
                    "{name:?}'s {} compressed bytes at {} run past the next record at {next}",
                    entry.compressed_size, self.position
                ))
            })?;
        let (crc32, produced) = match entry.method {
            0 => self.stored(entry).await?,
            _ => self.inflate(entry).await?,
        };
        debug_assert_eq!(self.position, data_end);
        if produced != entry.uncompressed_size {
            return Err(ZipProblem::SizeMismatch {
                name: name.to_owned(),
                what: "the uncompressed content",
                declared: entry.uncompressed_size,
                actual: produced,
            }
            .into());
        }
        if crc32 != entry.crc32 {
            return Err(ZipProblem::CrcMismatch {
                name: name.to_owned(),
                declared: entry.crc32,
                actual: crc32,
            }
            .into());
        }
        if deferred {
            self.descriptor(entry, next - data_end).await?;
        }
        Ok(produced)
    }

    /// A stored entry: its bytes are its content.
    async fn stored(&mut self, entry: &CentralEntry) -> Checked<(u32, u64)> {
        if entry.compressed_size != entry.uncompressed_size {
            return Err(ZipProblem::SizeMismatch {
                name: entry.name.clone(),
                what: "the stored content",
                declared: entry.uncompressed_size,
                actual: entry.compressed_size,
            }
            .into());
        }
        let mut crc = crc32fast::Hasher::new();
        let mut left = entry.compressed_size;
        while left > 0 {
            let n = self.chunk(usize::try_from(left).unwrap_or(BUFFER)).await?;
            if n == 0 {
                return Err(truncated_in(&entry.name));
            }
            crc.update(&self.buffer[..n]);
            left -= n as u64;
        }
        Ok((crc.finalize(), entry.compressed_size))
    }

    /// A deflated entry, inflated through the fixed buffers: the stream must end exactly at its last byte and
    /// never produce more than the declared size (a bomb stops there).
    async fn inflate(&mut self, entry: &CentralEntry) -> Checked<(u32, u64)> {
        let name = entry.name.as_str();
        let corrupt = |why: String| -> InspectError<std::io::Error> {
            ZipProblem::CorruptData {
                name: name.to_owned(),
                why,
            }
            .into()
        };
        let mut inflater = Decompress::new(false);
        let mut crc = crc32fast::Hasher::new();
        let mut left = entry.compressed_size;
        let mut ended = false;
        while !ended {
            if left == 0 {
                return Err(corrupt(format!(
                    "the deflate stream does not end within its {} compressed bytes",
                    entry.compressed_size
                )));
            }
            let n = self.chunk(usize::try_from(left).unwrap_or(BUFFER)).await?;
            if n == 0 {
                return Err(truncated_in(name));
            }
            left -= n as u64;
            let mut input = 0usize;
            // Drain this chunk: inflate until it is consumed (or the stream ends), emptying the output each time.
            loop {
                let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
                let status = inflater
                    .decompress(
                        &self.buffer[input..n],
                        &mut self.output,
                        FlushDecompress::None,
                    )
                    .map_err(|e| corrupt(e.to_string()))?;
                let consumed = (inflater.total_in() - before_in) as usize;
                let produced = (inflater.total_out() - before_out) as usize;
                input += consumed;
                crc.update(&self.output[..produced]);
                if inflater.total_out() > entry.uncompressed_size {
                    return Err(ZipProblem::SizeMismatch {
                        name: name.to_owned(),
                        what: "the inflated content",
                        declared: entry.uncompressed_size,
                        actual: inflater.total_out(),
                    }
                    .into());
                }
                if status == Status::StreamEnd {
                    ended = true;
                    break;
                }
                if input == n && produced < self.output.len() {
                    break;
                }
                if consumed == 0 && produced == 0 {
                    // No progress with input left and room for output: the data is not deflate.
                    return Err(corrupt("the inflater makes no progress".to_owned()));
                }
            }
            if ended && (input != n || left != 0) {
                return Err(corrupt(format!(
                    "the deflate stream ends {} bytes before its declared compressed size",
                    (n - input) as u64 + left
                )));
            }
        }
        Ok((crc.finalize(), inflater.total_out()))
    }

    /// The data descriptor after an entry under flag bit 3: `len` bytes up to the next record, with or
    /// without its signature, 32- or 64-bit sizes; it must state the directory's values.
    async fn descriptor(&mut self, entry: &CentralEntry, len: u64) -> Checked<()> {
        let name = entry.name.as_str();
        let (signed, wide) = match len {
            12 => (false, false),
            16 => (true, false),
            20 => (false, true),
            24 => (true, true),
            _ => {
                return Err(ZipProblem::NotTiled(format!(
                    "{len} bytes between {name:?}'s data and the next record, not a data descriptor"
                ))
                .into());
            }
        };
        let bytes = self
            .exact(len as usize, &format!("{name:?}'s data descriptor"))
            .await?;
        let body = if signed {
            if u32_at(&bytes, 0) != SIG_DATA_DESCRIPTOR {
                return Err(ZipProblem::NotTiled(format!(
                    "{len} bytes after {name:?}'s data are not a data descriptor"
                ))
                .into());
            }
            &bytes[4..]
        } else {
            &bytes[..]
        };
        let stated = if wide {
            Stated {
                crc32: u32_at(body, 0),
                compressed: u64_at(body, 4),
                uncompressed: u64_at(body, 12),
            }
        } else {
            Stated {
                crc32: u32_at(body, 0),
                compressed: u64::from(u32_at(body, 4)),
                uncompressed: u64::from(u32_at(body, 8)),
            }
        };
        let field = if stated.crc32 != entry.crc32 {
            Some("data descriptor's CRC-32")
        } else if stated.compressed != entry.compressed_size {
            Some("data descriptor's compressed size")
        } else if stated.uncompressed != entry.uncompressed_size {
            Some("data descriptor's uncompressed size")
        } else {
            None
        };
        match field {
            Some(field) => Err(ZipProblem::LocalHeaderMismatch {
                name: name.to_owned(),
                field,
            }
            .into()),
            None => Ok(()),
        }
    }
}

fn truncated_in(name: &str) -> InspectError<std::io::Error> {
    ZipProblem::Truncated(format!("the object ends inside {name:?}'s data")).into()
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use zip::{CompressionMethod, ZipWriter, write::SimpleFileOptions};

    use super::*;
    use crate::zipcheck::{Limits, inspect};

    fn make(entries: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(method);
        for (name, data) in entries {
            if name.ends_with('/') {
                w.add_directory(*name, options).unwrap();
            } else {
                w.start_file(*name, options).unwrap();
                w.write_all(data).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    /// The digest computed independently of the stream (Lambda's CodeSha256 form).
    fn sha256_b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn directory(zip: &[u8]) -> CentralDirectory {
        block_on(inspect(zip, &Limits::default()))
            .unwrap()
            .directory
    }

    fn stream(zip: &[u8], directory: &CentralDirectory) -> Result<StreamSummary, ZipProblem> {
        block_on(verify(zip, directory)).map_err(|e| match e {
            InspectError::Invalid(p) => p,
            InspectError::Read(io) => panic!("memory reads can't fail: {io}"),
        })
    }

    fn layer() -> Vec<(&'static str, Vec<u8>)> {
        let text: Vec<u8> = b"import sys\nprint(sys.argv)\n".repeat(5000);
        vec![
            ("python/", Vec::new()),
            ("python/lib/", Vec::new()),
            ("python/lib/mod.py", text),
            ("python/lib/empty.py", Vec::new()),
            ("bin/tool", b"#!/bin/sh\necho hi\n".to_vec()),
        ]
    }

    fn layer_zip(method: CompressionMethod) -> Vec<u8> {
        let entries = layer();
        let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        make(&refs, method)
    }

    /// Offset of entry `index`'s local header.
    fn local(directory: &CentralDirectory, name: &str) -> usize {
        directory
            .entries
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .local_header_offset as usize
    }

    #[test]
    fn valid_zips_stream_through_with_their_real_sizes() {
        for method in [CompressionMethod::Deflated, CompressionMethod::Stored] {
            let zip = layer_zip(method);
            let summary = stream(&zip, &directory(&zip)).unwrap();
            assert_eq!(summary.entries, 5);
            assert_eq!(summary.bytes_read, zip.len() as u64);
            assert_eq!(summary.uncompressed_bytes, 27 * 5000 + 18, "{method:?}");
            assert_eq!(summary.code_sha256, sha256_b64(&zip), "{method:?}");
        }
    }

    /// What a writer to a non-seekable stream makes (flag bit 3, zeros in the local header, a signed data
    /// descriptor after the data), stored, by hand: the zip crate has no streaming writer.
    fn descriptor_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let crc = crc32fast::hash(data);
            let offset = out.len() as u32;
            out.extend(SIG_LOCAL.to_le_bytes());
            out.extend(20u16.to_le_bytes());
            out.extend(FLAG_DATA_DESCRIPTOR.to_le_bytes());
            out.extend([0u8; 4]); // method stored, time
            out.extend(0x21u16.to_le_bytes()); // date
            out.extend([0u8; 12]); // CRC and sizes deferred
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(*data);
            out.extend(SIG_DATA_DESCRIPTOR.to_le_bytes());
            out.extend(crc.to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());

            central.extend(crate::zipformat::SIG_CENTRAL.to_le_bytes());
            central.extend((3u16 << 8 | 20).to_le_bytes());
            central.extend(20u16.to_le_bytes());
            central.extend(FLAG_DATA_DESCRIPTOR.to_le_bytes());
            central.extend([0u8; 4]);
            central.extend(0x21u16.to_le_bytes());
            central.extend(crc.to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0u8; 8]); // extra, comment, disk, internal attributes
            central.extend((0o100_644u32 << 16).to_le_bytes());
            central.extend(offset.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend(&central);
        out.extend(crate::zipformat::SIG_EOCD.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(cd_offset.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    /// A body that arrives a few bytes at a time, as a network stream may.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        calls: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.calls += 1;
            // 1, 2, ... `step` bytes, in turn.
            let n = (self.calls % self.step + 1)
                .min(self.bytes.len())
                .min(buf.remaining());
            let (head, tail) = self.bytes.split_at(n);
            buf.put_slice(head);
            self.bytes = tail;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn any_chunking_of_the_body_gives_the_same_answer() {
        for method in [CompressionMethod::Deflated, CompressionMethod::Stored] {
            let zip = layer_zip(method);
            let dir = directory(&zip);
            for step in [1, 3, 7, 4096] {
                let trickle = Trickle {
                    bytes: &zip,
                    step,
                    calls: 0,
                };
                let summary = block_on(verify(trickle, &dir)).unwrap();
                assert_eq!(summary.bytes_read, zip.len() as u64, "{method:?} by {step}");
                assert_eq!(summary.uncompressed_bytes, 27 * 5000 + 18);
                assert_eq!(
                    summary.code_sha256,
                    sha256_b64(&zip),
                    "{method:?} by {step}"
                );
            }
        }
    }

    #[test]
    fn data_descriptors_of_streaming_writers_are_checked() {
        let zip = descriptor_zip(&[
            ("python/a.py", b"print(1)\n"),
            ("python/b.py", b"print(2)\n"),
        ]);
        let dir = directory(&zip);
        assert_eq!(stream(&zip, &dir).unwrap().uncompressed_bytes, 18);

        // A descriptor stating another CRC than the directory's.
        let descriptor = LOCAL_HEADER_LEN + "python/a.py".len() + 9;
        let mut bad = zip.clone();
        bad[descriptor + 4] ^= 0xFF;
        assert_eq!(
            stream(&bad, &dir),
            Err(ZipProblem::LocalHeaderMismatch {
                name: "python/a.py".into(),
                field: "data descriptor's CRC-32"
            })
        );
        // Local values under flag bit 3 are zero or the directory's, nothing else.
        let mut bad = zip.clone();
        bad[22] = 1;
        assert_eq!(
            stream(&bad, &dir).unwrap_err().code(),
            "local-header-mismatch"
        );
    }

    #[test]
    fn a_local_header_naming_another_file_is_refused() {
        let zip = layer_zip(CompressionMethod::Deflated);
        let dir = directory(&zip);
        let at = local(&dir, "python/lib/mod.py") + LOCAL_HEADER_LEN;
        let mut renamed = zip.clone();
        renamed[at..at + 17].copy_from_slice(b"python/lib/evi.py");
        assert_eq!(
            stream(&renamed, &dir),
            Err(ZipProblem::LocalHeaderMismatch {
                name: "python/lib/mod.py".into(),
                field: "name"
            })
        );
        for (offset, field) in [
            (6, "flags"),
            (8, "compression method"),
            (14, "CRC-32"),
            (18, "compressed size"),
            (22, "uncompressed size"),
        ] {
            let mut bad = zip.clone();
            bad[at - LOCAL_HEADER_LEN + offset] ^= 0x01;
            assert_eq!(
                stream(&bad, &dir),
                Err(ZipProblem::LocalHeaderMismatch {
                    name: "python/lib/mod.py".into(),
                    field
                }),
                "{field}"
            );
        }
    }

    #[test]
    fn corrupt_content_is_caught_by_crc_size_or_inflate() {
        let zip = layer_zip(CompressionMethod::Stored);
        let dir = directory(&zip);
        let data = local(&dir, "python/lib/mod.py") + LOCAL_HEADER_LEN + "python/lib/mod.py".len();
        let mut flipped = zip.clone();
        flipped[data + 100] ^= 0x20;
        assert_eq!(stream(&flipped, &dir).unwrap_err().code(), "crc-mismatch");

        let zip = layer_zip(CompressionMethod::Deflated);
        let dir = directory(&zip);
        let entry = dir
            .entries
            .iter()
            .find(|e| e.name == "python/lib/mod.py")
            .unwrap()
            .clone();
        let data = local(&dir, &entry.name) + LOCAL_HEADER_LEN + entry.name.len();
        let mut garbled = zip.clone();
        for b in &mut garbled[data..data + 8] {
            *b = 0xFF;
        }
        let code = stream(&garbled, &dir).unwrap_err().code();
        assert!(
            ["corrupt-data", "crc-mismatch", "size-mismatch"].contains(&code),
            "{code}"
        );

        // The directory (and local header) declaring fewer bytes than the data inflates to: a bomb stops there.
        let mut smaller = dir.clone();
        smaller
            .entries
            .iter_mut()
            .find(|e| e.name == entry.name)
            .unwrap()
            .uncompressed_size = 1000;
        let mut lying = zip.clone();
        let header = local(&dir, &entry.name);
        lying[header + 22..header + 26].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            stream(&lying, &smaller),
            Err(ZipProblem::SizeMismatch {
                name: entry.name.clone(),
                what: "the inflated content",
                declared: 1000,
                actual: BUFFER as u64,
            })
        );
    }

    #[test]
    fn entries_must_tile_the_archive() {
        let zip = layer_zip(CompressionMethod::Deflated);
        let dir = directory(&zip);
        // Bytes before the first entry (a self-extractor's stub), with the offsets shifted to match.
        let mut prefixed = b"#!/bin/sh\n".to_vec();
        prefixed.extend_from_slice(&zip);
        let mut shifted = dir.clone();
        for e in &mut shifted.entries {
            e.local_header_offset += 10;
        }
        shifted.offset += 10;
        shifted.object_len += 10;
        assert!(matches!(
            stream(&prefixed, &shifted),
            Err(ZipProblem::NotTiled(_))
        ));

        // Two entries pointing at the same local record.
        let mut overlapping = dir.clone();
        let first = overlapping.entries[0].local_header_offset;
        overlapping.entries[1].local_header_offset = first;
        assert_eq!(
            stream(&zip, &overlapping).unwrap_err().code(),
            "entries-not-tiled"
        );

        // The directory starting later than the last entry ends.
        let mut gap = dir.clone();
        gap.offset += 4;
        assert_eq!(stream(&zip, &gap).unwrap_err().code(), "entries-not-tiled");

        // Cut short or longer than stage one saw.
        assert_eq!(
            stream(&zip[..zip.len() - 30], &dir).unwrap_err().code(),
            "truncated"
        );
        let mut longer = zip.clone();
        longer.push(0);
        assert_eq!(
            stream(&longer, &dir).unwrap_err().code(),
            "entries-not-tiled"
        );
    }
}
