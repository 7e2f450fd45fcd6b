//! RFC 3339 timestamps at the API edge; the domain keeps Unix seconds.

use mcpgw::http::ApiError;
use mcpgw::http::ErrorCode;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn to_rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

pub fn parse_rfc3339(field: &str, s: &str) -> Result<i64, ApiError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|d| d.unix_timestamp())
        .map_err(|_| {
            ApiError::unprocessable(
                ErrorCode::InvalidField,
                format!("{field} must be an RFC 3339 timestamp"),
            )
        })
}
