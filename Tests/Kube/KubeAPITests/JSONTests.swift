import Testing
@testable import KubeAPI
import KubeProtobuf

@Suite struct JSONTests {
    @Test func roundTripKeepsIntegersAndUnicode() throws {
        let text = #"{"a":3,"b":2.5,"c":"h\u00e9\n\"x\"","d":[true,false,null],"e":{"f":-7}}"#
        let v = try JSON.parse(text)
        #expect(v["a"] == .int(3))
        #expect(v["b"] == .double(2.5))
        #expect(v["c"].stringValue == "hé\n\"x\"")
        #expect(v["e"]["f"].intValue == -7)
        let again = try JSON.parse(v.serialized())
        #expect(again == v)
    }

    @Test func surrogatePairs() throws {
        let v = try JSON.parse(#""\ud83d\ude00""#)
        #expect(v.stringValue == "😀")
    }

    @Test(arguments: ["{", "{\"a\":}", "[1,]", "tru", "\"abc", "{\"a\":1} x", "01x", ""])
    func malformedInputIsRejected(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSON.parse(text) }
    }

    @Test func deepNestingIsRejectedNotCrashing() {
        let text = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParseError.self) { try JSON.parse(text) }
    }

    @Test func pathSubscriptCreatesIntermediateObjects() {
        var v: JSON = [:]
        v[path: ["metadata", "labels", "app"]] = "web"
        #expect(v["metadata"]["labels"]["app"] == "web")
        v["metadata"]["labels"]["app"] = .null
        #expect(v["metadata"]["labels"].objectValue?.isEmpty == true)
    }

    @Test func timeFormatsAndParses() {
        let t = KubeTime(micros: 1_795_587_195_123_456)
        #expect(t.rfc3339 == "2026-11-25T06:13:15Z")
        #expect(t.rfc3339Micro == "2026-11-25T06:13:15.123456Z")
        #expect(KubeTime.parse("2026-11-25T06:13:15.123456Z") == t)
        #expect(KubeTime.parse("2026-11-25T08:13:15+02:00")?.seconds == t.seconds)
        #expect(t.httpDate == "Wed, 25 Nov 2026 06:13:15 GMT")
        #expect(KubeTime(seconds: 784_111_777).httpDate == "Sun, 06 Nov 1994 08:49:37 GMT")  // RFC 9110's example
        #expect(KubeTime(seconds: -1).httpDate == "Wed, 31 Dec 1969 23:59:59 GMT")
        #expect(KubeTime.humanDuration(seconds: 45) == "45s")
        #expect(KubeTime.humanDuration(seconds: 3 * 86400 + 3600) == "3d1h")
    }
}

@Suite struct ProtobufTests {
    /// A ConfigMap as kubectl sends it: `k8s\0` + runtime.Unknown{typeMeta, raw}.
    @Test func decodesAConfigMapEnvelope() throws {
        func varint(_ v: Int) -> [UInt8] {
            var out: [UInt8] = []
            var x = UInt64(v)
            repeat { var b = UInt8(x & 0x7F); x >>= 7; if x != 0 { b |= 0x80 }; out.append(b) } while x != 0
            return out
        }
        func field(_ n: Int, _ bytes: [UInt8]) -> [UInt8] { varint(n << 3 | 2) + varint(bytes.count) + bytes }
        func str(_ n: Int, _ s: String) -> [UInt8] { field(n, Array(s.utf8)) }
        let meta = str(1, "c1") + str(3, "default") + field(11, str(1, "app") + str(2, "web"))
        let cm = field(1, meta) + field(2, str(1, "a") + str(2, "1")) + field(2, str(1, "empty") + str(2, ""))
        let typeMeta = str(1, "v1") + str(2, "ConfigMap")
        let body = KubeProtobuf.magic + field(1, typeMeta) + field(2, cm) + str(4, "application/vnd.kubernetes.protobuf")
        let v = try KubeProtobuf.decode(body)
        #expect(v["kind"] == "ConfigMap" && v["apiVersion"] == "v1")
        #expect(v["metadata"]["name"] == "c1" && v["metadata"]["namespace"] == "default")
        #expect(v["metadata"]["labels"] == ["app": "web"])
        #expect(v["data"] == ["a": "1", "empty": ""])
    }

    @Test func rejectsGarbage() {
        #expect(throws: ProtobufDecodingError.self) { try KubeProtobuf.decode(Array("{}".utf8)) }
        #expect(throws: ProtobufDecodingError.self) { try KubeProtobuf.decode(KubeProtobuf.magic + [0x0A, 0xFF]) }
    }
}

@Suite struct TextTests {
    @Test func trimsAndHexEncodesWithoutFoundation() {
        #expect(" \t token.jwt\r\n".trimmingWhitespace == "token.jwt")
        #expect("secret\r\n".trimming(where: \.isNewline) == "secret")
        #expect("secret\r".trimming(where: \.isNewline) == "secret")
        #expect(#""Debian GNU/Linux 12""#.trimming(where: { $0 == "\"" }) == "Debian GNU/Linux 12")
        #expect("".trimmingWhitespace == "")
        #expect([0x00, 0x0f, 0xa5, 0xff].hexString == "000fa5ff")
    }
}
