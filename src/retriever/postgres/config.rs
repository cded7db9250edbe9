//! [`PgConfig`]: where the catalogue lives in the database and how it is searched.

use std::num::NonZeroUsize;

use super::PgError;

/// How a [`PgStore`](super::PgStore) keeps and searches a catalogue. Checked once, by
/// [`PgStore::connect`](super::PgStore::connect).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PgConfig {
    /// The Postgres schema that holds the catalogue's tables (default `attrex`): one schema per
    /// catalogue, so that several share a database. Lower-case letters, digits and `_`,
    /// starting with a letter or `_`, at most 63 bytes.
    pub schema: String,
    /// Images read, checked and added per transaction by
    /// [`Retriever::ingest`](crate::Retriever::ingest) (default 64).
    pub batch: NonZeroUsize,
    /// `hnsw.ef_search`: the size of the HNSW candidate list, the recall/latency knob
    /// (default 100; pgvector allows up to 1000).
    pub ef_search: NonZeroUsize,
    /// Candidates taken from each tap's index for a combined ranking before the exact fused
    /// re-rank (default 100; at least `k` is taken).
    pub depth: NonZeroUsize,
    /// HNSW `m`, links per node (default 16).
    pub hnsw_m: NonZeroUsize,
    /// HNSW `ef_construction` (default 64).
    pub hnsw_ef_construction: NonZeroUsize,
    /// [`FeatureNorm::CenterL2`](crate::FeatureNorm::CenterL2): the catalogue mean is frozen
    /// and new items are centred on it; when the items added or removed since it was taken
    /// reach this share of the catalogue it was taken from, the next settle takes the mean
    /// again and re-centres every vector (default 0.25). `PgStore::refresh_mean` does it at
    /// once.
    pub refresh_growth: f32,
}

impl Default for PgConfig {
    fn default() -> Self {
        let n = |n| NonZeroUsize::new(n).expect("non-zero");
        Self {
            schema: "attrex".into(),
            batch: n(64),
            ef_search: n(100),
            depth: n(100),
            hnsw_m: n(16),
            hnsw_ef_construction: n(64),
            refresh_growth: 0.25,
        }
    }
}

impl PgConfig {
    /// The default configuration with the catalogue in `schema`.
    pub fn with_schema(schema: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            ..Self::default()
        }
    }

    /// Checks the fields that can be wrong.
    pub(super) fn check(&self) -> Result<(), PgError> {
        let s = self.schema.as_bytes();
        let ident = !s.is_empty()
            && s.len() <= 63
            && (s[0].is_ascii_lowercase() || s[0] == b'_')
            && s.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
        if !ident {
            return Err(PgError::Config {
                reason: format!(
                    "schema {:?} is not a lower-case identifier of at most 63 bytes",
                    self.schema
                ),
            });
        }
        if self.ef_search.get() > 1000 {
            return Err(PgError::Config {
                reason: format!("ef_search {} is over pgvector's 1000", self.ef_search),
            });
        }
        if self.hnsw_m.get() < 2 || self.hnsw_m.get() > 100 {
            return Err(PgError::Config {
                reason: format!("hnsw_m {} is outside pgvector's 2..=100", self.hnsw_m),
            });
        }
        if self.hnsw_ef_construction.get() < 2 * self.hnsw_m.get()
            || self.hnsw_ef_construction.get() > 1000
        {
            return Err(PgError::Config {
                reason: format!(
                    "hnsw_ef_construction {} must be in 2 * hnsw_m..=1000",
                    self.hnsw_ef_construction
                ),
            });
        }
        if !(self.refresh_growth.is_finite() && self.refresh_growth >= 0.0) {
            return Err(PgError::Config {
                reason: format!(
                    "refresh_growth {} must be finite and >= 0",
                    self.refresh_growth
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(PgConfig::default().check().is_ok());
        for bad in ["", "Attrex", "a-b", "1x", "a;drop", &"x".repeat(64)] {
            assert!(
                matches!(
                    PgConfig::with_schema(bad).check(),
                    Err(PgError::Config { .. })
                ),
                "{bad:?}"
            );
        }
        let growth = PgConfig {
            refresh_growth: f32::NAN,
            ..PgConfig::default()
        };
        assert!(growth.check().is_err());
    }
}
