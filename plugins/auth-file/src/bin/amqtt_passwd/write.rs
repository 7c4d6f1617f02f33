//! Replaces a password file atomically: a crash or a full disk leaves either the old file or
//! the new one, never half of one, and the broker never reads a partly written file.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a password file this command creates: readable and writable by its owner only.
pub const NEW_FILE_MODE: u32 = 0o600;

/// Writes `contents` to a temporary file beside `path` and renames it over `path`. A new file
/// (or one written with `fresh`, for -c) gets mode 0600; an existing file keeps its mode. When
/// `path` is a symbolic link, the file it points to is replaced and the link kept.
pub fn replace_file(path: &Path, contents: &str, fresh: bool) -> io::Result<()> {
    let target = match fs::canonicalize(path) {
        Ok(target) => target,
        Err(error) if error.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(error) => return Err(error),
    };
    let mode = match fs::metadata(&target) {
        Ok(metadata) if !fresh => metadata.permissions().mode() & 0o7777,
        _ => NEW_FILE_MODE,
    };
    let temp = temp_path(&target);
    let result = write_new(&temp, contents, mode).and_then(|()| fs::rename(&temp, &target));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(&target);
    Ok(())
}

fn write_new(temp: &Path, contents: &str, mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(temp)?;
    // The umask may have taken bits away from `mode`; an existing file's mode is kept exactly.
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// `.NAME.amqtt_passwd-PID` in the same folder, so that the rename stays on one file system.
fn temp_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.amqtt_passwd-{}", std::process::id()))
}

/// Makes the rename itself durable; best effort, as not every file system allows it.
fn sync_dir(target: &Path) {
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}
