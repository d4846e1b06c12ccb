//! Files only their owner may read: keys, tokens, passwords, the configuration. A file its
//! group or others can read is refused, as OpenSSH refuses such a private key.

use std::path::Path;

use crate::model::error::{Error, Result};

/// Refuses a file that its group or others can read, as OpenSSH does for private keys.
pub fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        what: format!("cannot read {}", path.display()),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads a one-line secret (a password, a token) from a file that must be private
/// ([`check_private`]), without its line ending.
pub fn read_secret(path: &Path) -> Result<String> {
    let text = read_private(path, "")?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads a file that must be private ([`check_private`]); `what` names it in the error
/// (`config `, or nothing).
pub fn read_private(path: &Path, what: &str) -> Result<String> {
    check_private(path)?;
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("cannot read {what}{}", path.display()),
        source,
    })
}
