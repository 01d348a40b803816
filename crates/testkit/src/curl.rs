//! HTTPS requests through `curl` for tests of TLS listeners (the testkit's own HTTP helper
//! speaks plain HTTP): verify against a CA file, optionally present a client certificate, and
//! report the status code, `000` when the connection or a verification failed.

use std::path::Path;
use std::process::Command;

/// `curl -X method url` trusting `ca`, with `client` (certificate, key) when given: the HTTP
/// status code (`000` when no answer came) and the body.
pub fn curl(
    method: &str,
    url: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> (String, String) {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "--max-time",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca);
    if let Some((cert, key)) = client {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let output = command
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (apt-get install curl): {e}"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}
