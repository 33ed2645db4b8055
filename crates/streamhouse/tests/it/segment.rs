//! `segment inspect` on a segment object the server wrote, and on a corrupted copy.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::server::{one_line_error, run, success, Server};

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "obj") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn inspect_verifies_a_real_segment_and_names_corrupt_bytes() {
    let s = Server::start();
    s.ok(&["topic", "create", "seg"]);
    let input: String = (0..50).map(|i| format!("record-{i}\n")).collect();
    success(&s.cli_with_input(&["produce", "seg"], &input), &["produce"]);
    let objects = s.data_dir().join("objects");
    let file = segment_files(&objects)
        .pop()
        .expect("a shared object of the flush");
    let path = file.to_str().unwrap();

    let text = s.ok(&["segment", "inspect", path]);
    assert!(text.contains("checksums:   ok"), "{text}");
    let reports: Value =
        serde_json::from_str(&s.ok(&["segment", "inspect", path, "--format", "json"])).unwrap();
    // One flush of one partition: a shared object holding one segment, at its start.
    let report = &reports[0];
    assert_eq!(reports.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            report["partition"].as_u64(),
            report["object_offset"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(report["base_offset"], 0);
    assert_eq!(report["record_count"], 50);
    let batches = report["batches"].as_array().unwrap();
    assert_eq!(
        batches
            .iter()
            .map(|b| b["records"].as_i64().unwrap())
            .sum::<i64>(),
        50
    );

    // The same object by key through the configured (local) object store.
    let key = file.strip_prefix(&objects).unwrap().to_str().unwrap();
    let data_dir = s.data_dir();
    let by_key = s.ok(&[
        "segment",
        "inspect",
        key,
        "--summary",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(by_key.contains("50 records"), "{by_key}");

    let mut bytes = std::fs::read(&file).unwrap();
    let first_batch = report["data_start"].as_u64().unwrap() as usize;
    bytes[first_batch + 70] ^= 0xff; // inside the first batch's records
    let bad = s.scratch().join("bad.obj");
    std::fs::write(&bad, bytes).unwrap();
    let line = one_line_error(&run(
        &["segment", "inspect", bad.to_str().unwrap()],
        "",
        &[],
    ));
    let end = first_batch as u64 + batches[0]["bytes"].as_u64().unwrap();
    assert!(
        line.contains(&format!("at bytes {first_batch}..{end}")),
        "{line}"
    );
    assert!(line.contains("CRC mismatch"), "{line}");
}

#[test]
fn inspect_of_a_missing_object_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let line = one_line_error(&run(
        &[
            "segment",
            "inspect",
            "topics/none/0/x.seg",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        "",
        &[],
    ));
    assert!(
        line.contains("neither a file nor a stored object"),
        "{line}"
    );
}
