//! Property tests on stable Rust (proptest, a fixed number of cases, no persistence files): the zip reader's
//! two stages and the request parser never panic, and every input ends in an acceptance or a named rejection.

use proptest::{prelude::*, test_runner::Config as Cases};
use serde_json::Value;

use layerforge::request::{LayerName, RequestDraft, Requirements, S3Uri};

use crate::{helpers, zipcraft, zipstrict::strict};

/// Cases per property in CI: enough to walk every rule of the readers, quick enough (well under a second each).
/// `PROPTEST_CASES=N` runs more, for a longer search by hand.
const CASES: u32 = 512;

fn cases() -> Cases {
    Cases {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: None,
        ..Cases::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Valid zips to mutate: hand-made, Info-ZIP's and Python's.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        zipcraft::zip(&[
            zipcraft::file("python/ok.py", b"print('ok')\n"),
            zipcraft::file("bin/tool", b"#!/bin/sh\n"),
        ]),
        include_bytes!("../fixtures/zip-r.zip").to_vec(),
        include_bytes!("../fixtures/zip-r-stream.zip").to_vec(),
        include_bytes!("../fixtures/python-zipfile.zip").to_vec(),
    ]
}

/// Either an acceptance with entries or a rejection with a code and a message.
fn outcome_is_named(result: &Result<usize, layerforge::zipcheck::ZipProblem>) -> bool {
    match result {
        Ok(entries) => *entries > 0,
        Err(problem) => !problem.code().is_empty() && !problem.to_string().is_empty(),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(zip: &mut Vec<u8>, m: &Mutation) {
    if zip.is_empty() {
        return;
    }
    let len = zip.len();
    match m {
        Mutation::Set(i, b) => zip[i % len] = *b,
        Mutation::Insert(i, bytes) => {
            let at = i % (len + 1);
            zip.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let at = i % len;
            zip.drain(at..(at + n).min(len));
        }
        Mutation::Truncate(i) => zip.truncate(i % len),
    }
}

#[test]
fn arbitrary_bytes_never_panic_the_zip_reader() {
    let rt = runtime();
    // Raw noise, and noise ending in an end record so that the directory parser is reached.
    let tail = || {
        (
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..64),
        )
    };
    proptest!(cases(), |(noise in prop::collection::vec(any::<u8>(), 0..4096), (count, size, offset, comment) in tail(), end in any::<bool>())| {
        let mut bytes = noise;
        if end {
            bytes.extend(zipcraft::eocd(count, size % (bytes.len() as u32 + 1), offset % (bytes.len() as u32 + 1), &comment));
        }
        let result = rt.block_on(strict(&bytes));
        prop_assert!(outcome_is_named(&result), "{result:?}");
    });
}

#[test]
fn mutated_valid_zips_are_accepted_or_refused_by_name() {
    let rt = runtime();
    let seeds = seeds();
    for seed in &seeds {
        assert!(rt.block_on(strict(seed)).is_ok(), "the seeds are valid");
    }
    proptest!(cases(), |(which in 0..seeds.len(), mutations in prop::collection::vec(mutation(), 1..6))| {
        let mut zip = seeds[which].clone();
        for m in &mutations {
            apply(&mut zip, m);
        }
        let result = rt.block_on(strict(&zip));
        prop_assert!(outcome_is_named(&result), "{result:?}");
        // What both stages accept, another reader (the zip crate) reads alike: same names, same content. (That
        // reader is stricter in places, e.g. it refuses unknown flag bits in Info-ZIP's UT extra field: its
        // refusal shows no other content, so only what it opens is compared.)
        if result.is_ok() && let Ok(theirs) = other_reader(&zip) {
            prop_assert_eq!(Ok(theirs), rt.block_on(contents(&zip)));
        }
    });
}

/// Names and contents as the zip crate reads them.
fn other_reader(zip: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let mut content = Vec::new();
        entry.read_to_end(&mut content).map_err(|e| e.to_string())?;
        out.push((entry.name().to_owned(), content));
    }
    out.sort();
    Ok(out)
}

/// Names and contents as the strict reader's directory declares them (contents read at the local offsets).
async fn contents(zip: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    use std::io::Read;
    let summary = layerforge::zipcheck::inspect(zip, &layerforge::zipcheck::Limits::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for e in &summary.directory.entries {
        let at = e.local_header_offset as usize;
        let name_len = u16::from_le_bytes([zip[at + 26], zip[at + 27]]) as usize;
        let extra_len = u16::from_le_bytes([zip[at + 28], zip[at + 29]]) as usize;
        let data = &zip[at + 30 + name_len + extra_len..][..e.compressed_size as usize];
        let content = if e.method == 8 {
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(data)
                .read_to_end(&mut inflated)
                .map_err(|err| err.to_string())?;
            inflated
        } else {
            data.to_vec()
        };
        out.push((e.name.clone(), content));
    }
    out.sort();
    Ok(out)
}

/// Any JSON value, keys drawn mostly from the request's own fields so that validation goes deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "[a-z0-9_=<>.\\-| \n]{0,60}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let key = prop_oneof![
            Just("layer_name".to_owned()),
            Just("requirements".to_owned()),
            Just("requirements_s3_uri".to_owned()),
            Just("runtime".to_owned()),
            Just("architecture".to_owned()),
            Just("license".to_owned()),
            Just("description".to_owned()),
            Just("force".to_owned()),
            ".{0,12}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn names_that_panicked_pep508_rs_are_refused_by_name() {
    // Found by the property below: pep508_rs 0.9.2 panicked on these (an `expect` in its name parser).
    for text in ["A-[", "J.", "six_ [x]", "pkg.;python_version>'3'"] {
        let err = Requirements::parse(text).unwrap_err();
        assert_eq!(err.field, "requirements", "{text}");
        assert!(
            err.rule.contains("must end with a letter or digit"),
            "{text}: {err}"
        );
    }
    assert!(Requirements::parse("six==1.16.0\nzope.interface==6.0").is_ok());
}

#[test]
fn arbitrary_requests_never_panic_the_parser() {
    let config = helpers::config("artifacts", "{}", &[]);
    proptest!(cases(), |(event in json(), name in ".{0,80}", requirements in ".{0,200}")| {
        // The rejection names its field (an unknown field may be called "", and is named so).
        let has_empty_key = event.as_object().is_some_and(|m| m.contains_key(""));
        let named = |e: &layerforge::request::InvalidRequest| {
            !e.rule.is_empty() && (!e.field.is_empty() || has_empty_key)
        };
        if let Err(e) = RequestDraft::parse(&event, &config) {
            prop_assert!(named(&e), "{e:?}");
        }
        // A request with a valid name reaches the requirement and option rules.
        let mut deep = event.as_object().cloned().unwrap_or_default();
        deep.insert("layer_name".into(), Value::from("my-layer"));
        deep.insert("requirements".into(), Value::from(requirements.clone()));
        if let Err(e) = RequestDraft::parse(&Value::Object(deep), &config) {
            prop_assert!(named(&e), "{e:?}");
        }
        // The field parsers: an accepted value parses again to itself.
        if let Ok(parsed) = LayerName::parse(&name) {
            prop_assert_eq!(LayerName::parse(parsed.as_str()), Ok(parsed.clone()));
        }
        if let Ok(uri) = S3Uri::parse(&name) {
            prop_assert_eq!(S3Uri::parse(&uri.to_string()), Ok(uri.clone()));
        }
        match Requirements::parse(&requirements) {
            Ok(parsed) => prop_assert!(Requirements::parse(&parsed.to_text()).is_ok()),
            Err(e) => prop_assert!(!e.field.is_empty(), "{e:?}"),
        }
    });
}
