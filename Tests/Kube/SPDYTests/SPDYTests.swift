import Testing
@testable import SPDY

/// SPDY/3.1 framing and header blocks without I/O.
@Suite struct SPDYTests {
    @Test func dictionaryIsTheSpecOne() {
        let d = SPDYDictionary.bytes
        #expect(d.count == 1423)
        #expect(Array(d.prefix(11)) == [0, 0, 0, 7] + Array("options".utf8))
        #expect(String(decoding: d.suffix(8), as: UTF8.self) == "*,enq=0.")
    }

    @Test func headerBlocksRoundTripAcrossOneSession() throws {
        let c = try HeaderCompressor(), d = try HeaderDecompressor()
        let first = [("streamType", "error"), ("port", "8080"), ("requestID", "0")]
        #expect(try d.decompress(try c.compress(first)).map { "\($0.0)=\($0.1)" } == ["streamtype=error", "port=8080", "requestid=0"])
        // The zlib context carries over between blocks, as in a real session.
        let second = try c.compress([("streamType", "data"), ("port", "8080"), ("requestID", "0")])
        #expect(try d.decompress(second).first! == ("streamtype", "data"))
        #expect(try d.decompress(try c.compress([])).isEmpty)
    }

    @Test func garbageHeaderBlockIsAnError() throws {
        let d = try HeaderDecompressor()
        #expect(throws: SPDYError.self) { try d.decompress([0x78, 0xff, 0x00, 0x13, 0x37]) }
    }

    @Test func framesRoundTripAndArriveInPieces() throws {
        let frames: [SPDYFrame] = [
            .synStream(stream: 1, associated: 0, fin: false, headerBlock: [1, 2, 3]), .synReply(stream: 1, fin: false, headerBlock: [4]),
            .data(stream: 3, fin: true, payload: Array("hello".utf8)), .rstStream(stream: 5, status: SPDYFrame.cancel),
            .ping(id: 7), .goAway(lastGoodStream: 9, status: 0), .windowUpdate(stream: 1, delta: 65536), .settings,
        ]
        let bytes = frames.flatMap { $0.encoded() }
        var reader = SPDYFrameReader()
        var got: [SPDYFrame] = []
        for b in bytes {  // one byte at a time: frames need not align with messages
            reader.append([b])
            while let f = try reader.next() { got.append(f) }
        }
        #expect(got == frames)
    }

    @Test func oversizedAndWrongVersionAreRefused() {
        var r = SPDYFrameReader()
        r.append([0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff])
        #expect(throws: SPDYError.self) { try r.next() }
        var v2 = SPDYFrameReader()
        v2.append([0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1])
        #expect(throws: SPDYError.self) { try v2.next() }
    }
}
