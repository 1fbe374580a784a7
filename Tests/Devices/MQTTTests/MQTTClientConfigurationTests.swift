import Testing
@testable import MQTT

@Suite struct MQTTClientConfigurationTests {
    @Test func parsesKubeEdgeServerURLs() throws {
        let plain = try MQTTClientConfiguration(url: "tcp://127.0.0.1:1884", clientID: "c")
        #expect(plain.host == "127.0.0.1" && plain.port == 1884 && plain.tls == nil)
        let bare = try MQTTClientConfiguration(url: "broker.local", clientID: "c")
        #expect(bare.host == "broker.local" && bare.port == 1883)
        let secure = try MQTTClientConfiguration(url: "ssl://broker.local", clientID: "c")
        #expect(secure.port == 8883 && secure.tls != nil)
    }

    @Test func refusesOtherSchemesAndBadPorts() {
        for url in ["http://broker:80", "tcp://a://b", "tcp://broker:0", "tcp://broker:x", "tcp://:1883", "tcp://"] {
            #expect(throws: MQTTConnection.Failure.self, "\(url)") { try MQTTClientConfiguration(url: url, clientID: "c") }
        }
    }
}
