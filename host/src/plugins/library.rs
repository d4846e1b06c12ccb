//! Reading, pinning and loading a plugin library.
//!
//! The file is read once; its bytes are hashed and checked against the pin, and the very
//! bytes that were checked are what gets loaded (through a sealed in-memory file), so the
//! library on disk cannot be swapped between the check and the load.

use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{FromRawFd as _, IntoRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use rolegate_sdk::abi::{ENTRY_SYMBOL, EntryFn, Table};
use sha2::{Digest as _, Sha256};

use crate::model::error::{Error, Result};

/// Largest plugin library accepted.
const MAX_LIBRARY: u64 = 512 << 20;

/// A library file that was read, recognised as ELF and matched against its pin.
#[derive(Debug)]
pub struct Inspected {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    bytes: Vec<u8>,
}

/// A library loaded into this process, with its validated ABI table.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// The validated ABI v1 table.
    pub table: Table,
}

fn refuse(id: &str, path: &Path, reason: impl Into<String>) -> Error {
    Error::Load {
        id: id.to_string(),
        library: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The SHA-256 of a file, lower-case hex (what a pin holds).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Reads a library file, checks that it is an ELF file and that it matches the pin.
pub fn inspect(id: &str, path: &Path, pin: Option<&str>) -> Result<Inspected> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => refuse(id, path, "file not found"),
        _ => refuse(id, path, format!("cannot read it: {e}")),
    })?;
    if !meta.is_file() {
        return Err(refuse(id, path, "not a regular file"));
    }
    if meta.len() > MAX_LIBRARY {
        return Err(refuse(
            id,
            path,
            format!(
                "{} bytes is larger than the {MAX_LIBRARY}-byte limit",
                meta.len()
            ),
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| refuse(id, path, format!("cannot read it: {e}")))?;
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(refuse(
            id,
            path,
            "not a shared library (the file has no ELF header)",
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if let Some(pin) = pin {
        let pin = pin.trim();
        if !pin.eq_ignore_ascii_case(&sha256) {
            return Err(refuse(
                id,
                path,
                format!(
                    "its SHA-256 is {sha256} but the config pins {pin}; refusing a library that is not the pinned one"
                ),
            ));
        }
    }
    Ok(Inspected {
        path: path.to_path_buf(),
        sha256,
        bytes,
    })
}

/// Copies the checked bytes into an anonymous in-memory file and returns its descriptor.
fn sealed_copy(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    let name = c"rolegate-plugin";
    // SAFETY: `name` is a valid C string; memfd_create has no other preconditions.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(bytes)?;
    Ok(OwnedFd::from(file))
}

impl Inspected {
    /// Loads the checked bytes into this process and validates the ABI table.
    ///
    /// Plugins stay loaded for the life of the process: unloading Rust or C++ libraries with
    /// thread-local destructors is not safe.
    pub fn load(self, id: &str) -> Result<Loaded> {
        let path = self.path.clone();
        let fd = sealed_copy(&self.bytes)
            .map_err(|e| refuse(id, &path, format!("cannot stage it in memory: {e}")))?;
        // The descriptor stays open for the life of the process: the loader identifies the
        // library by this path, and a reused number must never alias another plugin.
        let raw = fd.into_raw_fd();
        let staged = format!("/proc/self/fd/{raw}");
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
        // SAFETY: loading runs the library's initialisers; that is the trust the admin gave
        // by configuring (and pinning) this library.
        let lib =
            unsafe { libloading::os::unix::Library::open(Some(&staged), flags) }.map_err(|e| {
                let msg = e.to_string().replace(&staged, &path.display().to_string());
                refuse(id, &path, format!("not a loadable shared library: {msg}"))
            })?;
        let symbol = CString::new(ENTRY_SYMBOL).map_err(|_| refuse(id, &path, "bad symbol"))?;
        // SAFETY: the symbol, when present, has the signature the ABI defines.
        let entry = unsafe { lib.get::<EntryFn>(symbol.as_bytes_with_nul()) };
        let entry = match entry {
            Ok(e) => *e,
            Err(_) => {
                let other = (2..=9).find(|v| {
                    let name = format!("rolegate_provider_v{v}\0");
                    // SAFETY: only the symbol's presence is tested; it is not called.
                    unsafe { lib.get::<*const u8>(name.as_bytes()) }.is_ok()
                });
                let reason = match other {
                    Some(v) => format!(
                        "it is a rolegate plugin for ABI v{v} only; this host speaks ABI v1 (`{ENTRY_SYMBOL}`)"
                    ),
                    None => format!("not a rolegate plugin: it does not export `{ENTRY_SYMBOL}`"),
                };
                return Err(refuse(id, &path, reason));
            }
        };
        // SAFETY: the entry symbol takes no arguments and returns a pointer to a static table.
        let ptr = unsafe { entry() };
        // SAFETY: the library is never unloaded (forgotten below), so the table lives for the
        // rest of the process; its size is checked against `table_size` first.
        let table =
            unsafe { Table::from_raw(ptr) }.map_err(|e| refuse(id, &path, e.to_string()))?;
        std::mem::forget(lib);
        Ok(Loaded {
            path,
            sha256: self.sha256,
            table,
        })
    }
}

/// Reads, checks and loads a library into this process.
pub fn open(id: &str, path: &Path, pin: Option<&str>) -> Result<Loaded> {
    inspect(id, path, pin)?.load(id)
}
