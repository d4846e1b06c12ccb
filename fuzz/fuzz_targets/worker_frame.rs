//! The frames on the pipe between the host and a plugin worker process
//! (`rolegate::plugins::frame`), read as the worker reads them (blocking) and as the host
//! does (async).
//!
//! Checks: both readers see the same frames and the same end; the frames read encode back
//! to the bytes they were read from.
#![no_main]

use std::io;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rolegate::plugins::frame::{self, Frame};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

type Read = (Vec<Frame>, Result<(), io::ErrorKind>);

fn read_sync(mut input: &[u8]) -> Read {
    let mut frames = Vec::new();
    loop {
        match frame::read_sync(&mut input) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, Ok(())),
            Err(e) => return (frames, Err(e.kind())),
        }
    }
}

fn read_async(mut input: &[u8]) -> Read {
    RUNTIME.block_on(async {
        let mut frames = Vec::new();
        loop {
            match frame::read_async(&mut input).await {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (frames, Ok(())),
                Err(e) => return (frames, Err(e.kind())),
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let sync = read_sync(data);
    let asynchronous = read_async(data);
    assert_eq!(sync, asynchronous);
    let encoded: Vec<u8> = sync
        .0
        .iter()
        .flat_map(|f| frame::encode(f.kind, f.id, &f.payload))
        .collect();
    assert_eq!(&data[..encoded.len()], &encoded[..]);
});
