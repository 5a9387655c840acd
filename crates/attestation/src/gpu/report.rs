//! The GPU's SPDM 1.1 attestation report, as NVIDIA's driver returns it: the
//! GET_MEASUREMENTS request the verifier's nonce went into, then the GPU's
//! MEASUREMENTS response (measurement blocks, the GPU's own nonce, opaque data
//! with the driver and VBIOS versions, an ECDSA P-384 signature over both).
//! Written here because no crate parses SPDM; every length is checked against
//! what is left, so a malformed report is an error, never a panic.

use super::GpuRefusal;

/// SPDM 1.1.
const SPDM_VERSION: u8 = 0x11;
const GET_MEASUREMENTS: u8 = 0xE0;
const MEASUREMENTS: u8 = 0x60;
const REQUEST_LEN: usize = 37;
/// The response's P-384 signature: r ‖ s, 48 bytes each.
pub const SIGNATURE_LEN: usize = 96;

/// Opaque-data types NVIDIA's GPUs put in the MEASUREMENTS response.
pub mod opaque {
    pub const DRIVER_VERSION: u16 = 3;
    pub const VBIOS_VERSION: u16 = 6;
    pub const CHIP_SKU: u16 = 15;
    pub const PROJECT: u16 = 17;
    pub const PROJECT_SKU: u16 = 18;
    pub const FWID: u16 = 20;
}

/// A parsed report. `signed` is everything the signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdmReport {
    /// The verifier's nonce, from the request.
    pub nonce: [u8; 32],
    /// Measurement blocks: (SPDM index, value).
    pub measurements: Vec<(u8, Vec<u8>)>,
    /// The GPU's own nonce in the response.
    pub responder_nonce: [u8; 32],
    /// Opaque data: (type, value), in order.
    pub opaque: Vec<(u16, Vec<u8>)>,
    /// The request and the response up to the signature.
    pub signed: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
}

/// A cursor over bytes that refuses to read past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GpuRefusal> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(GpuRefusal::Malformed(format!(
                "the report ends inside {what} (at byte {}, {n} bytes wanted, {} left)",
                self.at,
                self.bytes.len() - self.at
            )));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self, what: &str) -> Result<u8, GpuRefusal> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, GpuRefusal> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u24(&mut self, what: &str) -> Result<usize, GpuRefusal> {
        let b = self.take(3, what)?;
        Ok(usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GpuRefusal> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }
}

fn expect(got: u8, want: u8, what: &str) -> Result<(), GpuRefusal> {
    if got == want {
        Ok(())
    } else {
        Err(GpuRefusal::Malformed(format!(
            "{what} is {got:#04x}, expected {want:#04x}"
        )))
    }
}

impl SpdmReport {
    /// Parse the report's bytes (request ‖ response).
    pub fn parse(bytes: &[u8]) -> Result<Self, GpuRefusal> {
        let mut r = Reader { bytes, at: 0 };
        expect(
            r.u8("the request's version")?,
            SPDM_VERSION,
            "the request's SPDM version",
        )?;
        expect(
            r.u8("the request's code")?,
            GET_MEASUREMENTS,
            "the request's code",
        )?;
        let _param1 = r.u8("the request")?;
        let _param2 = r.u8("the request")?;
        let nonce = r.array::<32>("the request's nonce")?;
        let _slot = r.u8("the request's slot")?;
        debug_assert_eq!(r.at, REQUEST_LEN);
        expect(
            r.u8("the response's version")?,
            SPDM_VERSION,
            "the response's SPDM version",
        )?;
        expect(
            r.u8("the response's code")?,
            MEASUREMENTS,
            "the response's code",
        )?;
        let _param1 = r.u8("the response")?;
        let _param2 = r.u8("the response")?;
        let blocks = r.u8("the number of blocks")?;
        let record_len = r.u24("the measurement record's length")?;
        let record = r.take(record_len, "the measurement record")?;
        let measurements = parse_blocks(record, blocks)?;
        let responder_nonce = r.array::<32>("the response's nonce")?;
        let opaque_len = usize::from(r.u16("the opaque data's length")?);
        let opaque = parse_opaque(r.take(opaque_len, "the opaque data")?)?;
        let signed_len = r.at;
        let signature = r.array::<SIGNATURE_LEN>("the signature")?;
        if r.at != bytes.len() {
            return Err(GpuRefusal::Malformed(format!(
                "{} bytes follow the signature",
                bytes.len() - r.at
            )));
        }
        Ok(Self {
            nonce,
            measurements,
            responder_nonce,
            opaque,
            signed: bytes[..signed_len].to_vec(),
            signature,
        })
    }

    /// The first opaque-data value of type `kind`.
    pub fn opaque(&self, kind: u16) -> Option<&[u8]> {
        self.opaque
            .iter()
            .find(|(t, _)| *t == kind)
            .map(|(_, v)| v.as_slice())
    }

    /// The driver version the GPU reports, e.g. `545.00`.
    pub fn driver_version(&self) -> Option<String> {
        self.text(opaque::DRIVER_VERSION)
    }

    /// An opaque value as text, up to its first NUL.
    fn text(&self, kind: u16) -> Option<String> {
        let raw = self.opaque(kind)?;
        let text = raw.split(|b| *b == 0).next().unwrap_or(raw);
        std::str::from_utf8(text).ok().map(str::to_string)
    }

    /// The name NVIDIA's RIM service gives the driver's RIM
    /// (`NV_GPU_DRIVER_GH100_550.90.07`).
    pub fn driver_rim_id(&self) -> Option<String> {
        Some(format!("NV_GPU_DRIVER_GH100_{}", self.driver_version()?))
    }

    /// The name NVIDIA's RIM service gives this board's VBIOS RIM:
    /// project, project SKU, chip SKU and the version without dots
    /// (`NV_GPU_VBIOS_1010_0200_882_96005E0001`).
    pub fn vbios_rim_id(&self) -> Option<String> {
        Some(format!(
            "NV_GPU_VBIOS_{}_{}_{}_{}",
            self.text(opaque::PROJECT)?,
            self.text(opaque::PROJECT_SKU)?,
            self.text(opaque::CHIP_SKU)?,
            self.vbios_version()?.replace('.', "").to_uppercase()
        ))
    }

    /// The VBIOS version the GPU reports, as NVIDIA writes it
    /// (`96.00.5e.00.01`: bytes 3, 2, 1, 0 and 4 of the field).
    pub fn vbios_version(&self) -> Option<String> {
        let b = self.opaque(opaque::VBIOS_VERSION)?;
        if b.len() < 5 {
            return None;
        }
        Some(format!(
            "{:02x}.{:02x}.{:02x}.{:02x}.{:02x}",
            b[3], b[2], b[1], b[0], b[4]
        ))
    }
}

/// `count` blocks: index, specification, size, then a DMTF value (type,
/// size, bytes).
fn parse_blocks(record: &[u8], count: u8) -> Result<Vec<(u8, Vec<u8>)>, GpuRefusal> {
    let mut r = Reader {
        bytes: record,
        at: 0,
    };
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let index = r.u8("a measurement block's index")?;
        let _spec = r.u8("a measurement block")?;
        let size = usize::from(r.u16("a measurement block's size")?);
        let mut block = Reader {
            bytes: r.take(size, "a measurement block")?,
            at: 0,
        };
        let _kind = block.u8("a measurement's type")?;
        let value_size = usize::from(block.u16("a measurement's size")?);
        let value = block.take(value_size, "a measurement's value")?;
        if block.at != size {
            return Err(GpuRefusal::Malformed(format!(
                "measurement block {index} holds {} bytes beyond its value",
                size - block.at
            )));
        }
        if out.iter().any(|(i, _)| *i == index) {
            return Err(GpuRefusal::Malformed(format!(
                "measurement block {index} appears twice"
            )));
        }
        out.push((index, value.to_vec()));
    }
    if r.at != record.len() {
        return Err(GpuRefusal::Malformed(format!(
            "the measurement record holds {} bytes beyond its {count} blocks",
            record.len() - r.at
        )));
    }
    Ok(out)
}

/// Type-length-value entries (u16 type, u16 length, little-endian).
fn parse_opaque(data: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, GpuRefusal> {
    let mut r = Reader { bytes: data, at: 0 };
    let mut out = Vec::new();
    while r.at < data.len() {
        let kind = r.u16("an opaque entry's type")?;
        let len = usize::from(r.u16("an opaque entry's length")?);
        out.push((kind, r.take(len, "an opaque entry")?.to_vec()));
    }
    Ok(out)
}
