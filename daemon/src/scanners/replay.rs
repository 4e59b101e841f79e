//! The `replay` source: raw reports, one hex line each, from a file or a FIFO, read as
//! they arrive. A line may start with `@<milliseconds>` (its time in a recording);
//! blank lines and `#` comments are skipped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::{Feed, LineError};

/// A replay line's content: its recorded time (milliseconds), if any, and the report.
pub type TimedReport = (Option<u64>, Vec<u8>);

/// One parsed line; `None` for blank lines and comments.
pub fn parse_line(line: &str) -> Result<Option<TimedReport>, LineError> {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return Ok(None);
    }
    let (at, hex) = match line.strip_prefix('@') {
        Some(rest) => {
            let (time, hex) = rest.split_once(char::is_whitespace).ok_or(LineError::MissingReport)?;
            (Some(time.parse::<u64>().map_err(|_| LineError::BadTime(time.to_string()))?), hex)
        }
        None => (None, line),
    };
    let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&digits).map(|bytes| Some((at, bytes))).map_err(|_| LineError::NotHex(digits))
}

/// Reads `path` until the source is dropped: a regular file once, a FIFO again and
/// again (each writer that opens and closes it is one session). Reports go through
/// `feed`; a pause longer than `idle_every` lets the decoder end a code on its timeout.
pub fn run(path: PathBuf, idle_every: Duration, feed: &mut dyn Feed) {
    let is_fifo = is_fifo(&path);
    loop {
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) => {
                feed.disconnected(&format!("cannot open {}: {error}", path.display()));
                return;
            }
        };
        feed.connected(&path.display().to_string());
        read_session(file, idle_every, feed);
        feed.end_of_input();
        if !is_fifo || !feed.keep_going() {
            feed.disconnected("end of input");
            return;
        }
    }
}

fn read_session(file: std::fs::File, idle_every: Duration, feed: &mut dyn Feed) {
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    loop {
        match lines.recv_timeout(idle_every) {
            Ok(line) => match parse_line(&line) {
                Ok(Some((at, report))) => feed.report(at.unwrap_or_else(now), &report),
                Ok(None) => {}
                Err(error) => feed.error(&format!("replay line {line:?}: {error}")),
            },
            Err(RecvTimeoutError::Timeout) => feed.idle(now()),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(unix)]
fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).map(|meta| meta.file_type().is_fifo()).unwrap_or(false)
}

#[cfg(not(unix))]
fn is_fifo(_path: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse_line("0002040000000000").unwrap(), Some((None, vec![0, 2, 4, 0, 0, 0, 0, 0])));
        assert_eq!(parse_line("@125 00 00 04 00 00 00 00 00 # a").unwrap(), Some((Some(125), vec![0, 0, 4, 0, 0, 0, 0, 0])));
        assert_eq!(parse_line("   # only a comment").unwrap(), None);
        assert!(matches!(parse_line("zz"), Err(LineError::NotHex(_))));
        assert!(matches!(parse_line("@x 00"), Err(LineError::BadTime(_))));
        assert!(matches!(parse_line("@12"), Err(LineError::MissingReport)));
        assert!(matches!(parse_line("abc"), Err(LineError::NotHex(_))), "odd number of digits");
    }
}
