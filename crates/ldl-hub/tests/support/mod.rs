//! Test helpers.
pub mod fake_hub;
pub mod parquet_file;
