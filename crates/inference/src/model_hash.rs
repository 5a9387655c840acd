//! Model identity: the SHA-256 of the weight file a worker actually loaded,
//! streamed from disk with progress reports. The network's allow-list of models
//! refers to this hash.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

const CHUNK: usize = 1 << 20;

/// Hash `path`, calling `progress(done_bytes, total_bytes)` after each mebibyte.
pub fn sha256_file(path: &Path, mut progress: impl FnMut(u64, u64)) -> io::Result<String> {
    let mut file = File::open(path)?;
    let total = file.metadata()?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done, total);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hash `path`, logging progress every 10% for files over 256 MiB.
pub fn sha256_file_logged(path: &Path) -> io::Result<String> {
    let mut next_report = 10;
    sha256_file(path, |done, total| {
        if total < 256 << 20 {
            return;
        }
        let percent = done * 100 / total;
        if percent >= next_report {
            tracing::info!(file = %path.display(), "hashing weights: {percent}%");
            next_report = percent + 10;
        }
    })
}
