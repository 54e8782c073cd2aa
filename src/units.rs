//! Sizes and durations as people write them (`"64MiB"`, `"30s"`, `"-2h"`, `"off"`):
//! the parsers the command line uses and the serde adapters of the configuration's
//! sections, components' settings included.

use std::time::Duration;

pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A positive duration such as `30s`, `1m`, `1h30m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (try 30s, 1m, 1h)"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

/// A duration that may be negative (`-2h`), in milliseconds.
pub fn signed_duration(s: &str) -> Result<i64, String> {
    let (sign, rest) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s),
    };
    if rest
        .trim_start_matches('0')
        .trim_end_matches(char::is_alphabetic)
        .is_empty()
    {
        return Ok(0);
    }
    humantime::parse_duration(rest)
        .map(|d| sign * millis(d))
        .map_err(|e| format!("{s:?}: {e}"))
}

/// Serde adapters (`#[serde(deserialize_with = "crate::units::de::size")]`).
pub mod de {
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    use super::{duration, signed_duration};

    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Bytes(u64),
            Text(String),
        }
        let bytes = match Size::deserialize(d)? {
            Size::Bytes(n) => n,
            Size::Text(s) => s
                .parse::<bytesize::ByteSize>()
                .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e} (try 4MiB, 512KiB)")))?
                .as_u64(),
        };
        usize::try_from(bytes).map_err(serde::de::Error::custom)
    }

    pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s == "off" {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|e| {
            serde::de::Error::custom(format!("{s:?}: {e} (try 127.0.0.1:9464 or \"off\")"))
        })
    }

    pub fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        duration(&s).map_err(serde::de::Error::custom)
    }

    pub fn any_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }

    pub fn optional_duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        if s == "off" {
            return Ok(None);
        }
        duration(&s).map(Some).map_err(serde::de::Error::custom)
    }

    pub fn signed_millis<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        signed_duration(&s).map_err(serde::de::Error::custom)
    }
}
