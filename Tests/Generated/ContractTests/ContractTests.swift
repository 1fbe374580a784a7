import CRI
import DMI
import SwiftProtobuf
import Testing

/// The generated CRI and DMI contracts: messages keep their fields through the wire encoding,
/// and the services carry the method names containerd and KubeEdge mappers expect.
@Suite struct ContractTests {
    @Test func criMessagesRoundTrip() throws {
        var req = Runtime_V1_RunPodSandboxRequest()
        req.config.metadata.name = "web-0"
        req.config.metadata.namespace = "default"
        req.config.metadata.uid = "uid-1"
        req.config.linux.securityContext.namespaceOptions.network = .node
        req.config.labels = ["app": "web"]
        let bytes: [UInt8] = try req.serializedBytes()
        let back = try Runtime_V1_RunPodSandboxRequest(serializedBytes: bytes)
        #expect(back == req)
        #expect(back.config.linux.securityContext.namespaceOptions.network == .node)
        #expect(Runtime_V1_RuntimeService.Method.RunPodSandbox.descriptor.fullyQualifiedMethod == "runtime.v1.RuntimeService/RunPodSandbox")
        #expect(Runtime_V1_ImageService.Method.PullImage.descriptor.fullyQualifiedMethod == "runtime.v1.ImageService/PullImage")
    }

    @Test func dmiMessagesRoundTrip() throws {
        var req = V1beta1_MapperRegisterRequest()
        req.withData = true
        req.mapper.name = "modbus"
        req.mapper.protocol = "modbus"
        let back = try V1beta1_MapperRegisterRequest(serializedBytes: try req.serializedBytes() as [UInt8])
        #expect(back == req)
        #expect(V1beta1_DeviceManagerService.Method.MapperRegister.descriptor.fullyQualifiedMethod == "v1beta1.DeviceManagerService/MapperRegister")
    }
}
