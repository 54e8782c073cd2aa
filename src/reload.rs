//! SIGHUP: re-read the configuration file and apply what can change while running.
//!
//! Live: `log.level`, `[full_events]` and `[[sinks]]` (the sinks restart with the new
//! entries — credentials, rate limits, destinations — and resume from their own
//! positions). Any other change is reported as needing a
//! restart and not applied (the running value stays, and keeps being reported until
//! the file matches it again or the process restarts). A file that does not load or
//! check is rejected whole: the running configuration stays. A file a `*_file` key
//! names is compared by content, so a secret or certificate rotated in place (the same
//! path, new content) is a change like an edited key.

use std::path::PathBuf;

use serde_json::Value;

use crate::config::{Config, changed_paths};

/// Whether a changed key (a dotted path) applies without a restart.
pub fn is_live(path: &str) -> bool {
    path == "log.level"
        || path == "full_events"
        || path.starts_with("full_events.")
        || path == "sinks"
        || path.starts_with("sinks.")
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file says what is running.
    Unchanged,
    /// `live` keys changed and apply now; `restart` keys changed and wait for a restart.
    Changed {
        live: Vec<String>,
        restart: Vec<String>,
    },
    /// The file did not load or check; the running configuration stays.
    Rejected(String),
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Changed { restart, .. } if !restart.is_empty() => "restart-needed",
            Self::Changed { .. } => "applied",
            Self::Rejected(_) => "rejected",
        }
    }
}

/// Sets the log filter (a `tracing` directive); built by the binary, which owns the
/// subscriber.
pub type SetLogLevel = Box<dyn Fn(Option<&str>) -> Result<(), String> + Send>;

/// Re-reads one file, remembering what runs.
pub struct Reloader {
    path: PathBuf,
    /// The merged tree of what runs: the last loaded file with only live keys taken
    /// from later ones.
    running: Value,
    set_log_level: SetLogLevel,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(path: PathBuf, running: Value, set_log_level: SetLogLevel) -> Self {
        Self {
            path,
            running: with_file_digests(running),
            set_log_level,
        }
    }

    /// Re-reads the file with the overrides in `env`. Returns the outcome and, when
    /// live keys changed, the new configuration to take them from (the log level is
    /// already applied).
    pub fn reload(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> (Outcome, Option<Config>) {
        let (config, tree) = match Config::load_with_env(&self.path, env) {
            Ok(loaded) => loaded,
            Err(e) => return (Outcome::Rejected(e.to_string()), None),
        };
        // Read again on every reload, so each warning (a world-readable secret file)
        // stands in the log until it is dealt with.
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let tree = with_file_digests(tree);
        let changed = changed_paths(&self.running, &tree);
        if changed.is_empty() {
            return (Outcome::Unchanged, None);
        }
        let (live, restart): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|p| is_live(p));
        if live.iter().any(|p| p == "log.level")
            && let Err(e) = (self.set_log_level)(config.log.level.as_deref())
        {
            return (Outcome::Rejected(format!("log.level: {e}")), None);
        }
        self.take_live(&tree);
        let apply = (!live.is_empty()).then_some(config);
        (Outcome::Changed { live, restart }, apply)
    }

    /// Copies the live keys of `tree` into the running tree.
    fn take_live(&mut self, tree: &Value) {
        let Value::Object(running) = &mut self.running else {
            return;
        };
        for section in ["full_events", "sinks"] {
            match tree.get(section) {
                Some(v) => running.insert(section.to_owned(), v.clone()),
                None => running.remove(section),
            };
        }
        let level = tree.get("log").and_then(|l| l.get("level")).cloned();
        let log = running
            .entry("log")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Value::Object(log) = log {
            match level {
                Some(v) => log.insert("level".to_owned(), v),
                None => log.remove("level"),
            };
        }
    }
}

/// `tree` with the value of each `*_file` key (a path) followed by a digest of the
/// file's content, read where the configuration reads it. Only the digest enters the
/// tree, never the content; an unreadable file digests as such (the load reports it).
fn with_file_digests(mut tree: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    match v {
                        Value::String(path) if key.ends_with("_file") => {
                            let content =
                                std::fs::read(crate::kafka::security::secret_path(path.as_ref()));
                            let digest = match content {
                                Ok(bytes) => {
                                    let mut h = std::hash::DefaultHasher::new();
                                    std::hash::Hash::hash(&bytes, &mut h);
                                    format!("{:016x}", std::hash::Hasher::finish(&h))
                                }
                                Err(_) => "unreadable".to_owned(),
                            };
                            *v = Value::String(format!("{path} (content {digest})"));
                        }
                        _ => walk(v),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut tree);
    tree
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const BASE: &str = r#"
        [kafka]
        input_topics = ["in"]
        [output]
        dead_letter_topic = "dlq"
        topics.summary = "sums"
    "#;

    fn setup(dir: &std::path::Path, text: &str) -> (Reloader, Arc<Mutex<Vec<Option<String>>>>) {
        let path = dir.join("flagtally.toml");
        std::fs::write(&path, text).unwrap();
        let (_, tree) = Config::load_with_env(&path, []).unwrap();
        let levels = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&levels);
        let set: SetLogLevel = Box::new(move |l| {
            seen.lock().unwrap().push(l.map(str::to_owned));
            Ok(())
        });
        (Reloader::new(path, tree, set), levels)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flagtally-reload-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn live_keys_apply_and_others_wait_for_a_restart() {
        let dir = temp_dir("live");
        let (mut r, levels) = setup(&dir, BASE);
        assert_eq!(r.reload([]).0, Outcome::Unchanged);

        let next = format!(
            "{BASE}\n[log]\nlevel = \"debug\"\n[full_events]\noverrides = [\"beta-*=always\"]\n[window]\nsize = \"5m\"\n"
        );
        std::fs::write(dir.join("flagtally.toml"), next).unwrap();
        let (outcome, apply) = r.reload([]);
        assert_eq!(
            outcome,
            Outcome::Changed {
                live: vec!["full_events.overrides".into(), "log.level".into()],
                restart: vec!["window.size".into()],
            }
        );
        assert_eq!(outcome.label(), "restart-needed");
        assert_eq!(apply.unwrap().full_events.overrides.len(), 1);
        assert_eq!(*levels.lock().unwrap(), [Some("debug".to_owned())]);

        // The restart-only change is still pending; the live ones are running.
        let (outcome, apply) = r.reload([]);
        assert_eq!(
            outcome,
            Outcome::Changed {
                live: vec![],
                restart: vec!["window.size".into()],
            }
        );
        assert!(apply.is_none());
    }

    #[test]
    fn an_invalid_file_is_rejected_and_the_running_config_stays() {
        let dir = temp_dir("invalid");
        let (mut r, levels) = setup(&dir, BASE);
        std::fs::write(
            dir.join("flagtally.toml"),
            format!("{BASE}\n[window]\nsize = \"soon\"\n"),
        )
        .unwrap();
        let (outcome, apply) = r.reload([]);
        let Outcome::Rejected(text) = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(text.contains("window.size"), "{text}");
        assert!(apply.is_none());
        assert!(levels.lock().unwrap().is_empty());
        std::fs::write(dir.join("flagtally.toml"), BASE).unwrap();
        assert_eq!(r.reload([]).0, Outcome::Unchanged);
    }

    #[test]
    fn a_secret_file_rotated_in_place_is_a_change() {
        let dir = temp_dir("rotated");
        let (hook, kafka) = (dir.join("hook-secret"), dir.join("kafka-password"));
        std::fs::write(&hook, "first-hook-secret\n").unwrap();
        std::fs::write(&kafka, "first-password\n").unwrap();
        let text = format!(
            r#"
            [kafka]
            input_topics = ["in"]
            security_protocol = "sasl_ssl"
            sasl_mechanism = "SCRAM-SHA-512"
            sasl_username = "u"
            sasl_password_file = "{}"
            [output]
            dead_letter_topic = "dlq"
            topics.summary = "sums"
            [[sinks]]
            name = "hook"
            type = "webhook"
            topics = ["sums"]
            url = "https://example.com/"
            secret_file = "{}"
            "#,
            kafka.display(),
            hook.display()
        );
        let (mut r, _) = setup(&dir, &text);
        assert_eq!(r.reload([]).0, Outcome::Unchanged);
        // Rewritten with the same content: still unchanged.
        std::fs::write(&hook, "first-hook-secret\n").unwrap();
        assert_eq!(r.reload([]).0, Outcome::Unchanged);

        std::fs::write(&hook, "second-hook-secret\n").unwrap();
        let (outcome, apply) = r.reload([]);
        assert_eq!(
            outcome,
            Outcome::Changed {
                live: vec!["sinks".into()],
                restart: vec![],
            }
        );
        let next = apply.unwrap();
        let crate::sink::Kind::Webhook(w) = &next.sinks[0].kind else {
            panic!("{:?}", next.sinks[0].kind)
        };
        assert_eq!(
            w.secret
                .as_ref()
                .map(crate::kafka::security::Secret::expose),
            Some("second-hook-secret")
        );
        assert_eq!(r.reload([]).0, Outcome::Unchanged);

        // The broker's password is read by clients made at start: a restart.
        std::fs::write(&kafka, "second-password\n").unwrap();
        assert_eq!(
            r.reload([]).0,
            Outcome::Changed {
                live: vec![],
                restart: vec!["kafka.sasl_password_file".into()],
            }
        );
        // Only digests are kept, never what the files hold.
        let running = r.running.to_string();
        for content in [
            "first-hook-secret",
            "second-hook-secret",
            "first-password",
            "second-password",
        ] {
            assert!(!running.contains(content), "{running}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
