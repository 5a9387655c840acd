//! NVIDIA's driver asked for confidential-computing GPU evidence, through
//! NVML (`libnvidia-ml.so.1`, loaded at run time so the binary runs and
//! builds without NVIDIA's driver): whether confidential computing is on,
//! each GPU's SPDM attestation report answering a nonce and its attestation
//! certificate chain, and the GPUs' ready state (in CC mode a GPU accepts
//! work only once it is set, after attestation). This is the only crate
//! with `unsafe` code: the FFI calls and the C structures, as NVIDIA's
//! `nvml.h` (R535 and later) declares them.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

use cocoon_attestation::gpu::{certs, GpuAttester, GpuEvidence};

type Return = c_int;
type Device = *mut c_void;
const SUCCESS: Return = 0;

const CERT_CHAIN_SIZE: usize = 0x1000;
const ATTESTATION_CERT_CHAIN_SIZE: usize = 0x1400;
const NONCE_SIZE: usize = 0x20;
const REPORT_SIZE: usize = 0x2000;
const CEC_REPORT_SIZE: usize = 0x1000;

/// `nvmlConfComputeSystemState_t`.
#[repr(C)]
#[derive(Default)]
struct SystemState {
    environment: c_uint,
    cc_feature: c_uint,
    dev_tools_mode: c_uint,
}

/// `nvmlConfComputeGpuCertificate_t`.
#[repr(C)]
struct Certificate {
    cert_chain_size: c_uint,
    attestation_cert_chain_size: c_uint,
    cert_chain: [u8; CERT_CHAIN_SIZE],
    attestation_cert_chain: [u8; ATTESTATION_CERT_CHAIN_SIZE],
}

/// `nvmlConfComputeGpuAttestationReport_t` (the nonce is the input).
#[repr(C)]
struct Report {
    is_cec_attestation_report_present: c_uint,
    attestation_report_size: c_uint,
    cec_attestation_report_size: c_uint,
    nonce: [u8; NONCE_SIZE],
    attestation_report: [u8; REPORT_SIZE],
    cec_attestation_report: [u8; CEC_REPORT_SIZE],
}

/// Why NVML gave no evidence.
#[derive(Debug, thiserror::Error)]
pub enum NvmlError {
    #[error("NVIDIA's driver library {library} could not be loaded ({reason}): is the NVIDIA driver installed in this VM?")]
    Library { library: String, reason: String },
    #[error("NVML {call} failed: {message} (code {code})")]
    Call {
        call: &'static str,
        code: Return,
        message: String,
    },
    #[error("GPU confidential computing is off (CC feature {cc_feature}); a worker's GPUs must run in CC mode (nvidia-smi conf-compute -scc / the host's CC setting)")]
    CcOff { cc_feature: u32 },
    #[error("GPU confidential computing is in DevTools mode, where the GPU's memory can be read; turn it off")]
    DevTools,
    #[error("no NVIDIA GPU is visible")]
    NoGpu,
    #[error("GPU {index}: {reason}")]
    Evidence { index: u32, reason: String },
}

/// NVML, initialised; shut down when dropped.
pub struct Nvml {
    library: libloading::Library,
}

/// The library NVIDIA's driver installs.
pub const LIBRARY: &str = "libnvidia-ml.so.1";

impl Nvml {
    /// Load NVIDIA's library and initialise NVML.
    pub fn open() -> Result<Self, NvmlError> {
        Self::open_at(LIBRARY)
    }

    /// Load the NVML library at `library` (a path or a name).
    pub fn open_at(library: &str) -> Result<Self, NvmlError> {
        // SAFETY: loading NVIDIA's library runs its initialisers, which is
        // what every NVML user does; no symbol is used before it is found.
        let loaded =
            unsafe { libloading::Library::new(library) }.map_err(|e| NvmlError::Library {
                library: library.to_string(),
                reason: e.to_string(),
            })?;
        let nvml = Self { library: loaded };
        // SAFETY: nvmlInit_v2 takes no arguments.
        let init = unsafe { nvml.symbol::<unsafe extern "C" fn() -> Return>("nvmlInit_v2")? };
        nvml.check("nvmlInit_v2", unsafe { init() })?;
        Ok(nvml)
    }

    /// A function from the library, typed as `nvml.h` declares it.
    ///
    /// # Safety
    /// `T` must be the function's true signature.
    unsafe fn symbol<T: Copy>(&self, name: &'static str) -> Result<T, NvmlError> {
        let symbol: libloading::Symbol<'_, T> =
            self.library
                .get(name.as_bytes())
                .map_err(|e| NvmlError::Library {
                    library: LIBRARY.to_string(),
                    reason: format!("{name}: {e} (a driver older than R535 has no CC attestation)"),
                })?;
        Ok(*symbol)
    }

    fn check(&self, call: &'static str, code: Return) -> Result<(), NvmlError> {
        if code == SUCCESS {
            return Ok(());
        }
        // SAFETY: nvmlErrorString returns a static C string for any code.
        let message = unsafe {
            self.symbol::<unsafe extern "C" fn(Return) -> *const c_char>("nvmlErrorString")
                .ok()
                .map(|f| f(code))
                .filter(|p| !p.is_null())
                .map(|p| CStr::from_ptr(p).to_string_lossy().into_owned())
        }
        .unwrap_or_else(|| "unknown error".into());
        Err(NvmlError::Call {
            call,
            code,
            message,
        })
    }

    /// Confidential computing must be on, and not in DevTools mode.
    pub fn require_cc(&self) -> Result<(), NvmlError> {
        let mut state = SystemState::default();
        // SAFETY: the function fills the structure it is given.
        unsafe {
            let get = self.symbol::<unsafe extern "C" fn(*mut SystemState) -> Return>(
                "nvmlSystemGetConfComputeState",
            )?;
            self.check("nvmlSystemGetConfComputeState", get(&mut state))?;
        }
        if state.cc_feature != 1 {
            return Err(NvmlError::CcOff {
                cc_feature: state.cc_feature,
            });
        }
        if state.dev_tools_mode != 0 {
            return Err(NvmlError::DevTools);
        }
        Ok(())
    }

    /// Every GPU's evidence answering `nonce`.
    pub fn evidence(&self, nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, NvmlError> {
        let mut count: c_uint = 0;
        // SAFETY: each call fills the value or structure it is given, whose
        // layout is nvml.h's; sizes the driver returns are bounded below.
        unsafe {
            let get_count = self
                .symbol::<unsafe extern "C" fn(*mut c_uint) -> Return>("nvmlDeviceGetCount_v2")?;
            self.check("nvmlDeviceGetCount_v2", get_count(&mut count))?;
        }
        if count == 0 {
            return Err(NvmlError::NoGpu);
        }
        (0..count).map(|index| self.one(index, nonce)).collect()
    }

    fn one(&self, index: u32, nonce: &[u8; 32]) -> Result<GpuEvidence, NvmlError> {
        let bad = |reason: String| NvmlError::Evidence { index, reason };
        let mut device: Device = std::ptr::null_mut();
        let mut report = Box::new(Report {
            is_cec_attestation_report_present: 0,
            attestation_report_size: 0,
            cec_attestation_report_size: 0,
            nonce: *nonce,
            attestation_report: [0; REPORT_SIZE],
            cec_attestation_report: [0; CEC_REPORT_SIZE],
        });
        let mut certificate = Box::new(Certificate {
            cert_chain_size: 0,
            attestation_cert_chain_size: 0,
            cert_chain: [0; CERT_CHAIN_SIZE],
            attestation_cert_chain: [0; ATTESTATION_CERT_CHAIN_SIZE],
        });
        // SAFETY: as in `evidence`; the structures are boxed, so they outlive
        // the calls.
        unsafe {
            let handle = self.symbol::<unsafe extern "C" fn(c_uint, *mut Device) -> Return>(
                "nvmlDeviceGetHandleByIndex_v2",
            )?;
            self.check("nvmlDeviceGetHandleByIndex_v2", handle(index, &mut device))?;
            let get_report = self.symbol::<unsafe extern "C" fn(Device, *mut Report) -> Return>(
                "nvmlDeviceGetConfComputeGpuAttestationReport",
            )?;
            self.check(
                "nvmlDeviceGetConfComputeGpuAttestationReport",
                get_report(device, &mut *report),
            )?;
            let get_certificate = self
                .symbol::<unsafe extern "C" fn(Device, *mut Certificate) -> Return>(
                    "nvmlDeviceGetConfComputeGpuCertificate",
                )?;
            self.check(
                "nvmlDeviceGetConfComputeGpuCertificate",
                get_certificate(device, &mut *certificate),
            )?;
        }
        let report_len = report.attestation_report_size as usize;
        let chain_len = certificate.attestation_cert_chain_size as usize;
        if report_len == 0 || report_len > REPORT_SIZE {
            return Err(bad(format!(
                "the driver reports a {report_len}-byte report"
            )));
        }
        if chain_len == 0 || chain_len > ATTESTATION_CERT_CHAIN_SIZE {
            return Err(bad(format!(
                "the driver reports a {chain_len}-byte certificate chain"
            )));
        }
        let pem = String::from_utf8_lossy(&certificate.attestation_cert_chain[..chain_len]);
        let chain =
            certs::from_pem(&pem, "the GPU's attestation chain").map_err(|e| bad(e.to_string()))?;
        Ok(GpuEvidence {
            report: report.attestation_report[..report_len].to_vec(),
            chain,
        })
    }

    /// Let the GPUs accept work (in CC mode they wait for this, after
    /// attestation), or stop them.
    pub fn set_ready(&self, ready: bool) -> Result<(), NvmlError> {
        // SAFETY: the function takes one unsigned value.
        unsafe {
            let set = self.symbol::<unsafe extern "C" fn(c_uint) -> Return>(
                "nvmlSystemSetConfComputeGpusReadyState",
            )?;
            self.check(
                "nvmlSystemSetConfComputeGpusReadyState",
                set(c_uint::from(ready)),
            )
        }
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: nvmlShutdown takes no arguments; NVML was initialised.
        unsafe {
            if let Ok(shutdown) = self.symbol::<unsafe extern "C" fn() -> Return>("nvmlShutdown") {
                shutdown();
            }
        }
    }
}

/// A worker's GPUs through NVML: confidential computing checked on, each
/// GPU's evidence for the nonce, then the GPUs let accept work.
pub struct NvmlGpus;

impl GpuAttester for NvmlGpus {
    fn gpu_evidence(&self, nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, String> {
        let nvml = Nvml::open().map_err(|e| e.to_string())?;
        nvml.require_cc().map_err(|e| e.to_string())?;
        let evidence = nvml.evidence(nonce).map_err(|e| e.to_string())?;
        if let Err(e) = nvml.set_ready(true) {
            tracing::warn!(error = %e, "could not set the GPUs' ready state");
        }
        Ok(evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_driver_is_named() {
        let err = Nvml::open_at("/nonexistent/libnvidia-ml.so.1")
            .err()
            .expect("no such library")
            .to_string();
        assert!(err.contains("/nonexistent/libnvidia-ml.so.1"), "{err}");
        assert!(err.contains("NVIDIA driver"), "{err}");
    }

    /// The structures are exactly nvml.h's sizes (the driver writes into them).
    #[test]
    fn structures_match_nvml_h() {
        assert_eq!(std::mem::size_of::<SystemState>(), 12);
        assert_eq!(std::mem::size_of::<Certificate>(), 8 + 0x1000 + 0x1400);
        assert_eq!(std::mem::size_of::<Report>(), 12 + 0x20 + 0x2000 + 0x1000);
    }
}
