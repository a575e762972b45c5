//! The keys `switchboard.toml` knows, taken from the config types
//! themselves, and the unknown-key check that names where a wrong key came
//! from.
//!
//! The `config` crate merges the file and the environment before serde
//! sees them, so serde's own `deny_unknown_fields` could only say *that*
//! a key is unknown; this check runs on the merged tree, where each key's
//! origin (the file or a `SWITCHBOARD__…` variable) is still known.
//!
//! The key lists are not written by hand: serde's derive hands every
//! struct's field names (after renames) to `deserialize_struct`, and
//! [`fields_of`] asks for them. Only which key holds which sub-table is
//! written here, and a test checks that against the serialized defaults,
//! so a key added to a config struct is known at once and a new table
//! that is not wired in fails the test.

use std::fmt;

use serde::de::{DeserializeOwned, Visitor};

use super::{Config, EmbeddedNats, LogConfig, NatsConfig, StreamConfig, ENV_PREFIX};
use crate::manifest::suggest::did_you_mean;
use crate::sandbox::SandboxConfig;
use switchboard_cluster::{ClusterConfig, RouteTls};

/// Origin string the `config` crate gives environment values.
pub(super) const ENV_ORIGIN: &str = "the environment";

/// One table of the file: its keys, and which of them are tables.
pub(super) struct Table {
    keys: &'static [&'static str],
    tables: Vec<(&'static str, Table)>,
}

impl Table {
    /// The table a config struct `T` reads, with `tables` naming the
    /// fields of `T` that are tables of their own.
    fn of<T: DeserializeOwned>(tables: Vec<(&'static str, Table)>) -> Table {
        Table {
            keys: fields_of::<T>(),
            tables,
        }
    }

    fn table(&self, key: &str) -> Option<&Table> {
        self.tables.iter().find(|(k, _)| *k == key).map(|(_, t)| t)
    }
}

/// The shape of `switchboard.toml`.
pub(super) fn schema() -> Table {
    Table::of::<Config>(vec![
        (
            "nats",
            Table::of::<NatsConfig>(vec![("embedded", Table::of::<EmbeddedNats>(vec![]))]),
        ),
        ("log", Table::of::<LogConfig>(vec![])),
        ("stream", Table::of::<StreamConfig>(vec![])),
        ("sandbox", Table::of::<SandboxConfig>(vec![])),
        (
            "cluster",
            Table::of::<ClusterConfig>(vec![("tls", Table::of::<RouteTls>(vec![]))]),
        ),
    ])
}

/// The keys serde's derive reads for the struct `T` (renames applied).
///
/// A derived `Deserialize` for a struct calls `deserialize_struct` with
/// its field list first thing; [`FieldProbe`] keeps that list and stops.
/// A dependency (serde-reflection) would trace whole types but fails on
/// the `deserialize_any` that `ByteSize` uses; this is the one call
/// needed.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut probe = FieldProbe(None);
    // The probe always ends deserialization with `Stop`: only the field
    // list it kept matters.
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// A deserializer that only records the field list of the struct asked
/// for.
struct FieldProbe(Option<&'static [&'static str]>);

/// How [`FieldProbe`] ends every deserialization.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field probe: not a struct")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for &mut FieldProbe {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0 = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Reports keys of `value` (a table) that `schema` does not know, naming
/// the file or environment variable they came from.
pub(super) fn unknown_keys(
    value: &config::Value,
    prefix: &str,
    schema: &Table,
    file: &str,
    problems: &mut Vec<String>,
) {
    let config::ValueKind::Table(table) = &value.kind else {
        // Not a table where one is expected: serde reports the type.
        return;
    };
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort();
    let names = schema.keys;
    for key in keys {
        let Some(child) = table.get(key) else {
            continue;
        };
        let full = qualified(prefix, key);
        if let Some(inner) = schema.table(key) {
            unknown_keys(child, &full, inner, file, problems);
        } else if !names.contains(&key.as_str()) {
            let place = match child.origin() {
                Some(ENV_ORIGIN) | None => format!(
                    "environment variable {ENV_PREFIX}{}",
                    full.to_uppercase().replace('.', "__")
                ),
                Some(_) => file.to_owned(),
            };
            let hint = match did_you_mean(key, names) {
                Some(s) => format!("; did you mean `{}`?", qualified(prefix, s)),
                None => format!("; the known keys here are {}", names.join(", ")),
            };
            problems.push(format!("{place}: unknown key `{full}`{hint}"));
        }
    }
}

fn qualified(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every key that holds a table in the serialized defaults is a table
    /// of the schema, with the same keys, and every other key a leaf: a
    /// config struct added without its line in [`schema`] fails here.
    #[test]
    fn schema_matches_the_config_types() {
        fn check(value: &serde_json::Value, table: &Table, at: &str) {
            let serde_json::Value::Object(map) = value else {
                panic!("{at} serializes to an object");
            };
            for (key, child) in map {
                assert!(
                    table.keys.contains(&key.as_str()),
                    "{at}{key} not in schema"
                );
                match (child.is_object(), table.table(key)) {
                    (true, Some(inner)) => check(child, inner, &format!("{at}{key}.")),
                    (false, None) => {}
                    // An optional table (`[cluster]`) absent by default.
                    (false, Some(_)) if child.is_null() => {}
                    (true, None) => panic!("{at}{key} is a table the schema does not nest"),
                    (false, Some(_)) => panic!("{at}{key} is nested in the schema, not a table"),
                }
            }
            for (key, _) in &table.tables {
                assert!(
                    map.contains_key(*key),
                    "{at}{key} is missing from the defaults"
                );
            }
        }
        let defaults = serde_json::to_value(Config::defaults_in(Path::new("/srv"))).expect("json");
        check(&defaults, &schema(), "");
        assert!(
            fields_of::<Config>().contains(&"manifests"),
            "renames apply"
        );
        assert!(fields_of::<EmbeddedNats>().contains(&"max_file_store"));
        assert!(fields_of::<ClusterConfig>().contains(&"peers"));
    }
}
