//! HID point-of-sale barcode scanner reports (usage page 0x8C) → codes. Pure.
//!
//! The report layout (Honeywell's, which others follow closely), 64 bytes:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | report id, 0x02 |
//! | 1 | data length in this report, 0–56 |
//! | 2–4 | AIM symbology identifier (`]Q1` for QR) |
//! | 5–60 | decoded data, zero padded |
//! | 61–62 | reserved |
//! | 63 | flags: bit 0 set = more reports of this code follow |

use super::{Code, ReportError};

/// Bytes in a HID POS input report.
pub const REPORT_LENGTH: usize = 64;
/// Data bytes a report can carry.
pub const DATA_CAPACITY: usize = 56;
/// The input report id of scanned data.
pub const REPORT_ID: u8 = 0x02;
/// Bit of the flags byte: more reports follow.
pub const MORE_FOLLOWS: u8 = 0x01;
/// The longest code assembled; longer is garbage and dropped.
pub const MAX_CODE_BYTES: usize = 64 * 1024;

/// Assembles multi-report codes of one scanner.
#[derive(Debug, Clone, Default)]
pub struct PosDecoder {
    data: Vec<u8>,
    symbology: Option<String>,
}

impl PosDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        PosDecoder::default()
    }

    /// Feeds one report; answers the code when its last report arrived.
    pub fn feed(&mut self, report: &[u8]) -> Result<Option<Code>, ReportError> {
        if report.len() != REPORT_LENGTH {
            return Err(ReportError::PosLength(report.len()));
        }
        if report[0] != REPORT_ID {
            return Err(ReportError::PosReportId(report[0]));
        }
        let length = usize::from(report[1]);
        if length > DATA_CAPACITY {
            self.reset();
            return Err(ReportError::PosDataLength(length));
        }
        if self.symbology.is_none() {
            self.symbology = Some(String::from_utf8_lossy(&report[2..5]).trim_end_matches('\0').to_string());
        }
        self.data.extend_from_slice(&report[5..5 + length]);
        if self.data.len() > MAX_CODE_BYTES {
            self.reset();
            return Err(ReportError::TooLong);
        }
        if report[REPORT_LENGTH - 1] & MORE_FOLLOWS != 0 {
            return Ok(None);
        }
        let data = std::mem::take(&mut self.data);
        let symbology = self.symbology.take();
        match String::from_utf8(data) {
            Ok(text) if text.is_empty() => Ok(None),
            Ok(text) => Ok(Some(Code { text, symbology })),
            Err(_) => Err(ReportError::NotUtf8),
        }
    }

    /// Drops a half-assembled code (a scanner unplugged mid-code).
    pub fn reset(&mut self) {
        self.data.clear();
        self.symbology = None;
    }
}

/// The reports a scanner in HID POS mode sends for `text` (for recordings and tests).
pub fn reports_for(text: &str, symbology: &[u8; 3]) -> Vec<[u8; REPORT_LENGTH]> {
    let bytes = text.as_bytes();
    let chunks: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(DATA_CAPACITY).collect() };
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| {
            let mut report = [0u8; REPORT_LENGTH];
            report[0] = REPORT_ID;
            report[1] = chunk.len() as u8;
            report[2..5].copy_from_slice(symbology);
            report[5..5 + chunk.len()].copy_from_slice(chunk);
            if index < last {
                report[REPORT_LENGTH - 1] = MORE_FOLLOWS;
            }
            report
        })
        .collect()
}
