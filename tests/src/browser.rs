//! Headless Chromium driven over WebDriver (chromedriver on 127.0.0.1): a real browser for
//! the web page's tests. `scripts/test` installs Debian's `chromium` and `chromium-driver`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The element reference key WebDriver uses in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless browser session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (Chromium quits) before chromedriver is stopped: a plain
        // HTTP/1.1 DELETE, since drop cannot await.
        use std::io::{Read as _, Write as _};
        let host = self.base.trim_start_matches("http://");
        if let Ok(mut s) = std::net::TcpStream::connect(host) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start() -> Self {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (scripts/test does)"
            );
        }
        let port = crate::free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver did not start: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap_or_else(|e| panic!("new session: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("new session: {e}"));
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"))
            .to_string();
        Self {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.http.get(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let v: Value = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        if let Some(err) = v["value"].get("error") {
            panic!("webdriver {path}: {err}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    /// Opens a page.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// Runs a script in the page and returns its value (`return …`).
    pub async fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Runs an asynchronous script in the page: it ends by calling its last argument with
    /// its value (`arguments[arguments.length - 1](v)`), which this returns.
    pub async fn eval_async(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element `{css}`: {v}"))
            .to_string()
    }

    /// Types into the element (after clearing it).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.cmd("POST", &format!("/element/{id}/clear"), None)
            .await;
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Clicks the element.
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.cmd("POST", &format!("/element/{id}/click"), None)
            .await;
    }

    /// The element's visible text.
    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        self.cmd("GET", &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Adds a virtual authenticator (the WebDriver WebAuthn extension, Chrome's DevTools
    /// WebAuthn domain underneath): `transport` `internal` with user verification presents
    /// itself as Windows Hello does (a platform authenticator); `usb` as a security key.
    /// Returns its id.
    pub async fn add_authenticator(&self, transport: &str, user_verification: bool) -> String {
        let v = self
            .cmd(
                "POST",
                "/webauthn/authenticator",
                Some(json!({
                    "protocol": "ctap2",
                    "transport": transport,
                    "hasResidentKey": true,
                    "hasUserVerification": user_verification,
                    "isUserConsenting": true,
                    "isUserVerified": user_verification,
                })),
            )
            .await;
        v.as_str()
            .unwrap_or_else(|| panic!("no authenticator id: {v}"))
            .to_string()
    }

    /// Removes a virtual authenticator.
    pub async fn remove_authenticator(&self, id: &str) {
        self.http
            .delete(format!(
                "{}/session/{}/webauthn/authenticator/{id}",
                self.base, self.session
            ))
            .send()
            .await
            .unwrap_or_else(|e| panic!("removing authenticator {id}: {e}"));
    }

    /// The credentials a virtual authenticator holds (with their private keys and sign
    /// counts, as the WebDriver extension gives them).
    pub async fn authenticator_credentials(&self, id: &str) -> Vec<Value> {
        let v = self
            .cmd(
                "GET",
                &format!("/webauthn/authenticator/{id}/credentials"),
                None,
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Puts a credential (as [`Browser::authenticator_credentials`] gives it) into a virtual
    /// authenticator: a copy of another's key, to play a cloned authenticator.
    pub async fn add_credential(&self, id: &str, credential: Value) {
        self.cmd(
            "POST",
            &format!("/webauthn/authenticator/{id}/credential"),
            Some(credential),
        )
        .await;
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver (`goog/cdp/execute`)
    /// and returns its result.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
    }

    /// Makes the page's viewport `width` x `height` CSS pixels (DevTools device metrics;
    /// below 600 px wide as a phone, with its meta viewport applied).
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await;
    }

    /// Saves a PNG of the whole page (beyond the viewport too) to `path`, making its folder.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let v = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Sends keys to the element without clearing it first (WebDriver key codes: Escape is
    /// `\u{E00C}`, Enter `\u{E007}`, Tab `\u{E004}`).
    pub async fn press(&self, css: &str, keys: &str) {
        let id = self.element(css).await;
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": keys})),
        )
        .await;
    }

    /// Waits (bounded, `secs`) until `script` returns true; panics with `what` and every
    /// status line the page shows otherwise.
    pub async fn wait_until(&self, script: &str, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let said = self
                    .eval("return [...document.querySelectorAll('.status')].map(e => e.textContent).filter(t => t).join(' | ') + ' @ ' + location.hash")
                    .await;
                panic!("waited {secs} s for {what}; the page says: {said}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens the page at `url` and signs in with `token`, waiting (bounded) for the
    /// signed-in page.
    pub async fn sign_in(&self, url: &str, token: &str) {
        self.goto(url).await;
        self.type_into("#token", token).await;
        self.click("#signin-form button").await;
        self.wait_for(
            "return !document.getElementById('app').hidden",
            "the signed-in page",
        )
        .await;
    }

    /// Waits (bounded) until `script` returns true; panics with `what` and the page's error
    /// line otherwise.
    pub async fn wait_for(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let err = self
                    .eval("return document.getElementById('error')?.textContent || ''")
                    .await;
                panic!("waited 15 s for {what}; the page says: {err}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
