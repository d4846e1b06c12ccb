//! PhoneFactor's answers: the HTTP answer (`transport::read_answer`), the `pfpMessage`
//! response in it (`pfp::Response::parse`) and the verdict of its `callStatus`
//! (`call_status::verdict`); and the endpoint URLs of the settings (`transport::Endpoint`).
//!
//! Checks: no panic; an endpoint that parses, written back as a URL (with its port, and
//! without it when it is 443), parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rolegate_provider_legacy_phone::call_status;
use rolegate_provider_legacy_phone::pfp::Response;
use rolegate_provider_legacy_phone::transport::{Endpoint, read_answer};

fn response(xml: &str) {
    if let Ok(r) = Response::parse(xml) {
        let _ = format!("{r:?}");
        if let Some(code) = r.call_status {
            let _ = call_status::verdict(code, r.authenticated);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => response(&String::from_utf8_lossy(rest)),
        1 => {
            if let Ok((_, body)) = read_answer(rest) {
                response(&body);
            }
        }
        _ => {
            let url = String::from_utf8_lossy(rest);
            if let Ok(e) = Endpoint::parse(&url) {
                let host = if e.host.contains(':') {
                    format!("[{}]", e.host)
                } else {
                    e.host.clone()
                };
                let mut again = vec![format!("https://{host}:{}{}", e.port, e.path)];
                if e.port == 443 {
                    // The default port may be left out.
                    again.push(format!("https://{host}{}", e.path));
                }
                for again in again {
                    match Endpoint::parse(&again) {
                        Ok(back) => assert_eq!(back, e, "{url} -> {again}"),
                        Err(err) => panic!("{url} -> {again}: {err}"),
                    }
                }
            }
        }
    }
});
