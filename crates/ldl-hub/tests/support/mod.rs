//! Test helpers.
pub mod fake_hub;
pub mod parquet_file;

use std::path::Path;

use ldl_hub::Hub;

/// A client of `fake` with its own cache, no retries, and no token from the environment.
pub fn hub(fake: &fake_hub::FakeHub, cache: &Path) -> Hub {
    Hub::default()
        .endpoint(fake.endpoint())
        .cache_dir(cache)
        .retries(0)
        .env_token(false)
}
