//! Takes the bootstrap token out of the agent's config file once the board has an
//! identity: the token only serves to enrol, and left on the card (a board image puts it
//! in `/etc/punnet/agent.yaml`) it would let whoever reads the card enrol boards of
//! their own for as long as the token has uses left.

use std::io::Write;
use std::path::Path;

/// `text` without its top-level `token:` entries, or `None` when it has none. Only
/// whole lines go: a token is one line, and comments and other keys stay as written.
pub fn without_token(text: &str) -> Option<String> {
    let is_token = |line: &str| {
        line.strip_prefix("token")
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    };
    if !text.lines().any(is_token) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if !is_token(line) {
            out.push_str(line);
        }
    }
    Some(out)
}

/// Rewrites `path` without its token, atomically and keeping its mode. Returns whether
/// there was one.
pub fn forget(path: &Path) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(path)?;
    let Some(rest) = without_token(&text) else {
        return Ok(false);
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".new");
    let tmp = Path::new(&tmp_name);
    let mode = std::fs::metadata(path)?.permissions();
    let mut f = std::fs::File::create(tmp)?;
    f.set_permissions(mode)?;
    f.write_all(rest.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_the_token_lines_go() {
        let text = "# Written by punnet image build\nbroker: mqtts://ctl:8883\ntoken: 0123456789ab.s3cret\nlabels:\n  token: kept\ntokens-seen: 2\nname: pi-1";
        assert_eq!(
            without_token(text).unwrap(),
            "# Written by punnet image build\nbroker: mqtts://ctl:8883\nlabels:\n  token: kept\ntokens-seen: 2\nname: pi-1"
        );
        assert_eq!(without_token("token : x\n").unwrap(), "");
        assert_eq!(without_token("broker: mqtts://ctl\nweb-token: s\n"), None);
    }

    #[test]
    fn forget_rewrites_the_file_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, "broker: mqtts://ctl\ntoken: 0123456789ab.s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(forget(&path).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "broker: mqtts://ctl\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!forget(&path).unwrap());
    }
}
