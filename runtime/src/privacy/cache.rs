//! The per-server privacy cache (to be written).
/// Placeholder.
pub struct PrivacyCache;
/// Placeholder.
pub struct PrivacyCacheConfig;
