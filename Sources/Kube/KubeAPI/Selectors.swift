/// A parsed label selector (`app=web,tier!=db,env in (a,b),!legacy`).
public struct LabelSelector: Sendable, Hashable, CustomStringConvertible {
    public enum Requirement: Sendable, Hashable {
        case equals(String, String)
        case notEquals(String, String)
        case isIn(String, Set<String>)
        case notIn(String, Set<String>)
        case exists(String)
        case doesNotExist(String)
        case gt(String, Int64)
        case lt(String, Int64)
    }

    public var requirements: [Requirement]
    public init(requirements: [Requirement] = []) { self.requirements = requirements }

    public var isEverything: Bool { requirements.isEmpty }
    public var description: String { requirements.map(Self.render).joined(separator: ",") }

    static func render(_ r: Requirement) -> String {
        switch r {
        case .equals(let k, let v): return "\(k)=\(v)"
        case .notEquals(let k, let v): return "\(k)!=\(v)"
        case .isIn(let k, let vs): return "\(k) in (\(vs.sorted().joined(separator: ",")))"
        case .notIn(let k, let vs): return "\(k) notin (\(vs.sorted().joined(separator: ",")))"
        case .exists(let k): return k
        case .doesNotExist(let k): return "!\(k)"
        case .gt(let k, let v): return "\(k)>\(v)"
        case .lt(let k, let v): return "\(k)<\(v)"
        }
    }

    public func matches(_ labels: [String: String]) -> Bool {
        for r in requirements {
            switch r {
            case .equals(let k, let v): if labels[k] != v { return false }
            case .notEquals(let k, let v): if labels[k] == v { return false }
            case .isIn(let k, let vs): guard let l = labels[k], vs.contains(l) else { return false }
            case .notIn(let k, let vs): if let l = labels[k], vs.contains(l) { return false }
            case .exists(let k): if labels[k] == nil { return false }
            case .doesNotExist(let k): if labels[k] != nil { return false }
            case .gt(let k, let v): guard let l = labels[k].flatMap({ Int64($0) }), l > v else { return false }
            case .lt(let k, let v): guard let l = labels[k].flatMap({ Int64($0) }), l < v else { return false }
            }
        }
        return true
    }

    /// Parses the string form used in `?labelSelector=`.
    public static func parse(_ text: String) throws(StatusError) -> LabelSelector {
        var reqs: [Requirement] = []
        var s = Substring(text)
        func skipSpaces() { while s.first == " " { s.removeFirst() } }
        func bad(_ why: String) -> StatusError {
            StatusError.badRequest("unable to parse requirement: \(why) in label selector \"\(text)\"")
        }
        func readToken() -> String {
            var t = ""
            while let c = s.first, !" ,=!()<>".contains(c) { t.append(c); s.removeFirst() }
            return t
        }
        skipSpaces()
        if s.isEmpty { return LabelSelector() }
        while true {
            skipSpaces()
            var negate = false
            if s.first == "!" { negate = true; s.removeFirst(); skipSpaces() }
            let key = readToken()
            guard !key.isEmpty else { throw bad("missing key") }
            guard isValidLabelKey(key) else { throw bad("invalid label key \"\(key)\"") }
            skipSpaces()
            if negate {
                reqs.append(.doesNotExist(key))
            } else if s.hasPrefix("==") || s.hasPrefix("=") || s.hasPrefix("!=") {
                let neq = s.hasPrefix("!=")
                s.removeFirst(s.hasPrefix("==") || neq ? 2 : 1)
                skipSpaces()
                let v = readToken()
                guard isValidLabelValue(v) else { throw bad("invalid label value \"\(v)\"") }
                reqs.append(neq ? .notEquals(key, v) : .equals(key, v))
            } else if s.hasPrefix(">") || s.hasPrefix("<") {
                let gt = s.hasPrefix(">")
                s.removeFirst()
                skipSpaces()
                let v = readToken()
                guard let n = Int64(v) else { throw bad("value for > or < must be an integer") }
                reqs.append(gt ? .gt(key, n) : .lt(key, n))
            } else if s.hasPrefix("in ") || s.hasPrefix("in(") || s.hasPrefix("notin ") || s.hasPrefix("notin(") {
                let notin = s.hasPrefix("notin")
                s.removeFirst(notin ? 5 : 2)
                skipSpaces()
                guard s.first == "(" else { throw bad("expected '('") }
                s.removeFirst()
                var values = Set<String>()
                while true {
                    skipSpaces()
                    let v = readToken()
                    guard isValidLabelValue(v) else { throw bad("invalid label value \"\(v)\"") }
                    if !v.isEmpty { values.insert(v) }
                    skipSpaces()
                    if s.first == "," { s.removeFirst(); continue }
                    if s.first == ")" { s.removeFirst(); break }
                    throw bad("expected ',' or ')'")
                }
                reqs.append(notin ? .notIn(key, values) : .isIn(key, values))
            } else {
                reqs.append(.exists(key))
            }
            skipSpaces()
            if s.isEmpty { break }
            guard s.first == "," else { throw bad("unexpected '\(s.prefix(10))'") }
            s.removeFirst()
        }
        return LabelSelector(requirements: reqs)
    }

    /// Builds a selector from a `metav1.LabelSelector` object (`matchLabels` + `matchExpressions`).
    public static func from(object sel: JSON) throws(StatusError) -> LabelSelector {
        var reqs: [Requirement] = []
        if let ml = sel["matchLabels"].objectValue {
            for (k, v) in ml.sorted(by: { $0.key < $1.key }) { reqs.append(.equals(k, v.stringValue ?? "")) }
        }
        for e in sel["matchExpressions"].arrayValue ?? [] {
            let key = e["key"].stringValue ?? ""
            let values = Set((e["values"].arrayValue ?? []).compactMap(\.stringValue))
            switch e["operator"].stringValue ?? "" {
            case "In": reqs.append(.isIn(key, values))
            case "NotIn": reqs.append(.notIn(key, values))
            case "Exists": reqs.append(.exists(key))
            case "DoesNotExist": reqs.append(.doesNotExist(key))
            case let op: throw StatusError.badRequest("\"\(op)\" is not a valid label selector operator")
            }
        }
        return LabelSelector(requirements: reqs)
    }
}

/// A parsed field selector (`spec.nodeName=n1,status.phase!=Failed`).
public struct FieldSelector: Sendable, Hashable {
    public struct Requirement: Sendable, Hashable {
        public var field: String
        public var value: String
        public var negated: Bool
    }

    public var requirements: [Requirement]
    public init(requirements: [Requirement] = []) { self.requirements = requirements }
    public var isEverything: Bool { requirements.isEmpty }

    public func matches(_ fields: [String: String]) -> Bool {
        matches { fields[$0] ?? "" }
    }

    /// Matches with a lookup of each field's value.
    public func matches(_ value: (String) -> String) -> Bool {
        for r in requirements {
            let v = value(r.field)
            if r.negated ? v == r.value : v != r.value { return false }
        }
        return true
    }

    /// The single `metadata.name=x` value if the selector pins one name.
    public var pinnedName: String? {
        requirements.first { $0.field == "metadata.name" && !$0.negated }?.value
    }

    public static func parse(_ text: String) throws(StatusError) -> FieldSelector {
        var reqs: [Requirement] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: true) {
            let p = String(part).trimmingSpaces()
            if p.isEmpty { continue }
            if let r = p.firstRange(of: "!=") {
                reqs.append(.init(field: String(p[..<r.lowerBound]).trimmingSpaces(),
                                  value: String(p[r.upperBound...]).trimmingSpaces(), negated: true))
            } else if let r = p.firstRange(of: "==") {
                reqs.append(.init(field: String(p[..<r.lowerBound]).trimmingSpaces(),
                                  value: String(p[r.upperBound...]).trimmingSpaces(), negated: false))
            } else if let r = p.firstRange(of: "=") {
                reqs.append(.init(field: String(p[..<r.lowerBound]).trimmingSpaces(),
                                  value: String(p[r.upperBound...]).trimmingSpaces(), negated: false))
            } else {
                throw StatusError.badRequest("invalid selector: '\(text)'; can't understand '\(p)'")
            }
        }
        return FieldSelector(requirements: reqs)
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}

/// Validates a qualified label key (`prefix/name`).
public func isValidLabelKey(_ key: String) -> Bool {
    let parts = key.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count <= 2 else { return false }
    if parts.count == 2 {
        guard isDNS1123Subdomain(String(parts[0])) else { return false }
    }
    let name = parts.last!
    guard !name.isEmpty, name.count <= 63 else { return false }
    return isAlnumDashDotUnderscore(Substring(name))
}

public func isValidLabelValue(_ v: String) -> Bool {
    if v.isEmpty { return true }
    guard v.count <= 63 else { return false }
    return isAlnumDashDotUnderscore(Substring(v))
}

func isAlnumDashDotUnderscore(_ s: Substring) -> Bool {
    guard let f = s.first, let l = s.last, f.isASCII && (f.isLetter || f.isNumber), l.isASCII && (l.isLetter || l.isNumber)
    else { return false }
    return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
}

/// DNS-1123 subdomain: lower-case alphanumerics, '-' and '.', at most 253 characters.
public func isDNS1123Subdomain(_ s: String) -> Bool {
    guard !s.isEmpty, s.utf8.count <= 253 else { return false }
    for label in s.split(separator: ".", omittingEmptySubsequences: false) {
        guard isDNS1123LabelChars(label) else { return false }
    }
    return true
}

/// DNS-1123 label: lower-case alphanumerics and '-', at most 63 characters.
public func isDNS1123Label(_ s: String) -> Bool {
    guard s.utf8.count <= 63 else { return false }
    return isDNS1123LabelChars(Substring(s))
}

func isDNS1123LabelChars(_ s: Substring) -> Bool {
    guard let f = s.first, let l = s.last else { return false }
    func alnum(_ c: Character) -> Bool { c.isASCII && (c.isLowercase || c.isNumber) }
    guard alnum(f), alnum(l) else { return false }
    return s.allSatisfy { alnum($0) || $0 == "-" }
}
