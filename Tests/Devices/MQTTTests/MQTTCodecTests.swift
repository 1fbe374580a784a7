import Testing
@testable import MQTT

/// The MQTT 3.1.1 codec and topic matching, without I/O.
@Suite struct MQTTCodecTests {
    @Test func packetsRoundTripEvenOneByteAtATime() throws {
        let packets: [MQTTPacket] = [
            .connect(.init(clientID: "edge-1", keepAliveSeconds: 30, cleanSession: true, username: "u", password: Array("p".utf8),
                           will: .init(topic: "$hw/events/node/edge-1/state", payload: Array("offline".utf8), qos: .atLeastOnce))),
            .connack(sessionPresent: false, returnCode: 0),
            .publish(.init(topic: "$hw/events/device/default/thermo/twin/update", payload: Array(#"{"twin":{}}"#.utf8), qos: .atLeastOnce,
                           packetID: 7)),
            .publish(.init(topic: "a/b", payload: [], qos: .atMostOnce, retain: true)),
            .puback(packetID: 7), .pubrec(packetID: 8), .pubrel(packetID: 8), .pubcomp(packetID: 8),
            .subscribe(packetID: 9, topics: [("$hw/events/device/+/+/twin/update/delta", .atLeastOnce), ("SYS/dis/upload_records", .atMostOnce)]),
            .suback(packetID: 9, returnCodes: [1, 0x80]), .unsubscribe(packetID: 10, filters: ["a/#"]), .unsuback(packetID: 10),
            .pingreq, .pingresp, .disconnect,
        ]
        var reader = MQTTPacketReader()
        var got: [MQTTPacket] = []
        for b in packets.flatMap({ $0.encoded() }) {
            reader.append([b])
            while let p = try reader.next() { got.append(p) }
        }
        #expect(got == packets)
    }

    @Test func knownBytes() {
        // From the MQTT 3.1.1 standard: PINGREQ is C0 00; a QoS 0 PUBLISH of "a/b" with "hi".
        #expect(MQTTPacket.pingreq.encoded() == [0xC0, 0x00])
        #expect(MQTTPacket.publish(.init(topic: "a/b", payload: Array("hi".utf8))).encoded() == [0x30, 7, 0, 3, 0x61, 0x2F, 0x62, 0x68, 0x69])
    }

    @Test func remainingLengthUsesSeveralBytes() throws {
        let big = MQTTPacket.publish(.init(topic: "t", payload: [UInt8](repeating: 7, count: 200_000)))
        let bytes = big.encoded()
        #expect(Array(bytes[1...3]) == [0xC3, 0x9A, 0x0C])  // 200,003 as a variable-length integer
        var r = MQTTPacketReader()
        r.append(bytes)
        #expect(try r.next() == big)
    }

    @Test func badInputIsRefused() {
        var tooBig = MQTTPacketReader(maxPacket: 1024)
        tooBig.append(MQTTPacket.publish(.init(topic: "t", payload: [UInt8](repeating: 0, count: 2000))).encoded())
        #expect(throws: MQTTPacket.Malformed.self) { try tooBig.next() }
        var lengthTooLong = MQTTPacketReader()
        lengthTooLong.append([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        #expect(throws: MQTTPacket.Malformed.self) { try lengthTooLong.next() }
        var badQoS = MQTTPacketReader()
        badQoS.append([0x36, 0x03, 0x00, 0x01, 0x61])  // QoS 3
        #expect(throws: MQTTPacket.Malformed.self) { try badQoS.next() }
        var truncatedTopic = MQTTPacketReader()
        truncatedTopic.append([0x30, 0x02, 0x00, 0x09])
        #expect(throws: MQTTPacket.Malformed.self) { try truncatedTopic.next() }
        var notUTF8 = MQTTPacketReader()
        notUTF8.append([0x30, 0x03, 0x00, 0x01, 0xFF])
        #expect(throws: MQTTPacket.Malformed.self) { try notUTF8.next() }
    }

    @Test func topicFilters() {
        #expect(MQTTTopic.matches(filter: "$hw/events/device/+/+/twin/update", topic: "$hw/events/device/default/thermo/twin/update"))
        #expect(!MQTTTopic.matches(filter: "$hw/events/device/+/+/twin/update", topic: "$hw/events/device/default/thermo/twin/update/result"))
        #expect(MQTTTopic.matches(filter: "$hw/events/device/#", topic: "$hw/events/device/default/thermo/twin/update/result"))
        #expect(MQTTTopic.matches(filter: "+/user/#", topic: "shop/user/orders/1"))
        #expect(MQTTTopic.matches(filter: "a/#", topic: "a"))  // "#" also matches the parent level
        #expect(!MQTTTopic.matches(filter: "#", topic: "$SYS/broker/uptime"))
        #expect(!MQTTTopic.matches(filter: "+/user/#", topic: "$hw/user/x"))
        #expect(MQTTTopic.isValidFilter("+/user/#") && !MQTTTopic.isValidFilter("a/#/b") && !MQTTTopic.isValidFilter("a/b+") && !MQTTTopic.isValidFilter(""))
    }
}
