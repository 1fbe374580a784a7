import Testing
@testable import KubeAPI

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
        let t = KubeTime(micros: 1_795_583_595_123_456)
        #expect(t.rfc3339 == "2026-11-25T06:13:15Z")
        #expect(t.rfc3339Micro == "2026-11-25T06:13:15.123456Z")
        #expect(KubeTime.parse("2026-11-25T06:13:15.123456Z") == t)
        #expect(KubeTime.parse("2026-11-25T08:13:15+02:00")?.seconds == t.seconds)
        #expect(KubeTime.humanDuration(seconds: 45) == "45s")
        #expect(KubeTime.humanDuration(seconds: 3 * 86400 + 3600) == "3d1h")
    }
}
