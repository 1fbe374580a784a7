/// An IPv4 address (host byte order), parsed strictly from dotted-quad text.
public struct IPv4Address: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// nil unless `text` is four decimal octets 0–255 without leading zeros or anything else.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isASCII), p.allSatisfy(\.isNumber), p == "0" || p.first != "0",
                  let n = UInt32(p), n <= 255 else { return nil }
            v = v << 8 | n
        }
        value = v
    }

    /// The four octets, most significant first (network order).
    public var octets: [UInt8] { [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)] }

    public var description: String { octets.map(String.init).joined(separator: ".") }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }
}

/// An IPv4 network in CIDR form (`10.244.0.0/16`); the address is masked to the prefix.
public struct IPv4Network: Sendable, Hashable, CustomStringConvertible {
    public let network: IPv4Address
    public let prefix: Int

    public init(_ address: IPv4Address, prefix: Int) {
        self.prefix = min(32, max(0, prefix))
        network = IPv4Address(address.value & Self.mask(self.prefix))
    }

    /// nil unless `text` is `a.b.c.d/n` with n in 0…32.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = IPv4Address(parts[0]), parts[1].allSatisfy(\.isNumber), let n = Int(parts[1]), (0...32).contains(n) else {
            return nil
        }
        self.init(a, prefix: n)
    }

    static func mask(_ prefix: Int) -> UInt32 { prefix == 0 ? 0 : UInt32.max << UInt32(32 - prefix) }

    public var mask: UInt32 { Self.mask(prefix) }
    /// Addresses in the network (2^(32-prefix)).
    public var size: UInt64 { UInt64(1) << UInt64(32 - prefix) }
    public var broadcast: IPv4Address { IPv4Address(network.value | ~mask) }

    public func contains(_ a: IPv4Address) -> Bool { a.value & mask == network.value }

    public func overlaps(_ other: IPv4Network) -> Bool { contains(other.network) || other.contains(network) }

    /// The `index`-th subnet of prefix `subPrefix` inside this network; nil past the end.
    public func subnet(_ index: UInt64, prefix subPrefix: Int) -> IPv4Network? {
        guard subPrefix >= prefix, subPrefix <= 32, index < UInt64(1) << UInt64(subPrefix - prefix) else { return nil }
        return IPv4Network(IPv4Address(network.value | UInt32(index << UInt64(32 - subPrefix))), prefix: subPrefix)
    }

    /// The `n`-th address of the network (0 is the network address itself); nil past the end.
    public func address(_ n: UInt64) -> IPv4Address? { n < size ? IPv4Address(network.value &+ UInt32(n)) : nil }

    public var description: String { "\(network)/\(prefix)" }
}
