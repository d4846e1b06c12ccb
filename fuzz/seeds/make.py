#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the project's own fixtures (the
unit tests' inputs and the documentation's examples), and libFuzzer's dictionaries under
fuzz/dict/. The files are committed: this is only needed to change them."""
import base64, json, os, struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fuzz", "corpus")

def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def section(path, start, end):
    """Lines start..end (1-based, inclusive) of a file of the repository."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        lines = f.read().split("\n")
    return "\n".join(lines[start - 1:end]) + "\n"

CTX = {"user": {"account": "CONTOSO\\jdoe", "display_name": "J. \"Doe\"", "phone": "+14255550100"},
       "role": "admins", "request_id": "r1",
       "credentials": [{"id": "c", "label": "key", "data": "AAH/"}], "now": 1764547200}

# --- abi_request: what the host sends (sdk/src/message.rs, abi.rs tests) ---------------------
requests = {
    "info": {"op": "info"},
    "health": {"op": "health"},
    "enroll_start": {"op": "enroll_start", "ctx": {"user": {"account": "a"}, "now": 0}},
    "enroll_continue": {"op": "enroll_continue", "ctx": {"user": {"account": "a"}, "now": 0},
                        "state": "AQ==", "input": {"kind": "code", "code": "123456"}},
    "challenge_start": {"op": "challenge_start", "ctx": CTX},
    "challenge_continue": {"op": "challenge_continue", "ctx": CTX, "state": "cw==",
                           "input": {"kind": "acknowledge"}},
    "challenge_poll": {"op": "challenge_poll", "ctx": CTX, "state": ""},
    "cancel": {"op": "cancel", "ctx": CTX, "state": ""},
}
for name, r in requests.items():
    put("abi_request", name + ".json", json.dumps(r))
put("abi_request", "tag_later.json",
    '{"future_field":1,"ctx":{"user":{"account":"jdoe","shoe_size":44},"role":"r","request_id":"1","now":5,"x":[]},"op":"challenge_start"}')
put("abi_request", "json_input.json",
    '{"op":"challenge_continue","ctx":{"user":{"account":"a"},"role":"r","request_id":"1","now":0},"state":"","input":{"value":{"a":[1,2.5,null]},"kind":"json"}}')
put("abi_request", "unknown_op.json", '{"op":"teleport"}')

# --- totp_calls, sms_calls: 0 then settings (JSON), or another byte then a request ---------
for name, r in requests.items():
    for target in ("totp_calls", "sms_calls"):
        put(target, name, b"\x01" + json.dumps(r).encode())
# TOTP's own state and credential (providers/totp/src/lib.rs: Secret, Challenge, Enrolment).
B64 = lambda o: base64.b64encode(json.dumps(o).encode()).decode()
SECRET = {"secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "algorithm": "SHA1", "digits": 6, "period": 30, "last_step": 58824906}
TCTX = dict(CTX, credentials=[{"id": "totp-1a2b3c4d", "label": "Authenticator app", "data": B64(SECRET)}])
put("totp_calls", "continue_code", b"\x01" + json.dumps({"op": "challenge_continue", "ctx": TCTX,
    "state": B64({"request_id": "r1", "expires_at": 1764547320}), "input": {"kind": "code", "code": "123 456"}}).encode())
put("totp_calls", "enrol_continue", b"\x01" + json.dumps({"op": "enroll_continue", "ctx": {"user": {"account": "CONTOSO\\jdoe"}, "now": 1764547200},
    "state": B64({"secret": SECRET, "account": "CONTOSO\\jdoe", "expires_at": 1764547800}), "input": {"kind": "code", "code": "654321"}}).encode())
put("totp_calls", "settings", b"\x00" + b'{"algorithm":"SHA256","digits":8,"period":30,"skew":1,"issuer":"rolegate","expires_in":120,"enrol_expires_in":600}')
put("sms_calls", "settings", b"\x00" + json.dumps({
    "account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token_env": "TWILIO_AUTH_TOKEN",
    "from": "+14155552345", "base_url": "http://127.0.0.1:9", "body": "Your code is {code}, for {minutes} minutes.",
    "code_length": 6, "code_lifetime_s": 300, "timeout_ms": 4000, "max_attempts": 3}).encode())
put("sms_calls", "settings_service", b"\x00" + b'{"account_sid":"AC0123456789abcdef0123456789abcdef","auth_token_file":"/nonexistent","messaging_service_sid":"MG0123456789abcdef0123456789abcdef"}')

# --- provider_response: what providers answer (sdk/src/message.rs tests) ----------------------
responses = {
    "ask": '{"ok":{"step":"ask","prompt":{"kind":"code","message":"m","length":6},"state":"AQ==","expires_in":60}}',
    "ask_tag_later": '{"ok":{"prompt":{"message":"m","kind":"code","length":6},"expires_in":60,"step":"ask","state":"AQ=="}}',
    "wait": '{"ok":{"step":"wait","state":"","poll_after_ms":1500,"status":"calling +1 425 555 0100"}}',
    "denied": '{"ok":{"step":"done","verdict":{"outcome":"denied","reason":"wrong_answer","message":"no"}}}',
    "approved": '{"ok":{"step":"done","verdict":{"outcome":"approved","credential":{"id":"c1","label":"app","data":"AAEC/w=="}}}}',
    "error": '{"error":{"kind":"bad_input","message":"bad"}}',
    "info": '{"ok":{"id":"totp","name":"Authenticator app","version":"0.1.0","vendor":"rolegate","factor":"code","needs_enrolment":true,"needs_phone":false,"responder":"code","quick":true,"answer_ahead":true,"sdk_version":"0.1.0"}}',
    "health": '{"ok":{"status":"degraded","message":"backup endpoint"}}',
    "cancel": '{"ok":null}',
    "display": '{"ok":{"step":"ask","prompt":{"kind":"display","message":"scan","uri":"otpauth://totp/x","text":"qr"},"state":"","expires_in":600}}',
}
for name, r in responses.items():
    put("provider_response", name + ".json", r)

# --- worker_frame: u32 length | u8 kind | u64 id | payload (host/src/plugins/frame.rs) -------
def frame(kind, fid, payload):
    return struct.pack("<IBQ", 9 + len(payload), kind, fid) + payload
put("worker_frame", "create_call", frame(1, 0, b"{}") + frame(2, 42, b'{"op":"info"}'))
put("worker_frame", "answer", frame(2, 7, responses["ask"].encode()))
put("worker_frame", "fatal", frame(3, 0, b"protocol error: the first frame must be CREATE"))
put("worker_frame", "truncated", frame(2, 1, b"hello")[:-1])

# --- mfa_settings (providers/legacy-phone/src/mfa_settings.rs tests) --------------------------
SDK_FILE = ("\ufeff<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<MfaSettings>\r\n  <LICENSE_KEY>1234567890</LICENSE_KEY>\r\n"
            "  <Group_Key>ABCDEF0123456789</Group_Key>\r\n  <CERT_PASSWORD> p&amp;ss word </CERT_PASSWORD>\r\n"
            "  <CertFilePath>C:\\Program Files\\Microsoft Forefront Identity Manager\\2010\\Service\\cert_key.p12</CertFilePath>\r\n"
            "  <username>PAM</username>\r\n  <DefaultCountryCode>44</DefaultCountryCode>\r\n  <SomethingNewer>ignored</SomethingNewer>\r\n"
            "  <LOCMFA></LOCMFA>\r\n  <LOCMFASRV/>\r\n</MfaSettings>\r\n")
put("mfa_settings", "sdk.xml", SDK_FILE)
put("mfa_settings", "sdk_utf16.xml", b"\xff\xfe" + SDK_FILE.lstrip("\ufeff").encode("utf-16-le"))
put("mfa_settings", "server.xml",
    "<MfaSettings><LICENSE_KEY/><GROUP_KEY/><CERT_PASSWORD/><CertFilePath/><Username>CONTOSO\\svc-mim</Username>"
    "<LOCMFA>true</LOCMFA><LOCMFASRV>https://mfa.contoso.com:9999/MultiFactorAuthWebServiceSdk/PfWsSdk.asmx</LOCMFASRV></MfaSettings>")
put("mfa_settings", "custom.xml", "<m><CustomPhoneProvider>C:\\p.dll</CustomPhoneProvider><![CDATA[x]]><!-- c --></m>")

# --- pfp_response: 0 XML, 1 HTTP answer, 2 endpoint URL (legacy-phone's pfp and transport tests)
OK = ('<?xml version="1.0"?><pfpMessage version="1.5"><header/><response request-id="42">'
      '<status disposition="success"/><authenticationResponse><authenticated>yes</authenticated>'
      '<callStatus>1</callStatus></authenticationResponse></response></pfpMessage>')
put("pfp_response", "ok", b"\x00" + OK.encode())
put("pfp_response", "failed", b"\x00" + "\ufeff<x><response request-id=\"7\"><status disposition=\"fail\"><error-id>12</error-id></status></response></x>".encode())
put("pfp_response", "sms", b"\x00" + b"<r><status disposition='success'/><authenticated>no</authenticated><callStatus>20</callStatus><otp>123456</otp></r>")
put("pfp_response", "http", b"\x01" + b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n\r\n" + OK.encode())
for i, url in enumerate(["https://pfd.phonefactor.net/pfd/pfd.pl", "https://127.0.0.1:8443/pfd/pfd.pl", "https://[::1]:9443/x"]):
    put("pfp_response", "endpoint%d" % i, b"\x02" + url.encode())

# --- mim_import: 0 then a users file, or another byte then a roles file (the import's tests) --
USERS = ("\ufeff#TYPE Microsoft.ResourceManagement.Automation.ObjectModel.PAMUser\r\n\"SourceAccountName\",\"SourceDomain\",\"DisplayName\",\"PhoneNumber\"\r\n"
         "\"jdoe\",\"CONTOSO\",\"Doe, \"\"Jane\"\"\",\"+1 425 555 0100\"\r\n\r\n\"bob\",\"CONTOSO\",\"Bob\",\"\"\r\n")
put("mim_import", "users.csv", b"\x00" + USERS.encode())
put("mim_import", "users_utf16.csv", b"\x00\xff\xfe" + USERS.lstrip("\ufeff").encode("utf-16-le"))
put("mim_import", "users_semicolon.csv", b"\x00" + "AccountName;SourceAccountName;SourceDomain;SourcePhoneNumber;SourceEmailAddress\njdoe;jdoe;CONTOSO;020 7946 0011;jdoe@contoso.com\n".encode())
ROLES = ("DisplayName,Candidates,Approvers,TTL,MFAEnabled,ApprovalEnabled,AvailabilityWindowEnabled,AvailableFrom,AvailableTo,TimeZone\n"
         "Domain Admins,CONTOSO\\jdoe;CONTOSO\\bob,CONTOSO\\boss,7200,True,True,True,1/1/0001 8:00:00 AM,18:30:00,Europe/London\n"
         "Helpdesk,CONTOSO\\amy,,01:30:00,False,False,False,,,\n")
put("mim_import", "roles.csv", b"\x01" + ROLES.encode())
put("mim_import", "roles_tab.csv", b"\x01" + ROLES.replace(",", "\t").encode())
put("mim_import", "bad_roles.csv", b"\x01" + ("DisplayName,Candidates,Approvers,TTL,MFAEnabled,ApprovalEnabled,AvailabilityWindowEnabled,AvailableFrom,AvailableTo\n"
    "Ops,a;b,,3600,True,False,False,,\nBad TTL,a,,-5,False,False,False,,\nWindow,a,,600,False,False,True,09:00,\nFlag,a,,1.02:03:04,Maybe,False,False,,\n").encode())

# --- api_body: a route byte (host/src/http/api/fuzz.rs ROUTES), then the body or query -------
bodies = [
    (0, {"role": "Domain Admins", "justification": "patch night", "ttl_s": 3600, "starts_at": "2026-12-01T20:00:00Z", "code": "123456"}),
    (1, {"code": "123456"}),
    (1, {"input": {"kind": "json", "value": {"id": "x"}}}),
    (2, {"provider": "totp"}),
    (3, {"provider": "totp", "state": "00ff", "code": "123456"}),
    (4, {"reason": "not tonight"}),
    (5, {"account": "CONTOSO\\jdoe", "display_name": "Jane Doe", "phone": "425 555 0100", "email": "jdoe@contoso.com", "allow_lookalike": False}),
    (6, {"phone": None, "email": "j@contoso.com", "enabled": False}),
    (7, {"provider": "totp"}),
    (8, {"name": "Domain Admins", "candidates": ["CONTOSO\\jdoe"], "approvers": [], "ttl_s": 3600, "max_ttl_s": 7200,
         "availability": {"days": ["mon-fri"], "from": "08:00", "to": "18:30", "time_zone": "Europe/London"},
         "mfa_enabled": True, "providers": ["totp", "phone-legacy"]}),
    (10, {"account": "CONTOSO\\jdoe", "admin": False, "label": "laptop"}),
]
for i, (route, body) in enumerate(bodies):
    put("api_body", "body%02d" % i, bytes([route]) + json.dumps(body).encode())
put("api_body", "events_query", bytes([11]) + b"account=CONTOSO%5Cjdoe&since_ms=0&limit=50&id=103")
put("api_body", "requests_query", bytes([12]) + b"limit=20")

# --- config: docs/config.md's example, and the provider sections of the docs ------------------
put("config", "docs_config.toml", section("docs/config.md", 9, 61))
# The same example a section a file: small inputs, whose every byte is a setting.
with open(os.path.join(ROOT, "docs/config.md"), encoding="utf-8") as f:
    example = f.read().split("\n")[8:61]
starts = [i for i, line in enumerate(example) if line.startswith("[")] + [len(example)]
for a, b in zip(starts, starts[1:]):
    name = example[a].split("]")[0].strip("[]").replace(".", "_")
    put("config", "section_%s.toml" % name, "\n".join(example[a:b]) + "\n")
put("config", "legacy_phone.toml", section("docs/providers/legacy-phone.md", 21, 36))
put("config", "sunset.toml", section("docs/migration-from-mim.md", 82, 86).replace("sha256 = \"…\"", "sha256 = \"00\""))

# --- phone: a selector byte for the default country code (1, 7, 33, 39, 44, 358, 379, 999, 0)
for i, (cc, text) in enumerate([(0, "(425) 555-0100"), (4, "020 7946 0958"), (2, "06 12 34 56 78"),
                                (3, "06 1234 5678"), (0, "+44 (0)20 7946 0958"), (0, "0044 20 7946 0958"),
                                (5, "+358 40 1234567"), (0, "+1 425 555 0100 x123#"),
                                (0, "425-555-0100 ext. @,,45"), (7, "425 555 0100")]):
    put("phone", "n%02d" % i, bytes([cc]) + text.encode())

# --- twilio_response: status (u16 LE), header length, Retry-After, body (sms-twilio's tests) --
def twilio(status, header, body):
    return struct.pack("<H", status) + bytes([len(header)]) + header.encode() + body.encode()
put("twilio_response", "created", twilio(201, "", '{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}'))
put("twilio_response", "invalid_to", twilio(400, "", '{"code":21211,"message":"The \'To\' number +14255550142 is not valid.\\n","more_info":"https://www.twilio.com/docs/errors/21211","status":400}'))
put("twilio_response", "echo", twilio(400, "", '{"code":1,"message":"token s3cr3tt0k3n5ecr3tt0k3n5ecr3tt0k3 code 48213307"}'))
put("twilio_response", "too_many", twilio(429, "1", '{"code":20429,"message":"Too Many Requests"}'))
put("twilio_response", "gateway", twilio(502, "", "<html>bad gateway</html>"))
put("twilio_response", "auth", twilio(401, "", '{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003"}'))

# --- anchor_file: lines as the daemon writes them (host/src/records/anchor.rs) ----------------
put("anchor_file", "anchors", '{"seq":12,"hash":"9f2c","at_ms":1764547200000,"mac":"00ff"}\n'
    '{"seq":13,"hash":"a1b2","at_ms":1764547201000,"mac":"zz"}\n\0\0\0\n{"seq":14,"hash"')

# --- account_name (host/src/model/identity.rs tests) ------------------------------------------
for i, name in enumerate(["CONTOSO\\jdoe", "Åsa", "A\u030asa", "ＡＳＡ", "раypal", "jdoe@contoso.com",
                          "山田\u3000太郎", "a\u200bb", "Domain Admins", "\u202eevil"]):
    put("account_name", "name%02d" % i, name)

# --- dictionaries for libFuzzer (fuzz/dict/<target>.dict): the formats' syntax and names ------
def dictionary(target, tokens, header):
    d = os.path.join(ROOT, "fuzz", "dict")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, target + ".dict"), "w", encoding="ascii") as f:
        f.write("# " + header + " (written by fuzz/seeds/make.py)\n")
        for t in tokens:
            raw = t if isinstance(t, bytes) else t.encode("utf-8")
            esc = "".join(chr(b) if 0x20 <= b < 0x7f and b not in (0x22, 0x5c) else "\\x%02x" % b for b in raw)
            f.write('"%s"\n' % esc)

BOM = b"\xef\xbb\xbf"
json_syntax = ["{", "}", "[", "]", ":", ",", '"', "true", "false", "null", "-0", "1e400", "\\u0000", "\\ud800",
               '""', "{}", "[]"]
message_fields = ['"op"', '"ctx"', '"user"', '"account"', '"display_name"', '"phone"', '"email"', '"role"',
    '"request_id"', '"credentials"', '"id"', '"label"', '"data"', '"origin"', '"now"', '"state"', '"input"',
    '"kind"', '"code"', '"value"', '"acknowledge"', '"json"', '"bytes"', '"info"', '"health"', '"enroll_start"',
    '"enroll_continue"', '"challenge_start"', '"challenge_continue"', '"challenge_poll"', '"cancel"']
response_fields = ['"ok"', '"error"', '"message"', '"step"', '"ask"', '"wait"', '"done"', '"prompt"',
    '"expires_in"', '"poll_after_ms"', '"status"', '"verdict"', '"outcome"', '"approved"', '"denied"', '"reason"',
    '"credential"', '"wrong_answer"', '"expired"', '"fraud"', '"length"', '"uri"', '"text"', '"webauthn"',
    '"smartcard"', '"display"', '"options"', '"challenge"', '"factor"', '"needs_enrolment"', '"needs_phone"',
    '"responder"', '"quick"', '"answer_ahead"', '"sdk_version"', '"degraded"', '"down"', '"bad_input"',
    '"unsupported"', '"panicked"']
provider_fields = ['"secret"', '"algorithm"', '"digits"', '"period"', '"last_step"', '"expires_at"', '"issuer"',
    '"skew"', '"SHA256"', '"account_sid"', '"auth_token_file"', '"from"', '"messaging_service_sid"',
    '"base_url"', '"body"', '"code_length"', '"code_lifetime_s"', '"timeout_ms"', '"max_attempts"', '"salt"',
    '"hash"', '"v"', "{code}", "{minutes}"]
dictionary("abi_request", json_syntax + message_fields, "JSON and the fields of the host's requests")
for t in ("totp_calls", "sms_calls"):
    dictionary(t, json_syntax + message_fields + provider_fields,
               "JSON, the host's requests, the provider's state and settings")
dictionary("provider_response", json_syntax + response_fields, "JSON and the fields of providers' answers")
dictionary("api_body", json_syntax + ['"role"', '"justification"', '"ttl_s"', '"provider"', '"starts_at"',
    '"code"', '"input"', '"kind"', '"state"', '"reason"', '"account"', '"display_name"', '"phone"', '"email"',
    '"source"', '"from_directory"', '"allow_lookalike"', '"enabled"', '"name"', '"candidates"', '"approvers"',
    '"max_ttl_s"', '"availability"', '"days"', '"from"', '"to"', '"time_zone"', '"justification_required"',
    '"approval_enabled"', '"mfa_enabled"', '"providers"', '"admin"', '"label"', "mon-fri", "Europe/London",
    "2026-12-01T20:00:00Z", "&", "=", "%", "limit=", "since_ms=", "until_ms=", "id="],
    "JSON, the API's bodies and query strings")
xml = ["<", ">", "</", "/>", '<?xml version="1.0"?>', "?>", "<!--", "-->", "<![CDATA[", "]]>", "<!DOCTYPE",
       "&amp;", "&lt;", "&#x", "&#", ";", '="', "='", BOM, b"\xff\xfe", "xmlns:"]
dictionary("mfa_settings", xml + ["LICENSE_KEY", "GROUP_KEY", "CERT_PASSWORD", "CertFilePath", "username",
    "DefaultCountryCode", "LOCMFA", "LOCMFASRV", "CustomPhoneProvider", "MfaSettings", "true", "https://"],
    "XML and MfaSettings.xml's elements")
dictionary("pfp_response", xml + ["pfpMessage", "response", "request-id", "status", "disposition", "success",
    "error-id", "authenticated", "yes", "callStatus", "otp", "HTTP/1.0 200 OK", "\r\n\r\n", "https://", ":443",
    "[::1]"], "XML, pfpMessage's elements, HTTP, endpoint URLs")
dictionary("config", ["[server]", "[store]", "[policy]", "[limits]", "[events]", "[plugins]", "[[provider]]",
    "[provider.settings]", "[directory]", " = ", '"', "'''", '"""', "#", "\n", "true", "false", "=", "listen",
    "tls_cert", "tls_key", "tls_client_ca", "tls_client_crl", "allow_plaintext", "client_timeout_s",
    "max_connections", "max_connections_per_client", "access_log", "metrics_token_file", "sqlite", "key_file",
    "postgres", "postgres_password_file", "wal_mb", "default_country_code", "max_wrong_answers",
    "lockout_threshold", "lockout_s", "approval_timeout_s", "requests_per_minute", "justification_chars",
    "display_name_chars", "reason_chars", "label_chars", "jsonl", "anchor_file", "anchor_interval_ms", "worker",
    "deadline_ms", "max_crashes", "crash_window_s", "id", "library", "sha256", "unpinned", "isolation",
    "process", "in-process", "sunset", "settings", "2027-09-30", "1979-05-27T07:32:00Z", "9223372036854775807",
    "host=/run/postgresql user=rolegate dbname=rolegate", "postgresql://"], "TOML and the configuration's keys")
dictionary("mim_import", ['"', '""', ",", "\r\n", "\n", BOM, "#TYPE ", "SourceAccountName", "AccountName",
    "SourceDomain", "DisplayName", "PhoneNumber", "Email", "Candidates", "Approvers", "TTL", "MFAEnabled",
    "ApprovalEnabled", "AvailabilityWindowEnabled", "AvailableFrom", "AvailableTo", "TimeZone", "True", "False",
    "12:00:00 PM", "1/1/0001 8:00:00 AM", ";", "\\", "Europe/London"], "CSV as Export-Csv writes it, PAM's columns")
