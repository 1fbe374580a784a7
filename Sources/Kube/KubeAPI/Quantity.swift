/// Kubernetes resource quantities (`100m`, `0.5`, `128Mi`, `1G`, `1e3`) reduced to integers.
public enum Quantity {
    /// Parses a quantity into thousandths of its unit (CPU: millicores), rounding up like Kubernetes.
    public static func milliValue(_ q: JSON) -> Int64? {
        guard let (num, scale) = parse(q) else { return nil }
        return roundedUp(num * scale * 1000)
    }

    /// Parses a quantity into whole units (memory: bytes), rounding up.
    public static func value(_ q: JSON) -> Int64? {
        guard let (num, scale) = parse(q) else { return nil }
        return roundedUp(num * scale)
    }

    /// Rounds up, but not across floating-point noise (`700m` is 0.7 × 1e-3 × 1000 = 700.0000000001).
    static func roundedUp(_ v: Double) -> Int64? {
        guard v.isFinite, abs(v) < 9e18 else { return nil }
        let nearest = v.rounded()
        return Int64(abs(v - nearest) <= 1e-9 * max(1, abs(v)) ? nearest : v.rounded(.up))
    }

    static let suffixes: [(String, Double)] = [
        ("Ki", 1024), ("Mi", 1_048_576), ("Gi", 1_073_741_824), ("Ti", 1_099_511_627_776), ("Pi", 1_125_899_906_842_624),
        ("Ei", 1_152_921_504_606_846_976), ("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9),
        ("T", 1e12), ("P", 1e15), ("E", 1e18),
    ]

    static func parse(_ q: JSON) -> (Double, Double)? {
        switch q {
        case .int(let i): return (Double(i), 1)
        case .double(let d): return (d, 1)
        case .string(let s):
            let t = s.trimmingWhitespace
            guard !t.isEmpty else { return nil }
            for (suffix, mult) in suffixes where t.hasSuffix(suffix) {
                guard let n = Double(t.dropLast(suffix.count)), n >= 0 else { return nil }
                return (n, mult)
            }
            guard let n = Double(t), n >= 0 else { return nil }
            return (n, 1)
        default: return nil
        }
    }
}
