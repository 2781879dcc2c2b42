//! webcheck: drives Debian's headless Chromium from tests, through `chromedriver`
//! (WebDriver, via `fantoccini`), to check Punnet's web pages the way a person sees
//! them: open a page, wait until some text shows, read it, take screenshots at desktop
//! and phone widths under `target/screenshots/` (CI keeps `target/` as artifacts).
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (and `libnss3-tools` to
//! trust a CA). One `Browser` per test binary keeps run time small: starting Chromium
//! costs about a second.
//!
//! ```no_run
//! # async fn f() -> Result<(), webcheck::WebcheckError> {
//! let browser = webcheck::Browser::start(webcheck::Options::default()).await?;
//! browser.open("https://127.0.0.1:8443/").await?;
//! browser.wait_for_text("Nodes").await?;
//! browser.screenshot("fleet", webcheck::DESKTOP).await?;
//! browser.screenshot("fleet", webcheck::PHONE).await?;
//! browser.close().await;
//! # Ok(()) }
//! ```

mod cdp;
mod driver;
mod error;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

use crate::cdp::Cdp;
use crate::driver::Driver;
pub use crate::error::WebcheckError;

/// A desktop screen's width in CSS pixels.
pub const DESKTOP: u32 = 1280;
/// A phone's width in CSS pixels (an iPhone 12–15's portrait viewport).
pub const PHONE: u32 = 390;

/// Screenshots are cut at this height: a runaway page must not make a huge PNG.
const MAX_SHOT_HEIGHT: u32 = 6000;
/// How often `wait_*` looks at the page again.
const POLL: Duration = Duration::from_millis(100);
/// How much of the page's text an error message shows.
const TEXT_IN_ERRORS: usize = 3000;

/// How to start the browser.
#[derive(Clone, Debug)]
pub struct Options {
    /// The window's size in CSS pixels.
    pub width: u32,
    pub height: u32,
    /// A PEM CA certificate for Chromium to trust (put in the profile's NSS database
    /// with `certutil`). Without one, certificate errors are accepted instead.
    pub trust_ca: Option<PathBuf>,
    /// How long `wait_*` waits before failing.
    pub timeout: Duration,
    /// The `chromedriver` program.
    pub driver: PathBuf,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            width: DESKTOP,
            height: 900,
            trust_ca: None,
            timeout: Duration::from_secs(15),
            driver: PathBuf::from("chromedriver"),
        }
    }
}

impl Options {
    /// Trusts this CA certificate (PEM) instead of ignoring certificate errors.
    pub fn trust_ca(mut self, pem: impl Into<PathBuf>) -> Options {
        self.trust_ca = Some(pem.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Options {
        self.timeout = timeout;
        self
    }
}

/// The colour scheme a page sees through `prefers-color-scheme`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Light,
    Dark,
}

/// One headless Chromium session. Dropping it kills chromedriver and the browser.
pub struct Browser {
    client: Client,
    // Dropped after the client: kills chromedriver's process group.
    driver: Driver,
    // Chromium's $HOME and profile; removed last.
    _home: tempfile::TempDir,
    timeout: Duration,
    width: u32,
    height: u32,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start(options: Options) -> Result<Browser, WebcheckError> {
        let home = tempfile::Builder::new()
            .prefix("webcheck-")
            .tempdir()
            .map_err(WebcheckError::Profile)?;
        if let Some(ca) = &options.trust_ca {
            trust_ca(home.path(), ca)?;
        }
        let driver = Driver::start(&options.driver, home.path())?;
        let capabilities = capabilities(&options, &home.path().join("profile"));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .map_err(|e| WebcheckError::Session {
                message: e.to_string(),
                log: driver.log_tail(),
            })?;
        Ok(Browser {
            client,
            driver,
            _home: home,
            timeout: options.timeout,
            width: options.width,
            height: options.height,
        })
    }

    /// The WebDriver client, for anything this API does not cover (clicks, forms).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Changes how long `wait_*` waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn open(&self, url: &str) -> Result<(), WebcheckError> {
        self.client
            .goto(url)
            .await
            .map_err(|e| command(format!("open {url}"), e))
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub async fn eval(&self, expression: &str) -> Result<Value, WebcheckError> {
        self.client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .map_err(|e| command(format!("evaluate {expression}"), e))
    }

    /// The page's visible text (`document.body.innerText`).
    pub async fn text(&self) -> Result<String, WebcheckError> {
        let v = self
            .eval("document.body ? document.body.innerText : ''")
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The visible text of the first element matching `selector`.
    pub async fn text_of(&self, selector: &str) -> Result<String, WebcheckError> {
        let v = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                vec![json!(selector)],
            )
            .await
            .map_err(|e| command(format!("read {selector}"), e))?;
        match v {
            Value::String(s) => Ok(s),
            _ => Err(WebcheckError::NoElement {
                selector: selector.to_string(),
                url: self.url().await,
                text: self.text_for_errors().await,
            }),
        }
    }

    /// Waits until the page's visible text contains `text`.
    pub async fn wait_for_text(&self, text: &str) -> Result<(), WebcheckError> {
        self.wait_until(
            &format!("text {text:?} to appear"),
            "document.body && document.body.innerText.includes(arguments[0])",
            json!(text),
        )
        .await
    }

    /// Waits until the page's visible text no longer contains `text`.
    pub async fn wait_for_text_gone(&self, text: &str) -> Result<(), WebcheckError> {
        self.wait_until(
            &format!("text {text:?} to disappear"),
            "document.body && !document.body.innerText.includes(arguments[0])",
            json!(text),
        )
        .await
    }

    /// Waits until an element matches the CSS `selector`.
    pub async fn wait_for_selector(&self, selector: &str) -> Result<(), WebcheckError> {
        self.wait_until(
            &format!("an element matching {selector:?}"),
            "document.querySelector(arguments[0]) !== null",
            json!(selector),
        )
        .await
    }

    /// Waits until the JavaScript `condition` (which may use `arguments[0]`, = `arg`) is
    /// true; `what` names it in the error.
    pub async fn wait_until(
        &self,
        what: &str,
        condition: &str,
        arg: Value,
    ) -> Result<(), WebcheckError> {
        let script = format!("return Boolean({condition});");
        let deadline = Instant::now() + self.timeout;
        loop {
            // A page that is navigating fails the script; that only means "not yet".
            if let Ok(Value::Bool(true)) = self.client.execute(&script, vec![arg.clone()]).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(WebcheckError::Timeout {
                    what: what.to_string(),
                    after: self.timeout,
                    url: self.url().await,
                    text: self.text_for_errors().await,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Lets the page see `prefers-color-scheme: dark` (or light).
    pub async fn color_scheme(&self, scheme: Scheme) -> Result<(), WebcheckError> {
        let value = match scheme {
            Scheme::Light => "light",
            Scheme::Dark => "dark",
        };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": value }] }),
        )
        .await
        .map(drop)
    }

    /// Saves a PNG of the whole page at `width` CSS pixels (a phone is emulated below
    /// 600) as `<screenshot_dir>/<name>-<width>.png`, and returns its path.
    pub async fn screenshot(&self, name: &str, width: u32) -> Result<PathBuf, WebcheckError> {
        let mobile = width < 600;
        let metrics = |height: u32| json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile });
        self.cdp("Emulation.setDeviceMetricsOverride", metrics(self.height))
            .await?;
        // Lay the page out at this width, then grow the viewport to the page's height.
        let height = self
            .eval("Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)")
            .await?
            .as_u64()
            .unwrap_or(self.height as u64)
            .clamp(200, MAX_SHOT_HEIGHT as u64) as u32;
        self.cdp("Emulation.setDeviceMetricsOverride", metrics(height))
            .await?;
        let shot = self
            .cdp("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let restore = self
            .cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        let data = shot?["data"].as_str().unwrap_or_default().to_string();
        restore?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| WebcheckError::Screenshot {
                path: name.to_string(),
                message: format!("Chromium sent no PNG: {e}"),
            })?;
        let dir = screenshot_dir();
        let path = dir.join(format!("{name}-{width}.png"));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, png))
            .map_err(|e| WebcheckError::Screenshot {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(path)
    }

    /// Ends the WebDriver session politely; dropping the browser kills it anyway.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    async fn cdp(&self, method: &'static str, params: Value) -> Result<Value, WebcheckError> {
        self.client
            .issue_cmd(Cdp::new(method, params))
            .await
            .map_err(|e| command(method.to_string(), e))
    }

    async fn url(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("(unknown URL: {e})"),
        }
    }

    async fn text_for_errors(&self) -> String {
        match self.text().await {
            Ok(text) if text.len() > TEXT_IN_ERRORS => {
                let mut end = TEXT_IN_ERRORS;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}\n[… {} more bytes]", &text[..end], text.len() - end)
            }
            Ok(text) => text,
            Err(e) => format!("(could not read the page: {e})"),
        }
    }

    /// chromedriver's log, for diagnosing a browser that misbehaves.
    pub fn driver_log(&self) -> String {
        self.driver.log_tail()
    }
}

/// Where screenshots go: `$WEBCHECK_SCREENSHOTS`, else `target/screenshots/` of the
/// test binary that is running (`target/debug/deps/<test>` → `target/screenshots`).
pub fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEBCHECK_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    match exe.ancestors().nth(3) {
        Some(target) if !target.as_os_str().is_empty() => target.join("screenshots"),
        _ => PathBuf::from("target/screenshots"),
    }
}

fn capabilities(options: &Options, profile: &Path) -> fantoccini::wd::Capabilities {
    // Debian's /usr/bin/chromium is a wrapper script; the browser itself sits here.
    let binary = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("chromium");
    let args = vec![
        "--headless=new".to_string(),
        // Tests run as root, where Chromium's sandbox refuses to start.
        "--no-sandbox".to_string(),
        "--disable-dev-shm-usage".to_string(),
        "--disable-gpu".to_string(),
        "--no-first-run".to_string(),
        "--disable-extensions".to_string(),
        "--hide-scrollbars".to_string(),
        "--lang=en-US".to_string(),
        "--force-color-profile=srgb".to_string(),
        format!("--window-size={},{}", options.width, options.height),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = fantoccini::wd::Capabilities::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        json!({ "binary": binary, "args": args }),
    );
    caps.insert(
        "acceptInsecureCerts".to_string(),
        json!(options.trust_ca.is_none()),
    );
    caps
}

/// Puts `ca` into an NSS database under `home`, where Chromium on Linux looks for
/// locally trusted roots.
fn trust_ca(home: &Path, ca: &Path) -> Result<(), WebcheckError> {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).map_err(WebcheckError::Profile)?;
    let db_arg = format!("sql:{}", db.display());
    let ca_arg = ca.display().to_string();
    let steps: [&[&str]; 2] = [
        &["-N", "-d", &db_arg, "--empty-password"],
        &[
            "-A",
            "-d",
            &db_arg,
            "-t",
            "C,,",
            "-n",
            "webcheck-ca",
            "-i",
            &ca_arg,
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("certutil")
            .args(args)
            .output()
            .map_err(|e| WebcheckError::TrustCa {
                ca: ca_arg.clone(),
                message: format!(
                    "cannot run certutil: {e} (install the Debian package libnss3-tools)"
                ),
            })?;
        if !out.status.success() {
            return Err(WebcheckError::TrustCa {
                ca: ca_arg.clone(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

fn command(what: String, source: fantoccini::error::CmdError) -> WebcheckError {
    WebcheckError::Command {
        what,
        message: source.to_string(),
    }
}
