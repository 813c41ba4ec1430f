//! The web dashboard in a real (headless) browser against a real server: Debian's chromium driven by
//! chromedriver over the W3C WebDriver HTTP protocol. The queue counts follow the jobs as they run, an
//! admin retries a dead job from its page, and a `read` key can look but not act.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (`apt-get install chromium chromium-driver`;
//! scripts/test, the test command, installs them): without them these tests fail, they do not skip.
//! `ERRAND_SCREENSHOTS=1` also writes docs/img/dashboard-queues.png and docs/img/dashboard-job.png.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use errand_server::Config;
use errand_server::auth::{ApiKey, Scope};
use errand_testkit::TestServer;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a condition in the page may take to come true.
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

const ADMIN: &str = "admin-secret";
const READER: &str = "read-secret";

// ---------------------------------------------------------------- WebDriver

/// One browser session: a chromedriver child process and the headless chromium it started. Dropping
/// it ends the session (which closes the browser) and kills chromedriver.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// An element reference, or why there is none.
type Found = Result<String, WdError>;

#[derive(Debug)]
struct WdError {
    error: String,
    message: String,
}

impl WdError {
    /// The element went away (not there yet, or re-rendered): worth polling again.
    fn transient(&self) -> bool {
        matches!(
            self.error.as_str(),
            "no such element" | "stale element reference"
        )
    }
}

fn require_browser() {
    for (path, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")] {
        assert!(
            Path::new(path).exists(),
            "{what} is not installed ({path} is missing): the dashboard tests need Debian's \
             chromium and chromium-driver packages; install them with \
             `apt-get install -y chromium chromium-driver` (scripts/test does)"
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start() -> Browser {
        require_browser();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        // The port is free when picked; should chromedriver lose it to someone else, try another.
        let mut attempt = 0;
        let (mut driver, port) = loop {
            attempt += 1;
            let port = free_port();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start: {e}"));
            if wait_ready(&http, &mut child, port).await {
                break (child, port);
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(attempt < 3, "chromedriver never became ready");
        };
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // A confirm() stays open until the test accepts or dismisses it.
            "unhandledPromptBehavior": "ignore",
            // The console, to fail on script errors and CSP violations.
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let resp = http
            .post(format!("http://127.0.0.1:{port}/session"))
            .header("content-type", "application/json")
            .body(caps.to_string())
            .send()
            .await
            .unwrap();
        let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        let Some(session) = body["value"]["sessionId"].as_str() else {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!("chromedriver did not start chromium: {body}");
        };
        Browser {
            driver,
            port,
            session: session.to_string(),
            http,
            _profile: profile,
        }
    }

    /// One WebDriver command on this session: its `value`, or the WebDriver error.
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let url = format!(
            "http://127.0.0.1:{}/session/{}{path}",
            self.port, self.session
        );
        let req = match method {
            "GET" => self.http.get(url),
            "POST" => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
            "DELETE" => self.http.delete(url),
            _ => unreachable!("{method}"),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let text = resp.text().await.unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("WebDriver {method} {path} answered non-JSON ({e}): {text}")
        });
        let value = v["value"].take();
        match value.get("error").and_then(Value::as_str) {
            Some(error) => Err(WdError {
                error: error.to_string(),
                message: value["message"].as_str().unwrap_or("").to_string(),
            }),
            None => Ok(value),
        }
    }

    /// `cmd`, where an error is a test failure.
    async fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {}: {}", e.error, e.message))
    }

    async fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn find(&self, css: &str) -> Found {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        // The W3C element reference key.
        Ok(v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap()
            .to_string())
    }

    /// The element's rendered text; None while it is missing (or was just re-rendered).
    async fn text(&self, css: &str) -> Option<String> {
        let el = self.find(css).await;
        let el = ok_or_transient(el, css)?;
        let v = self.cmd("GET", &format!("/element/{el}/text"), None).await;
        ok_or_transient(v, css).map(|v| v.as_str().unwrap_or("").to_string())
    }

    async fn property(&self, css: &str, name: &str) -> Option<Value> {
        let el = ok_or_transient(self.find(css).await, css)?;
        let v = self
            .cmd("GET", &format!("/element/{el}/property/{name}"), None)
            .await;
        ok_or_transient(v, css)
    }

    async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let el = ok_or_transient(self.find(css).await, css)?;
        let v = self
            .cmd("GET", &format!("/element/{el}/attribute/{name}"), None)
            .await;
        ok_or_transient(v, css).map(|v| v.as_str().unwrap_or("").to_string())
    }

    async fn click(&self, css: &str) {
        let el = self.wait_for_element(css).await;
        self.must("POST", &format!("/element/{el}/click"), None)
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.wait_for_element(css).await;
        self.must(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn wait_for_element(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.find(css).await {
                Ok(el) => return el,
                Err(e) if e.transient() && Instant::now() < deadline => {}
                Err(e) => panic!("no element {css} in time: {}: {}", e.error, e.message),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until `css`'s text is `want`; fails with what it read last.
    async fn wait_text(&self, css: &str, want: &str) {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            let now = self.text(css).await;
            if now.as_deref().map(str::trim) == Some(want) {
                return;
            }
            last = now.or(last);
            assert!(
                Instant::now() < deadline,
                "{css} should read {want:?} within {WAIT:?}; it read {last:?} (page: {})",
                self.page_text().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs an async script (the W3C `execute/async`): it calls its last argument with the result.
    async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.must(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Accepts an open alert or confirm(); false if none is open.
    async fn accept_alert_if_open(&self) -> bool {
        match self.cmd("GET", "/alert/text", None).await {
            Ok(_) => {
                self.must("POST", "/alert/accept", None).await;
                true
            }
            Err(e) if e.error == "no such alert" => false,
            Err(e) => panic!("WebDriver alert: {}: {}", e.error, e.message),
        }
    }

    /// The visible text of the page, for failure messages.
    async fn page_text(&self) -> String {
        self.text("body").await.unwrap_or_default()
    }

    async fn login(&self, key: &str) {
        self.wait_for_element("#login-key").await;
        // The form shows once the page found that this server needs a key.
        let deadline = Instant::now() + WAIT;
        while self.property("#login", "hidden").await != Some(Value::Bool(false)) {
            assert!(Instant::now() < deadline, "the login form never showed");
            tokio::time::sleep(POLL).await;
        }
        self.type_into("#login-key", key).await;
        self.click("#login-submit").await;
        let deadline = Instant::now() + WAIT;
        loop {
            let class = self.attribute("body", "class").await.unwrap_or_default();
            if class.split_whitespace().any(|c| c == "signed-in") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not signed in: {:?}",
                self.text("#login-error").await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// A PNG of the viewport, saved under docs/img/ when ERRAND_SCREENSHOTS=1 (only then, so a test
    /// run leaves the tree as it was). The window grows to the page's height first.
    async fn screenshot_for_docs(&self, name: &str) {
        if !screenshots() {
            return;
        }
        let sizes = self
            .must(
                "POST",
                "/execute/sync",
                Some(json!({
                    "script": "return [document.documentElement.scrollHeight, \
                               window.innerHeight, window.outerHeight - window.innerHeight]",
                    "args": [],
                })),
            )
            .await;
        let [page, inner, chrome] = [0, 1, 2].map(|i| sizes[i].as_u64().unwrap_or(0));
        if page > inner {
            self.must(
                "POST",
                "/window/rect",
                Some(json!({"width": 1366, "height": page.min(2400) + chrome})),
            )
            .await;
        }
        // Let the page lay out at the new size (a picture, not an assertion).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b64 = self.must("GET", "/screenshot", None).await;
        let png = base64_decode(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    /// Fails on an uncaught script error or a CSP violation in the console so far (the network's
    /// complaints about 401s and 403s are expected).
    async fn assert_no_console_errors(&self) {
        let logs = self
            .must("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
        let errors: Vec<&Value> = logs
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
            .collect();
        assert!(errors.is_empty(), "errors in the console: {errors:#?}");
    }

    /// Ends the session and stops chromedriver.
    async fn quit(mut self) {
        let _ = self.cmd("DELETE", "", None).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test lands here without `quit`: end the session (chromedriver closes chromium)
        // with a plain blocking request, then kill chromedriver.
        if !self.session.is_empty() {
            let _ = delete_session_blocking(self.port, &self.session);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn delete_session_blocking(port: u16, session: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(())
}

/// Whether this run writes the docs' screenshots (ERRAND_SCREENSHOTS=1).
fn screenshots() -> bool {
    std::env::var("ERRAND_SCREENSHOTS").as_deref() == Ok("1")
}

fn ok_or_transient<T>(r: Result<T, WdError>, css: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.transient() => None,
        Err(e) => panic!("WebDriver on {css}: {}: {}", e.error, e.message),
    }
}

/// Waits for chromedriver's `/status` to say ready; false if it exited or never did.
async fn wait_ready(http: &reqwest::Client, child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if let Ok(resp) = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
        {
            let v: Value =
                serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null);
            if v["value"]["ready"] == true {
                return true;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

fn base64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    }
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (val(c) << (18 - 6 * i)));
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..chunk.len() - 1]);
    }
    out
}

// ---------------------------------------------------------------- the server and its API

struct Api {
    server: TestServer,
    http: reqwest::Client,
    /// The key calls are made with; none for a server without keys.
    key: Option<&'static str>,
    _dir: tempfile::TempDir,
}

impl Api {
    /// A fresh server on a fresh store with an `admin` key and a `read` key.
    async fn start() -> Api {
        Api::start_with_keys(vec![
            ApiKey::from_secret("ops", ADMIN, vec![Scope::Admin], vec![]),
            ApiKey::from_secret("viewer", READER, vec![Scope::Read], vec![]),
        ])
        .await
    }

    /// A fresh server with no keys at all (the README's `errand serve`): anyone is an admin.
    async fn start_open() -> Api {
        Api::start_with_keys(vec![]).await
    }

    async fn start_with_keys(keys: Vec<ApiKey>) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::with_data_dir(dir.path());
        let key = (!keys.is_empty()).then_some(ADMIN);
        config.keys = keys;
        let server = TestServer::start_with(config).await;
        Api {
            server,
            http: reqwest::Client::new(),
            key,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// One call with the admin key: (status, JSON body).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url());
        let req = match method {
            "GET" => self.http.get(url),
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            _ => unreachable!("{method}"),
        };
        let req = match self.key {
            Some(key) => req.header("authorization", format!("Bearer {key}")),
            None => req,
        };
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(b.to_string()),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn enqueue(&self, queue: &str, job: Value) -> String {
        let (s, v) = self
            .call("POST", &format!("/v1/queues/{queue}/jobs"), Some(job))
            .await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Leases up to `n` jobs of `queue`: (id, lease token) each.
    async fn fetch(&self, queue: &str, n: usize) -> Vec<(String, String)> {
        let (s, v) = self
            .call(
                "POST",
                "/v1/fetch",
                Some(json!({"queues": [queue], "worker_id": "test-worker", "max_jobs": n})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["id"].as_str().unwrap().to_string(),
                    j["lease_token"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn state(&self, id: &str) -> String {
        let (s, v) = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(s, 200, "{v}");
        v["state"].as_str().unwrap().to_string()
    }

    /// A job in `mail` that failed for good: dead after its one attempt.
    async fn dead_job(&self) -> String {
        let id = self
            .enqueue(
                "mail",
                json!({
                    "kind": "send_welcome",
                    "payload": {"to": "ada@example.com", "template": "welcome", "locale": "en-GB"},
                    "max_attempts": 1,
                }),
            )
            .await;
        let leased = self.fetch("mail", 1).await;
        assert_eq!(leased.len(), 1);
        let (got, token) = &leased[0];
        assert_eq!(got, &id);
        let (s, v) = self
            .call(
                "POST",
                &format!("/v1/jobs/{id}/fail"),
                Some(json!({
                    "lease_token": token,
                    "message": "smtp 550: mailbox unavailable",
                    "retryable": false,
                })),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(self.state(&id).await, "dead");
        id
    }
}

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_page_shows_counts_change_as_jobs_run() {
    let api = Api::start().await;
    for n in 0..3 {
        api.enqueue(
            "mail",
            json!({"kind": "send_receipt", "payload": {"order": n}}),
        )
        .await;
    }
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", api.url())).await;
    browser.login(ADMIN).await;
    let cell = |state: &str| format!(r#"#queues tr[data-queue="mail"] td[data-count="{state}"]"#);
    browser.wait_text(&cell("waiting"), "3").await;
    browser.wait_text(&cell("completed"), "0").await;
    assert_eq!(
        browser.property("#open-notice", "hidden").await,
        Some(Value::Bool(true)),
        "signed in with a key: no notice of an open server"
    );

    let leased = api.fetch("mail", 2).await;
    assert_eq!(leased.len(), 2);
    for (id, token) in &leased {
        let (s, v) = api
            .call(
                "POST",
                &format!("/v1/jobs/{id}/complete"),
                Some(json!({"lease_token": token, "result": {"sent": true}})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    browser.wait_text(&cell("waiting"), "1").await;
    browser.wait_text(&cell("completed"), "2").await;
    browser.wait_text(&cell("active"), "0").await;
    browser.wait_text(&cell("dead"), "0").await;
    if screenshots() {
        // For the picture only: the throughput chart has a line once three scrapes are in.
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline
            && !browser
                .attribute("#chart-throughput path.line", "d")
                .await
                .is_some_and(|d| d.contains('L'))
        {
            tokio::time::sleep(POLL).await;
        }
    }
    browser.screenshot_for_docs("dashboard-queues.png").await;
    browser.assert_no_console_errors().await;

    browser.quit().await;
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retries_a_dead_job_from_its_page() {
    let api = Api::start().await;
    let id = api.dead_job().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/#/jobs/{id}", api.url())).await;
    browser.login(ADMIN).await;
    browser.wait_text("#job-state", "dead").await;
    browser.wait_text("#job-id", &id).await;
    let payload = browser.text("#job-payload").await.unwrap();
    assert!(payload.contains("ada@example.com"), "{payload}");
    let errors = browser.text("#job-errors").await.unwrap();
    assert!(errors.contains("smtp 550: mailbox unavailable"), "{errors}");
    browser.screenshot_for_docs("dashboard-job.png").await;

    let retry = r#"[data-action="retry"]"#;
    assert_eq!(
        browser.property(retry, "disabled").await,
        Some(Value::Bool(false)),
        "an admin may retry"
    );
    browser.click(retry).await;
    // Should the page ask first (confirm()), say yes.
    browser.accept_alert_if_open().await;
    browser.wait_text("#job-state", "waiting").await;
    assert_eq!(api.state(&id).await, "waiting");
    // The retry is reported as a success.
    let deadline = Instant::now() + WAIT;
    loop {
        let class = browser
            .attribute("#toast", "class")
            .await
            .unwrap_or_default();
        if class.split_whitespace().any(|c| c == "ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no success toast: class {class:?}, text {:?}",
            browser.text("#toast").await
        );
        tokio::time::sleep(POLL).await;
    }
    browser.assert_no_console_errors().await;

    browser.quit().await;
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_cannot_act() {
    let api = Api::start().await;
    let id = api.dead_job().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/#/jobs/{id}", api.url())).await;
    browser.login(READER).await;
    browser.wait_text("#job-state", "dead").await;
    browser.wait_text("#identity-name", "viewer").await;

    let retry = r#"[data-action="retry"]"#;
    assert_eq!(
        browser.property(retry, "disabled").await,
        Some(Value::Bool(true)),
        "the retry button is there but disabled"
    );
    assert_eq!(
        browser.attribute(retry, "title").await.as_deref(),
        Some("needs an admin key")
    );

    // The API refuses too, whatever the page shows.
    let status = browser
        .execute_async(
            "const [id, key, done] = arguments;
             fetch('/v1/jobs/' + encodeURIComponent(id) + '/retry',
                   {method: 'POST', headers: {Authorization: 'Bearer ' + key}})
               .then((r) => done(r.status), (e) => done('fetch failed: ' + e));",
            vec![json!(id), json!(READER)],
        )
        .await;
    assert_eq!(status, json!(403));
    assert_eq!(api.state(&id).await, "dead");
    browser.wait_text("#job-state", "dead").await;
    browser.assert_no_console_errors().await;

    browser.quit().await;
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_opened_after_jobs_ran_charts_them_and_says_the_server_is_open() {
    let api = Api::start_open().await;
    // Jobs enqueued and completed before anyone looks: only the server's history can chart them.
    for n in 0..6 {
        api.enqueue(
            "mail",
            json!({"kind": "send_receipt", "payload": {"order": n}}),
        )
        .await;
    }
    for (id, token) in api.fetch("mail", 6).await {
        let (s, v) = api
            .call(
                "POST",
                &format!("/v1/jobs/{id}/complete"),
                Some(json!({"lease_token": token})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    let browser = Browser::start().await;
    browser.goto(&format!("{}/", api.url())).await;
    // No key asked for: the page signs in as anonymous, and says what that means.
    browser.wait_text("#identity-name", "anonymous").await;
    assert_eq!(
        browser.property("#open-notice", "hidden").await,
        Some(Value::Bool(false)),
        "the notice of an open server shows"
    );
    let notice = browser.text("#open-notice").await.unwrap();
    assert!(
        notice.contains("no API keys") && notice.contains("anonymous"),
        "{notice}"
    );
    browser
        .wait_text(
            r#"#queues tr[data-queue="mail"] td[data-count="completed"]"#,
            "6",
        )
        .await;

    // The throughput chart shows the completions at once, from GET /v1/activity: nothing runs
    // after the page opened, so its own scrapes alone would draw a flat 0/s.
    let deadline = Instant::now() + WAIT;
    loop {
        let peak = browser
            .attribute("#chart-throughput", "data-peak")
            .await
            .and_then(|p| p.parse::<f64>().ok());
        if peak.is_some_and(|p| p > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the throughput chart is flat: peak {peak:?}, {:?} points",
            browser.attribute("#chart-throughput", "data-points").await
        );
        tokio::time::sleep(POLL).await;
    }
    let d = browser
        .attribute("#chart-throughput path.line", "d")
        .await
        .unwrap_or_default();
    assert!(d.contains('L'), "a line, not a dot: {d:?}");
    browser.assert_no_console_errors().await;

    browser.quit().await;
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_shows_the_report_and_a_queue_its_rate_limit_state() {
    let api = Api::start().await;
    // Two jobs a day for the queue, one per group: the tokens stay at 0 while the test looks.
    let (s, v) = api
        .call(
            "PUT",
            "/v1/queues/mint/config",
            Some(json!({"concurrency": 5,
                        "rate_limit": {"limit": 2, "period_ms": 86_400_000},
                        "group_rate_limit": {"limit": 1, "period_ms": 86_400_000}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for g in ["a", "a", "b"] {
        api.enqueue(
            "mint",
            json!({"kind": "mint", "payload": {}, "group_key": g}),
        )
        .await;
    }
    assert_eq!(
        api.fetch("mint", 3).await.len(),
        2,
        "the queue's two tokens"
    );

    let browser = Browser::start().await;
    browser.goto(&format!("{}/#/queues/mint", api.url())).await;
    browser.login(ADMIN).await;
    browser
        .wait_text(r#"#flow [data-flow="active"]"#, "2 of 5")
        .await;
    browser
        .wait_text(r#"#flow [data-flow="tokens"]"#, "0 of 2")
        .await;
    browser
        .wait_text(r#"#flow [data-flow="rate"]"#, "2 per 24 h 0 m")
        .await;
    for g in ["a", "b"] {
        browser
            .wait_text(
                &format!(r#"#flow-groups tr[data-group="{g}"] td[data-group-active]"#),
                "1",
            )
            .await;
        browser
            .wait_text(
                &format!(r#"#flow-groups tr[data-group="{g}"] td[data-group-tokens]"#),
                "0 of 1",
            )
            .await;
    }

    browser.click(r#"#nav a[data-nav="audit-report"]"#).await;
    let row = |check: &str, subject: &str| {
        format!(r#"#audit-report tr[data-check="{check}"][data-subject="{subject}"] .verdict"#)
    };
    browser
        .wait_text(&row("queue.max_waiting", "queue mint"), "warn")
        .await;
    browser
        .wait_text(&row("server.auth", "server"), "pass")
        .await;
    browser
        .wait_text(&row("worker.report", "worker test-worker"), "warn")
        .await;
    browser
        .wait_text(r#"#audit-summary [data-count="fail"]"#, "0 fail")
        .await;
    browser.assert_no_console_errors().await;

    browser.quit().await;
    api.server.shutdown().await;
}
