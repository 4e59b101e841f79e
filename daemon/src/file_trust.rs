//! Whose files the daemon trusts: what it runs (plugins) and what it obeys (config
//! files, `conf.d/`) must be writable only by root and the user posbridge runs as, and
//! secret files readable only by them. A file other users could change is a way to
//! make the daemon run their code or pay their way.

use std::fs::Metadata;
use std::path::Path;

/// Why a file or directory others could change is not trusted, if they could.
pub fn others_can_write(path: &Path, metadata: &Metadata) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = metadata.mode() & 0o7777;
        let owner = metadata.uid();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if owner != 0 && owner != me {
            return Some(format!("{} belongs to user id {owner}, neither root nor the user posbridge runs as", path.display()));
        }
        if mode & 0o022 != 0 {
            return Some(format!("{} can be written by other users (mode {mode:o}); chmod go-w it", path.display()));
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = (path, metadata);
        None
    }
}

/// Checks `path` (following no link at the end when `no_link`) and answers why it is
/// not trusted, if it is not.
pub fn untrusted(path: &Path, no_link: bool) -> Option<String> {
    let metadata = if no_link { std::fs::symlink_metadata(path) } else { std::fs::metadata(path) };
    match metadata {
        Ok(metadata) if no_link && metadata.file_type().is_symlink() => {
            Some(format!("{} is a symbolic link; name the file itself", path.display()))
        }
        Ok(metadata) => others_can_write(path, &metadata),
        Err(_) => None, // a missing file is reported where it is read
    }
}

/// The mode of a secret file group or others can read.
pub fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The daemon runs as a systemd service (systemd sets `INVOCATION_ID`): exposed
/// secrets are refused there, and only warned about on a developer's machine.
pub fn running_as_service() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
}
