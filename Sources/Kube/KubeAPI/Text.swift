/// Small text helpers in the standard library alone. Foundation's equivalents
/// (`trimmingCharacters(in:)`, `String(format:)`) go through CoreFoundation's character sets and
/// format engine, whose code and Unicode tables then stay in a small edge process's memory.
extension StringProtocol {
    /// Without the characters matching `predicate` at either end (e.g. `\.isNewline`, or the
    /// quotes around a value).
    public func trimming(where predicate: (Character) -> Bool) -> Substring {
        var s = self[...]
        while let c = s.first, predicate(c) { s.removeFirst() }
        while let c = s.last, predicate(c) { s.removeLast() }
        return Substring(s)
    }

    /// Without leading and trailing whitespace and newlines.
    public var trimmingWhitespace: Substring { trimming(where: \.isWhitespace) }
}

extension Sequence where Element == UInt8 {
    /// Lower-case hex, two digits a byte.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(underestimatedCount * 2)
        for b in self {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
