//! The checks that feed requests the host would never send well-formed: garbage, missing and
//! unknown operations, wrong field types, huge and deep values, bytes that are not UTF-8, and
//! valid JSON in unusual forms; plus the raw functions' edge cases.

use std::ffi::c_void;

use serde_json::{Value, json};

use super::session::{
    Reply, Session, Shared, clip, fail, now, pass, random_bytes, skip, some_of, step_shape, user,
    within,
};
use super::{
    ABI_EDGES, ANY_JSON, BY_LENGTH, Check, GARBAGE, HUGE, MISSING_OP, NOT_UTF8, UNKNOWN_KEY,
    UNKNOWN_OP, UNSUPPORTED_OP, WRONG_TYPES,
};
use crate::abi::Buffer;
use crate::error::ErrorKind;
use crate::message::{ProviderInfo, Response, Step, Verdict};

/// What an answer must be.
#[derive(Clone, Copy)]
enum Expect {
    /// An error of exactly this kind.
    Kind(ErrorKind),
    /// An error of either kind (the second when the operation is not offered at all).
    Either(ErrorKind, ErrorKind),
    /// Any valid answer in time that is not a fault (`internal`, `panicked`) or an approval.
    Survive,
}

impl Expect {
    fn text(self) -> String {
        match self {
            Expect::Kind(k) => format!("{} {k} error", article(k)),
            Expect::Either(a, b) => format!("{} {a} or {b} error", article(a)),
            Expect::Survive => "a valid answer (no crash, hang, fault or approval)".to_string(),
        }
    }
}

/// "an unsupported error", "a bad_input error".
fn article(kind: ErrorKind) -> &'static str {
    if kind.as_str().starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// One request to send, and what its answer must be.
struct Case {
    what: String,
    bytes: Vec<u8>,
    expect: Expect,
    /// The answer of a well-formed request of this op is a Step (checked for approvals).
    step: bool,
}

fn case(what: impl Into<String>, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        what: what.into(),
        bytes,
        expect,
        step: false,
    }
}

fn step_case(what: impl Into<String>, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        step: true,
        ..case(what, bytes, expect)
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A credential as the wire spells it (its data is not any provider's).
fn cred() -> Value {
    json!({"id": "rolegate-check-cred", "label": "check", "data": b64(b"rolegate-check-credential")})
}

fn user_json() -> Value {
    serde_json::to_value(user()).unwrap_or(Value::Null)
}

fn challenge_ctx_json(request_id: &str) -> Value {
    json!({
        "user": user_json(),
        "role": "rolegate-check-role",
        "request_id": request_id,
        "credentials": [cred()],
        "origin": super::session::ORIGIN,
        "now": now(),
    })
}

fn enroll_ctx_json() -> Value {
    json!({
        "user": user_json(),
        "credentials": [cred()],
        "origin": super::session::ORIGIN,
        "now": now(),
    })
}

/// A well-formed request of each op that carries fields, with every field present.
fn full_requests() -> Vec<(&'static str, Value)> {
    let state = b64(&random_bytes(24));
    let input = json!({"kind": "code", "code": "000000"});
    vec![
        (
            "enroll_start",
            json!({"op": "enroll_start", "ctx": enroll_ctx_json()}),
        ),
        (
            "enroll_continue",
            json!({"op": "enroll_continue", "ctx": enroll_ctx_json(), "state": state, "input": input}),
        ),
        (
            "challenge_start",
            json!({"op": "challenge_start", "ctx": challenge_ctx_json("check-types")}),
        ),
        (
            "challenge_continue",
            json!({"op": "challenge_continue", "ctx": challenge_ctx_json("check-types"),
                   "state": state, "input": input}),
        ),
        (
            "challenge_poll",
            json!({"op": "challenge_poll", "ctx": challenge_ctx_json("check-types"), "state": state}),
        ),
        (
            "cancel",
            json!({"op": "cancel", "ctx": challenge_ctx_json("check-types"), "state": state}),
        ),
    ]
}

/// Values of another type than `v`'s (for integers, also what is not a u64).
fn wrong_values(path: &str, v: &Value) -> Vec<Value> {
    match v {
        Value::String(_) => vec![json!(7), json!({"rolegate": "check"})],
        Value::Number(_) if path.ends_with("now") => vec![
            json!("1767225600"),
            json!(true),
            json!(-1),
            json!(1.5),
            // 2^64: one past the largest u64; and a number with an exponent.
            Value::Number(
                serde_json::from_str("18446744073709551616").unwrap_or(serde_json::Number::from(0)),
            ),
            Value::Number(serde_json::from_str("1e3").unwrap_or(serde_json::Number::from(0))),
        ],
        Value::Number(_) => vec![json!("7"), json!(true)],
        Value::Object(_) => vec![json!([]), json!("rolegate-check")],
        Value::Array(_) => vec![json!({}), json!("rolegate-check")],
        Value::Bool(_) => vec![json!("true"), json!(1)],
        Value::Null => Vec::new(),
    }
}

/// Every field below the top level of `v` (its path and value), objects before their fields.
fn fields(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if path.is_empty() && k == "op" {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.push((p.clone(), child.clone()));
                fields(child, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.push((p.clone(), child.clone()));
                fields(child, &p, out);
            }
        }
        _ => {}
    }
}

/// `v` with the field at `path` (as [`fields`] spells it) replaced by `with`.
fn replaced(v: &Value, path: &str, with: &Value) -> Value {
    let mut out = v.clone();
    let mut pointer = String::new();
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        pointer.push('/');
        pointer.push_str(key);
        if let Some(i) = index {
            pointer.push_str(&format!("/{i}"));
        }
    }
    if let Some(slot) = out.pointer_mut(&pointer) {
        *slot = with.clone();
    }
    out
}

/// The bytes of `text` with `bad` spliced in where `MARK` is.
fn splice(text: &str, bad: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match text.split_once("MARK") {
        Some((a, b)) => {
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(bad);
            out.extend_from_slice(b.as_bytes());
        }
        None => out.extend_from_slice(text.as_bytes()),
    }
    out
}

/// A challenge_start whose account holds `MARK`, to splice raw bytes into a string.
fn start_with_marked_account(field: &str) -> String {
    let mut ctx = challenge_ctx_json("check-utf8");
    if let Some(u) = ctx.get_mut("user").and_then(Value::as_object_mut) {
        u.insert(field.into(), Value::String("rolegate-MARK-check".into()));
    }
    json!({"op": "challenge_start", "ctx": ctx}).to_string()
}

/// What an answer was, in the terms the cases judge.
struct Seen {
    kind: Option<ErrorKind>,
    broken: bool,
    approved: bool,
    text: String,
}

fn seen_step(reply: Reply<Step>) -> Seen {
    Seen {
        kind: reply.error_kind(),
        broken: reply.broken(),
        approved: matches!(
            reply,
            Reply::Ok(Step::Done {
                verdict: Verdict::Approved { .. }
            })
        ),
        text: reply.describe(),
    }
}

fn seen_value(reply: Reply<Value>) -> Seen {
    Seen {
        kind: reply.error_kind(),
        broken: reply.broken(),
        approved: false,
        text: reply.describe(),
    }
}

impl Session<'_> {
    fn send(&self, endpoint: &Shared, c: &Case) -> Seen {
        if c.step {
            seen_step(self.call(endpoint, &c.what, c.bytes.clone()))
        } else {
            seen_value(self.call(endpoint, &c.what, c.bytes.clone()))
        }
    }

    /// Sends every case; the check passes when every answer is as expected.
    fn run_cases(&self, name: &str, endpoint: &Shared, cases: Vec<Case>, summary: &str) -> Check {
        let total = cases.len();
        let mut failures = Vec::new();
        for c in &cases {
            let seen = self.send(endpoint, c);
            let ok = match c.expect {
                Expect::Kind(k) => seen.kind == Some(k),
                Expect::Either(a, b) => seen.kind == Some(a) || seen.kind == Some(b),
                Expect::Survive => {
                    !seen.broken
                        && !seen.approved
                        && !matches!(seen.kind, Some(ErrorKind::Internal | ErrorKind::Panicked))
                }
            };
            if !ok {
                failures.push(format!(
                    "{}: expected {}, got {}",
                    c.what,
                    c.expect.text(),
                    seen.text
                ));
            }
        }
        if failures.is_empty() {
            pass(name, format!("{total} requests: {summary}"))
        } else {
            fail(
                name,
                format!(
                    "{} of {total} requests: {}",
                    failures.len(),
                    some_of(failures, 5)
                ),
            )
        }
    }

    pub(super) fn garbage_checks(&self, endpoint: &Shared) -> Vec<Check> {
        let mut checks = Vec::new();
        if self.table().is_some() {
            checks.push(self.checked(ABI_EDGES, || self.check_abi_edges()));
        }
        checks.push(self.checked(GARBAGE, || self.check_garbage(endpoint)));
        checks.push(self.checked(MISSING_OP, || self.check_missing_op(endpoint)));
        checks.push(self.checked(UNSUPPORTED_OP, || self.check_unknown_op(endpoint)));
        checks.push(self.checked(WRONG_TYPES, || self.check_wrong_types(endpoint)));
        checks.push(self.checked(HUGE, || self.check_huge(endpoint)));
        checks.push(self.checked(NOT_UTF8, || self.check_not_utf8(endpoint)));
        checks.push(self.checked(ANY_JSON, || self.check_any_json(endpoint)));
        checks.push(self.checked(BY_LENGTH, || self.check_by_length(endpoint)));
        checks
    }

    fn check_garbage(&self, endpoint: &Shared) -> Check {
        let bad = Expect::Kind(ErrorKind::BadInput);
        let enrol = if self.needs_enrolment() {
            bad
        } else {
            Expect::Either(ErrorKind::BadInput, ErrorKind::Unsupported)
        };
        let mut not_json = vec![0xff];
        not_json.extend(random_bytes(31));
        let start =
            bytes(&json!({"op": "challenge_start", "ctx": challenge_ctx_json("check-garbage")}));
        let truncated = start[..start.len() / 2].to_vec();
        let garbage_state = b64(&random_bytes(48));
        let ctx = challenge_ctx_json("check-garbage");
        let input = json!({"kind": "code", "code": "000000"});
        let cases = vec![
            case("random bytes", not_json, bad),
            case("an empty request", Vec::new(), bad),
            case("whitespace only", b" \n\t\r ".to_vec(), bad),
            case("null", b"null".to_vec(), bad),
            case("a number", b"42".to_vec(), bad),
            case("a string", br#""info""#.to_vec(), bad),
            case(
                "JSON that is not an object",
                br#"[{"op":"info"}]"#.to_vec(),
                bad,
            ),
            case("truncated JSON", truncated, bad),
            case(
                "two documents",
                br#"{"op":"info"}{"op":"info"}"#.to_vec(),
                bad,
            ),
            case("trailing garbage", br#"{"op":"info"} x"#.to_vec(), bad),
            case(
                "a NUL byte after the document",
                b"{\"op\":\"info\"}\0".to_vec(),
                bad,
            ),
            case("a comment", br#"{"op":"info" /* x */}"#.to_vec(), bad),
            case("single quotes", br"{'op':'info'}".to_vec(), bad),
            case("a trailing comma", br#"{"op":"info",}"#.to_vec(), bad),
            case(
                "a bare word",
                br#"{"op":"challenge_start","ctx":NaN}"#.to_vec(),
                bad,
            ),
            step_case(
                "challenge_continue without ctx",
                br#"{"op":"challenge_continue"}"#.to_vec(),
                bad,
            ),
            step_case(
                "challenge_continue with a garbage state",
                bytes(
                    &json!({"op": "challenge_continue", "ctx": ctx, "state": garbage_state, "input": input}),
                ),
                bad,
            ),
            step_case(
                "challenge_continue with a state that is not base64",
                bytes(
                    &json!({"op": "challenge_continue", "ctx": ctx, "state": "!!not base64!!", "input": input}),
                ),
                bad,
            ),
            step_case(
                "challenge_poll with a garbage state",
                bytes(&json!({"op": "challenge_poll", "ctx": ctx, "state": garbage_state})),
                bad,
            ),
            case(
                "cancel with a state that is not base64",
                bytes(&json!({"op": "cancel", "ctx": ctx, "state": "!!not base64!!"})),
                bad,
            ),
            step_case(
                "enroll_continue with a garbage state",
                bytes(&json!({"op": "enroll_continue", "ctx": enroll_ctx_json(),
                              "state": garbage_state, "input": input})),
                enrol,
            ),
        ];
        self.run_cases(
            GARBAGE,
            endpoint,
            cases,
            "malformed requests and states answered bad_input",
        )
    }

    fn check_missing_op(&self, endpoint: &Shared) -> Check {
        let bad = Expect::Kind(ErrorKind::BadInput);
        let ctx = challenge_ctx_json("check-op");
        let cases = vec![
            case("an empty object", b"{}".to_vec(), bad),
            case("a request without op", bytes(&json!({"ctx": ctx})), bad),
            case("`OP` instead of `op`", br#"{"OP":"info"}"#.to_vec(), bad),
            case("op a number", br#"{"op":5}"#.to_vec(), bad),
            case(
                "op a number, with ctx",
                bytes(&json!({"op": 5, "ctx": ctx})),
                bad,
            ),
            case("op a fraction", br#"{"op":1.5}"#.to_vec(), bad),
            case("op null", br#"{"op":null}"#.to_vec(), bad),
            case("op true", br#"{"op":true}"#.to_vec(), bad),
            case("op an array", br#"{"op":["info"]}"#.to_vec(), bad),
            case("op an object", br#"{"op":{"name":"info"}}"#.to_vec(), bad),
        ];
        self.run_cases(
            MISSING_OP,
            endpoint,
            cases,
            "requests without a string op answered bad_input",
        )
    }

    fn check_unknown_op(&self, endpoint: &Shared) -> Check {
        let unsupported = Expect::Kind(ErrorKind::Unsupported);
        let ctx = challenge_ctx_json("check-op");
        let huge = "x".repeat(100_000);
        let mut op_last = String::from(r#"{"ctx":"#);
        op_last.push_str(&ctx.to_string());
        op_last.push_str(&format!(r#","op":"{UNKNOWN_OP}"}}"#));
        let cases = vec![
            case(
                "an unknown op",
                format!(r#"{{"op":"{UNKNOWN_OP}"}}"#).into_bytes(),
                unsupported,
            ),
            case(
                "an unknown op with a context",
                bytes(&json!({"op": UNKNOWN_OP, "ctx": ctx})),
                unsupported,
            ),
            case(
                "an unknown op given last",
                op_last.into_bytes(),
                unsupported,
            ),
            case(
                "an unknown op with fields of any type",
                bytes(&json!({"op": UNKNOWN_OP, "state": 5, "input": [null]})),
                unsupported,
            ),
            case("an empty op", br#"{"op":""}"#.to_vec(), unsupported),
            case(
                "`INFO` (ops are case-sensitive)",
                br#"{"op":"INFO"}"#.to_vec(),
                unsupported,
            ),
            case(
                "`info` followed by a NUL character",
                br#"{"op":"info\u0000"}"#.to_vec(),
                unsupported,
            ),
            case(
                "`challenge_start ` with a space",
                bytes(&json!({"op": "challenge_start ", "ctx": ctx})),
                unsupported,
            ),
            case(
                "an op of 100,000 characters",
                bytes(&json!({"op": huge})),
                unsupported,
            ),
            case(
                "an op with non-ASCII characters",
                br#"{"op":"\u00e9tat-\u4e2d"}"#.to_vec(),
                unsupported,
            ),
        ];
        self.run_cases(
            UNSUPPORTED_OP,
            endpoint,
            cases,
            "unknown ops answered unsupported",
        )
    }

    fn check_wrong_types(&self, endpoint: &Shared) -> Check {
        let bad = Expect::Kind(ErrorKind::BadInput);
        let needs = self.needs_enrolment();
        let mut cases = Vec::new();
        for (op, request) in full_requests() {
            let expect = if op.starts_with("enroll") && !needs {
                Expect::Either(ErrorKind::BadInput, ErrorKind::Unsupported)
            } else {
                bad
            };
            let mut all = Vec::new();
            fields(&request, "", &mut all);
            for (path, value) in all {
                for wrong in wrong_values(&path, &value) {
                    let what = format!("{op} with `{path}` = {}", clip(&wrong.to_string()));
                    let bytes = bytes(&replaced(&request, &path, &wrong));
                    cases.push(if op == "cancel" {
                        case(what, bytes, expect)
                    } else {
                        step_case(what, bytes, expect)
                    });
                }
            }
        }
        self.run_cases(
            WRONG_TYPES,
            endpoint,
            cases,
            "every field of every request, of the wrong type, answered bad_input",
        )
    }

    fn check_huge(&self, endpoint: &Shared) -> Check {
        let survive = Expect::Survive;
        let bad = Expect::Kind(ErrorKind::BadInput);
        let mib = 1 << 20;
        let start_with = |f: &dyn Fn(&mut Value)| {
            let mut ctx = challenge_ctx_json("check-huge");
            f(&mut ctx);
            bytes(&json!({"op": "challenge_start", "ctx": ctx}))
        };
        let long_account = start_with(&|ctx| ctx["user"]["account"] = json!("a".repeat(mib)));
        let long_request_id = start_with(&|ctx| ctx["request_id"] = json!("r".repeat(mib)));
        let many_credentials =
            start_with(&|ctx| ctx["credentials"] = Value::Array(vec![cred(); 20_000]));
        let escaped =
            start_with(&|ctx| ctx["user"]["display_name"] = json!("\u{e9}".repeat(200_000)));
        let ctx = challenge_ctx_json("check-huge");
        let big_state = bytes(&json!({
            "op": "challenge_continue", "ctx": ctx, "state": b64(&random_bytes(3 * mib)),
            "input": {"kind": "code", "code": "000000"}
        }));
        let big_code = bytes(&json!({
            "op": "challenge_continue", "ctx": ctx, "state": b64(&random_bytes(24)),
            "input": {"kind": "code", "code": "1".repeat(mib)}
        }));
        let mut long_array = String::from(r#"{"op":"info","rolegate_check":["#);
        long_array.push_str(&vec!["0"; 200_000].join(","));
        long_array.push_str("]}");
        let depth = 10_000;
        let mut deep_arrays = String::from(r#"{"op":"info","rolegate_check":"#);
        deep_arrays.push_str(&"[".repeat(depth));
        deep_arrays.push_str(&"]".repeat(depth));
        deep_arrays.push('}');
        let mut deep_objects = String::from(r#"{"op":"info","rolegate_check":"#);
        deep_objects.push_str(&r#"{"a":"#.repeat(5_000));
        deep_objects.push('1');
        deep_objects.push_str(&"}".repeat(5_000));
        deep_objects.push('}');
        let mut deep_ctx = String::from(r#"{"op":"challenge_start","ctx":"#);
        deep_ctx.push_str(&"[".repeat(depth));
        deep_ctx.push_str(&"]".repeat(depth));
        deep_ctx.push('}');
        let top_balanced = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        let top_open = "[".repeat(100_000).into_bytes();
        let open_object = r#"{"a":"#.repeat(100_000).into_bytes();
        let mut many_keys = String::from(r#"{"op":"info""#);
        for i in 0..100_000 {
            many_keys.push_str(&format!(r#","k{i}":0"#));
        }
        many_keys.push('}');
        let cases = vec![
            step_case(
                "challenge_start with a 1 MiB account",
                long_account,
                survive,
            ),
            step_case(
                "challenge_start with a 1 MiB request_id",
                long_request_id,
                survive,
            ),
            step_case(
                "challenge_start with 20,000 credentials",
                many_credentials,
                survive,
            ),
            step_case(
                "challenge_start with 200,000 escaped characters",
                escaped,
                survive,
            ),
            step_case("challenge_continue with a 4 MiB state", big_state, survive),
            step_case("challenge_continue with a 1 MiB code", big_code, survive),
            case(
                "info with a 200,000-element array",
                long_array.into_bytes(),
                survive,
            ),
            case("info with 100,000 keys", many_keys.into_bytes(), survive),
            case(
                "info with arrays nested 10,000 deep",
                deep_arrays.into_bytes(),
                survive,
            ),
            case(
                "info with objects nested 5,000 deep",
                deep_objects.into_bytes(),
                survive,
            ),
            step_case(
                "challenge_start with a ctx nested 10,000 deep",
                deep_ctx.into_bytes(),
                bad,
            ),
            case("arrays nested 10,000 deep", top_balanced, bad),
            case("100,000 open brackets", top_open, bad),
            case("100,000 open objects", open_object, bad),
        ];
        self.run_cases(
            HUGE,
            endpoint,
            cases,
            "huge and deep requests answered in time, without a fault",
        )
    }

    fn check_not_utf8(&self, endpoint: &Shared) -> Check {
        let bad = Expect::Kind(ErrorKind::BadInput);
        let account = start_with_marked_account("account");
        let display = start_with_marked_account("display_name");
        let utf16: Vec<u8> =
            r#"{"op":"info"}"#.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let cases = vec![
            step_case("0xFF 0xFE in a string", splice(&account, b"\xff\xfe"), bad),
            step_case(
                "an overlong encoding (C0 AF)",
                splice(&account, b"\xc0\xaf"),
                bad,
            ),
            step_case(
                "a surrogate encoded in UTF-8 (ED A0 80)",
                splice(&account, b"\xed\xa0\x80"),
                bad,
            ),
            step_case(
                "a code point above U+10FFFF (F4 90 80 80)",
                splice(&account, b"\xf4\x90\x80\x80"),
                bad,
            ),
            step_case(
                "a sequence cut short (E2 82)",
                splice(&account, b"\xe2\x82"),
                bad,
            ),
            step_case("a Latin-1 byte (E9)", splice(&display, b"\xe9"), bad),
            case("a bad byte in op", b"{\"op\":\"in\xffo\"}".to_vec(), bad),
            case(
                "a bad byte outside any string",
                b"{\"op\":\"info\"\xff}".to_vec(),
                bad,
            ),
            case("UTF-16", utf16, bad),
            step_case(
                "a lone surrogate escape (\\ud800), valid JSON grammar",
                splice(&display, br"\ud800"),
                Expect::Survive,
            ),
        ];
        self.run_cases(
            NOT_UTF8,
            endpoint,
            cases,
            "requests that are not UTF-8 answered bad_input",
        )
    }

    /// Valid JSON in unusual forms is read as its compact form is.
    fn check_any_json(&self, endpoint: &Shared) -> Check {
        let mut failures = Vec::new();
        let compact: Reply<ProviderInfo> =
            self.call(endpoint, "info, compact", br#"{"op":"info"}"#.to_vec());
        let Reply::Ok(info) = compact else {
            return fail(
                ANY_JSON,
                format!(
                    "info, compact: {}",
                    compact.describe_with(|_| String::new())
                ),
            );
        };
        let forms: [(&str, &[u8]); 4] = [
            ("info with whitespace", b" \r\n{ \"op\" :\t\"info\" }\n "),
            ("info with escapes", br#"{"op":"\u0069\u006e\u0066o"}"#),
            (
                "info with unknown fields",
                br#"{"rolegate_check_extra":{"nested":[1,2.5,{"a":null}],"s":"\u00e9"},"op":"info","x":true}"#,
            ),
            ("info with \\/", br#"{"op":"info","rolegate_check":"a\/b"}"#),
        ];
        for (what, request) in forms {
            let reply: Reply<ProviderInfo> = self.call(endpoint, what, request.to_vec());
            match reply {
                Reply::Ok(other) if other == info => {}
                Reply::Ok(_) => failures.push(format!("{what}: another ProviderInfo")),
                other => failures.push(format!(
                    "{what}: expected the same ProviderInfo, got {}",
                    other.describe_with(|_| String::new())
                )),
            }
        }
        // A challenge_start as compact JSON, then the same with the op last, keys reversed,
        // whitespace, escapes and unknown fields at every level: the same kind of answer.
        let mut ctx = serde_json::to_value(self.challenge_ctx("check-json")).unwrap_or(Value::Null);
        let base: Reply<Step> = self.call(
            endpoint,
            "challenge_start, compact",
            bytes(&json!({"op": "challenge_start", "ctx": ctx})),
        );
        if let Some(c) = ctx.as_object_mut() {
            c.insert(
                "rolegate_check_extra".into(),
                json!({"a": [1, {"b": null}]}),
            );
        }
        if let Some(u) = ctx.get_mut("user").and_then(Value::as_object_mut) {
            u.insert("rolegate_check_extra".into(), json!(1));
        }
        if let Some(Value::Array(creds)) = ctx.get_mut("credentials") {
            for c in creds.iter_mut().filter_map(Value::as_object_mut) {
                c.insert("rolegate_check_extra".into(), json!("x"));
            }
        }
        let mut text = String::from("{\n  \"ctx\" : ");
        text.push_str(&reversed_pretty(&ctx));
        text.push_str(
            ",\n  \"rolegate_check_extra\" : [ ],\n  \"op\" : \"challenge_\\u0073tart\"\n}\n",
        );
        let odd: Reply<Step> =
            self.call(endpoint, "challenge_start, unusual form", text.into_bytes());
        let (a, b) = (base.shape_with(step_shape), odd.shape_with(step_shape));
        if base.broken() || odd.broken() || a != b {
            failures.push(format!(
                "challenge_start answered {} in compact JSON but {} with the op last, whitespace, escapes and unknown fields",
                base.describe(),
                odd.describe()
            ));
        }
        if failures.is_empty() {
            pass(
                ANY_JSON,
                format!(
                    "whitespace, escapes, unknown fields and the op last read alike (challenge_start: {a})"
                ),
            )
        } else {
            fail(ANY_JSON, some_of(failures, 5))
        }
    }

    /// The provider reads `len` bytes: more bytes after them in memory change nothing.
    fn check_by_length(&self, endpoint: &Shared) -> Check {
        let mut failures = Vec::new();
        let info_json = br#"{"op":"info"}"#;
        for (what, tail) in [
            ("info followed by more JSON", &br#"{"op":"health"}"#[..]),
            ("info followed by garbage", &b"\xff garbage, no NUL"[..]),
            ("info followed by a quote", &br#"",x"#[..]),
        ] {
            let mut buffer = info_json.to_vec();
            buffer.extend_from_slice(tail);
            let reply: Reply<ProviderInfo> =
                self.call_prefix(endpoint, what, buffer, info_json.len());
            if !matches!(reply, Reply::Ok(_)) {
                failures.push(format!(
                    "{what} (not part of the request): {}",
                    reply.describe_with(|_| String::new())
                ));
            }
        }
        // A NUL inside a string is a character like any other, not the end of the text.
        let mut ctx = self.challenge_ctx("check-length");
        let base: Reply<Step> = self.call_request(
            endpoint,
            "challenge_start, plain account",
            &crate::message::Request::ChallengeStart { ctx: ctx.clone() },
        );
        ctx.user.account = "rolegate\u{0}check".into();
        let nul: Reply<Step> = self.call_request(
            endpoint,
            "challenge_start, a NUL in the account",
            &crate::message::Request::ChallengeStart { ctx },
        );
        if nul.broken()
            || (base.shape_with(step_shape) != nul.shape_with(step_shape)
                && nul.error_kind() != Some(ErrorKind::BadInput))
        {
            failures.push(format!(
                "challenge_start with a NUL (\\u0000) in the account: {} (without it: {})",
                nul.describe(),
                base.describe()
            ));
        }
        if failures.is_empty() {
            pass(
                BY_LENGTH,
                "requests read by their length: bytes after them ignored, a NUL in a string kept",
            )
        } else {
            fail(BY_LENGTH, some_of(failures, 4))
        }
    }

    /// The raw functions with null pointers, and what a refused create leaves.
    fn check_abi_edges(&self) -> Check {
        let Some(table) = self.table() else {
            return skip(ABI_EDGES, "the table is not in this process");
        };
        let t = table.functions();
        let deadline = self.deadline();
        let mut failures = Vec::new();
        let mut ran = 0;
        let settings = serde_json::to_vec(&self.options.settings).unwrap_or_default();
        // Reads a returned buffer and frees it with the plugin's own function.
        fn answer(t: &'static crate::abi::ProviderTableV1, buf: Buffer) -> Vec<u8> {
            if buf.ptr.is_null() {
                return Vec::new();
            }
            // SAFETY: the plugin returned this buffer of `len` bytes; copied, then freed once.
            let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
            // SAFETY: as above; freed exactly once, with the plugin's own function.
            unsafe { (t.free_buffer)(buf) };
            bytes
        }
        fn kind(bytes: &[u8]) -> Result<Option<ErrorKind>, String> {
            match serde_json::from_slice::<Response<Option<Value>>>(bytes) {
                Ok(Response::Ok(_)) => Ok(None),
                Ok(Response::Error(e)) => Ok(Some(e.kind)),
                Err(e) => Err(format!("an invalid answer ({e})")),
            }
        }
        let mut raw = |what: &str, f: Box<dyn FnOnce() -> Result<(), String> + Send>| {
            ran += 1;
            match self.raw_call(what, deadline, f) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => failures.push(format!("{what}: {why}")),
                Err(why) => failures.push(format!("{what}: {why}")),
            }
        };
        let s = settings.clone();
        raw(
            "create with a null instance pointer",
            Box::new(move || {
                // SAFETY: the table is valid; the settings buffer is ours; a null `instance`
                // is allowed by the header (the plugin must answer bad_input).
                let buf = unsafe { (t.create)(s.as_ptr(), s.len(), std::ptr::null_mut()) };
                match kind(&answer(t, buf))? {
                    Some(ErrorKind::BadInput) => Ok(()),
                    Some(k) => Err(format!("expected a bad_input error, got {k}")),
                    None => Err("expected a bad_input error, got Ok".into()),
                }
            }),
        );
        let mut refused = self.options.settings.clone();
        if let Value::Object(map) = &mut refused {
            map.insert(UNKNOWN_KEY.into(), Value::Bool(true));
        }
        let r = serde_json::to_vec(&refused).unwrap_or_default();
        raw(
            "a refused create",
            Box::new(move || {
                let mut instance: *mut c_void = std::ptr::null_mut();
                // SAFETY: the table is valid; the buffers are ours.
                let buf = unsafe { (t.create)(r.as_ptr(), r.len(), &mut instance) };
                let k = kind(&answer(t, buf));
                let left = !instance.is_null();
                if left {
                    // SAFETY: the plugin wrote this instance; it is destroyed once.
                    unsafe { (t.destroy)(instance) };
                }
                match k? {
                    Some(_) if left => Err("the create answered an error but left an instance behind (write nothing, or release it first)".into()),
                    _ => Ok(()),
                }
            }),
        );
        raw(
            "destroy(NULL)",
            Box::new(move || {
                // SAFETY: the header requires destroy to accept NULL.
                unsafe { (t.destroy)(std::ptr::null_mut()) };
                Ok(())
            }),
        );
        raw(
            "free_buffer({NULL, 0})",
            Box::new(move || {
                // SAFETY: the header requires free_buffer to accept a null pointer.
                unsafe {
                    (t.free_buffer)(Buffer {
                        ptr: std::ptr::null_mut(),
                        len: 0,
                    })
                };
                Ok(())
            }),
        );
        let s = settings;
        raw(
            "call with a NULL request of length 0",
            Box::new(move || {
                let mut instance: *mut c_void = std::ptr::null_mut();
                // SAFETY: the table is valid; the buffers are ours.
                let buf = unsafe { (t.create)(s.as_ptr(), s.len(), &mut instance) };
                let created = kind(&answer(t, buf));
                if instance.is_null() {
                    return match created? {
                        Some(k) => Err(format!("no instance to call: create answered {k}")),
                        None => Err("create answered Ok without an instance".into()),
                    };
                }
                // SAFETY: a live instance of this table; a NULL request with length 0 is
                // allowed by the header (the plugin must answer bad_input).
                let buf = unsafe { (t.call)(instance, std::ptr::null(), 0) };
                let k = kind(&answer(t, buf));
                // SAFETY: the instance is destroyed once, after its last call.
                unsafe { (t.destroy)(instance) };
                match k? {
                    Some(ErrorKind::BadInput) => Ok(()),
                    Some(k) => Err(format!("expected a bad_input error, got {k}")),
                    None => Err("expected a bad_input error, got Ok".into()),
                }
            }),
        );
        if failures.is_empty() {
            pass(
                ABI_EDGES,
                format!("{ran} calls with null pointers and refused settings handled"),
            )
        } else {
            fail(ABI_EDGES, failures.join("; "))
        }
    }

    /// A raw ABI call under the deadline, observed like any call; Err when it broke.
    fn raw_call(
        &self,
        what: &str,
        deadline: std::time::Duration,
        f: Box<dyn FnOnce() -> Result<(), String> + Send>,
    ) -> Result<Result<(), String>, String> {
        self.observed_raw(what, || {
            within(deadline, f).ok_or_else(|| {
                format!(
                    "did not return within {}: a hang (or a panic)",
                    super::session::human(deadline)
                )
            })
        })
    }
}

/// Pretty JSON with every object's keys in reverse order (the provider must not care).
fn reversed_pretty(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut parts: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{} : {}",
                        serde_json::to_string(k).unwrap_or_default(),
                        reversed_pretty(v)
                    )
                })
                .collect();
            parts.reverse();
            format!("{{\n\t{}\n}}", parts.join(" ,\n\t"))
        }
        Value::Array(items) => format!(
            "[ {} ]",
            items
                .iter()
                .map(reversed_pretty)
                .collect::<Vec<_>>()
                .join(" , ")
        ),
        Value::String(s) => escape_all(s),
        other => other.to_string(),
    }
}

/// A JSON string literal with every non-alphanumeric character as a \u escape.
fn escape_all(s: &str) -> String {
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        match char::from_u32(u32::from(unit)) {
            Some(c) if c.is_ascii_alphanumeric() => out.push(c),
            _ => out.push_str(&format!("\\u{unit:04x}")),
        }
    }
    out.push('"');
    out
}
