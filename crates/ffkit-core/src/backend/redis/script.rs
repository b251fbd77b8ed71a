//! A Lua script of the backend with its SHA-1 computed at compile time.
//!
//! `EVALSHA` names a script by the SHA-1 of its source. `redis::Script::new`
//! hashes the source on every call, at run time: for the cache scripts
//! (the shared prelude plus the script, several KiB) that was half of the
//! instructions ffkit itself executes in a `cache-read` — more than
//! parsing the command line, the configuration and the reply together
//! (callgrind, BENCHMARKS.md "Redis backend"). A [`Lua`] constant carries
//! the digest computed by the compiler instead, so a call only sends it.

/// A script's source and the lowercase hex SHA-1 that `EVALSHA` names it by.
pub struct Lua {
    source: &'static str,
    sha: [u8; 40],
}

impl Lua {
    /// `source` with its digest, computed when the constant is evaluated.
    pub const fn new(source: &'static str) -> Lua {
        Lua {
            source,
            sha: hex(sha1(source.as_bytes())),
        }
    }

    /// The script's text (for `EVAL` and `SCRIPT LOAD`).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The SHA-1 of [`Lua::source`] in lowercase hex, as `SCRIPT LOAD`
    /// returns it and `EVALSHA` takes it.
    pub fn sha(&self) -> &[u8] {
        &self.sha
    }
}

/// SHA-1 (FIPS 180-4) of `data`, usable in constants.
const fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    // The message, a 0x80 byte, zeros, and the length in bits (64-bit big
    // endian) fill whole 64-byte blocks.
    let total = (data.len() + 9).div_ceil(64) * 64;
    let bits = (data.len() as u64).wrapping_mul(8);
    let mut block = 0;
    while block < total {
        let mut w = [0u32; 80];
        let mut i = 0;
        while i < 16 {
            let mut j = 0;
            while j < 4 {
                let at = block + i * 4 + j;
                let b = if at < data.len() {
                    data[at]
                } else if at == data.len() {
                    0x80
                } else if at >= total - 8 {
                    (bits >> (8 * (total - 1 - at))) as u8
                } else {
                    0
                };
                w[i] = (w[i] << 8) | b as u32;
                j += 1;
            }
            i += 1;
        }
        while i < 80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
            i += 1;
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        let mut t = 0;
        while t < 80 {
            let (f, k) = match t / 20 {
                0 => ((b & c) | (!b & d), 0x5A82_7999),
                1 => (b ^ c ^ d, 0x6ED9_EBA1),
                2 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let x = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(w[t]);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = x;
            t += 1;
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
        h[4] = h[4].wrapping_add(e);
        block += 64;
    }
    let mut out = [0u8; 20];
    let mut i = 0;
    while i < 20 {
        out[i] = (h[i / 4] >> (24 - 8 * (i % 4))) as u8;
        i += 1;
    }
    out
}

/// `d` in lowercase hex.
const fn hex(d: [u8; 20]) -> [u8; 40] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 40];
    let mut i = 0;
    while i < 20 {
        out[2 * i] = DIGITS[(d[i] >> 4) as usize];
        out[2 * i + 1] = DIGITS[(d[i] & 15) as usize];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(s: &'static str) -> String {
        String::from_utf8_lossy(Lua::new(s).sha()).into_owned()
    }

    #[test]
    fn sha1_matches_the_standard_vectors() {
        // FIPS 180-2 appendix A and the usual boundary cases (55, 56, 64
        // bytes: the length field fits, spills into a new block, a full block).
        assert_eq!(sha(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        for n in [55, 56, 63, 64, 65, 119, 120, 128, 1000] {
            let s: &'static str = "a".repeat(n).leak();
            assert_eq!(sha(s), redis::Script::new(s).get_hash(), "{n} bytes of 'a'");
        }
    }

    #[test]
    fn every_script_digest_is_the_one_redis_computes() {
        for lua in super::super::cache::SCRIPTS
            .iter()
            .chain(super::super::lock::SCRIPTS)
        {
            assert_eq!(
                String::from_utf8_lossy(lua.sha()),
                redis::Script::new(lua.source()).get_hash(),
                "{}",
                lua.source().lines().next().unwrap_or_default()
            );
        }
    }
}
