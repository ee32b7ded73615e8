//! Certificates for the `--tls` figures: a CA and one certificate for 127.0.0.1 (every
//! process of the benchmark's clusters presents it), made with the `openssl` command in
//! a temporary directory removed when dropped; and clients that connect with them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use rask::{Client, ClientOptions, TlsFiles};

/// A CA and a certificate for 127.0.0.1 signed by it.
pub(crate) struct BenchCerts {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("the --tls figures make their certificates with the openssl command")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl BenchCerts {
    /// Makes the CA and the certificate.
    pub(crate) fn new() -> Result<BenchCerts> {
        let dir = std::env::temp_dir().join(format!("rask-bench-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let certs = BenchCerts { dir };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-days",
            "2",
            "-subj",
            "/CN=rask bench CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&certs.dir, &ca)?;
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend([
            "-subj", "/CN=node", "-keyout", "node.key", "-out", "node.csr",
        ]);
        openssl(&certs.dir, &req)?;
        std::fs::write(
            certs.dir.join("node.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n",
        )?;
        openssl(
            &certs.dir,
            &[
                "x509",
                "-req",
                "-in",
                "node.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "node.ext",
                "-out",
                "node.pem",
            ],
        )?;
        Ok(certs)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The options that give a scheduler or worker these certificates.
    pub(crate) fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("node.pem"),
            "--tls-key".into(),
            self.path("node.key"),
            "--tls-ca".into(),
            self.path("ca.pem"),
        ]
    }

    /// A client of `addr` that checks the scheduler (and workers) against the CA.
    pub(crate) fn client(&self, addr: &str, opts: ClientOptions) -> Result<Client> {
        let mut opts = opts;
        opts.conn.tls = TlsFiles {
            ca: Some(self.dir.join("ca.pem")),
            ..TlsFiles::default()
        }
        .load()?;
        Ok(Client::connect_with(addr, opts)?)
    }
}

impl Drop for BenchCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
