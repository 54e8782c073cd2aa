//! The writer schemas of `native-avro` input in the Confluent wire format, by id:
//! fetched once from the registry and kept.
//!
//! An id the registry does not know is asked again after [`RETRY_UNKNOWN`], a registry
//! that did not answer after [`RETRY_UNAVAILABLE`]; until then records naming the id
//! are dead-lettered at once (a down registry costs one timeout per second, not one
//! per record). At most [`MAX_SCHEMAS`] ids are kept: a hostile topic naming millions
//! of ids costs one request per id per retry period, and never unbounded memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::rabin::Rabin;

use super::{Client, RegistryConfig, RegistryError};

/// Most ids kept; past it, the failures are forgotten first, then everything.
pub const MAX_SCHEMAS: usize = 1024;
pub const RETRY_UNKNOWN: Duration = Duration::from_secs(60);
pub const RETRY_UNAVAILABLE: Duration = Duration::from_secs(1);

/// A writer schema, as the native decoder reads it.
#[derive(Debug)]
pub enum Writer {
    /// `event.avsc` itself (the same canonical form): read directly.
    Native,
    /// Another schema: read with it, then resolved to `event.avsc`.
    Other(Schema),
}

/// What an id came to.
#[derive(Clone, Debug)]
pub enum Lookup {
    Found(Arc<Writer>),
    /// The registry does not know the id, or its schema cannot be read.
    Unknown(String),
    /// The registry did not answer.
    Unavailable(String),
}

#[derive(Debug)]
enum Entry {
    Found(Arc<Writer>),
    Failed { lookup: Lookup, until: Instant },
}

/// The writer schemas one worker has met.
#[derive(Debug)]
pub struct Writers {
    client: Client,
    /// `event.avsc`'s Rabin fingerprint.
    native: Vec<u8>,
    cache: Mutex<HashMap<u32, Entry>>,
}

impl Writers {
    pub fn new(config: &RegistryConfig, native_fingerprint: &[u8]) -> Result<Self, String> {
        Ok(Self {
            client: Client::new(config)?,
            native: native_fingerprint.to_vec(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The writer schema with registry id `id`.
    pub fn get(&self, id: u32) -> Lookup {
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock() {
            match cache.get(&id) {
                Some(Entry::Found(w)) => return Lookup::Found(Arc::clone(w)),
                Some(Entry::Failed { lookup, until }) if *until > now => return lookup.clone(),
                _ => {}
            }
        }
        // Asked without the lock: another thread may ask for the same id meanwhile.
        let (lookup, retry) = self.fetch(id);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_SCHEMAS {
                cache.retain(|_, e| matches!(e, Entry::Found(_)));
                if cache.len() >= MAX_SCHEMAS {
                    cache.clear();
                }
            }
            let entry = match &lookup {
                Lookup::Found(w) => Entry::Found(Arc::clone(w)),
                failed => Entry::Failed {
                    lookup: failed.clone(),
                    until: now + retry,
                },
            };
            cache.insert(id, entry);
        }
        lookup
    }

    fn fetch(&self, id: u32) -> (Lookup, Duration) {
        let registry = self.client.shown();
        let text = match self.client.schema(id) {
            Ok(text) => text,
            Err(RegistryError::Unavailable(e)) => {
                return (
                    Lookup::Unavailable(format!("schema id {id}: {e}")),
                    RETRY_UNAVAILABLE,
                );
            }
            Err(RegistryError::NotFound(e)) => {
                return (
                    Lookup::Unknown(format!(
                        "schema id {id} is not in the registry {registry} ({e})"
                    )),
                    RETRY_UNKNOWN,
                );
            }
            Err(RegistryError::Refused(e)) => {
                return (
                    Lookup::Unknown(format!("schema id {id} in the registry {registry}: {e}")),
                    RETRY_UNKNOWN,
                );
            }
        };
        match Schema::parse_str(&text) {
            Ok(schema) if schema.fingerprint::<Rabin>().bytes == self.native => {
                (Lookup::Found(Arc::new(Writer::Native)), Duration::ZERO)
            }
            Ok(schema) => (
                Lookup::Found(Arc::new(Writer::Other(schema))),
                Duration::ZERO,
            ),
            Err(e) => (
                Lookup::Unknown(format!(
                    "schema id {id} in the registry {registry} does not parse as Avro: {e}"
                )),
                RETRY_UNKNOWN,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};

    use super::*;

    /// A registry on 127.0.0.1 that knows schema id 1, answers 503 for id 3 and 404 for
    /// any other, recording each path asked.
    fn fake_registry() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&asked);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                seen.lock().unwrap().push(path.clone());
                let (status, body) = match path.as_str() {
                    "/schemas/ids/1" => (
                        200,
                        serde_json::json!({"schema": r#"{"type":"record","name":"Other","fields":[{"name":"flagKey","type":"string"}]}"#})
                            .to_string(),
                    ),
                    "/schemas/ids/3" => (503, r#"{"message":"busy"}"#.to_owned()),
                    _ => (404, r#"{"error_code":40403,"message":"Schema not found"}"#.to_owned()),
                };
                let _ = write!(
                    &stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, asked)
    }

    #[test]
    fn each_id_is_asked_once_and_a_failure_waits_for_its_retry() {
        let (url, asked) = fake_registry();
        let config: RegistryConfig = toml::from_str(&format!("url = \"{url}\"")).unwrap();
        let writers = Writers::new(&config, b"not this schema's fingerprint").unwrap();
        for _ in 0..3 {
            let Lookup::Found(w) = writers.get(1) else {
                panic!("id 1 is known")
            };
            assert!(matches!(*w, Writer::Other(_)));
            assert!(matches!(writers.get(2), Lookup::Unknown(e) if e.contains("schema id 2")));
            assert!(matches!(writers.get(3), Lookup::Unavailable(e) if e.contains("HTTP 503")));
        }
        // Found and unknown ids are kept; an unavailable one is asked again after
        // RETRY_UNAVAILABLE, an unknown one only after RETRY_UNKNOWN.
        assert_eq!(
            *asked.lock().unwrap(),
            ["/schemas/ids/1", "/schemas/ids/2", "/schemas/ids/3"]
        );
        std::thread::sleep(RETRY_UNAVAILABLE + Duration::from_millis(100));
        assert!(matches!(writers.get(3), Lookup::Unavailable(_)));
        assert!(matches!(writers.get(2), Lookup::Unknown(_)));
        assert!(matches!(writers.get(1), Lookup::Found(_)));
        assert_eq!(asked.lock().unwrap().len(), 4);
        assert_eq!(asked.lock().unwrap()[3], "/schemas/ids/3");
    }
}
