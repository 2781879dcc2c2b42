//! Chrome DevTools Protocol commands sent through chromedriver's `goog/cdp/execute`
//! endpoint: device metrics (phone widths), colour scheme and full-page screenshots,
//! which plain WebDriver cannot do.

use fantoccini::wd::WebDriverCompatibleCommand;
use serde_json::{json, Value};

/// One DevTools method call, e.g. `Page.captureScreenshot` with its parameters.
#[derive(Debug)]
pub(crate) struct Cdp {
    method: &'static str,
    params: Value,
}

impl Cdp {
    pub(crate) fn new(method: &'static str, params: Value) -> Cdp {
        Cdp { method, params }
    }
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/goog/cdp/execute"))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.method, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}
