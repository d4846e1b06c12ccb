//! The PhoneFactor SDK's `pfpMessage` v1.5: the authentication request rolegate sends and the
//! response it reads, as the public SDK (pf_auth v2.20) wrote and read them.

use quick_xml::escape::escape;
use quick_xml::events::Event;
use rolegate_sdk::phone::PhoneNumber;

use crate::Error;

/// How the user proves presence.
#[derive(Clone, PartialEq, Eq)]
pub enum Mode {
    /// The call asks the user to press `#`.
    Standard,
    /// The call asks for the user's PIN (sent in plain text, as the SDK's `plainText` format).
    Pin(String),
    /// A text message with a one-time code the user types into rolegate.
    SmsOneWay {
        /// The text; `<$otp$>` stands for the code.
        message: String,
    },
    /// A text message the user answers by text with the code.
    SmsTwoWay {
        /// The text; `<$otp$>` stands for the code.
        message: String,
    },
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A PIN never reaches a log line.
        f.write_str(match self {
            Mode::Standard => "Standard",
            Mode::Pin(_) => "Pin",
            Mode::SmsOneWay { .. } => "SmsOneWay",
            Mode::SmsTwoWay { .. } => "SmsTwoWay",
        })
    }
}

/// One authentication request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `request-id`: echoed by the response (the SDK used 0..9999).
    pub request_id: u32,
    /// `LICENSE_KEY`.
    pub license_key: &'a str,
    /// `GROUP_KEY`.
    pub group_key: &'a str,
    /// The user name PhoneFactor logs (MIM sent the user's object GUID).
    pub username: &'a str,
    /// The number to call; country code and number travel apart, the extension as an
    /// attribute.
    pub phone: &'a PhoneNumber,
    /// Whether the account may call abroad.
    pub allow_international: bool,
    /// `applicationName`.
    pub application: &'a str,
    /// How the user proves presence.
    pub mode: &'a Mode,
    /// This host's address and name, as the SDK's header carries them.
    pub host_ip: &'a str,
    /// This host's name.
    pub host_name: &'a str,
}

impl Request<'_> {
    /// The request as XML.
    pub fn to_xml(&self) -> String {
        let e = |s: &str| escape(s).into_owned();
        let mode_attr = match self.mode {
            Mode::SmsOneWay { .. } | Mode::SmsTwoWay { .. } => " mode=\"sms\"",
            _ => "",
        };
        let extension = match &self.phone.extension {
            Some(x) => format!(" extension=\"{}\"", e(x)),
            None => String::new(),
        };
        let sms = match self.mode {
            Mode::SmsOneWay { message } => format!(
                "<smsInfo direction=\"one-way\" mode=\"otp\"><message>{}</message></smsInfo>",
                e(message)
            ),
            Mode::SmsTwoWay { message } => format!(
                "<smsInfo direction=\"two-way\" mode=\"otp\"><message>{}</message></smsInfo>",
                e(message)
            ),
            _ => String::new(),
        };
        let pin = match self.mode {
            Mode::Pin(pin) => format!(
                "<pinInfo pinMode=\"pin\"><pin pinFormat=\"plainText\" pinChangeRequired=\"no\">{}</pin><userCanChangePin>no</userCanChangePin></pinInfo>",
                e(pin)
            ),
            _ => "<pinInfo pinMode=\"standard\"><userCanChangePin>no</userCanChangePin></pinInfo>"
                .to_string(),
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
<pfpMessage version=\"1.5\">\
<header><source><component type=\"pfsdk\"><host ip=\"{ip}\" hostname=\"{host}\"/></component></source></header>\
<request request-id=\"{id}\" language=\"en\" async=\"0\" response-url=\"\">\
<authenticationRequest{mode_attr}>\
<customer><licenseKey>{license}</licenseKey><groupKey>{group}</groupKey></customer>\
<countryCode>{cc}</countryCode>\
<authenticationType>pfsdk</authenticationType>\
<username>{user}</username>\
<phonenumber userCanChangePhone=\"no\"{extension}>{number}</phonenumber>\
<allowInternationalCalls>{intl}</allowInternationalCalls>\
<applicationName>{app}</applicationName>\
{sms}{pin}\
</authenticationRequest></request></pfpMessage>",
            ip = e(self.host_ip),
            host = e(self.host_name),
            id = self.request_id,
            license = e(self.license_key),
            group = e(self.group_key),
            cc = self.phone.country_code,
            user = e(self.username),
            number = e(&self.phone.national),
            intl = if self.allow_international {
                "yes"
            } else {
                "no"
            },
            app = e(self.application),
        )
    }
}

/// What PhoneFactor answered.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// The `request-id` it answers, when given.
    pub request_id: Option<String>,
    /// `status disposition="success"`: the request was processed (not: the user passed).
    pub success: bool,
    /// `error-id` of a failed request.
    pub error_id: Option<u32>,
    /// `authenticated = yes`.
    pub authenticated: bool,
    /// `callStatus`, when the call was placed.
    pub call_status: Option<u32>,
    /// The one-time code PhoneFactor sent by SMS (one-way SMS mode).
    pub otp: Option<String>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("request_id", &self.request_id)
            .field("success", &self.success)
            .field("error_id", &self.error_id)
            .field("authenticated", &self.authenticated)
            .field("call_status", &self.call_status)
            .field("otp", &self.otp.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Response {
    /// Reads a response by element name, wherever the elements sit (the SDK's own parsers
    /// did the same; the root element was never documented).
    pub fn parse(xml: &str) -> Result<Self, Error> {
        let bad = |m: &dyn std::fmt::Display| Error::Response(m.to_string());
        // Text is trimmed per value, not per chunk: a chunk ends at every entity.
        let reader = &mut quick_xml::Reader::from_str(xml.trim_start_matches('\u{feff}'));
        let mut out = Response {
            request_id: None,
            success: false,
            error_id: None,
            authenticated: false,
            call_status: None,
            otp: None,
        };
        let mut seen_status = false;
        let mut current: Option<String> = None;
        let mut text = String::new();
        loop {
            let event = reader.read_event().map_err(|e| bad(&e))?;
            match event {
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let name = s.local_name().as_ref().to_ascii_lowercase();
                    for a in s.attributes().flatten() {
                        let key = a.key.local_name().as_ref().to_ascii_lowercase();
                        let value = a
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map_err(|e| bad(&e))?
                            .into_owned();
                        match (name.as_str(), key.as_str()) {
                            ("status", "disposition") => {
                                seen_status = true;
                                out.success = value.eq_ignore_ascii_case("success");
                            }
                            ("response", "request-id") => out.request_id = Some(value),
                            _ => {}
                        }
                    }
                    if matches!(event, Event::Start(_)) {
                        current = Some(name);
                        text.clear();
                    }
                }
                Event::Text(t) => text.push_str(&t.xml10_content()),
                Event::GeneralRef(r) => {
                    if let Some(c) = r.resolve_char_ref().map_err(|e| bad(&e))? {
                        text.push(c);
                    } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                        text.push_str(s);
                    }
                }
                Event::End(_) => {
                    if let Some(name) = current.take() {
                        let value = text.trim();
                        let number = |what: &str| {
                            value.parse::<u32>().map_err(|_| {
                                Error::Response(format!("<{what}> is not a number: `{value}`"))
                            })
                        };
                        match name.as_str() {
                            "error-id" => out.error_id = Some(number("error-id")?),
                            "authenticated" => {
                                out.authenticated = value.eq_ignore_ascii_case("yes")
                            }
                            "callstatus" => out.call_status = Some(number("callStatus")?),
                            "otp" if !value.is_empty() => out.otp = Some(value.to_string()),
                            _ => {}
                        }
                    }
                    text.clear();
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !seen_status {
            return Err(bad(&"it has no <status disposition=…>"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s, 1).unwrap()
    }

    fn request<'a>(p: &'a PhoneNumber, mode: &'a Mode) -> Request<'a> {
        Request {
            request_id: 42,
            license_key: "LICENSE",
            group_key: "GROUP",
            username: "CONTOSO\\j&doe <x>",
            phone: p,
            allow_international: true,
            application: "rolegate",
            mode,
            host_ip: "127.0.0.1",
            host_name: "pam01",
        }
    }

    /// Leaf texts and attributes of a document, to check what was written.
    fn read_back(xml: &str) -> Vec<(String, String)> {
        let mut r = quick_xml::Reader::from_str(xml);
        let mut out = Vec::new();
        let mut name = String::new();
        let mut text = String::new();
        loop {
            match r.read_event().unwrap() {
                Event::Start(s) | Event::Empty(s) => {
                    name = s.name().as_ref().to_string();
                    for a in s.attributes().flatten() {
                        out.push((
                            format!("{name}@{}", a.key.as_ref()),
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .unwrap()
                                .into_owned(),
                        ));
                    }
                    text.clear();
                }
                Event::Text(t) => text.push_str(&t.xml10_content()),
                Event::GeneralRef(g) => {
                    text.push_str(quick_xml::escape::resolve_predefined_entity(&g).unwrap())
                }
                Event::End(_) => {
                    let t = std::mem::take(&mut text);
                    if !t.trim().is_empty() {
                        out.push((name.clone(), t.trim().to_string()));
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        out
    }

    fn get(fields: &[(String, String)], k: &str) -> Option<String> {
        fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_standard_call_sends_country_and_number_apart_with_the_extension() {
        let p = phone("+44 20 7946 0000 x@123#");
        let xml = request(&p, &Mode::Standard).to_xml();
        let f = read_back(&xml);
        assert_eq!(get(&f, "pfpMessage@version").as_deref(), Some("1.5"));
        assert_eq!(get(&f, "countryCode").as_deref(), Some("44"));
        assert_eq!(get(&f, "phonenumber").as_deref(), Some("2079460000"));
        assert_eq!(get(&f, "phonenumber@extension").as_deref(), Some("@123#"));
        assert_eq!(get(&f, "licenseKey").as_deref(), Some("LICENSE"));
        assert_eq!(get(&f, "groupKey").as_deref(), Some("GROUP"));
        assert_eq!(
            get(&f, "username").as_deref(),
            Some("CONTOSO\\j&doe <x>"),
            "escaped, read back whole"
        );
        assert_eq!(get(&f, "pinInfo@pinMode").as_deref(), Some("standard"));
        assert_eq!(get(&f, "authenticationType").as_deref(), Some("pfsdk"));
        assert_eq!(get(&f, "request@request-id").as_deref(), Some("42"));
        assert!(get(&f, "authenticationRequest@mode").is_none());
        assert!(get(&f, "phonenumber@extension").is_some());
        let plain = phone("425 555 0100");
        let f = read_back(&request(&plain, &Mode::Standard).to_xml());
        assert_eq!(get(&f, "countryCode").as_deref(), Some("1"));
        assert!(get(&f, "phonenumber@extension").is_none());
    }

    #[test]
    fn pin_and_sms_modes() {
        let p = phone("+14255550100");
        let f = read_back(&request(&p, &Mode::Pin("1234".into())).to_xml());
        assert_eq!(get(&f, "pinInfo@pinMode").as_deref(), Some("pin"));
        assert_eq!(get(&f, "pin").as_deref(), Some("1234"));
        assert_eq!(
            format!("{:?}", Mode::Pin("1234".into())),
            "Pin",
            "no PIN in logs"
        );
        let sms = Mode::SmsOneWay {
            message: "Code: <$otp$>".into(),
        };
        let f = read_back(&request(&p, &sms).to_xml());
        assert_eq!(
            get(&f, "authenticationRequest@mode").as_deref(),
            Some("sms")
        );
        assert_eq!(get(&f, "smsInfo@direction").as_deref(), Some("one-way"));
        assert_eq!(get(&f, "message").as_deref(), Some("Code: <$otp$>"));
        let two = Mode::SmsTwoWay {
            message: "<$otp$>".into(),
        };
        let f = read_back(&request(&p, &two).to_xml());
        assert_eq!(get(&f, "smsInfo@direction").as_deref(), Some("two-way"));
    }

    #[test]
    fn responses_are_read_by_element_name() {
        let ok = r#"<?xml version="1.0"?><pfpMessage version="1.5"><header/><response request-id="42">
            <status disposition="success"/><authenticationResponse><authenticated>yes</authenticated>
            <callStatus>1</callStatus></authenticationResponse></response></pfpMessage>"#;
        let r = Response::parse(ok).unwrap();
        assert!(r.success && r.authenticated);
        assert_eq!(
            (r.call_status, r.request_id.as_deref()),
            (Some(1), Some("42"))
        );

        let failed = "\u{feff}<x><response request-id=\"7\"><status disposition=\"fail\"><error-id>12</error-id></status></response></x>";
        let r = Response::parse(failed).unwrap();
        assert!(!r.success && !r.authenticated);
        assert_eq!(r.error_id, Some(12));

        let sms = "<r><status disposition='success'/><authenticated>no</authenticated><callStatus>20</callStatus><otp>123456</otp></r>";
        let r = Response::parse(sms).unwrap();
        assert_eq!(r.otp.as_deref(), Some("123456"));
        assert!(!format!("{r:?}").contains("123456"), "no code in logs");
    }

    #[test]
    fn broken_responses_are_errors_that_say_why() {
        for (xml, want) in [
            ("", "no <status"),
            (
                "<r><status disposition='success'/><callStatus>one</callStatus></r>",
                "callStatus",
            ),
            ("<r><status disposition='success'></r>", "not valid"),
            ("not xml at all", "no <status"),
        ] {
            let e = Response::parse(xml).unwrap_err().to_string();
            assert!(e.contains(want), "{xml:?}: {e}");
        }
    }
}
