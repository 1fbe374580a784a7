/// Query strings as Kubernetes clients send them (`a=1&command=sh&command=-c`).
public enum URLQuery {
    /// Decodes `%XX` escapes and `+` (a space, as in form encoding).
    public static func percentDecode(_ s: Substring) -> String {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "+") { bytes.append(0x20); continue }
            if c == UInt8(ascii: "%"), it.count >= 2, let h = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(h)
                it = it.dropFirst(2)
                continue
            }
            bytes.append(c)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The decoded `key=value` pairs in order, repeated keys kept.
    public static func pairs(_ q: Substring) -> [(key: String, value: String)] {
        q.split(separator: "&").map { pair in
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (percentDecode(kv[0]), kv.count > 1 ? percentDecode(kv[1]) : "")
        }
    }
}
