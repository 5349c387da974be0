//! Go's duration syntax (`time.ParseDuration`), as Kubernetes configuration
//! files write `metav1.Duration`: `30s`, `1m0s`, `2h30m`, `24h0m0s`, `1.5h`,
//! `300ms`, `0`.
//!
//! A duration is an optional sign and a sequence of decimal numbers, each
//! with an optional fraction and a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`,
//! `m`, `h`); a lone `0` needs no unit. Negative durations are rejected here
//! (no setting of ours can be negative).
use std::time::Duration;

const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration. The error says why, without the value; see
/// [`field`] for a message naming the field.
pub fn parse_go(s: &str) -> Result<Duration, &'static str> {
    let rest = s.strip_prefix('+').unwrap_or(s);
    if let Some(neg) = rest.strip_prefix('-') {
        return match parse_go(neg) {
            Ok(d) if d.is_zero() => Ok(d),
            Ok(_) => Err("negative"),
            Err(e) => Err(e),
        };
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err("empty");
    }
    let mut nanos: u128 = 0;
    let mut rest = rest;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac = &r[..n];
            rest = &r[n..];
        }
        if int.is_empty() && frac.is_empty() {
            return Err("a unit without a number");
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match UNITS.iter().find(|(u, _)| *u == unit) {
            Some((_, s)) => *s,
            None if unit.is_empty() => return Err("a number without a unit (ns, us, ms, s, m, h)"),
            None => return Err("unknown unit (ns, us, ms, s, m, h)"),
        };
        let overflow = "too large";
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| overflow)?
        };
        let mut v = whole.checked_mul(scale).ok_or(overflow)?;
        // The fraction, to nanosecond precision (extra digits are dropped, as Go does).
        let mut div = 1u128;
        let mut f = 0u128;
        // 18 digits: f * scale stays far below u128::MAX (scale <= 3.6e12).
        for d in frac.bytes().take(18) {
            f = f * 10 + u128::from(d - b'0');
            div *= 10;
        }
        v = v.checked_add(f * scale / div).ok_or(overflow)?;
        nanos = nanos.checked_add(v).ok_or(overflow)?;
    }
    // Go's limit: a signed 64-bit count of nanoseconds (~292 years).
    if nanos > i64::MAX as u128 {
        return Err("too large");
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats like Go's `Duration.String()` for whole seconds and above
/// (`1m0s`, `24h0m0s`, `300ms`), for messages and `--help`.
pub fn format_go(d: Duration) -> String {
    let secs = d.as_secs();
    let sub = d.subsec_nanos();
    if secs == 0 {
        return match sub {
            0 => "0s".into(),
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}us", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let frac = if sub == 0 {
        String::new()
    } else {
        format!(".{sub:09}").trim_end_matches('0').to_string()
    };
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}{frac}s")
    } else if m > 0 {
        format!("{m}m{s}{frac}s")
    } else {
        format!("{s}{frac}s")
    }
}

/// A command-line duration: Go's syntax (as kube-proxy's flags), or
/// humantime's (`1 hour`) as before.
pub fn parse_flag(s: &str) -> Result<Duration, String> {
    parse_go(s)
        .or_else(|e| humantime_serde::re::humantime::parse_duration(s).map_err(|_| e))
        .map_err(|e| format!("{s:?} is not a duration ({e}); e.g. 30s, 1m0s, 2h30m"))
}

/// Parses the Go duration `s` of configuration field `field`; the error
/// names both: `conntrack.udpTimeout: "3x" is not a duration (...)`.
pub fn field(s: &str, field: &str) -> crate::Result<Duration> {
    parse_go(s).map_err(|why| crate::Error::Invalid {
        field: field.into(),
        msg: format!("{s:?} is not a duration ({why}); e.g. 30s, 1m0s, 2h30m"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fractions_do_not_overflow() {
        let d = parse_go("1.99999999999999999999999999999h").unwrap();
        assert!(
            d > Duration::from_secs(7199) && d <= Duration::from_secs(7200),
            "{d:?}"
        );
    }

    #[test]
    fn go_syntax() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        for (text, want) in [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("30s", s(30)),
            ("+30s", s(30)),
            ("1m0s", s(60)),
            ("2h30m", s(9000)),
            ("24h0m0s", s(86_400)),
            ("1.5h", s(5400)),
            (".5s", ms(500)),
            ("1.s", s(1)),
            ("300ms", ms(300)),
            ("1h1m1s1ms1us1ns", s(3661) + Duration::from_nanos(1_001_001)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("10μs", Duration::from_micros(10)),
            ("1.000000001s", s(1) + Duration::from_nanos(1)),
            ("1.0000000019s", s(1) + Duration::from_nanos(1)),
        ] {
            assert_eq!(parse_go(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn go_syntax_errors() {
        for (text, why) in [
            ("", "empty"),
            ("3x", "unknown unit"),
            ("30", "without a unit"),
            ("1m30", "without a unit"),
            ("s", "without a number"),
            (".s", "without a number"),
            ("1 s", "unknown unit"),
            ("-1s", "negative"),
            ("--1s", "negative"),
            ("-3x", "unknown unit"),
            ("1d", "unknown unit"),
            ("3000000h", "too large"),
            ("99999999999999999999999999999999999999999h", "too large"),
        ] {
            let e = parse_go(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn formats_like_go() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(86_400), "24h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_micros(7), "7us"),
        ] {
            assert_eq!(format_go(d), text);
            assert_eq!(parse_go(text), Ok(d), "round trip {text}");
        }
    }

    #[test]
    fn flags_take_go_or_humantime() {
        assert_eq!(parse_flag("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_flag("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_flag("1 hour"), Ok(Duration::from_secs(3600)));
        let e = parse_flag("3x").unwrap_err();
        assert!(e.starts_with("\"3x\" is not a duration"), "{e}");
        let e = field("3x", "conntrack.udpTimeout").unwrap_err().to_string();
        assert!(
            e.contains("conntrack.udpTimeout: \"3x\" is not a duration"),
            "{e}"
        );
    }
}
