//! The redb privacy backend (to be written).
