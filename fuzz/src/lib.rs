//! The bodies of grpc-failover's fuzz targets, shared by the libFuzzer entry points
//! (`fuzz_targets/*.rs` under cargo-fuzz) and the stable replay binaries (the same files built
//! without `--cfg fuzzing`). Each `run` must never panic on any input: a panic is a finding.

pub mod abi_sequence;
pub mod etcd_record;
pub mod metadata;
pub mod options;
pub mod target;

use std::path::Path;

/// The replay binary's `main`: runs `run` once on every file named on the command line, or in
/// a directory named there, and reports how many it ran. A panic fails the process with the
/// input's path printed first.
pub fn replay_main(name: &str, run: fn(&[u8])) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: {name} FILE|DIR...  (runs each input once through the {name} target)");
        std::process::exit(2);
    }
    let mut files = Vec::new();
    for arg in &args {
        collect(Path::new(arg), &mut files);
    }
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        eprintln!("{name}: {}", file.display());
        run(&data);
    }
    println!("{name}: {} inputs replayed, no failure", files.len());
}

fn collect(path: &Path, files: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        let entries = std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for entry in entries {
            collect(&entry.expect("a directory entry").path(), files);
        }
    } else if path.exists() {
        files.push(path.to_path_buf());
    }
}

/// Splits an input at its first newline: the seeds read as `first line` + `rest`.
pub(crate) fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
