import KubeAPI
import KubeProtobuf
import Testing

/// Field validation of built-in kinds: Go-embedded (inline) structs contribute their fields.
@Suite struct BuiltinSchemaTests {
    @Test func probeHandlersAreInline() throws {
        var pod = try JSON.parse("""
        {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i",
         "livenessProbe":{"exec":{"command":["true"]},"periodSeconds":1},
         "readinessProbe":{"httpGet":{"path":"/","port":8080}},"startupProbe":{"tcpSocket":{"port":"http"}},
         "bogus":1}],"volumes":[{"name":"v","configMap":{"name":"cm"}}]}}
        """)
        let unknown = BuiltinSchema.pruneUnknownFields(&pod, apiVersion: "v1", kind: "Pod")
        #expect(unknown == ["spec.containers[0].bogus"])
        #expect(pod["spec"]["containers"].arrayValue?.first?["livenessProbe"]["exec"]["command"] == ["true"])
    }
}
