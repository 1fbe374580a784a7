#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A wall-clock instant with microsecond precision, formatted the way Kubernetes does
/// (`metav1.Time` to the second, `metav1.MicroTime` with 6 fractional digits).
public struct KubeTime: Sendable, Hashable, Comparable {
    /// Microseconds since the Unix epoch.
    public var micros: Int64

    public init(micros: Int64) { self.micros = micros }
    public init(seconds: Int64) { self.micros = seconds * 1_000_000 }

    public static func now() -> KubeTime {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return KubeTime(micros: Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000)
    }

    /// Milliseconds since the epoch (what MQTT and DMI payloads carry).
    public var milliseconds: Int64 { micros >= 0 ? micros / 1000 : (micros - 999) / 1000 }

    public var seconds: Int64 { micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000 }

    public static func < (a: KubeTime, b: KubeTime) -> Bool { a.micros < b.micros }

    public func adding(seconds s: Int64) -> KubeTime { KubeTime(micros: micros + s * 1_000_000) }

    /// `2026-11-25T06:13:15Z`
    public var rfc3339: String { Self.format(seconds, fraction: nil) }
    /// `2026-11-25T06:13:15.123456Z`
    public var rfc3339Micro: String {
        let frac = micros - seconds * 1_000_000
        return Self.format(seconds, fraction: frac)
    }

    /// `Sun, 06 Nov 1994 08:49:37 GMT` (HTTP's IMF-fixdate, RFC 9110 §5.6.7: the `Date` header).
    public var httpDate: String {
        let secs = seconds
        let days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400
        let rem = secs - days * 86400
        let (y, m, d) = Self.civil(fromDays: days)
        let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][Int(((days % 7) + 7) % 7)]  // 1970-01-01 was a Thursday
        let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][Int(m - 1)]
        let pad = Self.pad
        return "\(weekday), \(pad(d, 2)) \(month) \(pad(y, 4)) \(pad(rem / 3600, 2)):\(pad(rem % 3600 / 60, 2)):\(pad(rem % 60, 2)) GMT"
    }

    static func pad(_ v: Int64, _ width: Int) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    static func format(_ secs: Int64, fraction: Int64?) -> String {
        let days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400
        let rem = secs - days * 86400
        let (y, m, d) = civil(fromDays: days)
        var s = "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(rem / 3600, 2)):\(pad(rem % 3600 / 60, 2)):\(pad(rem % 60, 2))"
        if let f = fraction { s += "." + pad(f, 6) }
        return s + "Z"
    }

    // Howard Hinnant's days <-> civil algorithms.
    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }

    static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    /// Parses RFC 3339 (`Z` or `±hh:mm` offsets, optional fraction).
    public static func parse(_ s: String) -> KubeTime? {
        let u = Array(s.utf8)
        guard u.count >= 20 else { return nil }
        func num(_ a: Int, _ b: Int) -> Int64? {
            var v: Int64 = 0
            for i in a..<b {
                guard u[i] >= 0x30 && u[i] <= 0x39 else { return nil }
                v = v * 10 + Int64(u[i] - 0x30)
            }
            return v
        }
        guard let y = num(0, 4), let mo = num(5, 7), let d = num(8, 10), let h = num(11, 13), let mi = num(14, 16),
            let se = num(17, 19)
        else { return nil }
        var i = 19
        var frac: Int64 = 0
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            var digits = 0
            while i < u.count, u[i] >= 0x30 && u[i] <= 0x39 {
                if digits < 6 { frac = frac * 10 + Int64(u[i] - 0x30); digits += 1 }
                i += 1
            }
            while digits < 6 { frac *= 10; digits += 1 }
        }
        var offset: Int64 = 0
        guard i < u.count else { return nil }
        if u[i] == UInt8(ascii: "Z") || u[i] == UInt8(ascii: "z") {
        } else if (u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-")), i + 6 <= u.count,
            let oh = num(i + 1, i + 3), let om = num(i + 4, i + 6)
        {
            offset = (oh * 3600 + om * 60) * (u[i] == UInt8(ascii: "-") ? -1 : 1)
        } else { return nil }
        let secs = days(fromCivil: y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset
        return KubeTime(micros: secs * 1_000_000 + frac)
    }

    /// Human age as kubectl prints it: `45s`, `5m`, `3h2m`, `2d3h`, `400d`.
    public static func humanDuration(seconds: Int64) -> String {
        let s = max(0, seconds)
        if s < 120 { return "\(s)s" }
        let m = s / 60
        if m < 10 { let r = s % 60; return r == 0 ? "\(m)m" : "\(m)m\(r)s" }
        if m < 180 { return "\(m)m" }
        let h = s / 3600
        if h < 8 { let r = m % 60; return r == 0 ? "\(h)h" : "\(h)h\(r)m" }
        if h < 48 { return "\(h)h" }
        let d = h / 24
        if d < 8 { let r = h % 24; return r == 0 ? "\(d)d" : "\(d)d\(r)h" }
        if d < 730 { return "\(d)d" }
        return "\(d / 365)y\(d % 365)d"
    }
}
