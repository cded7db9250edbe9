//! Attaching what was being done to the client's errors ([`PgError`], defined with the crate's
//! other errors).

pub use crate::error::PgError;

/// `.ctx("what")` on a client result: a [`PgError::Statement`].
pub(super) trait Context<T> {
    fn ctx(self, what: &'static str) -> Result<T, PgError>;
}

impl<T> Context<T> for Result<T, postgres::Error> {
    fn ctx(self, what: &'static str) -> Result<T, PgError> {
        self.map_err(|source| PgError::Statement { what, source })
    }
}
