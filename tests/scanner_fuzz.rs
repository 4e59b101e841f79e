//! Property tests (a fuzz target per decoder): arbitrary reports never panic a decoder,
//! and whatever a layout can type comes back unchanged through its reports.

use posbridge::config::KeyboardLayout;
use posbridge::scanners::replay::parse_line;
use posbridge::scanners::{keyboard, pos, KeyboardDecoder, PosDecoder, Terminators};
use proptest::prelude::*;

fn layout() -> impl Strategy<Value = KeyboardLayout> {
    prop_oneof![Just(KeyboardLayout::Us), Just(KeyboardLayout::Fi)]
}

/// Reports of random lengths (mostly the right ones) with random bytes and times.
fn reports() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
    let length = prop_oneof![4 => Just(8usize), 1 => Just(9usize), 2 => Just(64usize), 1 => 0usize..80];
    prop::collection::vec((0u64..500, length.prop_flat_map(|length| prop::collection::vec(any::<u8>(), length))), 0..200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn keyboard_decoder_never_panics(layout in layout(), reports in reports(), tab in any::<bool>()) {
        let mut decoder = KeyboardDecoder::new(layout, Terminators { enter: true, tab }, 50);
        let mut at = 0u64;
        for (gap, report) in reports {
            at += gap;
            if let Ok(codes) = decoder.feed(at, &report) {
                for code in codes {
                    prop_assert!(!code.text.is_empty());
                    prop_assert!(code.text.len() <= keyboard::MAX_CODE_CHARS * 4);
                }
            }
        }
        let _ = decoder.idle(at + 1000);
    }

    #[test]
    fn pos_decoder_never_panics(reports in reports()) {
        let mut decoder = PosDecoder::new();
        for (_, report) in reports {
            if let Ok(Some(code)) = decoder.feed(&report) {
                prop_assert!(!code.text.is_empty());
            }
        }
    }

    #[test]
    fn replay_lines_never_panic(line in ".{0,200}") {
        let _ = parse_line(&line);
    }

    #[test]
    fn typed_text_round_trips_through_keyboard_reports(layout in layout(), text in "[A-Za-z0-9._~-]{1,120}") {
        let reports = keyboard::reports_for(&text, layout).expect("base64url and JWS characters are typable on both layouts");
        let mut decoder = KeyboardDecoder::new(layout, Terminators { enter: true, tab: false }, 50);
        let codes: Vec<String> = reports.iter().enumerate().flat_map(|(index, report)| decoder.feed(index as u64, report).unwrap()).map(|code| code.text).collect();
        prop_assert_eq!(codes, vec![text]);
    }

    #[test]
    fn finnish_text_round_trips(text in "[a-zA-ZåäöÅÄÖéÉüÜ0-9 ,.;:!?&%€@£$()\\[\\]{}+=/*'\"<>|_~^-]{1,80}") {
        let reports = keyboard::reports_for(&text, KeyboardLayout::Fi).expect("typable on a Finnish keyboard");
        let mut decoder = KeyboardDecoder::new(KeyboardLayout::Fi, Terminators { enter: true, tab: false }, 50);
        let codes: Vec<String> = reports.iter().enumerate().flat_map(|(index, report)| decoder.feed(index as u64, report).unwrap()).map(|code| code.text).collect();
        prop_assert_eq!(codes, vec![text]);
    }

    #[test]
    fn pos_reports_round_trip(text in "\\PC{1,400}") {
        let mut decoder = PosDecoder::new();
        let codes: Vec<String> = pos::reports_for(&text, b"]Q1").iter().filter_map(|report| decoder.feed(report).unwrap()).map(|code| code.text).collect();
        prop_assert_eq!(codes, vec![text]);
    }
}
