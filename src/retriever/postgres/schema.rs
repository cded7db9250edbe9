//! The catalogue's tables (schema version [`PG_SCHEMA_VERSION`]) and its metadata.
//!
//! ```text
//! <schema>.meta   key text PRIMARY KEY, value jsonb   one row per field of `Meta`
//! <schema>.items  id bigint identity PRIMARY KEY, path text UNIQUE, sha256 bytea,
//!                 weights_id text, recipe text, colour_attribute text, texture_attribute text,
//!                 colour_len real, texture_len real,          length before normalising
//!                 colour vector(D0), texture vector(D1),      the search vectors
//!                 added timestamptz
//! HNSW indexes    items_colour_hnsw, items_texture_hnsw: vector_l2_ops on raw vectors
//!                 (FeatureNorm::None), vector_ip_ops on unit vectors (the other norms)
//! ```
//!
//! The raw vector of a row is `FeatureNorm::invert(search vector, len, mean)`: the table keeps
//! one copy of each vector and four bytes more per facet.

use postgres::{GenericClient, Transaction};
use serde::{Deserialize, Serialize};

use super::{Context, PgError};
use crate::retriever::FeatureNorm;
use crate::retriever::catalogue::StoreSpec;

/// The version of the tables a [`PgStore`](super::PgStore) writes and reads.
pub const PG_SCHEMA_VERSION: i64 = 1;

/// Everything the `meta` table holds, one key per field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub schema_version: i64,
    pub dims: [usize; 2],
    pub norm: String,
    pub weights_id: String,
    pub recipe: String,
    /// The HNSW operator class of both vector columns.
    pub opclass: String,
    /// `[m, ef_construction]` of the indexes.
    pub hnsw: [usize; 2],
    /// Items stored.
    pub count: i64,
    /// Median pairwise distances `[colour, texture]` (what `Ranking::BOTH` divides by).
    pub scales: [f32; 2],
    /// The mean `[colour, texture]` the stored vectors are centred on (CenterL2), else empty.
    pub means: [Vec<f32>; 2],
    /// Items in the catalogue when the mean was taken.
    pub mean_count: i64,
    /// Items added, replaced or removed since.
    pub changes: i64,
    /// Whether each facet's attributes were stored.
    pub tagged: [bool; 2],
    /// Bumped by every write: readers' caches compare it.
    pub generation: i64,
    /// False between appends and the settle that brings scales, means and indexes up to date.
    pub settled: bool,
}

impl Meta {
    pub fn new(spec: &StoreSpec, hnsw: [usize; 2]) -> Self {
        Self {
            schema_version: PG_SCHEMA_VERSION,
            dims: spec.dims,
            norm: spec.norm.name().into(),
            weights_id: spec.weights_id.clone(),
            recipe: spec.recipe.clone(),
            opclass: opclass(spec.norm).into(),
            hnsw,
            count: 0,
            scales: [1.0, 1.0],
            means: [Vec::new(), Vec::new()],
            mean_count: 0,
            changes: 0,
            tagged: [false, false],
            generation: 0,
            settled: true,
        }
    }

    /// Reads every key (in a transaction that locked the `generation` row, or for a cache).
    pub fn read(c: &mut impl GenericClient, schema: &str) -> Result<Self, PgError> {
        let rows = c
            .query(&format!("SELECT key, value::text FROM {schema}.meta"), &[])
            .ctx("read the catalogue's meta table")?;
        let mut map = serde_json::Map::new();
        for r in rows {
            let (k, v): (String, String) = (r.get(0), r.get(1));
            let v = serde_json::from_str(&v).map_err(|e| PgError::Meta {
                schema: schema.into(),
                key: k.clone(),
                reason: e.to_string(),
            })?;
            map.insert(k, v);
        }
        // The version first: another version's other keys may not parse.
        let version = map.get("schema_version").and_then(|v| v.as_i64());
        match version {
            Some(PG_SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(PgError::SchemaVersion {
                    schema: schema.into(),
                    found,
                    expected: PG_SCHEMA_VERSION,
                });
            }
            None => {
                return Err(PgError::Meta {
                    schema: schema.into(),
                    key: "schema_version".into(),
                    reason: "missing or not an integer".into(),
                });
            }
        }
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| PgError::Meta {
            schema: schema.into(),
            key: "*".into(),
            reason: e.to_string(),
        })
    }

    /// Writes every key.
    pub fn write(&self, tx: &mut Transaction<'_>, schema: &str) -> Result<(), PgError> {
        let serde_json::Value::Object(map) = serde_json::to_value(self).expect("meta serialises")
        else {
            unreachable!("a struct serialises to an object")
        };
        let (keys, values): (Vec<String>, Vec<String>) =
            map.into_iter().map(|(k, v)| (k, v.to_string())).unzip();
        tx.execute(
            &format!(
                "INSERT INTO {schema}.meta (key, value) \
                 SELECT k, v::jsonb FROM unnest($1::text[], $2::text[]) AS u(k, v) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            &[&keys, &values],
        )
        .ctx("write the catalogue's meta table")?;
        Ok(())
    }

    /// Checks the catalogue against what the retriever makes.
    pub fn check(&self, spec: &StoreSpec, schema: &str) -> Result<(), PgError> {
        if self.dims != spec.dims {
            return Err(PgError::Dimension {
                schema: schema.into(),
                stored: self.dims,
                expected: spec.dims,
            });
        }
        for (field, stored, expected) in [
            ("weights_id", &self.weights_id, &spec.weights_id),
            ("recipe", &self.recipe, &spec.recipe),
            ("norm", &self.norm, &spec.norm.name().to_owned()),
        ] {
            if stored != expected {
                return Err(PgError::Mismatch {
                    schema: schema.into(),
                    field,
                    stored: stored.clone(),
                    expected: expected.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The HNSW operator class for vectors transformed by `norm`: L2 on raw vectors; inner
/// product on unit vectors, whose order it shares with L2 (`|a - b|^2 = 2 - 2 a.b`) at one
/// subtraction less per dimension.
pub(super) fn opclass(norm: FeatureNorm) -> &'static str {
    match norm {
        FeatureNorm::None => "vector_l2_ops",
        _ => "vector_ip_ops",
    }
}

/// The distance operator the indexes serve for `opclass`.
pub(super) fn order_operator(opclass: &str) -> &'static str {
    if opclass == "vector_ip_ops" {
        "<#>"
    } else {
        "<->"
    }
}

/// The tables of a new catalogue.
pub(super) fn create_sql(schema: &str, dims: [usize; 2]) -> String {
    let [dc, dt] = dims;
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE {schema}.meta (key text PRIMARY KEY, value jsonb NOT NULL);
         CREATE TABLE {schema}.items (
             id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             path              text NOT NULL UNIQUE,
             sha256            bytea CHECK (octet_length(sha256) = 32),
             weights_id        text NOT NULL,
             recipe            text NOT NULL,
             colour_attribute  text,
             texture_attribute text,
             colour_len        real NOT NULL,
             texture_len       real NOT NULL,
             colour            vector({dc}) NOT NULL,
             texture           vector({dt}) NOT NULL,
             added             timestamptz NOT NULL DEFAULT now()
         );"
    )
}

/// The HNSW index of `facet` (`"colour"` or `"texture"`).
pub(super) fn index_name(facet: &str) -> String {
    format!("items_{facet}_hnsw")
}
