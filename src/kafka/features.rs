//! What the linked Kafka client (librdkafka) can do, against what the configuration
//! asks of it: a property that needs a feature the build lacks (TLS, a SASL mechanism,
//! OIDC token fetch, a compression codec) is refused at start, in one line naming the
//! property, instead of failing later inside librdkafka or, for a codec, stalling a
//! partition.
//!
//! flagtally's own build has every feature checked here (`Cargo.toml`: OpenSSL and
//! libcurl built from source, zstd); the check guards builds made otherwise (a
//! distribution's dynamically linked librdkafka, a trimmed feature set).

use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The linked librdkafka's `builtin.features`.
pub fn builtin() -> &'static BTreeSet<String> {
    static FEATURES: OnceLock<BTreeSet<String>> = OnceLock::new();
    FEATURES.get_or_init(|| {
        rdkafka::ClientConfig::new()
            .create_native_config()
            .and_then(|c| c.get("builtin.features"))
            .map(|s| parse(&s))
            .unwrap_or_default()
    })
}

fn parse(list: &str) -> BTreeSet<String> {
    list.split(',')
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
        .collect()
}

/// The features one property needs: `(feature, what for)`.
fn needs(key: &str, value: &str) -> Vec<(&'static str, String)> {
    let v = value.trim().to_ascii_lowercase();
    let mut out = Vec::new();
    match key {
        "security.protocol" => {
            if v.contains("ssl") {
                out.push(("ssl", format!("TLS ({value})")));
            }
            if v.starts_with("sasl") {
                out.push(("sasl", format!("SASL ({value})")));
            }
        }
        "sasl.mechanism" | "sasl.mechanisms" => {
            for m in v.split([',', ' ']).filter(|m| !m.is_empty()) {
                let feature = match m {
                    "plain" => "sasl_plain",
                    "scram-sha-256" | "scram-sha-512" => "sasl_scram",
                    "oauthbearer" => "sasl_oauthbearer",
                    "gssapi" => "sasl_gssapi",
                    _ => continue,
                };
                out.push((
                    feature,
                    format!("SASL mechanism {}", m.to_ascii_uppercase()),
                ));
            }
        }
        "sasl.oauthbearer.method" if v == "oidc" => {
            out.push(("oidc", "OIDC token fetch".to_owned()));
        }
        "compression.codec" | "compression.type" => match v.as_str() {
            "gzip" | "snappy" | "lz4" | "zstd" => {
                out.push((codec(&v), format!("{v} compression")));
            }
            _ => {}
        },
        _ if key.starts_with("ssl.") && key != "ssl.endpoint.identification.algorithm" => {
            out.push(("ssl", "TLS settings".to_owned()));
        }
        _ => {}
    }
    out
}

fn codec(v: &str) -> &'static str {
    match v {
        "gzip" => "gzip",
        "snappy" => "snappy",
        "lz4" => "lz4",
        _ => "zstd",
    }
}

/// Every property of `props` (named `{prefix}.{key}` in the messages) that needs a
/// feature missing from `have`: one line each.
pub fn missing<'a>(
    prefix: &str,
    props: impl IntoIterator<Item = (&'a String, &'a String)>,
    have: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in props {
        for (feature, what) in needs(key, value) {
            if !have.contains(feature) {
                // `ssl.*` values may be secrets (`ssl.key.password`): never echoed.
                let shown = if key.starts_with("ssl.") {
                    String::new()
                } else {
                    format!(" = {value:?}")
                };
                problems.push(format!(
                    "{prefix}.\"{key}\"{shown}: needs {what}, which this build's Kafka client (librdkafka) lacks: its builtin.features are {}",
                    have.iter().cloned().collect::<Vec<_>>().join(",")
                ));
            }
        }
    }
    problems
}

/// The codecs every build must read: a record batch in one of them that the client
/// cannot decompress would stop its partition.
pub const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];

/// The codecs `have` lacks, for the start-up check.
pub fn missing_codecs(have: &BTreeSet<String>) -> Vec<&'static str> {
    CODECS.into_iter().filter(|c| !have.contains(*c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn this_build_has_what_managed_clusters_need() {
        let have = builtin();
        for f in [
            "ssl",
            "sasl",
            "sasl_plain",
            "sasl_scram",
            "sasl_oauthbearer",
            "oidc",
            "gzip",
            "snappy",
            "lz4",
            "zstd",
        ] {
            assert!(have.contains(f), "{f} missing from {have:?}");
        }
        assert!(missing_codecs(have).is_empty());
    }

    #[test]
    fn a_property_needing_a_missing_feature_is_named() {
        let have = parse("gzip,snappy,lz4,sasl,sasl_plain");
        let props: BTreeMap<String, String> = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("compression.type", "zstd"),
            ("ssl.key.password", "hunter2"),
            ("sasl.username", "u"),
            ("compression.codec", "gzip"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let problems = missing("kafka.properties", &props, &have);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems.iter().any(|p| p.starts_with(
            "kafka.properties.\"security.protocol\" = \"SASL_SSL\": needs TLS (SASL_SSL)"
        )));
        assert!(problems.iter().any(|p| p.contains("SCRAM-SHA-512")));
        assert!(problems.iter().any(|p| p.contains("zstd compression")));
        assert!(
            problems
                .iter()
                .all(|p| p.contains("builtin.features are gzip,lz4"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("kafka.properties.\"ssl.key.password\": needs TLS")),
            "{problems:#?}"
        );
        assert!(
            problems.iter().all(|p| !p.contains("hunter2")),
            "no secret echoed"
        );
        assert_eq!(missing_codecs(&have), ["zstd"]);
    }
}
