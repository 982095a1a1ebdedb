//! Test helpers.
pub mod fake_hub;
