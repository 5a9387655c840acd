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

/// Domain separation for [`sha256_dir_manifest`].
const MANIFEST_LABEL: &str = "cocoon/weights-manifest/v1\n";

/// The identity of a model served from a directory (an `openai-http`
/// worker's upstream loads its weights, tokenizer and configuration from
/// one, as vLLM and SGLang do): SHA-256 over a manifest with one line per
/// regular file, `sha256 size relative/path`, sorted by path (symbolic
/// links followed, as Hugging Face caches link into their blobs). Any
/// byte, name or file added or removed changes it. Files are hashed in
/// turn with progress logged for large ones, and the count logged.
pub fn sha256_dir_manifest(dir: &Path) -> io::Result<String> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    if files.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} holds no files", dir.display()),
        ));
    }
    files.sort();
    let mut manifest = Sha256::new();
    manifest.update(MANIFEST_LABEL);
    let count = files.len();
    for (i, relative) in files.iter().enumerate() {
        let path = dir.join(relative);
        let size = std::fs::metadata(&path)?.len();
        let hash = sha256_file_logged(&path)?;
        manifest.update(format!("{hash} {size} {relative}\n"));
        tracing::debug!(file = %relative, "hashed {}/{count}", i + 1);
    }
    tracing::info!(dir = %dir.display(), files = count, "model directory hashed");
    Ok(hex::encode(manifest.finalize()))
}

/// Every regular file under `dir`, as a path relative to `root` with `/`
/// separators; a name that is not UTF-8 is an error (it could not be named
/// in the manifest unambiguously).
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            collect_files(root, &path, out)?;
        } else if meta.is_file() {
            let relative = path.strip_prefix(root).map_err(io::Error::other)?;
            let parts: Option<Vec<&str>> = relative.iter().map(|p| p.to_str()).collect();
            let parts = parts.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a UTF-8 name", path.display()),
                )
            })?;
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod manifest_tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_directorys_hash_covers_every_byte_name_and_file() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "config.json", "{}");
        write(a.path(), "model-00001.safetensors", "weights");
        write(a.path(), "tokenizer/tokenizer.json", "tok");
        let base = sha256_dir_manifest(a.path()).unwrap();
        // The same files written in another order: the same hash.
        let b = tempfile::tempdir().unwrap();
        write(b.path(), "tokenizer/tokenizer.json", "tok");
        write(b.path(), "model-00001.safetensors", "weights");
        write(b.path(), "config.json", "{}");
        assert_eq!(sha256_dir_manifest(b.path()).unwrap(), base);
        // One byte changed, a file renamed, a file added: each moves it.
        write(b.path(), "model-00001.safetensors", "weightS");
        assert_ne!(sha256_dir_manifest(b.path()).unwrap(), base);
        write(b.path(), "model-00001.safetensors", "weights");
        std::fs::rename(
            b.path().join("config.json"),
            b.path().join("generation_config.json"),
        )
        .unwrap();
        assert_ne!(sha256_dir_manifest(b.path()).unwrap(), base);
        std::fs::rename(
            b.path().join("generation_config.json"),
            b.path().join("config.json"),
        )
        .unwrap();
        assert_eq!(sha256_dir_manifest(b.path()).unwrap(), base);
        write(b.path(), "extra.bin", "");
        assert_ne!(sha256_dir_manifest(b.path()).unwrap(), base);
        let empty = tempfile::tempdir().unwrap();
        assert!(sha256_dir_manifest(empty.path()).is_err());
    }
}
