//! Throwaway TLS material for tests, made by `openssl`: a CA and a server certificate for
//! `127.0.0.1`, `::1` and `localhost` (the TLS proxy in front of the S3 server, managers
//! serving their API over HTTPS).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Paths of a throwaway CA certificate and of a server certificate and key it signed.
#[derive(Debug, Clone)]
pub struct Certificates {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A P-256 CA (`ca.crt`, `ca.key`) and a server certificate (`server.crt`, `server.key`) for
/// `127.0.0.1` and `localhost`, valid for two days, with the extensions strict verifiers
/// (webpki, Python 3.13's VERIFY_X509_STRICT) require.
pub fn generate_certificates(dir: &Path) -> Result<Certificates> {
    let ca_key = dir.join("ca.key");
    let ca_cert = dir.join("ca.crt");
    let server_key = dir.join("server.key");
    let server_csr = dir.join("server.csr");
    let server_cert = dir.join("server.crt");
    let ext = dir.join("server-ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n",
    )
    .with_context(|| format!("writing {}", ext.display()))?;
    let serial = format!("0x{:016x}", random_u64());
    let path = |p: &Path| p.display().to_string();
    // A new P-256 key, unencrypted, for both requests.
    let new_key = [
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ];
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
    openssl(&[&["req", "-x509"][..], &new_key, &ca_request].concat())?;
    let (server_key_path, server_csr_path) = (path(&server_key), path(&server_csr));
    let server_request = [
        "-keyout",
        &server_key_path,
        "-out",
        &server_csr_path,
        "-subj",
        "/CN=localhost",
    ];
    openssl(&[&["req"][..], &new_key, &server_request].concat())?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path(&server_csr),
        "-CA",
        &path(&ca_cert),
        "-CAkey",
        &path(&ca_key),
        "-set_serial",
        &serial,
        "-days",
        "2",
        "-extfile",
        &path(&ext),
        "-out",
        &path(&server_cert),
    ])?;
    for (file, mode) in [
        (&ca_key, 0o600),
        (&server_key, 0o600),
        (&ca_cert, 0o644),
        (&server_cert, 0o644),
    ] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", file.display()))?;
    }
    Ok(Certificates {
        ca_cert,
        server_cert,
        server_key,
    })
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
