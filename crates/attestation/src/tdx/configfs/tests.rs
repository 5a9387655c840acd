//! configfs-tsm against a fake tree in a temp dir, with a thread playing the
//! kernel: it publishes `provider` and `generation` for each new entry and
//! answers a written `inblob` with an `outblob`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

fn fake_kernel(
    root: PathBuf,
    provider: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Each entry is set up once, as the kernel does when it is created;
        // re-creating files in an entry being removed would race the removal.
        let mut seen = std::collections::HashSet::new();
        let mut answered = std::collections::HashSet::new();
        while !stop.load(Ordering::Relaxed) {
            for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
                let dir = entry.path();
                if seen.insert(dir.clone()) {
                    let _ = fs::write(dir.join("provider"), format!("{provider}\n"));
                    let _ = fs::write(dir.join("generation"), "1\n");
                }
                if let Ok(inblob) = fs::read(dir.join("inblob")) {
                    if inblob.len() == 64 && answered.insert(dir.clone()) {
                        let mut quote = b"FAKE-TDX-QUOTE:".to_vec();
                        quote.extend_from_slice(&inblob);
                        let _ = fs::write(dir.join("outblob"), quote);
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    })
}

#[test]
fn writes_report_data_reads_the_quote_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let kernel = fake_kernel(dir.path().to_path_buf(), "tdx_guest", stop.clone());
    let tsm = ConfigfsTsm::new(dir.path());
    assert!(tsm.available());
    let data = [7u8; 64];
    let quote = tsm.quote(&data).unwrap();
    assert_eq!(&quote[..15], b"FAKE-TDX-QUOTE:");
    assert_eq!(&quote[15..], &data);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "entry removed"
    );
    stop.store(true, Ordering::Relaxed);
    kernel.join().unwrap();
}

#[test]
fn another_provider_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let kernel = fake_kernel(dir.path().to_path_buf(), "sev_guest", stop.clone());
    let err = ConfigfsTsm::new(dir.path()).quote(&[0; 64]).unwrap_err();
    assert!(
        matches!(err, QuoteError::WrongProvider(ref p) if p == "sev_guest"),
        "{err}"
    );
    stop.store(true, Ordering::Relaxed);
    kernel.join().unwrap();
}

#[test]
fn a_machine_without_configfs_gets_a_clear_error() {
    let tsm = ConfigfsTsm::new("/nonexistent/tsm/report");
    assert!(!tsm.available());
    let err = tsm.quote(&[0; 64]).unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/tsm/report") && err.contains("TDX guest"),
        "{err}"
    );
}
