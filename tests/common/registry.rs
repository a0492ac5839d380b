//! A real Confluent-compatible Schema Registry for the tests: Apicurio Registry (in-memory
//! storage) from the archive `.ci/install.sh` caches (`~/.cache/rtis/apicurio-<version>`), on the
//! Temurin 25 JDK (it needs Java 21+; `RTIS_REGISTRY_JAVA` overrides the launcher), bound to
//! loopback. Its Confluent API is at [`SchemaRegistry::url`]. Compatibility is set to BACKWARD,
//! Confluent's default (Apicurio's own default is NONE).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::kafka::spawn_owned;

const VERSION: &str = "3.3.3";

pub struct SchemaRegistry {
    child: Child,
    /// Base URL of the Confluent API (`.../apis/ccompat/v7`).
    pub url: String,
    /// The same over HTTPS ([`Self::start_tls`]).
    pub tls_url: Option<String>,
    dir: tempfile::TempDir,
}

fn home() -> PathBuf {
    let dir = super::cache_dir().join(format!("apicurio-{VERSION}"));
    assert!(
        dir.join(".complete").is_file(),
        "Apicurio Registry {VERSION} is not installed in {}: run `bash .ci/install.sh` first",
        dir.display()
    );
    dir
}

fn java() -> PathBuf {
    std::env::var("RTIS_REGISTRY_JAVA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/lib/jvm/temurin-25-jdk-amd64/bin/java"))
}

impl SchemaRegistry {
    /// One registry for the tests of this process (killed with it: see [`spawn_owned`]).
    pub fn shared() -> &'static SchemaRegistry {
        static SHARED: std::sync::OnceLock<SchemaRegistry> = std::sync::OnceLock::new();
        SHARED.get_or_init(Self::start)
    }

    /// Starts a registry of the caller's own and waits until its API answers (at most 90 s).
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Like [`Self::start`], also serving HTTPS with a self-signed certificate for 127.0.0.1
    /// (made with `openssl` at start): [`Self::tls_url`], trusted through [`Self::ca`].
    pub fn start_tls() -> Self {
        Self::launch(true)
    }

    fn launch(tls: bool) -> Self {
        let home = home();
        let dir = tempfile::Builder::new()
            .prefix("rtis-registry")
            .tempdir()
            .unwrap();
        let (port, mport, sport) = (free_port(), free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut cmd = Command::new(java());
        cmd.current_dir(dir.path())
            .args(["-Xms128m", "-Xmx384m", "-XX:+UseSerialGC"])
            .arg("-Dquarkus.http.host=127.0.0.1")
            .arg(format!("-Dquarkus.http.port={port}"))
            .arg("-Dquarkus.management.host=127.0.0.1")
            .arg(format!("-Dquarkus.management.port={mport}"));
        if tls {
            let out = Command::new("openssl")
                .current_dir(dir.path())
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args([
                    "-keyout",
                    "key.pem",
                    "-out",
                    "cert.pem",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            cmd.arg(format!("-Dquarkus.http.ssl-port={sport}"))
                .arg(format!(
                    "-Dquarkus.http.ssl.certificate.files={}",
                    dir.path().join("cert.pem").display()
                ))
                .arg(format!(
                    "-Dquarkus.http.ssl.certificate.key-files={}",
                    dir.path().join("key.pem").display()
                ));
        }
        cmd.arg("-jar")
            .arg(home.join("quarkus-run.jar"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = spawn_owned(cmd);
        let mut r = Self {
            child,
            url: format!("http://127.0.0.1:{port}/apis/ccompat/v7"),
            tls_url: tls.then(|| format!("https://127.0.0.1:{sport}/apis/ccompat/v7")),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("the schema registry exited ({status}); log:\n{}", r.log());
            }
            if ureq::get(&format!("{}/subjects", r.url))
                .call()
                .is_ok_and(|resp| resp.status() == 200)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the schema registry did not answer within 90 s; log:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        r.set_compatibility("BACKWARD");
        r
    }

    /// Sets the global compatibility level.
    pub fn set_compatibility(&self, level: &str) {
        let resp = ureq::put(&format!("{}/config", self.url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send(format!(r#"{{"compatibility":"{level}"}}"#))
            .expect("setting the registry's compatibility");
        assert_eq!(resp.status(), 200);
    }

    /// The versions registered under `subject`.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        match ureq::get(&format!("{}/subjects/{subject}/versions", self.url)).call() {
            Ok(mut resp) => serde_json::from_str(&resp.body_mut().read_to_string().unwrap())
                .expect("a list of versions"),
            Err(ureq::Error::StatusCode(404)) => vec![],
            Err(e) => panic!("listing versions of {subject}: {e}"),
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the registry: it accepts connections but answers
    /// nothing meanwhile.
    pub fn pause(&self, on: bool) {
        let sig = if on { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signalling our own child
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// The PEM file that signs the HTTPS certificate (self-signed: the certificate itself).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
