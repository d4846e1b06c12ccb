//! MIM's `MfaSettings.xml`, read as real deployments have it.
//!
//! The file is tolerated as Windows tools write it: a UTF-8 or UTF-16 byte-order mark, CRLF
//! line ends, element names in any case, elements rolegate does not use, and any root element
//! (MIM never documented one). What it refuses, it refuses by name: a file (or its `.p12`)
//! readable by group or others, a missing element the mode needs, an element given twice,
//! elements of two modes at once, and the custom phone provider (a .NET assembly).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quick_xml::events::Event;

use crate::Error;

/// What the file configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The PhoneFactor SDK: HTTPS with a client certificate to Azure MFA's endpoint.
    Sdk(SdkSettings),
    /// An on-premises Azure MFA Server, through its Web Service SDK.
    MfaServer(MfaServerSettings),
}

/// The SDK mode's settings (`LICENSE_KEY`, `GROUP_KEY`, `CERT_PASSWORD`, `CertFilePath`).
#[derive(Clone, PartialEq, Eq)]
pub struct SdkSettings {
    /// `LICENSE_KEY`.
    pub license_key: String,
    /// `GROUP_KEY`.
    pub group_key: String,
    /// `CERT_PASSWORD`: the PKCS#12 file's password.
    pub cert_password: String,
    /// `CertFilePath` as written in the file (often a Windows path).
    pub cert_file_path: String,
    /// `username`, when given (MIM sends the user's object GUID when it is empty).
    pub username: Option<String>,
    /// `DefaultCountryCode` (digits; `1` when the file has none, as the SDK defaults).
    pub default_country_code: String,
}

impl std::fmt::Debug for SdkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys and the certificate's password never reach a log line.
        f.debug_struct("SdkSettings")
            .field("cert_file_path", &self.cert_file_path)
            .field("username", &self.username)
            .field("default_country_code", &self.default_country_code)
            .finish_non_exhaustive()
    }
}

/// The MFA Server mode's settings (`LOCMFA`, `LOCMFASRV`, `Username`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaServerSettings {
    /// `LOCMFASRV`: the Web Service SDK's URL.
    pub url: String,
    /// `Username`: the account the web service authenticates.
    pub username: Option<String>,
    /// `DefaultCountryCode`.
    pub default_country_code: String,
}

/// A parsed `MfaSettings.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaSettings {
    /// The file it came from.
    pub path: PathBuf,
    /// What it configures.
    pub mode: Mode,
}

/// Refuses a file that its group or others may read (as OpenSSH refuses private keys).
pub fn check_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::NotPrivate {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

/// Decodes the file's bytes: UTF-8 (with or without BOM) or UTF-16 with its BOM.
fn decode(path: &Path, bytes: &[u8]) -> Result<String, Error> {
    let bad = |why: &str| Error::Xml {
        path: path.to_path_buf(),
        message: why.to_string(),
    };
    let utf16 = |b: &[u8], le: bool| -> Result<String, Error> {
        if !b.len().is_multiple_of(2) {
            return Err(bad("odd length for UTF-16 text"));
        }
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|_| bad("invalid UTF-16 text"))
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => {
            String::from_utf8(rest.to_vec()).map_err(|_| bad("invalid UTF-8 after its BOM"))
        }
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        _ => String::from_utf8(bytes.to_vec()).map_err(|_| bad("not UTF-8 text (and no BOM)")),
    }
}

/// Every leaf element's text, by lower-cased name; an element given twice is an error.
fn leaves(path: &Path, text: &str) -> Result<BTreeMap<String, (String, String)>, Error> {
    let xml_error = |e: &dyn std::fmt::Display| Error::Xml {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    // Text is trimmed per value, not per chunk: a chunk ends at every entity (`a &amp; b`).
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<String> = Vec::new();
    let mut current_text = String::new();
    let mut had_child = false;
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut root_seen = false;
    loop {
        match reader.read_event().map_err(|e| xml_error(&e))? {
            Event::Start(e) => {
                if stack.is_empty() && root_seen {
                    return Err(xml_error(&"more than one root element"));
                }
                root_seen = true;
                stack.push(e.name().as_ref().to_string());
                current_text.clear();
                had_child = false;
            }
            Event::Empty(e) => {
                if stack.is_empty() {
                    if root_seen {
                        return Err(xml_error(&"more than one root element"));
                    }
                    root_seen = true;
                    continue;
                }
                let name = e.name().as_ref().to_string();
                insert(path, &mut out, name, String::new())?;
                had_child = true;
            }
            Event::Text(t) => current_text.push_str(&t.xml10_content()),
            Event::CData(t) => current_text.push_str(&t.into_inner()),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| xml_error(&e))? {
                    current_text.push(c);
                } else {
                    let name = r.into_inner();
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| xml_error(&format!("unknown entity `&{name};`")))?;
                    current_text.push_str(resolved);
                }
            }
            Event::End(_) => {
                let Some(name) = stack.pop() else {
                    return Err(xml_error(&"an end tag without its start"));
                };
                // The root, or an element with children, is a container, not a setting.
                if !stack.is_empty() && !had_child {
                    insert(path, &mut out, name, current_text.trim().to_string())?;
                }
                current_text.clear();
                had_child = true;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err(xml_error(&"the file has no root element"));
    }
    // The parser does not ask that every element be closed at the end: a file cut short
    // (a copy that stopped) would lose what followed the cut, its country code included.
    if let Some(open) = stack.last() {
        return Err(xml_error(&format_args!(
            "the file ends inside <{open}>: it was cut short"
        )));
    }
    Ok(out)
}

fn insert(
    path: &Path,
    out: &mut BTreeMap<String, (String, String)>,
    name: String,
    value: String,
) -> Result<(), Error> {
    let key = name.to_ascii_lowercase();
    if out.contains_key(&key) {
        return Err(Error::Element {
            path: path.to_path_buf(),
            element: name,
            message: "is given more than once".into(),
        });
    }
    out.insert(key, (name, value));
    Ok(())
}

/// Reads and checks an `MfaSettings.xml` (the file must be private to its owner).
pub fn read(path: &Path) -> Result<MfaSettings, Error> {
    check_private(path)?;
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes)
}

/// Parses the file's bytes (`path` names it in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<MfaSettings, Error> {
    let text = decode(path, bytes)?;
    let all = leaves(path, &text)?;
    let get = |name: &str| {
        all.get(&name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let missing = |element: &str, mode: &str| Error::Element {
        path: path.to_path_buf(),
        element: element.to_string(),
        message: format!("is missing or empty ({mode})"),
    };
    let country = match get("DefaultCountryCode") {
        None => "1".to_string(),
        Some(c) => {
            let c = c.trim_start_matches('+');
            if c.is_empty() || c.len() > 3 || !c.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::Element {
                    path: path.to_path_buf(),
                    element: "DefaultCountryCode".into(),
                    message: format!("must be 1 to 3 digits (a country calling code), not `{c}`"),
                });
            }
            c.to_string()
        }
    };
    if let Some(dll) = get("CustomPhoneProvider") {
        return Err(Error::Element {
            path: path.to_path_buf(),
            element: "CustomPhoneProvider".into(),
            message: format!(
                "names a .NET assembly (`{dll}`) that rolegate cannot load; write a rolegate provider instead (docs/writing-a-provider.md)"
            ),
        });
    }
    let sdk_keys = ["LICENSE_KEY", "GROUP_KEY", "CERT_PASSWORD", "CertFilePath"];
    let sdk_given: Vec<&str> = sdk_keys
        .iter()
        .copied()
        .filter(|k| get(k).is_some())
        .collect();
    let locmfa = match get("LOCMFA").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") | Some("no") => false,
        Some("true") | Some("1") | Some("yes") => true,
        Some(other) => {
            return Err(Error::Element {
                path: path.to_path_buf(),
                element: "LOCMFA".into(),
                message: format!("must be true or false, not `{other}`"),
            });
        }
    };
    if locmfa {
        if let Some(first) = sdk_given.first() {
            return Err(Error::Element {
                path: path.to_path_buf(),
                element: (*first).to_string(),
                message: "is set although LOCMFA is true: MFA Server mode needs the SDK's elements (LICENSE_KEY, GROUP_KEY, CERT_PASSWORD, CertFilePath) empty".into(),
            });
        }
        let url = get("LOCMFASRV").ok_or_else(|| missing("LOCMFASRV", "MFA Server mode"))?;
        if !url.to_ascii_lowercase().starts_with("https://") {
            return Err(Error::Element {
                path: path.to_path_buf(),
                element: "LOCMFASRV".into(),
                message: format!("must be an https:// URL, not `{url}`"),
            });
        }
        return Ok(MfaSettings {
            path: path.to_path_buf(),
            mode: Mode::MfaServer(MfaServerSettings {
                url: url.to_string(),
                username: get("Username").map(str::to_string),
                default_country_code: country,
            }),
        });
    }
    if get("LOCMFASRV").is_some() && !sdk_given.is_empty() {
        return Err(Error::Element {
            path: path.to_path_buf(),
            element: "LOCMFASRV".into(),
            message: "is set beside the SDK's elements while LOCMFA is not true: choose one mode"
                .into(),
        });
    }
    if sdk_given.is_empty() {
        return Err(Error::Element {
            path: path.to_path_buf(),
            element: "LICENSE_KEY".into(),
            message: "is missing: the file configures neither the SDK (LICENSE_KEY, GROUP_KEY, CERT_PASSWORD, CertFilePath) nor MFA Server (LOCMFA, LOCMFASRV)".into(),
        });
    }
    let need = |k: &str| {
        get(k).map(str::to_string).ok_or_else(|| {
            missing(
                k,
                "the SDK mode needs LICENSE_KEY, GROUP_KEY, CERT_PASSWORD and CertFilePath",
            )
        })
    };
    Ok(MfaSettings {
        path: path.to_path_buf(),
        mode: Mode::Sdk(SdkSettings {
            license_key: need("LICENSE_KEY")?,
            group_key: need("GROUP_KEY")?,
            cert_password: need("CERT_PASSWORD")?,
            cert_file_path: need("CertFilePath")?.trim_matches('"').to_string(),
            username: get("username").map(str::to_string),
            default_country_code: country,
        }),
    })
}

impl SdkSettings {
    /// The PKCS#12 file on this machine: `CertFilePath` when it exists here, else a file of
    /// the same name beside `MfaSettings.xml` (a Windows path copied along with the file), else
    /// `override_path`. The file must be private to its owner.
    pub fn cert_file(
        &self,
        settings_file: &Path,
        override_path: Option<&Path>,
    ) -> Result<PathBuf, Error> {
        let chosen = if let Some(p) = override_path {
            p.to_path_buf()
        } else {
            let given = Path::new(&self.cert_file_path);
            let name = self
                .cert_file_path
                .rsplit(['\\', '/'])
                .next()
                .unwrap_or_default();
            let beside = settings_file
                .parent()
                .map(|d| d.join(name))
                .unwrap_or_else(|| PathBuf::from(name));
            if given.is_absolute() && given.exists() {
                given.to_path_buf()
            } else if !name.is_empty() && beside.exists() {
                beside
            } else {
                return Err(Error::Element {
                    path: settings_file.to_path_buf(),
                    element: "CertFilePath".into(),
                    message: format!(
                        "names `{}`, which is not on this machine, and no `{name}` lies beside the file: copy the .p12 there or set the provider's `cert_file`",
                        self.cert_file_path
                    ),
                });
            }
        };
        check_private(&chosen)?;
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// An SDK-mode file as MIM's setup leaves it: BOM, CRLF, names in mixed case, an element
    /// rolegate does not use, an entity in the password.
    const SDK_FILE: &str = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<MfaSettings>\r\n  <LICENSE_KEY>1234567890</LICENSE_KEY>\r\n  <Group_Key>ABCDEF0123456789</Group_Key>\r\n  <CERT_PASSWORD> p&amp;ss word </CERT_PASSWORD>\r\n  <CertFilePath>C:\\Program Files\\Microsoft Forefront Identity Manager\\2010\\Service\\cert_key.p12</CertFilePath>\r\n  <username>PAM</username>\r\n  <DefaultCountryCode>44</DefaultCountryCode>\r\n  <SomethingNewer>ignored</SomethingNewer>\r\n  <LOCMFA></LOCMFA>\r\n  <LOCMFASRV/>\r\n</MfaSettings>\r\n";

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn sdk(m: &MfaSettings) -> &SdkSettings {
        match &m.mode {
            Mode::Sdk(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_real_sdk_file_is_read_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "MfaSettings.xml", SDK_FILE.as_bytes(), 0o600);
        let m = read(&p).unwrap();
        let s = sdk(&m);
        assert_eq!(s.license_key, "1234567890");
        assert_eq!(s.group_key, "ABCDEF0123456789");
        assert_eq!(
            s.cert_password, "p&ss word",
            "entities resolved, inner spaces kept"
        );
        assert!(s.cert_file_path.ends_with("Service\\cert_key.p12"));
        assert_eq!(s.username.as_deref(), Some("PAM"));
        assert_eq!(s.default_country_code, "44");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("1234567890") && !shown.contains("p&ss"),
            "{shown}"
        );

        // The same file in UTF-16 (as Notepad saves "Unicode"), and without a BOM in UTF-8.
        let mut utf16 = vec![0xFF, 0xFE];
        for u in SDK_FILE.trim_start_matches('\u{feff}').encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        let p16 = write(dir.path(), "utf16.xml", &utf16, 0o600);
        assert_eq!(sdk(&read(&p16).unwrap()), s);
        let plain = write(
            dir.path(),
            "plain.xml",
            SDK_FILE.trim_start_matches('\u{feff}').as_bytes(),
            0o600,
        );
        assert_eq!(sdk(&read(&plain).unwrap()), s);
    }

    #[test]
    fn the_certificate_is_found_beside_the_file_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "MfaSettings.xml", SDK_FILE.as_bytes(), 0o600);
        let m = read(&p).unwrap();
        let e = sdk(&m).cert_file(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("<CertFilePath>") && e.contains("cert_key.p12") && e.contains("cert_file"),
            "{e}"
        );
        let p12 = write(dir.path(), "cert_key.p12", b"not really", 0o644);
        let e = sdk(&m).cert_file(&p, None).unwrap_err().to_string();
        assert!(e.contains("cert_key.p12") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p12, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(sdk(&m).cert_file(&p, None).unwrap(), p12);
        let other = write(dir.path(), "other.p12", b"x", 0o400);
        assert_eq!(sdk(&m).cert_file(&p, Some(&other)).unwrap(), other);
    }

    #[test]
    fn a_readable_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let p = write(dir.path(), "MfaSettings.xml", SDK_FILE.as_bytes(), mode);
            let e = read(&p).unwrap_err().to_string();
            assert!(
                e.contains("MfaSettings.xml") && e.contains("readable by others"),
                "{e}"
            );
        }
    }

    #[test]
    fn mfa_server_mode_and_its_contradictions() {
        let server = "<MfaSettings><LICENSE_KEY/><GROUP_KEY/><CERT_PASSWORD/><CertFilePath/>\
            <Username>CONTOSO\\svc-mim</Username><LOCMFA>true</LOCMFA>\
            <LOCMFASRV>https://mfa.contoso.com:9999/MultiFactorAuthWebServiceSdk/PfWsSdk.asmx</LOCMFASRV></MfaSettings>";
        let m = parse(Path::new("MfaSettings.xml"), server.as_bytes()).unwrap();
        match m.mode {
            Mode::MfaServer(s) => {
                assert!(s.url.ends_with("PfWsSdk.asmx"));
                assert_eq!(s.username.as_deref(), Some("CONTOSO\\svc-mim"));
                assert_eq!(s.default_country_code, "1");
            }
            other => panic!("{other:?}"),
        }
        let cases: &[(&str, &str)] = &[
            (
                "<m><LOCMFA>true</LOCMFA><LOCMFASRV>https://x/y</LOCMFASRV><LICENSE_KEY>1</LICENSE_KEY></m>",
                "<LICENSE_KEY> is set although LOCMFA is true",
            ),
            ("<m><LOCMFA>true</LOCMFA></m>", "<LOCMFASRV> is missing"),
            (
                "<m><LOCMFA>maybe</LOCMFA></m>",
                "<LOCMFA> must be true or false",
            ),
            (
                "<m><LOCMFA>true</LOCMFA><LOCMFASRV>http://x/y</LOCMFASRV></m>",
                "<LOCMFASRV> must be an https:// URL",
            ),
            (
                "<m><LICENSE_KEY>1</LICENSE_KEY><GROUP_KEY>2</GROUP_KEY><CERT_PASSWORD>3</CERT_PASSWORD></m>",
                "<CertFilePath> is missing",
            ),
            (
                "<m><LICENSE_KEY>1</LICENSE_KEY><LICENSE_KEY>2</LICENSE_KEY></m>",
                "<LICENSE_KEY> is given more than once",
            ),
            (
                "<m><username>x</username></m>",
                "configures neither the SDK",
            ),
            (
                "<m><CustomPhoneProvider>C:\\p.dll</CustomPhoneProvider></m>",
                "<CustomPhoneProvider> names a .NET assembly",
            ),
            (
                "<m><LICENSE_KEY>1</LICENSE_KEY><DefaultCountryCode>abc</DefaultCountryCode></m>",
                "<DefaultCountryCode> must be 1 to 3 digits",
            ),
            ("<m><LICENSE_KEY>1</m>", "not valid XML"),
            ("", "no root element"),
            ("<a/><b/>", "more than one root"),
        ];
        for (xml, want) in cases {
            let e = parse(Path::new("/etc/rolegate/MfaSettings.xml"), xml.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{xml}: {e}");
            assert!(
                e.starts_with("/etc/rolegate/MfaSettings.xml"),
                "names the file: {e}"
            );
        }
        let e = parse(Path::new("x.xml"), &[0xC3, 0x28])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn a_file_cut_short_is_refused() {
        // Found by fuzzing (fuzz/mfa_settings, against the import's reading of the country
        // code): a file that ended inside an element was read, and what the cut took was
        // missing — `<DefaultCountryCode>44` at the end gave country code 1.
        let cut = SDK_FILE.find("</DefaultCountryCode>").unwrap();
        let e = parse(Path::new("MfaSettings.xml"), &SDK_FILE.as_bytes()[..cut])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not valid XML") && e.contains("ends inside <DefaultCountryCode>"),
            "{e}"
        );
        let cut = SDK_FILE.find("</MfaSettings>").unwrap();
        let e = parse(Path::new("MfaSettings.xml"), &SDK_FILE.as_bytes()[..cut])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ends inside <MfaSettings>"), "{e}");
        // The fuzzer's input, shortened.
        let found = b"<ettings1>\r\n  <LICENSE_KEY>1</LICENSE_KEY><GROUP_KEY>2</GROUP_KEY>\
            <CERT_PASSWORD>3</CERT_PASSWORD><CertFilePath>c.p12</CertFilePath>\r\n  \
            <DefaultCountryCode>88<e/DfaultCountryCode>";
        assert!(parse(Path::new("MfaSettings.xml"), found).is_err());
    }
}
