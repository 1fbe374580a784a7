import Foundation
import KubeAPI

/// The part of CEL (Common Expression Language) that admission webhooks' `matchConditions` use,
/// evaluated over JSON values: literals (null, bools, integers, doubles, strings, lists, maps),
/// variables, field selection (`a.b`), indexing (`a['k']`, `a[0]`), `!`, `-`, `&&`, `||` (with CEL's
/// commutative error absorption), `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `+` (numbers, strings,
/// lists), `-`, `*`, `/`, `%`, `? :`, and the functions and macros `has(a.b)`, `size()`,
/// `startsWith`, `endsWith`, `contains`, `matches`, `exists`, `all`, `exists_one`, `map`, `filter`,
/// `lowerAscii`, `upperAscii`. A missing field is an error, as in CEL (`has()` tests presence).
/// Anything outside the subset is a compile error naming it.
public struct CELExpression: Sendable {
    indirect enum Node: Sendable {
        case literal(JSON)
        case variable(String)
        case select(Node, String)
        case index(Node, Node)
        case call(String, target: Node?, [Node])
        case has(Node, String)
        case comprehension(String, Node, variable: String, Node, Node?)
        case unary(String, Node)
        case binary(String, Node, Node)
        case conditional(Node, Node, Node)
        case list([Node])
        case map([(Node, Node)])
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        init(_ d: String) { description = d }
    }

    let root: Node
    public let source: String

    public init(_ source: String) throws(Failure) {
        self.source = source
        var p = Parser(tokens: try Lexer.tokens(source))
        root = try p.expression()
        guard p.atEnd else { throw Failure("unexpected \(p.peekDescription) at offset \(p.offset)") }
    }

    /// The expression's value with `variables` bound.
    public func evaluate(_ variables: [String: JSON]) throws(Failure) -> JSON {
        try Evaluator(variables: variables).eval(root)
    }

    // MARK: lexer

    enum Token: Equatable, Sendable {
        case ident(String), int(Int64), double(Double), string(String), op(String)
    }

    enum Lexer {
        static func tokens(_ s: String) throws(Failure) -> [(Token, Int)] {
            let c = Array(s.unicodeScalars)
            var i = 0, out: [(Token, Int)] = []
            while i < c.count {
                let ch = c[i]
                if ch == " " || ch == "\t" || ch == "\n" || ch == "\r" { i += 1; continue }
                let start = i
                if ch.properties.isAlphabetic || ch == "_" {
                    while i < c.count, c[i].properties.isAlphabetic || c[i] == "_" || ("0"..."9").contains(c[i]) { i += 1 }
                    out.append((.ident(String(String.UnicodeScalarView(c[start..<i]))), start))
                } else if ("0"..."9").contains(ch) {
                    while i < c.count, ("0"..."9").contains(c[i]) || c[i] == "." || c[i] == "e" || c[i] == "u" { i += 1 }
                    var text = String(String.UnicodeScalarView(c[start..<i]))
                    if text.hasSuffix("u") { text.removeLast() }
                    if let n = Int64(text) { out.append((.int(n), start)) } else if let d = Double(text) { out.append((.double(d), start)) } else {
                        throw Failure("bad number \(text) at offset \(start)")
                    }
                } else if ch == "'" || ch == "\"" {
                    i += 1
                    var text = ""
                    while true {
                        guard i < c.count else { throw Failure("unterminated string at offset \(start)") }
                        if c[i] == ch { i += 1; break }
                        if c[i] == "\\", i + 1 < c.count {
                            switch c[i + 1] {
                            case "n": text += "\n"
                            case "t": text += "\t"
                            default: text.unicodeScalars.append(c[i + 1])
                            }
                            i += 2
                            continue
                        }
                        text.unicodeScalars.append(c[i])
                        i += 1
                    }
                    out.append((.string(text), start))
                } else {
                    let two = i + 1 < c.count ? String(String.UnicodeScalarView([ch, c[i + 1]])) : ""
                    if ["&&", "||", "==", "!=", "<=", ">="].contains(two) {
                        out.append((.op(two), start)); i += 2
                    } else if "()[]{}.,!<>+-*/%?:".unicodeScalars.contains(ch) {
                        out.append((.op(String(ch)), start)); i += 1
                    } else {
                        throw Failure("unexpected character '\(ch)' at offset \(start)")
                    }
                }
            }
            return out
        }
    }

    // MARK: parser

    struct Parser {
        let tokens: [(Token, Int)]
        var pos = 0
        init(tokens: [(Token, Int)]) { self.tokens = tokens }

        var atEnd: Bool { pos >= tokens.count }
        var offset: Int { pos < tokens.count ? tokens[pos].1 : -1 }
        var peekDescription: String { pos < tokens.count ? "\(tokens[pos].0)" : "end of expression" }
        func peek(_ op: String) -> Bool { pos < tokens.count && tokens[pos].0 == .op(op) }
        func peekIdent(_ name: String) -> Bool { pos < tokens.count && tokens[pos].0 == .ident(name) }
        mutating func take(_ op: String) -> Bool { if peek(op) { pos += 1; return true }; return false }
        mutating func expect(_ op: String) throws(Failure) {
            guard take(op) else { throw Failure("expected '\(op)', found \(peekDescription) at offset \(offset)") }
        }

        mutating func expression() throws(Failure) -> Node {
            let cond = try or()
            guard take("?") else { return cond }
            let a = try or()
            try expect(":")
            return .conditional(cond, a, try expression())
        }

        mutating func or() throws(Failure) -> Node {
            var l = try and()
            while take("||") { l = .binary("||", l, try and()) }
            return l
        }

        mutating func and() throws(Failure) -> Node {
            var l = try relation()
            while take("&&") { l = .binary("&&", l, try relation()) }
            return l
        }

        mutating func relation() throws(Failure) -> Node {
            var l = try additive()
            while true {
                if let op = ["==", "!=", "<=", ">=", "<", ">"].first(where: { peek($0) }) {
                    pos += 1; l = .binary(op, l, try additive())
                } else if peekIdent("in") {
                    pos += 1; l = .binary("in", l, try additive())
                } else { return l }
            }
        }

        mutating func additive() throws(Failure) -> Node {
            var l = try multiplicative()
            while let op = ["+", "-"].first(where: { peek($0) }) { pos += 1; l = .binary(op, l, try multiplicative()) }
            return l
        }

        mutating func multiplicative() throws(Failure) -> Node {
            var l = try unary()
            while let op = ["*", "/", "%"].first(where: { peek($0) }) { pos += 1; l = .binary(op, l, try unary()) }
            return l
        }

        mutating func unary() throws(Failure) -> Node {
            if take("!") { return .unary("!", try unary()) }
            if take("-") { return .unary("-", try unary()) }
            return try member()
        }

        mutating func member() throws(Failure) -> Node {
            var n = try primary()
            while true {
                if take(".") {
                    guard pos < tokens.count, case .ident(let name) = tokens[pos].0 else { throw Failure("expected a field name at offset \(offset)") }
                    pos += 1
                    if take("(") {
                        let args = try arguments(")")
                        if ["exists", "all", "exists_one", "map", "filter"].contains(name) {
                            guard args.count == 2 || (name == "map" && args.count == 3), case .variable(let v) = args[0] else {
                                throw Failure("\(name)() takes a variable and an expression")
                            }
                            n = .comprehension(name, n, variable: v, args.count == 3 ? args[2] : args[1], args.count == 3 ? args[1] : nil)
                        } else {
                            n = .call(name, target: n, args)
                        }
                    } else {
                        n = .select(n, name)
                    }
                } else if take("[") {
                    let i = try expression()
                    try expect("]")
                    n = .index(n, i)
                } else { return n }
            }
        }

        mutating func arguments(_ close: String) throws(Failure) -> [Node] {
            var args: [Node] = []
            if take(close) { return args }
            repeat { args.append(try expression()) } while take(",")
            try expect(close)
            return args
        }

        mutating func primary() throws(Failure) -> Node {
            guard pos < tokens.count else { throw Failure("unexpected end of expression") }
            let (t, at) = tokens[pos]
            pos += 1
            switch t {
            case .int(let n): return .literal(.int(n))
            case .double(let d): return .literal(.double(d))
            case .string(let s): return .literal(.string(s))
            case .ident("true"): return .literal(.bool(true))
            case .ident("false"): return .literal(.bool(false))
            case .ident("null"): return .literal(.null)
            case .ident("has"):
                try expect("(")
                let arg = try expression()
                try expect(")")
                guard case .select(let target, let field) = arg else { throw Failure("has() takes a field selection (has(a.b))") }
                return .has(target, field)
            case .ident(let name):
                if take("(") { return .call(name, target: nil, try arguments(")")) }
                return .variable(name)
            case .op("("):
                let e = try expression()
                try expect(")")
                return e
            case .op("["): return .list(try arguments("]"))
            case .op("{"):
                var entries: [(Node, Node)] = []
                if !take("}") {
                    repeat {
                        let k = try expression()
                        try expect(":")
                        entries.append((k, try expression()))
                    } while take(",")
                    try expect("}")
                }
                return .map(entries)
            case .op(let o): throw Failure("unexpected '\(o)' at offset \(at)")
            }
        }
    }

    // MARK: evaluator

    struct Evaluator {
        var variables: [String: JSON]

        func bool(_ n: Node) throws(Failure) -> Bool {
            guard case .bool(let b) = try eval(n) else { throw Failure("no such overload: a boolean was expected") }
            return b
        }

        func eval(_ n: Node) throws(Failure) -> JSON {
            switch n {
            case .literal(let v): return v
            case .variable(let name):
                guard let v = variables[name] else { throw Failure("undeclared reference to '\(name)'") }
                return v
            case .select(let target, let field):
                let t = try eval(target)
                guard let m = t.objectValue else { throw Failure("no such key: \(field) (not a map)") }
                guard let v = m[field] else { throw Failure("no such key: \(field)") }
                return v
            case .has(let target, let field):
                guard let m = try eval(target).objectValue else { throw Failure("has(): not a map") }
                // As kube sees objects (Go's omitempty drops empty maps, lists and strings), those are absent.
                switch m[field] {
                case nil, .null?: return .bool(false)
                case .object(let o)?: return .bool(!o.isEmpty)
                case .array(let a)?: return .bool(!a.isEmpty)
                case .string(let str)?: return .bool(!str.isEmpty)
                default: return .bool(true)
                }
            case .index(let target, let idx):
                let t = try eval(target), i = try eval(idx)
                if let a = t.arrayValue {
                    guard let k = i.intValue, k >= 0, Int(k) < a.count else { throw Failure("index out of range") }
                    return a[Int(k)]
                }
                guard let m = t.objectValue, let k = i.stringValue else { throw Failure("no such overload for index") }
                guard let v = m[k] else { throw Failure("no such key: \(k)") }
                return v
            case .unary("!", let x): return .bool(!(try bool(x)))
            case .unary(_, let x):
                switch try eval(x) {
                case .int(let i): return .int(-i)
                case .double(let d): return .double(-d)
                default: throw Failure("no such overload for -")
                }
            case .binary("&&", let a, let b): return .bool(try logical(a, b, decisive: false))
            case .binary("||", let a, let b): return .bool(try logical(a, b, decisive: true))
            case .binary(let op, let a, let b): return try binary(op, try eval(a), try eval(b))
            case .conditional(let c, let a, let b): return try bool(c) ? try eval(a) : try eval(b)
            case .list(let items):
                var out: [JSON] = []
                for x in items { out.append(try eval(x)) }
                return .array(out)
            case .map(let entries):
                var out: [String: JSON] = [:]
                for (k, v) in entries {
                    guard let key = try eval(k).stringValue else { throw Failure("map keys must be strings here") }
                    out[key] = try eval(v)
                }
                return .object(out)
            case .comprehension(let name, let target, let v, let body, let filter):
                let t = try eval(target)
                let items = t.arrayValue ?? t.objectValue.map { $0.keys.sorted().map { JSON.string($0) } } ?? []
                if t.arrayValue == nil && t.objectValue == nil { throw Failure("\(name)() needs a list or a map") }
                var inner = self
                var results: [JSON] = [], count = 0
                for x in items {
                    inner.variables[v] = x
                    if let filter, name == "map" {
                        if try inner.bool(filter) { results.append(try inner.eval(body)) }
                        continue
                    }
                    switch name {
                    case "map": results.append(try inner.eval(body))
                    case "filter": if try inner.bool(body) { results.append(x) }
                    default: if try inner.bool(body) { count += 1 }
                    }
                    if name == "exists" && count > 0 { return .bool(true) }
                    if name == "all" && count == 0 { return .bool(false) }
                    if name == "all" { count = 0 }
                }
                switch name {
                case "exists": return .bool(false)
                case "all": return .bool(true)
                case "exists_one": return .bool(count == 1)
                default: return .array(results)
                }
            case .call(let name, let target, let args):
                var values: [JSON] = []
                for a in args { values.append(try eval(a)) }
                var subject: JSON?
                if let target { subject = try eval(target) }
                return try call(name, subject, values)
            }
        }

        /// `&&` (decisive value false) and `||` (true) as CEL evaluates them: the decisive value on
        /// either side wins, even over an error on the other; otherwise an error is the result.
        func logical(_ a: Node, _ b: Node, decisive: Bool) throws(Failure) -> Bool {
            let l = Result<Bool, Failure>(catching: { () throws(Failure) -> Bool in try bool(a) })
            let r = Result<Bool, Failure>(catching: { () throws(Failure) -> Bool in try bool(b) })
            if case .success(decisive) = l { return decisive }
            if case .success(decisive) = r { return decisive }
            _ = try l.get()
            _ = try r.get()
            return !decisive
        }

        func call(_ name: String, _ target: JSON?, _ args: [JSON]) throws(Failure) -> JSON {
            let subject = target ?? args.first ?? .null
            let rest = target == nil ? Array(args.dropFirst()) : args
            switch (name, subject, rest.count) {
            case ("size", _, 0):
                if let s = subject.stringValue { return .int(Int64(s.count)) }
                if let a = subject.arrayValue { return .int(Int64(a.count)) }
                if let m = subject.objectValue { return .int(Int64(m.count)) }
                throw Failure("no such overload: size")
            case ("startsWith", .string(let s), 1): return .bool(s.hasPrefix(rest[0].stringValue ?? "\u{0}"))
            case ("endsWith", .string(let s), 1): return .bool(s.hasSuffix(rest[0].stringValue ?? "\u{0}"))
            case ("contains", .string(let s), 1): return .bool(s.contains(rest[0].stringValue ?? "\u{0}"))
            case ("lowerAscii", .string(let s), 0): return .string(s.lowercased())
            case ("upperAscii", .string(let s), 0): return .string(s.uppercased())
            case ("matches", .string(let s), 1):
                guard let pattern = rest[0].stringValue, let re = try? NSRegularExpression(pattern: pattern) else { throw Failure("matches(): invalid pattern") }
                return .bool(re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil)
            case ("string", _, 0):
                if let s = subject.stringValue { return .string(s) }
                if let i = subject.intValue { return .string(String(i)) }
                throw Failure("no such overload: string")
            case ("int", _, 0):
                if let i = subject.intValue { return .int(i) }
                if let s = subject.stringValue, let i = Int64(s) { return .int(i) }
                throw Failure("no such overload: int")
            default: throw Failure("unknown function \(name)")
            }
        }

        func binary(_ op: String, _ a: JSON, _ b: JSON) throws(Failure) -> JSON {
            func num(_ v: JSON) -> Double? { if case .int(let i) = v { return Double(i) }; if case .double(let d) = v { return d }; return nil }
            switch op {
            case "==": return .bool(equal(a, b))
            case "!=": return .bool(!equal(a, b))
            case "in":
                if let list = b.arrayValue { return .bool(list.contains { equal($0, a) }) }
                if let m = b.objectValue, let k = a.stringValue { return .bool(m[k] != nil) }
                throw Failure("no such overload: in")
            case "<", "<=", ">", ">=":
                let order: Int
                if let x = num(a), let y = num(b) { order = x < y ? -1 : (x > y ? 1 : 0) } else if let x = a.stringValue, let y = b.stringValue {
                    order = x < y ? -1 : (x > y ? 1 : 0)
                } else { throw Failure("no such overload: \(op)") }
                switch op {
                case "<": return .bool(order < 0)
                case "<=": return .bool(order <= 0)
                case ">": return .bool(order > 0)
                default: return .bool(order >= 0)
                }
            case "+":
                if case .int(let x) = a, case .int(let y) = b { return .int(x &+ y) }
                if let x = num(a), let y = num(b) { return .double(x + y) }
                if let x = a.stringValue, let y = b.stringValue { return .string(x + y) }
                if let x = a.arrayValue, let y = b.arrayValue { return .array(x + y) }
                throw Failure("no such overload: +")
            case "-", "*", "/", "%":
                if case .int(let x) = a, case .int(let y) = b {
                    switch op {
                    case "-": return .int(x &- y)
                    case "*": return .int(x &* y)
                    default:
                        guard y != 0 else { throw Failure("division by zero") }
                        return .int(op == "/" ? x / y : x % y)
                    }
                }
                guard let x = num(a), let y = num(b), op != "%" else { throw Failure("no such overload: \(op)") }
                return .double(op == "-" ? x - y : (op == "*" ? x * y : x / y))
            default: throw Failure("unknown operator \(op)")
            }
        }

        func equal(_ a: JSON, _ b: JSON) -> Bool {
            if case .int(let x) = a, case .double(let y) = b { return Double(x) == y }
            if case .double(let x) = a, case .int(let y) = b { return x == Double(y) }
            return a == b
        }
    }
}
