//! Keyboard layouts a keyboard-wedge scanner may emulate: what character a key position
//! (HID usage id) types with Shift or AltGr. Usage ids are positions, not characters, so
//! a scanner set to the Finnish layout sends the usage of the `-` *key position* of a
//! Finnish keyboard (US `/`) to type `-`.

use crate::config::KeyboardLayout;

/// What a key types: alone, with Shift, with AltGr. `None` where it types nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyChars {
    pub plain: Option<Key>,
    pub shift: Option<Key>,
    pub altgr: Option<Key>,
}

/// A key's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Types a character.
    Char(char),
    /// A dead key: combines with the next character (`´` + `e` = `é`), or types itself
    /// before a space.
    Dead(char),
}

const fn plain(c: char, shifted: char) -> KeyChars {
    KeyChars { plain: Some(Key::Char(c)), shift: Some(Key::Char(shifted)), altgr: None }
}

const fn with_altgr(c: char, shifted: char, altgr: char) -> KeyChars {
    KeyChars { plain: Some(Key::Char(c)), shift: Some(Key::Char(shifted)), altgr: Some(Key::Char(altgr)) }
}

const NONE: KeyChars = KeyChars { plain: None, shift: None, altgr: None };

/// Usage ids of keys that end or separate codes.
pub const ENTER: u8 = 0x28;
pub const KEYPAD_ENTER: u8 = 0x58;
pub const TAB: u8 = 0x2b;
/// "Too many keys pressed" filler in every key slot.
pub const ROLLOVER_ERROR: u8 = 0x01;

/// The characters a usage id types in `layout`.
pub fn key(layout: KeyboardLayout, usage: u8) -> KeyChars {
    if let Some(chars) = common(usage) {
        return match (layout, usage) {
            // Finnish keyboards put the euro sign on AltGr+E.
            (KeyboardLayout::Fi, 0x08) => with_altgr('e', 'E', '€'),
            _ => chars,
        };
    }
    match layout {
        KeyboardLayout::Us => us(usage),
        KeyboardLayout::Fi => fi(usage),
    }
}

/// Letters, space and the keypad: the same on both layouts.
fn common(usage: u8) -> Option<KeyChars> {
    Some(match usage {
        0x04..=0x1d => {
            let letter = (b'a' + (usage - 0x04)) as char;
            plain(letter, letter.to_ascii_uppercase())
        }
        0x2c => plain(' ', ' '),
        0x54 => plain('/', '/'),
        0x55 => plain('*', '*'),
        0x56 => plain('-', '-'),
        0x57 => plain('+', '+'),
        0x59..=0x61 => {
            let digit = (b'1' + (usage - 0x59)) as char;
            plain(digit, digit)
        }
        0x62 => plain('0', '0'),
        0x63 => plain('.', '.'),
        _ => return None,
    })
}

fn us(usage: u8) -> KeyChars {
    match usage {
        0x1e => plain('1', '!'),
        0x1f => plain('2', '@'),
        0x20 => plain('3', '#'),
        0x21 => plain('4', '$'),
        0x22 => plain('5', '%'),
        0x23 => plain('6', '^'),
        0x24 => plain('7', '&'),
        0x25 => plain('8', '*'),
        0x26 => plain('9', '('),
        0x27 => plain('0', ')'),
        0x2d => plain('-', '_'),
        0x2e => plain('=', '+'),
        0x2f => plain('[', '{'),
        0x30 => plain(']', '}'),
        0x31 | 0x32 => plain('\\', '|'),
        0x33 => plain(';', ':'),
        0x34 => plain('\'', '"'),
        0x35 => plain('`', '~'),
        0x36 => plain(',', '<'),
        0x37 => plain('.', '>'),
        0x38 => plain('/', '?'),
        0x64 => plain('\\', '|'),
        _ => NONE,
    }
}

/// Finnish/Swedish (ISO) layout.
fn fi(usage: u8) -> KeyChars {
    match usage {
        0x1e => plain('1', '!'),
        0x1f => with_altgr('2', '"', '@'),
        0x20 => with_altgr('3', '#', '£'),
        0x21 => with_altgr('4', '¤', '$'),
        0x22 => with_altgr('5', '%', '€'),
        0x23 => plain('6', '&'),
        0x24 => with_altgr('7', '/', '{'),
        0x25 => with_altgr('8', '(', '['),
        0x26 => with_altgr('9', ')', ']'),
        0x27 => with_altgr('0', '=', '}'),
        0x2d => with_altgr('+', '?', '\\'),
        0x2e => KeyChars { plain: Some(Key::Dead('´')), shift: Some(Key::Dead('`')), altgr: None },
        0x2f => plain('å', 'Å'),
        0x30 => KeyChars { plain: Some(Key::Dead('¨')), shift: Some(Key::Dead('^')), altgr: Some(Key::Dead('~')) },
        0x31 | 0x32 => plain('\'', '*'),
        0x33 => plain('ö', 'Ö'),
        0x34 => plain('ä', 'Ä'),
        0x35 => plain('§', '½'),
        0x36 => plain(',', ';'),
        0x37 => plain('.', ':'),
        0x38 => plain('-', '_'),
        0x64 => with_altgr('<', '>', '|'),
        _ => NONE,
    }
}

/// A dead key followed by `next`: the composed character, or `None` when they do not
/// combine (both are then typed).
pub fn compose(dead: char, next: char) -> Option<char> {
    let table: &[(char, &str, &str)] = &[
        ('´', "aeiouyAEIOUY", "áéíóúýÁÉÍÓÚÝ"),
        ('`', "aeiouAEIOU", "àèìòùÀÈÌÒÙ"),
        ('¨', "aeiouyAEIOU", "äëïöüÿÄËÏÖÜ"),
        ('^', "aeiouAEIOU", "âêîôûÂÊÎÔÛ"),
        ('~', "anoANO", "ãñõÃÑÕ"),
    ];
    let (_, from, to) = table.iter().find(|(accent, _, _)| *accent == dead)?;
    let index = from.chars().position(|c| c == next)?;
    to.chars().nth(index)
}

/// The key presses (modifiers, usage) that type `c` in `layout`: one press, or a dead
/// key then a letter for composed characters. `None` when the layout cannot type it.
/// The inverse of [`key`], for writing the reports a scanner would send.
pub fn presses_for(layout: KeyboardLayout, c: char) -> Option<Vec<(u8, u8)>> {
    if c == '\n' {
        return Some(vec![(0, ENTER)]);
    }
    if let Some(press) = single_press(layout, Key::Char(c)) {
        return Some(vec![press]);
    }
    if let Some(dead) = single_press(layout, Key::Dead(c)) {
        // An accent alone: its dead key, then space.
        return Some(vec![dead, single_press(layout, Key::Char(' '))?]);
    }
    for accent in ['´', '`', '¨', '^', '~'] {
        let Some(dead) = single_press(layout, Key::Dead(accent)) else { continue };
        if let Some(base) = ('a'..='z').chain('A'..='Z').find(|base| compose(accent, *base) == Some(c)) {
            return Some(vec![dead, single_press(layout, Key::Char(base))?]);
        }
    }
    None
}

fn single_press(layout: KeyboardLayout, wanted: Key) -> Option<(u8, u8)> {
    (0x04u8..=0x64).find_map(|usage| {
        let chars = key(layout, usage);
        [(0u8, chars.plain), (0x02, chars.shift), (0x40, chars.altgr)]
            .into_iter()
            .find(|(_, typed)| *typed == Some(wanted))
            .map(|(modifiers, _)| (modifiers, usage))
    })
}
