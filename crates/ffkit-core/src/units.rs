//! Parsers for the human-typed quantities every applet shares: seconds
//! (`2.5`), durations (`90s`, `5m`, `2h`, `7d`), byte sizes (`100M`, `1G`)
//! and byte formatting (`1.2 MiB`). They are total functions over any string:
//! bad input is an `Err(reason)`, never a panic, so the fuzz targets and every
//! caller can rely on them.

use std::time::Duration;

/// The largest duration accepted anywhere (about 31 years); bigger values are
/// almost certainly typos and would overflow deadline arithmetic.
const MAX_SECS: f64 = 1.0e9;

/// Parses non-negative seconds with an optional fraction: `30`, `0.5`, `.25`.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let valid = !t.is_empty()
        && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && t.bytes().filter(|&b| b == b'.').count() <= 1
        && t != ".";
    if !valid {
        return Err(format!("'{s}' is not a number of seconds"));
    }
    let v: f64 = t
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || v > MAX_SECS {
        return Err(format!("'{s}' seconds is too large"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses a whole number of seconds (TTLs): `0`, `300`.
pub fn parse_whole_seconds(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a whole number of seconds"));
    }
    match t.parse::<u64>() {
        Ok(v) if (v as f64) <= MAX_SECS => Ok(v),
        _ => Err(format!("'{s}' seconds is too large")),
    }
}

/// Parses a duration with a unit suffix (`ms`, `s`, `m`, `h`, `d`, `w`); a
/// bare number means seconds. Fractions are allowed: `1.5h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        _ => {
            return Err(format!(
                "'{s}' is not a duration (use e.g. 90s, 5m, 2h, 7d)"
            ));
        }
    };
    let base = parse_seconds(num)
        .map_err(|_| format!("'{s}' is not a duration (use e.g. 90s, 5m, 2h, 7d)"))?;
    let v = base.as_secs_f64() * scale;
    if v > MAX_SECS {
        return Err(format!("'{s}' is too long a duration"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses a byte size: `104857600`, `100K`, `100M`, `1G`, `2T`, with an
/// optional `i`/`iB`/`B` (`100MiB`, `1GB`). Suffixes are binary (1K = 1024),
/// as `du` and `sort -h` read them.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("'{s}' is not a size (use e.g. 104857600, 100M, 1G)");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large a size"))
}

/// Formats bytes the way `--human` prints them: `512 B`, `1.2 KiB`, `3.0 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in [
            "",
            "-1",
            "abc",
            "1e999",
            "5x",
            ".",
            "1.2.3",
            "99999999999999999999",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn whole_seconds() {
        assert_eq!(parse_whole_seconds("300"), Ok(300));
        for bad in [
            "-1",
            "abc",
            "1e999",
            "99999999999999999999",
            "5x",
            "1.5",
            "",
        ] {
            assert!(parse_whole_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        for bad in ["", "5x", "-1s", "s", "1e999", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("104857600"), Ok(104_857_600));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        for bad in [
            "10Q",
            "-5M",
            "",
            "M",
            "1.5G",
            "99999999999999999999",
            "20000000T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(1_258_291), "1.2 MiB");
    }
}
