//! The session store's SQL, the same text on both backends (`$n` placeholders; see
//! `store::sqlite` for how SQLite binds them).

pub(super) const INSERT_SESSION: &str =
    "INSERT INTO sessions (id_hash, merchant_uuid, created_at, expires_at) VALUES ($1, $2, $3, $4)";
/// Opportunistic clean-up keeps the table small without a separate job (index
/// `sessions_by_expiry`).
pub(super) const DELETE_EXPIRED_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= $1";
pub(super) const SESSION_MERCHANT: &str =
    "SELECT merchant_uuid FROM sessions WHERE id_hash = $1 AND expires_at > $2";
pub(super) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id_hash = $1";
pub(super) const DELETE_MERCHANT_SESSIONS: &str = "DELETE FROM sessions WHERE merchant_uuid = $1";
pub(super) const INSERT_STATE: &str =
    "INSERT INTO oauth_states (nonce, provider, created_at, expires_at) VALUES ($1, $2, $3, $4)";
pub(super) const DELETE_EXPIRED_STATES: &str = "DELETE FROM oauth_states WHERE expires_at <= $1";
/// One DELETE: when two instances consume the same state at once, the second waits on the
/// first's row lock, finds the row gone and deletes nothing, so exactly one gets `true`.
pub(super) const CONSUME_STATE: &str =
    "DELETE FROM oauth_states WHERE nonce = $1 AND provider = $2 AND expires_at > $3";
