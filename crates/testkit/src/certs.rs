//! Throwaway TLS material for tests, made by `openssl`: a CA and a server certificate for
//! `127.0.0.1`, `::1` and `localhost` (the TLS proxy in front of the S3 server, managers
//! serving their API over HTTPS), and client certificates from the same CA (mutual TLS).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Paths of a throwaway CA certificate (and its key) and of a server certificate and key it
/// signed.
#[derive(Debug, Clone)]
pub struct Certificates {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A client certificate and its key.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A new P-256 key, unencrypted, for a request.
const NEW_KEY: [&str; 6] = [
    "-new",
    "-nodes",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
];

/// A P-256 CA (`ca.crt`, `ca.key`) and a server certificate (`server.crt`, `server.key`) for
/// `127.0.0.1` and `localhost`, valid for two days, with the extensions strict verifiers
/// (webpki, Python 3.13's VERIFY_X509_STRICT) require.
pub fn generate_certificates(dir: &Path) -> Result<Certificates> {
    let ca_key = dir.join("ca.key");
    let ca_cert = dir.join("ca.crt");
    let path = |p: &Path| p.display().to_string();
    let (ca_key_path, ca_cert_path) = (path(&ca_key), path(&ca_cert));
    let ca_request = [
        "-keyout",
        &ca_key_path,
        "-out",
        &ca_cert_path,
        "-subj",
        "/CN=pgsteward test CA",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    openssl(&[&["req", "-x509"][..], &NEW_KEY, &ca_request].concat())?;
    set_mode(&ca_key, 0o600)?;
    set_mode(&ca_cert, 0o644)?;
    let (server_cert, server_key) = issue(
        dir,
        &ca_cert,
        &ca_key,
        "server",
        "localhost",
        "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth",
    )?;
    Ok(Certificates {
        ca_cert,
        ca_key,
        server_cert,
        server_key,
    })
}

/// A client certificate (`<name>.crt`, `<name>.key` in `dir`) signed by the CA of `certs`,
/// for the DNS name `name`, valid for two days.
pub fn issue_client_certificate(
    certs: &Certificates,
    dir: &Path,
    name: &str,
) -> Result<ClientCertificate> {
    let (cert, key) = issue(
        dir,
        &certs.ca_cert,
        &certs.ca_key,
        name,
        name,
        &format!("subjectAltName=DNS:{name}\nextendedKeyUsage=clientAuth"),
    )?;
    Ok(ClientCertificate { cert, key })
}

/// Make a key and a certificate `<stem>.crt` for the subject `cn`, signed by the CA, with
/// `extensions` (lines separated by `\n`) besides the constraints every leaf gets.
fn issue(
    dir: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    stem: &str,
    cn: &str,
    extensions: &str,
) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join(format!("{stem}.key"));
    let csr = dir.join(format!("{stem}.csr"));
    let cert = dir.join(format!("{stem}.crt"));
    let ext = dir.join(format!("{stem}-ext.cnf"));
    std::fs::write(
        &ext,
        format!(
            "{}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             subjectKeyIdentifier=hash\n\
             authorityKeyIdentifier=keyid\n",
            extensions
        ),
    )
    .with_context(|| format!("writing {}", ext.display()))?;
    let path = |p: &Path| p.display().to_string();
    let (key_path, csr_path, subject) = (path(&key), path(&csr), format!("/CN={cn}"));
    let request = ["-keyout", &key_path, "-out", &csr_path, "-subj", &subject];
    openssl(&[&["req"][..], &NEW_KEY, &request].concat())?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path(&csr),
        "-CA",
        &path(ca_cert),
        "-CAkey",
        &path(ca_key),
        "-set_serial",
        &format!("0x{:016x}", random_u64()),
        "-days",
        "2",
        "-extfile",
        &path(&ext),
        "-out",
        &path(&cert),
    ])?;
    set_mode(&key, 0o600)?;
    set_mode(&cert, 0o644)?;
    Ok((cert, key))
}

fn set_mode(file: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", file.display()))
}

fn openssl(args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run openssl: apt-get install openssl, or run `cargo xtask prereqs`")?;
    if !output.status.success() {
        bail!(
            "openssl {} exited with {}: {}",
            args.first().copied().unwrap_or_default(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Not cryptographic: only makes certificate serial numbers differ between runs.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish() & 0x7fff_ffff_ffff_ffff
}
