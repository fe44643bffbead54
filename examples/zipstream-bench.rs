//! Measures the strict zip check on a large file (not a test: the figures size publish-layer's memory).
//!
//! ```text
//! cargo run --example zipstream-bench -- make /tmp/big.zip      # ~100 MB layer-like zip (builder's writer)
//! /usr/bin/time -v target/debug/examples/zipstream-bench check /tmp/big.zip
//! ```
//! `check` runs stage one over ranged reads of the file and stage two over one sequential read, as
//! publish-layer does over S3, and prints the throughput and the peak resident memory (VmHWM). Any zip whose
//! entries lie under the layer roots will do, e.g. Info-ZIP's `zip -r` of a Python installation's `lib/`
//! under a `python` link.

use std::{io::Write, path::Path, time::Instant};

use layerforge::{
    builder::archive::{ZipSource, write_zip},
    zipcheck::{self, InspectError, Limits, RangeReader},
    zipstream,
};

/// Ranged reads of a local file, as publish-layer's S3 ranged GETs.
struct FileRange {
    path: std::path::PathBuf,
    len: u64,
}

impl RangeReader for FileRange {
    type Error = std::io::Error;

    fn len(&self) -> u64 {
        self.len
    }

    async fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, Self::Error> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::open(&self.path).await?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let mut out = vec![0; len as usize];
        file.read_exact(&mut out).await?;
        Ok(out)
    }
}

fn make(out: &Path) -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut sources = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Native libraries: incompressible, stored.
    for i in 0..72 {
        let path = dir.path().join(format!("lib{i}.so"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for _ in 0..(1 << 17) {
            f.write_all(&next().to_le_bytes())?;
        }
        f.flush()?;
        sources.push((
            format!("python/lib/python3.12/site-packages/native/lib{i:03}.so"),
            path,
        ));
    }
    // Python sources: words from a small vocabulary, deflated about 4:1.
    let words = [
        "def ",
        "self",
        ".value",
        " = ",
        "return ",
        "import ",
        "numpy",
        "(x, y)",
        "\n    ",
        "if ",
        "else:",
        "for i in range(n):",
        "# comment about the code\n",
        "class Array",
        ":\n",
        "None",
        "True",
        "lambda ",
    ];
    for i in 0..2400 {
        let path = dir.path().join(format!("mod{i}.py"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut written = 0;
        while written < 64 * 1024 {
            let w = words[(next() % words.len() as u64) as usize];
            f.write_all(w.as_bytes())?;
            written += w.len();
        }
        f.flush()?;
        sources.push((
            format!(
                "python/lib/python3.12/site-packages/pkg{:02}/mod{i:04}.py",
                i / 100
            ),
            path,
        ));
    }
    sources.sort();
    let sources: Vec<ZipSource> = sources
        .into_iter()
        .map(|(name, path)| ZipSource {
            name,
            path,
            executable: false,
            expect: None,
        })
        .collect();
    let summary = write_zip(&sources, out)?;
    println!(
        "made {}: {} entries, {} bytes zipped, {} bytes unzipped",
        out.display(),
        summary.entries,
        summary.zipped_bytes,
        summary.unzipped_bytes
    );
    Ok(())
}

fn peak_rss_kib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "VmHWM: unknown".to_owned())
}

async fn check(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let len = std::fs::metadata(path)?.len();
    let reader = FileRange {
        path: path.to_owned(),
        len,
    };
    let started = Instant::now();
    let summary = zipcheck::inspect(&reader, &Limits::default())
        .await
        .map_err(|e| match e {
            InspectError::Invalid(p) => format!("stage one: {p}"),
            InspectError::Read(io) => format!("stage one read: {io}"),
        })?;
    let stage_one = started.elapsed();
    let started = Instant::now();
    let file = tokio::fs::File::open(path).await?;
    let streamed = zipstream::verify(file, &summary.directory)
        .await
        .map_err(|e| match e {
            InspectError::Invalid(p) => format!("stage two: {p}"),
            InspectError::Read(io) => format!("stage two read: {io}"),
        })?;
    let stage_two = started.elapsed().as_secs_f64();
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "stage one: {} entries, {} bytes read in {} reads, {:.3} s",
        summary.entries,
        summary.bytes_read,
        summary.reads,
        stage_one.as_secs_f64()
    );
    println!(
        "stage two: {:.1} MB zipped, {:.1} MB inflated in {stage_two:.2} s: {:.1} MB/s zipped, {:.1} MB/s inflated",
        mb(streamed.bytes_read),
        mb(streamed.uncompressed_bytes),
        mb(streamed.bytes_read) / stage_two,
        mb(streamed.uncompressed_bytes) / stage_two
    );
    println!("{}", peak_rss_kib());
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("make"), Some(out)) => Ok(make(Path::new(out))?),
        (Some("check"), Some(zip)) => check(Path::new(zip)).await,
        _ => Err("usage: zipstream-bench (make OUT.zip | check ZIP)".into()),
    }
}
