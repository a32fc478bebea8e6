//! The DynamoDB privacy backend (to be written).
