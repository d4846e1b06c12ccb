//! The C ABI: one versioned entry symbol returning a table of functions over JSON buffers.
//!
//! A plugin exports `rolegate_provider_v1`, an `extern "C"` function with no arguments that
//! returns a pointer to a static [`ProviderTableV1`]. Every function of the table takes and
//! returns byte buffers of UTF-8 JSON (see [`crate::message`]); buffers a plugin returns are
//! allocated by the plugin and released with its own `free_buffer`.
//!
//! Rust vendors never touch this module: [`crate::export_provider!`] generates it and catches
//! every panic. The layout matches `include/rolegate_provider.h`.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{ErrorKind, ProviderError};
use crate::message::{Request, Response};
use crate::provider::Provider;
use crate::settings::Settings;

/// The ABI version this SDK speaks; a host refuses a table with another version.
pub const ABI_VERSION: u32 = 1;

/// The name of the entry symbol for ABI v1.
pub const ENTRY_SYMBOL: &str = "rolegate_provider_v1";

/// The SDK's own version, reported in `ProviderInfo::sdk_version`.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A byte buffer handed across the boundary; the side that allocated it frees it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Buffer {
    /// Start of the bytes; may be null when `len` is 0.
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

/// The signature of the entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const ProviderTableV1;

/// `create(settings_json, len, &instance)`: builds an instance; returns `{"ok":null}` or an error.
pub type CreateFn = unsafe extern "C" fn(*const u8, usize, *mut *mut c_void) -> Buffer;
/// `call(instance, request_json, len)`: answers one [`Request`] with a [`Response`].
pub type CallFn = unsafe extern "C" fn(*mut c_void, *const u8, usize) -> Buffer;
/// `destroy(instance)`: drops an instance made by `create`.
pub type DestroyFn = unsafe extern "C" fn(*mut c_void);
/// `free_buffer(buffer)`: releases a buffer the plugin returned.
pub type FreeFn = unsafe extern "C" fn(Buffer);

/// The function table of ABI v1.
///
/// `table_size` is `size_of::<ProviderTableV1>()` as the plugin was built; a host reads a field
/// only when the table is long enough to hold it.
#[repr(C)]
#[derive(Debug)]
pub struct ProviderTableV1 {
    /// Always [`ABI_VERSION`] for this layout.
    pub abi_version: u32,
    /// Size of the table in bytes, as the plugin was built.
    pub table_size: u32,
    /// Builds an instance from settings.
    pub create: CreateFn,
    /// Answers one request.
    pub call: CallFn,
    /// Drops an instance.
    pub destroy: DestroyFn,
    /// Releases a returned buffer.
    ///
    /// This is the last field of ABI v1. New fields go below it only, never above; nothing is
    /// removed or reordered.
    pub free_buffer: FreeFn,
}

impl ProviderTableV1 {
    /// The table that serves provider `P` through the ABI.
    pub const fn for_provider<P: Provider>() -> Self {
        Self {
            abi_version: ABI_VERSION,
            table_size: size_of::<ProviderTableV1>() as u32,
            create: create_impl::<P>,
            call: call_impl::<P>,
            destroy: destroy_impl::<P>,
            free_buffer: free_impl,
        }
    }
}

/// The smallest table size a v1 host accepts (all of v1's fields).
pub const TABLE_V1_SIZE: usize = size_of::<ProviderTableV1>();

/// Exports a [`Provider`] as a rolegate plugin: generates the entry symbol and its table.
///
/// ```ignore
/// rolegate_sdk::export_provider!(MyProvider);
/// ```
#[macro_export]
macro_rules! export_provider {
    ($provider:ty) => {
        /// The rolegate plugin entry point (ABI v1).
        #[unsafe(no_mangle)]
        pub extern "C" fn rolegate_provider_v1() -> *const $crate::abi::ProviderTableV1 {
            static TABLE: $crate::abi::ProviderTableV1 =
                $crate::abi::ProviderTableV1::for_provider::<$provider>();
            &TABLE
        }
    };
}

fn into_buffer(bytes: Vec<u8>) -> Buffer {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    let ptr = Box::into_raw(boxed).cast::<u8>();
    Buffer { ptr, len }
}

fn encode<T: serde::Serialize>(response: &Response<T>) -> Vec<u8> {
    serde_json::to_vec(response).unwrap_or_else(|_| {
        br#"{"error":{"kind":"internal","message":"the provider's answer could not be encoded"}}"#
            .to_vec()
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    };
    let mut text: String = text.chars().take(300).collect();
    text.insert_str(0, "the provider panicked: ");
    text
}

fn panicked(payload: Box<dyn Any + Send>) -> ProviderError {
    ProviderError::new(ErrorKind::Panicked, panic_message(payload.as_ref()))
}

/// Reads `len` bytes at `ptr`, treating a null pointer as empty.
///
/// # Safety
/// `ptr` must be null or valid for reads of `len` bytes for the returned lifetime.
unsafe fn input<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller guarantees `ptr` is valid for `len` bytes.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// `create` for provider `P`.
///
/// # Safety
/// `settings` must be null or valid for `len` bytes; `out` must be null or writable.
pub unsafe extern "C" fn create_impl<P: Provider>(
    settings: *const u8,
    len: usize,
    out: *mut *mut c_void,
) -> Buffer {
    // SAFETY: the host passes a buffer valid for `len` bytes (or null).
    let bytes = unsafe { input(settings, len) };
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<P, ProviderError> {
        let settings: Settings = serde_json::from_slice(bytes).map_err(|e| {
            ProviderError::bad_input(format!("settings are not a JSON object: {e}"))
        })?;
        P::create(settings)
    }));
    let result = result.unwrap_or_else(|p| Err(panicked(p)));
    let response: Response<()> = match result {
        Ok(provider) => {
            if out.is_null() {
                Response::Error(ProviderError::bad_input("create: null instance pointer"))
            } else {
                let raw = Box::into_raw(Box::new(provider)).cast::<c_void>();
                // SAFETY: `out` is non-null and the host passes a writable pointer.
                unsafe { *out = raw };
                Response::Ok(())
            }
        }
        Err(e) => Response::Error(e),
    };
    into_buffer(encode(&response))
}

/// Answers one decoded request.
pub fn dispatch<P: Provider>(provider: &P, request: Request) -> Vec<u8> {
    match request {
        Request::Info => {
            let mut info = provider.info();
            if info.sdk_version.is_empty() {
                info.sdk_version = SDK_VERSION.to_string();
            }
            encode(&Response::Ok(info))
        }
        Request::Health => encode(&Response::Ok(provider.health())),
        Request::EnrollStart { ctx } => encode(&provider.enroll_start(&ctx).into()),
        Request::EnrollContinue { ctx, state, input } => {
            encode(&provider.enroll_continue(&ctx, &state.0, &input).into())
        }
        Request::ChallengeStart { ctx } => encode(&provider.challenge_start(&ctx).into()),
        Request::ChallengeContinue { ctx, state, input } => {
            encode(&provider.challenge_continue(&ctx, &state.0, &input).into())
        }
        Request::ChallengePoll { ctx, state } => {
            encode(&provider.challenge_poll(&ctx, &state.0).into())
        }
        Request::Cancel { ctx, state } => encode(&provider.cancel(&ctx, &state.0).into()),
    }
}

/// Decodes a request, telling an operation this SDK does not know from a malformed message.
pub fn decode_request(bytes: &[u8]) -> Result<Request, ProviderError> {
    // Every call: one pass. Only a message that does not decode is read again, to say why.
    if let Ok(request) = serde_json::from_slice::<Request>(bytes) {
        return Ok(request);
    }
    #[derive(serde::Deserialize)]
    struct Op {
        op: String,
    }
    const KNOWN: [&str; 8] = [
        "info",
        "health",
        "enroll_start",
        "enroll_continue",
        "challenge_start",
        "challenge_continue",
        "challenge_poll",
        "cancel",
    ];
    let op: Op = serde_json::from_slice(bytes).map_err(|e| {
        ProviderError::bad_input(format!(
            "malformed request: not a JSON object with an `op` field ({e})"
        ))
    })?;
    if !KNOWN.contains(&op.op.as_str()) {
        return Err(ProviderError::unsupported(format!(
            "operation `{}` is not supported by this provider (built with rolegate-sdk {SDK_VERSION})",
            op.op.chars().take(64).collect::<String>()
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ProviderError::bad_input(format!(
            "malformed `{}` request at `{path}`: {}",
            op.op,
            e.into_inner()
        ))
    })
}

/// `call` for provider `P`.
///
/// # Safety
/// `instance` must come from `create_impl::<P>` and not be destroyed; `request` must be null
/// or valid for `len` bytes.
pub unsafe extern "C" fn call_impl<P: Provider>(
    instance: *mut c_void,
    request: *const u8,
    len: usize,
) -> Buffer {
    // SAFETY: the host passes a buffer valid for `len` bytes (or null).
    let bytes = unsafe { input(request, len) };
    if instance.is_null() {
        return into_buffer(encode(&Response::<()>::Error(ProviderError::bad_input(
            "call: null instance pointer",
        ))));
    }
    // SAFETY: `instance` was made by `create_impl::<P>` and is alive; `P: Sync` allows shared
    // access from many threads.
    let provider: &P = unsafe { &*instance.cast::<P>() };
    let out = catch_unwind(AssertUnwindSafe(|| match decode_request(bytes) {
        Ok(request) => dispatch(provider, request),
        Err(e) => encode(&Response::<()>::Error(e)),
    }));
    let out = out.unwrap_or_else(|p| encode(&Response::<()>::Error(panicked(p))));
    into_buffer(out)
}

/// `destroy` for provider `P`.
///
/// # Safety
/// `instance` must come from `create_impl::<P>` and not be used again.
pub unsafe extern "C" fn destroy_impl<P: Provider>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the pointer came from `Box::into_raw` in `create_impl::<P>`.
    let boxed = unsafe { Box::from_raw(instance.cast::<P>()) };
    // A panicking Drop must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(boxed)));
}

/// `free_buffer` of every Rust plugin.
///
/// # Safety
/// `buffer` must come from this plugin's `create` or `call` and not be freed twice.
pub unsafe extern "C" fn free_impl(buffer: Buffer) {
    if buffer.ptr.is_null() {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(buffer.ptr, buffer.len);
    // SAFETY: the buffer came from `into_buffer`, i.e. `Box<[u8]>::into_raw` of `len` bytes.
    drop(unsafe { Box::from_raw(slice) });
}

/// Why a table cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// The entry symbol returned a null pointer.
    #[error("the entry symbol returned a null table")]
    Null,
    /// The table speaks another ABI version.
    #[error("the plugin speaks ABI v{found}; this host speaks ABI v{ABI_VERSION}")]
    Version {
        /// The version the table declares.
        found: u32,
    },
    /// The table is too short for its version.
    #[error(
        "the plugin's function table is {found} bytes, too short for ABI v1 ({TABLE_V1_SIZE} bytes)"
    )]
    TooShort {
        /// The size the table declares.
        found: u32,
    },
}

/// A validated ABI v1 table, ready to create instances.
///
/// This is the caller's side of the ABI; the host uses it after loading a library, and a
/// vendor's tests can use it to call their provider through the real C ABI without loading.
#[derive(Clone, Copy)]
pub struct Table {
    table: &'static ProviderTableV1,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("abi_version", &self.table.abi_version)
            .field("table_size", &self.table.table_size)
            .finish()
    }
}

impl Table {
    /// Validates a table returned by an entry symbol.
    ///
    /// # Safety
    /// `ptr` must be null or point to memory that stays valid and unchanged for the rest of the
    /// process (the library is never unloaded while the table is in use) and that holds at
    /// least the `abi_version` and `table_size` fields, plus `table_size` bytes in all.
    pub unsafe fn from_raw(ptr: *const ProviderTableV1) -> Result<Self, TableError> {
        if ptr.is_null() {
            return Err(TableError::Null);
        }
        // Read the two header fields first: a table of another version may be shorter.
        let header = ptr.cast::<u32>();
        // SAFETY: every table version starts with two u32 fields (version, size).
        let (version, size) = unsafe { (header.read(), header.add(1).read()) };
        if version != ABI_VERSION {
            return Err(TableError::Version { found: version });
        }
        if (size as usize) < TABLE_V1_SIZE {
            return Err(TableError::TooShort { found: size });
        }
        // SAFETY: version and size say the full v1 layout is there; the caller guarantees it
        // lives as long as the process uses it.
        let table: &'static ProviderTableV1 = unsafe { &*ptr };
        Ok(Self { table })
    }

    /// The table that serves `P` directly from this process, without loading a library.
    pub fn for_provider<P: Provider>() -> Self {
        let table: &'static ProviderTableV1 =
            Box::leak(Box::new(ProviderTableV1::for_provider::<P>()));
        Self { table }
    }

    /// The declared table size in bytes.
    pub fn size(&self) -> u32 {
        self.table.table_size
    }

    /// The raw function table, for callers that test the functions' edge cases themselves.
    pub fn functions(&self) -> &'static ProviderTableV1 {
        self.table
    }

    /// Creates an instance from settings given as a JSON object.
    pub fn create(&self, settings_json: &[u8]) -> Result<Instance, ProviderError> {
        let mut raw: *mut c_void = std::ptr::null_mut();
        // SAFETY: the table is valid (checked in `from_raw`) and the buffers are ours.
        let buf =
            unsafe { (self.table.create)(settings_json.as_ptr(), settings_json.len(), &mut raw) };
        let bytes = self.take(buf);
        let response: Response<Option<serde_json::Value>> = serde_json::from_slice(&bytes)
            .map_err(|e| {
                ProviderError::internal(format!("the plugin's answer to create is not valid: {e}"))
            })?;
        match response {
            Response::Ok(_) if raw.is_null() => Err(ProviderError::internal(
                "the plugin reported success from create but returned no instance",
            )),
            Response::Ok(_) => Ok(Instance { table: *self, raw }),
            Response::Error(e) => {
                if !raw.is_null() {
                    // SAFETY: the plugin made this instance; we drop it once.
                    unsafe { (self.table.destroy)(raw) };
                }
                Err(e)
            }
        }
    }

    fn take(&self, buf: Buffer) -> Vec<u8> {
        if buf.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the plugin returned this buffer of `len` bytes; we copy it then free it once
        // with the plugin's own function.
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
        // SAFETY: as above; freed exactly once.
        unsafe { (self.table.free_buffer)(buf) };
        bytes
    }
}

/// A live provider instance behind the ABI; dropped with the plugin's `destroy`.
pub struct Instance {
    table: Table,
    raw: *mut c_void,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

// SAFETY: the ABI requires instances to accept calls from any thread, concurrently (Rust
// providers are `Send + Sync`; C vendors are told so in the header).
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Instance {
    /// Sends one JSON request and returns the plugin's JSON response bytes.
    pub fn call_raw(&self, request: &[u8]) -> Vec<u8> {
        // SAFETY: `raw` is a live instance of this table; the request buffer is ours.
        let buf = unsafe { (self.table.table.call)(self.raw, request.as_ptr(), request.len()) };
        self.table.take(buf)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `raw` came from this table's `create` and is destroyed once.
        unsafe { (self.table.table.destroy)(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bytes;
    use crate::message::*;

    struct Echo;

    impl Provider for Echo {
        fn create(settings: Settings) -> Result<Self, ProviderError> {
            if settings.0.contains_key("boom") {
                panic!("boom at create");
            }
            if let Some(k) = settings.0.keys().next() {
                return Err(ProviderError::config(format!("unknown setting `{k}`")));
            }
            Ok(Echo)
        }
        fn info(&self) -> ProviderInfo {
            ProviderInfo {
                id: "echo".into(),
                name: "Echo".into(),
                version: "1".into(),
                vendor: "test".into(),
                factor: FactorKind::Code,
                needs_enrolment: false,
                needs_phone: false,
                responder: PromptKind::Code,
                quick: false,
                answer_ahead: false,
                sdk_version: String::new(),
                several_credentials: false,
            }
        }
        fn challenge_start(&self, _ctx: &ChallengeContext) -> Result<Step, ProviderError> {
            panic!("panic in challenge_start");
        }
        fn challenge_continue(
            &self,
            _ctx: &ChallengeContext,
            state: &[u8],
            _input: &Input,
        ) -> Result<Step, ProviderError> {
            Ok(Step::Ask {
                prompt: Prompt::Code {
                    message: "again".into(),
                    length: None,
                },
                state: Bytes(state.to_vec()),
                expires_in: 1,
                reference: None,
            })
        }
    }

    fn call(i: &Instance, json: &str) -> serde_json::Value {
        serde_json::from_slice(&i.call_raw(json.as_bytes())).unwrap()
    }

    #[test]
    fn info_gets_the_sdk_version() {
        let i = Table::for_provider::<Echo>().create(b"{}").unwrap();
        let v = call(&i, r#"{"op":"info"}"#);
        assert_eq!(v["ok"]["sdk_version"], SDK_VERSION);
        assert_eq!(v["ok"]["id"], "echo");
    }

    #[test]
    fn a_panic_becomes_an_error_value() {
        let i = Table::for_provider::<Echo>().create(b"{}").unwrap();
        let v = call(
            &i,
            r#"{"op":"challenge_start","ctx":{"user":{"account":"a"},"role":"r","request_id":"1","now":0}}"#,
        );
        assert_eq!(v["error"]["kind"], "panicked");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("panic in challenge_start")
        );
        let e = Table::for_provider::<Echo>()
            .create(br#"{"boom":1}"#)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Panicked);
    }

    #[test]
    fn config_errors_come_back() {
        let e = Table::for_provider::<Echo>()
            .create(br#"{"colour":1}"#)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("colour"));
    }

    #[test]
    fn garbage_is_bad_input_and_unknown_ops_unsupported() {
        let i = Table::for_provider::<Echo>().create(b"{}").unwrap();
        assert_eq!(call(&i, "\u{1}garbage")["error"]["kind"], "bad_input");
        assert_eq!(
            call(&i, r#"{"op":"teleport"}"#)["error"]["kind"],
            "unsupported"
        );
        let v = call(&i, r#"{"op":"challenge_continue","ctx":{}}"#);
        assert_eq!(v["error"]["kind"], "bad_input");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("`user`"),
            "{v}"
        );
        // Default trait methods answer cleanly.
        let v = call(
            &i,
            r#"{"op":"enroll_start","ctx":{"user":{"account":"a"},"now":0}}"#,
        );
        assert_eq!(v["error"]["kind"], "unsupported");
    }

    #[test]
    fn tables_are_validated() {
        #[repr(C)]
        struct Short {
            v: u32,
            s: u32,
        }
        let bad = Short { v: 9, s: 8 };
        // SAFETY: the struct holds the two header fields the check reads first.
        let e = unsafe { Table::from_raw((&bad as *const Short).cast()) }.unwrap_err();
        assert_eq!(e, TableError::Version { found: 9 });
        let short = Short { v: 1, s: 8 };
        // SAFETY: as above.
        let e = unsafe { Table::from_raw((&short as *const Short).cast()) }.unwrap_err();
        assert_eq!(e, TableError::TooShort { found: 8 });
        // SAFETY: null is checked first.
        let e = unsafe { Table::from_raw(std::ptr::null()) }.unwrap_err();
        assert_eq!(e, TableError::Null);
    }
}
