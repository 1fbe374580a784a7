/// Small text helpers in the standard library alone. Foundation's equivalents
/// (`trimmingCharacters(in:)`, `String(format:)`) go through CoreFoundation's character sets and
/// format engine, whose code and Unicode tables then stay in a small edge process's memory.
extension StringProtocol {
    /// Without leading and trailing whitespace and newlines.
    public var trimmingWhitespace: Substring {
        var s = self[...]
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return Substring(s)
    }

    /// Without the given characters at either end (e.g. the quotes around a value).
    public func trimming(_ characters: Set<Character>) -> Substring {
        var s = self[...]
        while let c = s.first, characters.contains(c) { s.removeFirst() }
        while let c = s.last, characters.contains(c) { s.removeLast() }
        return Substring(s)
    }
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
