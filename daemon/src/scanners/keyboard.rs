//! Boot-keyboard reports → codes. Pure: reports and their arrival times in, codes out.
//!
//! A report is 8 bytes: modifiers (bit 1/5 Shift, bit 6 AltGr, bits 0/4 Ctrl, 2 Alt), a
//! reserved byte, and up to six usage ids of keys held down. A key types when it appears
//! in a report it was not in before (so repeated reports and releases type nothing, and
//! several new keys in one report type in slot order). Enter (and Tab, if configured)
//! ends a code; so does a pause longer than the inter-character timeout.

use super::layout::{self, compose, Key, ENTER, KEYPAD_ENTER, ROLLOVER_ERROR, TAB};
use super::{Code, ReportError};
use crate::config::KeyboardLayout;

/// The longest code kept; a longer run of keys is garbage and is dropped.
pub const MAX_CODE_CHARS: usize = 8 * 1024;

const SHIFT: u8 = 0x02 | 0x20;
const CTRL: u8 = 0x01 | 0x10;
const LEFT_ALT: u8 = 0x04;
const ALTGR: u8 = 0x40;

/// How a code is ended besides a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminators {
    pub enter: bool,
    pub tab: bool,
}

/// Decodes one scanner's keyboard reports.
#[derive(Debug, Clone)]
pub struct KeyboardDecoder {
    layout: KeyboardLayout,
    terminators: Terminators,
    char_timeout_ms: u64,
    held: Vec<u8>,
    buffer: String,
    dead: Option<char>,
    last_at_ms: Option<u64>,
    overflowed: bool,
}

impl KeyboardDecoder {
    /// A decoder for a scanner emulating `layout`.
    pub fn new(layout: KeyboardLayout, terminators: Terminators, char_timeout_ms: u64) -> Self {
        KeyboardDecoder {
            layout,
            terminators,
            char_timeout_ms,
            held: Vec::new(),
            buffer: String::new(),
            dead: None,
            last_at_ms: None,
            overflowed: false,
        }
    }

    /// Feeds one report that arrived at `at_ms`; answers the codes it completed (a pause
    /// before it may complete one, and a terminator in it another).
    pub fn feed(&mut self, at_ms: u64, report: &[u8]) -> Result<Vec<Code>, ReportError> {
        let mut done: Vec<Code> = self.idle(at_ms).into_iter().collect();
        let report = match report.len() {
            8 => report,
            9 if report[0] == 1 => &report[1..],
            length => return Err(ReportError::KeyboardLength(length)),
        };
        self.last_at_ms = Some(at_ms);
        let keys: Vec<u8> = report[2..8].iter().copied().filter(|&usage| usage != 0).collect();
        if keys.contains(&ROLLOVER_ERROR) {
            return Ok(done); // "too many keys": says nothing about which; keep the old state
        }
        let modifiers = report[0];
        for &usage in &keys {
            if !self.held.contains(&usage) {
                done.extend(self.press(usage, modifiers));
            }
        }
        self.held = keys;
        Ok(done)
    }

    /// Ends the pending code if the pause since the last report exceeds the timeout.
    pub fn idle(&mut self, now_ms: u64) -> Option<Code> {
        let last = self.last_at_ms?;
        if now_ms.saturating_sub(last) > self.char_timeout_ms {
            self.held.clear();
            return self.finish();
        }
        None
    }

    fn press(&mut self, usage: u8, modifiers: u8) -> Option<Code> {
        let is_terminator = matches!(usage, ENTER | KEYPAD_ENTER) && self.terminators.enter || usage == TAB && self.terminators.tab;
        if is_terminator {
            return self.finish();
        }
        let altgr = modifiers & ALTGR != 0 || (modifiers & CTRL != 0 && modifiers & LEFT_ALT != 0);
        if modifiers & CTRL != 0 && !altgr {
            return None; // a control combination types nothing
        }
        let chars = layout::key(self.layout, usage);
        let key = if altgr {
            chars.altgr
        } else if modifiers & SHIFT != 0 {
            chars.shift
        } else {
            chars.plain
        };
        match key? {
            Key::Char(c) => self.type_char(c),
            Key::Dead(accent) => {
                if let Some(pending) = self.dead.replace(accent) {
                    self.push(pending);
                }
            }
        }
        None
    }

    fn type_char(&mut self, c: char) {
        match self.dead.take() {
            None => self.push(c),
            Some(accent) if c == ' ' => self.push(accent),
            Some(accent) => match compose(accent, c) {
                Some(composed) => self.push(composed),
                None => {
                    self.push(accent);
                    self.push(c);
                }
            },
        }
    }

    fn push(&mut self, c: char) {
        if self.buffer.len() >= MAX_CODE_CHARS {
            self.overflowed = true;
        } else {
            self.buffer.push(c);
        }
    }

    fn finish(&mut self) -> Option<Code> {
        if let Some(accent) = self.dead.take() {
            self.push(accent);
        }
        let text = std::mem::take(&mut self.buffer);
        let overflowed = std::mem::replace(&mut self.overflowed, false);
        (!text.is_empty() && !overflowed).then_some(Code { text, symbology: None })
    }
}

/// The boot-keyboard reports a scanner emulating `layout` sends to type `text` and then
/// Enter: a press report and an all-zero release per key. Characters the layout cannot
/// type are an error naming them.
pub fn reports_for(text: &str, layout: KeyboardLayout) -> Result<Vec<[u8; 8]>, char> {
    let mut reports = Vec::with_capacity(text.len() * 2 + 2);
    for c in text.chars().chain(std::iter::once('\n')) {
        for (modifiers, usage) in layout::presses_for(layout, c).ok_or(c)? {
            reports.push([modifiers, 0, usage, 0, 0, 0, 0, 0]);
            reports.push([0; 8]);
        }
    }
    Ok(reports)
}
