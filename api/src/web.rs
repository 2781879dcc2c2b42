//! The status pages' shared assets (`api/web/`): one stylesheet and one small script,
//! compiled into both the controller (fleet page) and the agent (board page) so that
//! the pages look alike and need nothing from the network.

/// The stylesheet: system fonts, light and dark, readable on a phone.
pub const STYLE_CSS: &str = include_str!("../web/punnet.css");

/// The helpers: DOM building, relative ages, sparklines, fetch with a token, live
/// updates (SSE or polling) and log following; defines `window.punnet`.
pub const PUNNET_JS: &str = include_str!("../web/punnet.js");

/// Headers both pages send with every asset and page: nothing is loaded from elsewhere,
/// no page may frame them, and browsers do not guess content types.
pub const SECURITY_HEADERS: [(&str, &str); 3] = [
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_small_and_self_contained() {
        // "A few tens of KB in all" (issue 6): the shared part must stay well below that.
        assert!(STYLE_CSS.len() + PUNNET_JS.len() < 20 * 1024);
        for asset in [STYLE_CSS, PUNNET_JS] {
            assert!(!asset.contains("http://") || asset.contains("http://www.w3.org/2000/svg"));
            assert!(!asset.contains("https://"), "no CDN or external fonts");
        }
        assert!(PUNNET_JS.contains("global.punnet = punnet"));
    }
}
