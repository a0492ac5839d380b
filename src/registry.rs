//! A Confluent Schema Registry client (the REST API that Confluent's registry, Apicurio's
//! `ccompat` API, Karapace and Redpanda serve), for `--format confluent`.
//!
//! The producer registers each writer schema under the topic-name strategy's subject
//! (`<topic>-key`, `<topic>-value`) *before* it encodes a record with it, and writes the id the
//! registry answers into the record (magic byte 0, 4-byte big-endian id, Avro body): no record
//! is ever sent without a registered schema. Registering is idempotent (the registry answers
//! the same id for the same schema), so a restarted session simply registers again.
//!
//! Errors are grouped by the recovery they need: an unreachable or failing registry (connection
//! refused, timeout, 5xx, 429) is [`RegistryError::Unavailable`] — retried like a broker outage;
//! a refusal (409 incompatible, 422 invalid, 401/403, 404) is [`RegistryError::Refused`] — the
//! producer stops, naming the subject and the registry's own message.
//!
//! Blocking (ureq): the producer calls it from `spawn_blocking`, the consumer from its own
//! thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value as Json};

/// How long one registry request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Content type of the Confluent API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Where the registry is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Base URL of the Confluent API, e.g. `http://registry:8081` or
    /// `http://apicurio:8080/apis/ccompat/v7`. User info in the URL (`https://user:pass@host`)
    /// is taken as basic-auth credentials.
    pub url: String,
    /// Basic-auth user and password.
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA certificate(s) that sign the registry's TLS certificate (default: the
    /// system's roots).
    pub ca: Option<PathBuf>,
}

/// Why a registry request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or failed (connection, timeout, 5xx, 429): retry.
    #[error("schema registry {url} unavailable: {msg}")]
    Unavailable { url: String, msg: String },
    /// The registry answered with a refusal: retrying the same request cannot help.
    #[error("schema registry {url} refused (HTTP {status}{}): {message}", code.map(|c| format!(", error_code {c}")).unwrap_or_default())]
    Refused {
        url: String,
        status: u16,
        /// The registry's own `error_code`, when it gave one.
        code: Option<i64>,
        message: String,
    },
    /// The settings are wrong (bad URL, unreadable CA file).
    #[error("{0}")]
    Config(String),
}

impl RegistryError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }

    /// A refusal that says the client is set up wrong (credentials, or a URL that is not a
    /// registry's Confluent API) rather than anything about the schema or record.
    pub fn is_setup(&self) -> bool {
        match self {
            RegistryError::Refused { status, code, .. } => {
                matches!(status, 401 | 403)
                    || (*status == 404 && code.is_none_or(|c| c / 100 != 404))
            }
            RegistryError::Config(_) => true,
            RegistryError::Unavailable { .. } => false,
        }
    }
}

/// A registry client with its caches.
pub struct Registry {
    base: String,
    /// `base` without credentials, for messages.
    shown: String,
    auth: Option<String>,
    agent: ureq::Agent,
    /// (subject, schema JSON) → id.
    registered: Mutex<HashMap<(String, String), u32>>,
    /// id → schema JSON.
    by_id: Mutex<HashMap<u32, String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.shown)
            .finish()
    }
}

impl Registry {
    pub fn new(s: &RegistrySettings) -> Result<Self, RegistryError> {
        // the URL may hold a password: never shown as given
        let mut url = url::Url::parse(s.url.trim()).map_err(|e| {
            RegistryError::Config(format!(
                "--schema-registry-url: expected an http(s) URL such as http://registry:8081, \
                 found one that does not parse ({e})"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RegistryError::Config(format!(
                "--schema-registry-url: expected an http:// or https:// URL, found scheme {:?}",
                url.scheme()
            )));
        }
        let mut user = s.user.clone();
        let mut password = s.password.clone();
        if !url.username().is_empty() || url.password().is_some() {
            let dec = |t: &str| {
                percent_decode(t).map_err(|_| {
                    RegistryError::Config(
                        "--schema-registry-url: user info is not valid percent-encoded UTF-8"
                            .into(),
                    )
                })
            };
            if !url.username().is_empty() {
                user.get_or_insert(dec(url.username())?);
            }
            if let Some(p) = url.password() {
                password.get_or_insert(dec(p)?);
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        if user.is_none() && password.is_some() {
            user = Some(String::new());
        }
        let auth = user.map(|u| {
            let pair = format!("{u}:{}", password.unwrap_or_default());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        let roots = match &s.ca {
            None => ureq::tls::RootCerts::PlatformVerifier,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    RegistryError::Config(format!(
                        "--schema-registry-ca: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(RegistryError::Config(format!(
                        "--schema-registry-ca: expected PEM certificates in {}, found none",
                        path.display()
                    )));
                }
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(roots)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls)
            .build()
            .into();
        let base = url.as_str().trim_end_matches('/').to_string();
        Ok(Self {
            shown: base.clone(),
            base,
            auth,
            agent,
            registered: Mutex::new(HashMap::new()),
            by_id: Mutex::new(HashMap::new()),
        })
    }

    /// The registry's URL (without credentials).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// One request: the JSON of a 2xx answer, else the error its status calls for.
    fn call(&self, method: &str, path: &str, body: Option<&Json>) -> Result<Json, RegistryError> {
        let url = format!("{}{path}", self.base);
        let unavailable = |msg: String| RegistryError::Unavailable {
            url: self.shown.clone(),
            msg,
        };
        let result = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url).header("Accept", CONTENT_TYPE);
                if let Some(a) = &self.auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = self
                    .agent
                    .post(&url)
                    .header("Accept", CONTENT_TYPE)
                    .header("Content-Type", CONTENT_TYPE);
                if let Some(a) = &self.auth {
                    r = r.header("Authorization", a);
                }
                r.send(body.map(|b| b.to_string()).unwrap_or_default())
            }
        };
        let mut resp = result.map_err(|e| unavailable(format!("{method} {path}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| unavailable(format!("{method} {path}: reading the answer: {e}")))?;
        let parsed: Option<Json> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return parsed.ok_or_else(|| {
                unavailable(format!(
                    "{method} {path}: expected a JSON answer, found {:?}",
                    text.chars().take(200).collect::<String>()
                ))
            });
        }
        let message = parsed
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(Json::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(500).collect());
        if status >= 500 || status == 429 || status == 408 {
            return Err(unavailable(format!(
                "{method} {path}: HTTP {status}: {message}"
            )));
        }
        Err(RegistryError::Refused {
            url: self.shown.clone(),
            status,
            code: parsed
                .as_ref()
                .and_then(|j| j.get("error_code"))
                .and_then(Json::as_i64),
            message: format!("{method} {path}: {message}"),
        })
    }

    /// Checks that the registry answers (and accepts the credentials): `GET /subjects`.
    pub fn check(&self) -> Result<(), RegistryError> {
        self.call("GET", "/subjects", None).map(|_| ())
    }

    /// Registers `schema` under `subject` (idempotent) and returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let k = (subject.to_string(), schema.to_string());
        if let Some(id) = self.registered.lock().expect("registry cache").get(&k) {
            return Ok(*id);
        }
        let path = format!("/subjects/{}/versions", path_segment(subject));
        let answer = self.call(
            "POST",
            &path,
            Some(&json!({"schemaType": "AVRO", "schema": schema})),
        )?;
        let id = answer
            .get("id")
            .and_then(Json::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| RegistryError::Unavailable {
                url: self.shown.clone(),
                msg: format!("POST {path}: expected {{\"id\": N}}, found {answer}"),
            })?;
        self.registered
            .lock()
            .expect("registry cache")
            .insert(k, id);
        self.by_id
            .lock()
            .expect("registry cache")
            .insert(id, schema.to_string());
        Ok(id)
    }

    /// The schema with this id.
    pub fn schema(&self, id: u32) -> Result<String, RegistryError> {
        if let Some(s) = self.by_id.lock().expect("registry cache").get(&id) {
            return Ok(s.clone());
        }
        let path = format!("/schemas/ids/{id}");
        let answer = self.call("GET", &path, None)?;
        let schema = answer
            .get("schema")
            .and_then(Json::as_str)
            .ok_or_else(|| RegistryError::Unavailable {
                url: self.shown.clone(),
                msg: format!("GET {path}: expected {{\"schema\": \"...\"}}, found {answer}"),
            })?
            .to_string();
        self.by_id
            .lock()
            .expect("registry cache")
            .insert(id, schema.clone());
        Ok(schema)
    }
}

/// The subject of a topic's keys or values under the topic-name strategy.
pub fn subject(topic: &str, part: Part) -> String {
    match part {
        Part::Key => format!("{topic}-key"),
        Part::Value => format!("{topic}-value"),
    }
}

/// Key or value of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Key,
    Value,
}

/// Magic byte of the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0;

/// The 5-byte header of a Confluent-framed record: magic 0, schema id big-endian.
pub fn confluent_header(id: u32) -> [u8; 5] {
    let b = id.to_be_bytes();
    [CONFLUENT_MAGIC, b[0], b[1], b[2], b[3]]
}

/// Splits a Confluent-framed message into schema id and Avro body.
pub fn split_confluent(msg: &[u8]) -> Option<(u32, &[u8])> {
    if msg.len() < 5 || msg[0] != CONFLUENT_MAGIC {
        return None;
    }
    Some((
        u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]),
        &msg[5..],
    ))
}

/// Percent-encodes a URL path segment (topic names are `[a-zA-Z0-9._-]`, but be safe).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;

    /// A one-route HTTP server: answers each request with the next `(status, body)` and records
    /// the request line and the Authorization header.
    fn server(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (status, body) in answers {
                let (mut s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut auth = String::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if lower.starts_with("authorization:") {
                        auth = h[14..].trim().to_string();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut req_body = vec![0; len];
                r.read_exact(&mut req_body).unwrap();
                log.lock().unwrap().push(format!(
                    "{} auth={auth} body={}",
                    line.trim(),
                    String::from_utf8_lossy(&req_body)
                ));
                write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        (url, seen)
    }

    fn registry(url: &str) -> Registry {
        Registry::new(&RegistrySettings {
            url: url.into(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn registers_once_per_schema_and_sends_basic_auth_from_the_url() {
        let (url, seen) = server(vec![(200, r#"{"id":7}"#), (200, r#"{"id":8}"#)]);
        let with_user = url.replace("http://", "http://svc%40shop:p%3Ass@");
        let r = registry(&with_user);
        assert_eq!(r.url(), url, "credentials are not shown");
        assert_eq!(r.register("t-value", r#""int""#).unwrap(), 7);
        assert_eq!(r.register("t-value", r#""int""#).unwrap(), 7, "cached");
        assert_eq!(r.register("t-key", r#""long""#).unwrap(), 8);
        assert_eq!(r.schema(7).unwrap(), r#""int""#, "known without a request");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        let basic = base64::engine::general_purpose::STANDARD.encode("svc@shop:p:ss");
        assert!(
            seen[0].starts_with(&format!(
                "POST /subjects/t-value/versions HTTP/1.1 auth=Basic {basic} body="
            )),
            "{}",
            seen[0]
        );
        let body: Json = serde_json::from_str(seen[0].split_once("body=").unwrap().1).unwrap();
        assert_eq!(body, json!({"schemaType": "AVRO", "schema": "\"int\""}));
        assert!(seen[1].starts_with("POST /subjects/t-key/versions"));
    }

    #[test]
    fn a_password_without_a_user_is_stripped_from_the_url_and_sent() {
        let (url, seen) = server(vec![(200, "[]")]);
        let r = registry(&url.replace("http://", "http://:s3cret@"));
        assert_eq!(r.url(), url);
        assert!(!format!("{r:?}").contains("s3cret"));
        r.check().unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode(":s3cret");
        assert!(seen.lock().unwrap()[0].contains(&format!("auth=Basic {basic}")));
    }

    #[test]
    fn refusals_are_definite_and_outages_are_not() {
        let (url, _) = server(vec![
            (
                409,
                r#"{"error_code":409,"message":"Incompatible artifact: t-value"}"#,
            ),
            (503, "down for maintenance"),
            (401, r#"{"error_code":401,"message":"Unauthorized"}"#),
            (
                404,
                r#"{"error_code":40403,"message":"Schema 99 not found."}"#,
            ),
            (200, "<html>proxy page</html>"),
        ]);
        let r = registry(&format!("{url}/apis/ccompat/v7/"));
        let e = r.register("t-value", "\"int\"").unwrap_err();
        assert!(!e.is_unavailable());
        let text = e.to_string();
        assert!(text.contains("error_code 409"), "{text}");
        assert!(text.contains("Incompatible artifact: t-value"), "{text}");
        assert!(
            text.contains("POST /subjects/t-value/versions"),
            "names the request: {text}"
        );
        let e = r.register("t-value", "\"int\"").unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(
            e.to_string().contains("HTTP 503: down for maintenance"),
            "{e}"
        );
        let e = r.check().unwrap_err();
        assert!(
            !e.is_unavailable() && e.to_string().contains("Unauthorized"),
            "{e}"
        );
        assert!(e.is_setup(), "bad credentials are a set-up problem");
        let e = r.schema(99).unwrap_err();
        assert!(
            !e.is_unavailable() && e.to_string().contains("Schema 99 not found"),
            "{e}"
        );
        assert!(!e.is_setup(), "an unknown id is about the record");
        let e = r.schema(100).unwrap_err();
        assert!(
            e.is_unavailable() && e.to_string().contains("expected a JSON answer"),
            "{e}"
        );
    }

    #[test]
    fn an_unreachable_registry_is_unavailable() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = registry(&format!("http://127.0.0.1:{port}"));
        let e = r.check().unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }

    #[test]
    fn bad_settings_name_the_flag() {
        for (url, want) in [
            ("registry:8081", "--schema-registry-url"),
            ("ftp://registry", "scheme \"ftp\""),
            ("http://user:p#ss@registry", "does not parse"),
        ] {
            let e = Registry::new(&RegistrySettings {
                url: url.into(),
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.to_string().contains(want), "{url}: {e}");
            assert!(!e.to_string().contains("p#ss"), "no password shown: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let e = Registry::new(&RegistrySettings {
            url: "https://registry".into(),
            ca: Some(ca),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("--schema-registry-ca: expected PEM"),
            "{e}"
        );
    }

    #[test]
    fn confluent_framing() {
        let h = confluent_header(0x0102_0304);
        assert_eq!(h, [0, 1, 2, 3, 4]);
        let mut msg = h.to_vec();
        msg.extend_from_slice(b"body");
        assert_eq!(split_confluent(&msg), Some((0x0102_0304, &b"body"[..])));
        assert_eq!(split_confluent(&[0, 1, 2]), None);
        assert_eq!(split_confluent(&[0xC3, 1, 2, 3, 4, 5]), None);
        assert_eq!(
            subject("product_updates", Part::Value),
            "product_updates-value"
        );
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
