//! Seed mixing: one run seed becomes distinct, reproducible streams per epoch and per
//! sample (shuffles, augmentation, feature noise, synthetic faces).

/// Mixes a number into a seed (so that epochs, or samples, get distinct but reproducible
/// streams).
pub fn mix(seed: u64, value: u64) -> u64 {
    let mut z = seed
        ^ value
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
