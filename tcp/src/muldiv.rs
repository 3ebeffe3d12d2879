//! `a x b / d` without a 128-bit division when the product fits in 64 bits (rate and BDP
//! arithmetic runs on every ACK; `__udivti3` showed in the agent's profile).

/// `a * b / d` rounded down, saturating at `u64::MAX`; 0 when `d` is 0.
#[inline]
pub fn mul_div(a: u64, b: u64, d: u64) -> u64 {
    if d == 0 {
        return 0;
    }
    match a.checked_mul(b) {
        Some(p) => p / d,
        None => u64::try_from(u128::from(a) * u128::from(b) / u128::from(d)).unwrap_or(u64::MAX),
    }
}

/// `a * b / d` rounded up, saturating at `u64::MAX`; 0 when `d` is 0.
#[inline]
pub fn mul_div_ceil(a: u64, b: u64, d: u64) -> u64 {
    if d == 0 {
        return 0;
    }
    match a.checked_mul(b) {
        Some(p) => p.div_ceil(d),
        None => u64::try_from((u128::from(a) * u128::from(b)).div_ceil(u128::from(d)))
            .unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_128_bit_arithmetic() {
        let vals = [
            0u64,
            1,
            2,
            3,
            999,
            1_000_000,
            u32::MAX as u64,
            1 << 40,
            u64::MAX / 3,
            u64::MAX,
        ];
        for &a in &vals {
            for &b in &vals {
                for &d in &vals[1..] {
                    let p = u128::from(a) * u128::from(b);
                    let want = u64::try_from(p / u128::from(d)).unwrap_or(u64::MAX);
                    let up = u64::try_from(p.div_ceil(u128::from(d))).unwrap_or(u64::MAX);
                    assert_eq!(mul_div(a, b, d), want, "{a} {b} {d}");
                    assert_eq!(mul_div_ceil(a, b, d), up, "{a} {b} {d}");
                }
                assert_eq!(mul_div(a, b, 0), 0);
            }
        }
    }
}
