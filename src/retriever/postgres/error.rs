//! [`PgError`]: what can go wrong between attrex and PostgreSQL.

use std::path::PathBuf;

/// Errors of the PostgreSQL catalogue store ([`PgStore`](super::PgStore)), inside
/// [`RetrieverError::Postgres`](crate::RetrieverError::Postgres) once the store is in a
/// retriever.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The configuration is not usable (checked before connecting).
    #[error("postgres store configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached or refused the connection (a closed port, a wrong
    /// host, authentication).
    #[error("cannot connect to PostgreSQL at {target}")]
    Connect {
        /// Host, port and database (never the password).
        target: String,
        /// The client's error; its own source is the I/O error, e.g. `ConnectionRefused`.
        #[source]
        source: postgres::Error,
    },
    /// The database has no `vector` extension (pgvector), and it could not be created (not
    /// installed on the server, or no privilege).
    #[error(
        "the database has no `vector` extension (pgvector) and it cannot be created; \
         run `CREATE EXTENSION vector` as a privileged user"
    )]
    NoVectorExtension {
        /// Why `CREATE EXTENSION vector` failed.
        #[source]
        source: postgres::Error,
    },
    /// The catalogue in `schema` was written by another version of the schema.
    #[error("catalogue {schema} has schema version {found}, this attrex reads version {expected}")]
    SchemaVersion {
        /// The Postgres schema of the catalogue.
        schema: String,
        /// The version found.
        found: i64,
        /// [`PG_SCHEMA_VERSION`](super::PG_SCHEMA_VERSION).
        expected: i64,
    },
    /// The catalogue holds vectors of other dimensions than the retriever makes.
    #[error(
        "catalogue {schema} holds vectors of {stored:?}, the retriever makes {expected:?} (colour, texture)"
    )]
    Dimension {
        /// The Postgres schema of the catalogue.
        schema: String,
        /// The stored dimensions.
        stored: [usize; 2],
        /// The retriever's dimensions.
        expected: [usize; 2],
    },
    /// The catalogue was made with other weights, another recipe or another transform.
    #[error("catalogue {schema} was made with {field} {stored}, the retriever has {expected}")]
    Mismatch {
        /// The Postgres schema of the catalogue.
        schema: String,
        /// `"weights_id"`, `"recipe"` or `"norm"`.
        field: &'static str,
        /// What the catalogue records.
        stored: String,
        /// What the retriever has.
        expected: String,
    },
    /// The catalogue's metadata table holds something this version cannot read.
    #[error("catalogue {schema}: meta key {key}: {reason}")]
    Meta {
        /// The Postgres schema of the catalogue.
        schema: String,
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path that is not UTF-8, which a `text` column cannot hold.
    #[error("path {} is not UTF-8", path.display())]
    Path {
        /// The path.
        path: PathBuf,
    },
    /// The store was used before a retriever attached it
    /// ([`CatalogueStore::attach`](crate::CatalogueStore::attach)).
    #[error("the postgres store is not attached to a retriever")]
    NotAttached,
    /// A statement failed (the transaction it was in is rolled back).
    #[error("postgres: {what}")]
    Statement {
        /// What the statement was for.
        what: &'static str,
        /// The server's or the client's error.
        #[source]
        source: postgres::Error,
    },
}

/// `.ctx("what")` on a client result: a [`PgError::Statement`].
pub(super) trait Context<T> {
    fn ctx(self, what: &'static str) -> Result<T, PgError>;
}

impl<T> Context<T> for Result<T, postgres::Error> {
    fn ctx(self, what: &'static str) -> Result<T, PgError> {
        self.map_err(|source| PgError::Statement { what, source })
    }
}
