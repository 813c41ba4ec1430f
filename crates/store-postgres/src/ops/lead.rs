//! The maintenance lead: which node runs the periodic passes, held for a time and renewed.

use deadpool_postgres::GenericClient;

use errand_core::Result;

use crate::sql::Cx;

use super::{get, query_opt};

pub(crate) async fn try_lead(
    c: &impl GenericClient,
    cx: &Cx,
    role: &str,
    holder: &str,
    ttl_ms: u64,
) -> Result<bool> {
    // Capped far beyond any real lease so that the interval arithmetic cannot overflow.
    const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3_600_000;
    let ttl = ttl_ms.min(MAX_TTL_MS) as i64;
    let row = query_opt(c, &cx.sql.try_lead, &[&role, &holder, &ttl]).await?;
    Ok(match row {
        Some(r) => get::<&str>(&r, 0)? == holder,
        None => false,
    })
}
