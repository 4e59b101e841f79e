//! The scanner decoders against recorded reports (golden files), hand-written reports
//! for the characters layouts disagree on, timing, rollover, and garbage.

use std::path::PathBuf;

use posbridge::config::KeyboardLayout;
use posbridge::scanners::replay::parse_line;
use posbridge::scanners::{keyboard, pos, Code, KeyboardDecoder, PosDecoder, ReportError, Terminators};

const ENTER_ONLY: Terminators = Terminators { enter: true, tab: false };

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/scanners")
}

/// Reads a replay file: (time, report) per line, times defaulting to 2 ms apart.
fn recording(name: &str) -> Vec<(u64, Vec<u8>)> {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap_or_else(|error| panic!("{name}: {error}"));
    text.lines()
        .filter_map(|line| parse_line(line).unwrap())
        .enumerate()
        .map(|(index, (at, report))| (at.unwrap_or(index as u64 * 2), report))
        .collect()
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap().trim_end_matches('\n').to_string()
}

fn keyboard_codes(layout: KeyboardLayout, reports: &[(u64, Vec<u8>)]) -> Vec<String> {
    let mut decoder = KeyboardDecoder::new(layout, ENTER_ONLY, 100);
    let mut codes: Vec<String> = Vec::new();
    for (at, report) in reports {
        codes.extend(decoder.feed(*at, report).unwrap().into_iter().map(|code| code.text));
    }
    codes
}

fn pos_codes(reports: &[(u64, Vec<u8>)]) -> Vec<Code> {
    let mut decoder = PosDecoder::new();
    reports.iter().filter_map(|(_, report)| decoder.feed(report).unwrap()).collect()
}

#[test]
fn golden_receipt_jws_in_both_layouts_and_hid_pos() {
    let receipt = expected("receipt.txt");
    assert!(receipt.len() >= 400, "a real ES512 receipt is 400–450 characters: {}", receipt.len());
    let us = recording("receipt-us.hex");
    assert!(us.len() > 800, "about two reports a character: {}", us.len());
    assert_eq!(keyboard_codes(KeyboardLayout::Us, &us), std::slice::from_ref(&receipt));
    assert_eq!(keyboard_codes(KeyboardLayout::Fi, &recording("receipt-fi.hex")), std::slice::from_ref(&receipt));
    let pos = pos_codes(&recording("receipt-pos.hex"));
    assert_eq!(pos.len(), 1);
    assert_eq!(pos[0].text, receipt);
    assert_eq!(pos[0].symbology.as_deref(), Some("]Q1"));
    // The US recording read as Finnish is not the receipt: the layout matters.
    assert_ne!(keyboard_codes(KeyboardLayout::Fi, &us), [receipt]);
}

#[test]
fn golden_bare_transaction_id_and_nordic_text() {
    for (file, layout) in [("tx-us.hex", KeyboardLayout::Us), ("tx-fi.hex", KeyboardLayout::Fi)] {
        assert_eq!(keyboard_codes(layout, &recording(file)), [expected("tx.txt")], "{file}");
    }
    assert_eq!(pos_codes(&recording("tx-pos.hex"))[0].text, expected("tx.txt"));
    assert_eq!(keyboard_codes(KeyboardLayout::Fi, &recording("nordic-fi.hex")), [expected("nordic.txt")]);
    assert_eq!(pos_codes(&recording("nordic-pos.hex"))[0].text, expected("nordic.txt"));
}

/// Reports written by hand from the HID usage tables, independent of the encoder.
#[test]
fn hand_written_reports_for_characters_the_layouts_disagree_on() {
    let press = |modifiers: u8, usage: u8| vec![modifiers, 0, usage, 0, 0, 0, 0, 0];
    let release = vec![0u8; 8];
    let typed = |layout: KeyboardLayout, keys: &[(u8, u8)]| {
        let mut reports: Vec<(u64, Vec<u8>)> = Vec::new();
        for (index, (modifiers, usage)) in keys.iter().chain(&[(0, 0x28)]).enumerate() {
            reports.push((index as u64 * 4, press(*modifiers, *usage)));
            reports.push((index as u64 * 4 + 2, release.clone()));
        }
        keyboard_codes(layout, &reports).concat()
    };
    let shift = 0x02;
    let right_shift = 0x20;
    let altgr = 0x40;
    // US: 0x2d is '-', Shift+0x2d '_', 0x38 '/', Shift+0x1f '@'.
    assert_eq!(typed(KeyboardLayout::Us, &[(0, 0x2d), (shift, 0x2d), (0, 0x38), (right_shift, 0x1f), (0, 0x37)]), "-_/@.");
    // Finnish: 0x38 is '-', Shift+0x38 '_', AltGr+0x1f '@', 0x33 'ö', Shift+0x34 'Ä', 0x2f 'å', AltGr+0x22 '€', Shift+0x1f '"'.
    assert_eq!(
        typed(
            KeyboardLayout::Fi,
            &[(0, 0x38), (shift, 0x38), (altgr, 0x1f), (0, 0x33), (shift, 0x34), (0, 0x2f), (altgr, 0x22), (shift, 0x1f)]
        ),
        "-_@öÄå€\""
    );
    // Finnish dead keys: ´ then e is é; ¨ then space is ¨; Ctrl+Alt works as AltGr.
    assert_eq!(typed(KeyboardLayout::Fi, &[(0, 0x2e), (0, 0x08), (0, 0x30), (0, 0x2c), (0x01 | 0x04, 0x27)]), "é¨}");
    // Keypad digits and Shift+letters are the same on both.
    for layout in [KeyboardLayout::Us, KeyboardLayout::Fi] {
        assert_eq!(typed(layout, &[(0, 0x59), (0, 0x62), (shift, 0x17), (0, 0x1b)]), "10Tx");
    }
}

#[test]
fn rollover_repeats_and_releases() {
    let mut decoder = KeyboardDecoder::new(KeyboardLayout::Us, ENTER_ONLY, 100);
    let feed = |decoder: &mut KeyboardDecoder, at: u64, report: [u8; 8]| decoder.feed(at, &report).unwrap();
    // Two new keys in one report type in slot order; holding them types nothing more.
    assert!(feed(&mut decoder, 0, [0, 0, 0x04, 0x05, 0, 0, 0, 0]).is_empty());
    assert!(feed(&mut decoder, 1, [0, 0, 0x04, 0x05, 0, 0, 0, 0]).is_empty());
    // 'a' released while 'b' is held, then 'c' added: only 'c' is new.
    assert!(feed(&mut decoder, 2, [0, 0, 0x05, 0, 0, 0, 0, 0]).is_empty());
    assert!(feed(&mut decoder, 3, [0, 0, 0x05, 0x06, 0, 0, 0, 0]).is_empty());
    // "Too many keys" says nothing: ignored.
    assert!(feed(&mut decoder, 4, [0, 0, 1, 1, 1, 1, 1, 1]).is_empty());
    // The same key twice needs a release in between.
    assert!(feed(&mut decoder, 5, [0; 8]).is_empty());
    assert!(feed(&mut decoder, 6, [0, 0, 0x06, 0, 0, 0, 0, 0]).is_empty());
    assert!(feed(&mut decoder, 7, [0; 8]).is_empty());
    let done = feed(&mut decoder, 8, [0, 0, 0x28, 0, 0, 0, 0, 0]);
    assert_eq!(done.iter().map(|code| code.text.as_str()).collect::<Vec<_>>(), ["abcc"]);
    // A report with a report id of 1 in front is accepted too.
    assert!(decoder.feed(9, &[1, 0, 0, 0x04, 0, 0, 0, 0, 0]).unwrap().is_empty());
}

#[test]
fn codes_without_enter_are_split_by_the_inter_character_timeout() {
    let mut decoder = KeyboardDecoder::new(KeyboardLayout::Us, Terminators { enter: false, tab: false }, 50);
    let mut codes = Vec::new();
    let mut at = 0;
    for (text, pause_after) in [("tx_one", 200), ("tx_two", 0)] {
        for report in keyboard::reports_for(text, KeyboardLayout::Us).unwrap() {
            if report[2] == 0x28 {
                continue; // this scanner sends no Enter
            }
            codes.extend(decoder.feed(at, &report).unwrap());
            at += 3;
        }
        at += pause_after;
    }
    codes.extend(decoder.idle(at + 51));
    assert_eq!(codes.iter().map(|code| code.text.as_str()).collect::<Vec<_>>(), ["tx_one", "tx_two"]);
    // Fast keys are one code even without a terminator, until the pause.
    assert_eq!(decoder.idle(at + 1000), None, "nothing pending any more");
}

#[test]
fn tab_terminator_when_configured() {
    let mut decoder = KeyboardDecoder::new(KeyboardLayout::Us, Terminators { enter: true, tab: true }, 100);
    let mut codes = Vec::new();
    for (at, report) in [
        [0, 0, 0x04, 0, 0, 0, 0, 0],
        [0; 8],
        [0, 0, 0x2b, 0, 0, 0, 0, 0],
        [0; 8],
        [0, 0, 0x05, 0, 0, 0, 0, 0],
        [0; 8],
        [0, 0, 0x28, 0, 0, 0, 0, 0],
    ]
    .iter()
    .enumerate()
    {
        codes.extend(decoder.feed(at as u64, report).unwrap());
    }
    assert_eq!(codes.iter().map(|code| code.text.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn garbage_and_truncated_reports_are_clean_errors() {
    let mut keyboard = KeyboardDecoder::new(KeyboardLayout::Fi, ENTER_ONLY, 100);
    assert_eq!(keyboard.feed(0, &[0, 0, 4]), Err(ReportError::KeyboardLength(3)));
    assert_eq!(keyboard.feed(0, &[]), Err(ReportError::KeyboardLength(0)));
    assert_eq!(keyboard.feed(0, &[7; 9]), Err(ReportError::KeyboardLength(9)));
    // Unknown usages (F-keys, media keys) type nothing.
    assert!(keyboard.feed(1, &[0, 0, 0x3a, 0xe8, 0xff, 0, 0, 0]).unwrap().is_empty());

    let mut decoder = PosDecoder::new();
    assert_eq!(decoder.feed(&[2; 10]), Err(ReportError::PosLength(10)));
    let mut wrong_id = [0u8; 64];
    wrong_id[0] = 9;
    assert_eq!(decoder.feed(&wrong_id), Err(ReportError::PosReportId(9)));
    let mut too_long = [0u8; 64];
    too_long[0] = 2;
    too_long[1] = 57;
    assert_eq!(decoder.feed(&too_long), Err(ReportError::PosDataLength(57)));
    let mut not_text = pos::reports_for("abc", b"]Q1")[0];
    not_text[5] = 0xff;
    assert_eq!(decoder.feed(&not_text), Err(ReportError::NotUtf8));
    // A code cut off mid-way (scanner unplugged) is dropped by reset; the next one is whole.
    let long = "x".repeat(120);
    let parts = pos::reports_for(&long, b"]Q1");
    assert_eq!(parts.len(), 3);
    assert_eq!(decoder.feed(&parts[0]), Ok(None));
    decoder.reset();
    let whole: Vec<_> = pos::reports_for("tx_R60D21hL60bj5N1v", b"]Q1").iter().filter_map(|report| decoder.feed(report).unwrap()).collect();
    assert_eq!(whole[0].text, "tx_R60D21hL60bj5N1v");
}

/// Writes the golden recordings again (`POSBRIDGE_WRITE_FIXTURES=1`); the recorded
/// receipt is a real ES512 JWS from a sandbox key.
#[test]
fn fixtures_are_present_or_written() {
    if std::env::var_os("POSBRIDGE_WRITE_FIXTURES").is_none() {
        assert!(fixtures().join("receipt-us.hex").exists());
        return;
    }
    let sandbox = posbridge::sandbox::SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let receipt = sandbox.create_receipt(3000);
    let texts = [
        ("receipt", receipt.jws.clone()),
        ("tx", receipt.transaction_id.clone()),
        ("nordic", "Åbo-Helsingfors: ärtsoppa & pannkaka, 12,50 € (öl) _é_".to_string()),
    ];
    for (name, text) in texts {
        std::fs::write(fixtures().join(format!("{name}.txt")), format!("{text}\n")).unwrap();
        for scanner in ["us", "fi", "pos"] {
            if let Ok(lines) = posbridge::sandbox::scanner_reports(&text, scanner) {
                let timed: Vec<String> = lines.iter().enumerate().map(|(index, line)| format!("@{} {line}", index * 2)).collect();
                std::fs::write(fixtures().join(format!("{name}-{scanner}.hex")), timed.join("\n") + "\n").unwrap();
            }
        }
    }
}
